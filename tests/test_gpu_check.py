"""benchmarks/gpu_check.py (``make gpu-check``) on a CPU: a clean skip without CUDA, and each check's logic.

The checks take their device from a :class:`Setup`; here they run on the CPU
with a narrow ResNet-18 at 32 px, 2 Gloo processes for the DDP check and the
made-up GPU ids ``5,7`` for the study runner's, so what they compare and how
they fail is tested without a GPU (the GPU run itself is not).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # gpu_check imports throughput.py from there

import gpu_check as gc  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return gc.Setup(torch.device("cpu"), tmp_path_factory.mktemp("gpu_check"), backbone="resnet18-narrow", size=32,
                    batch=4, nproc=2, gpus=["5", "7"],
                    bench={"backbone": "resnet18-narrow", "size": 32, "batch": 4, "steps": 1})


def test_without_cuda_it_skips_cleanly():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no CUDA device, even on a machine with GPUs
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "SKIP gpu-check: no CUDA device found (torch.cuda.is_available() is False); nothing was checked"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", [name for name, _ in gc.CHECKS])
def test_each_check_passes_on_the_cpu(name, setup, capsys):
    check = dict(gc.CHECKS)[name]
    assert gc.run_check(name, check, setup) == "PASS", capsys.readouterr().out
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"PASS {name}: ")


def test_a_failing_check_gives_one_line_and_the_others_run(monkeypatch, capsys):
    def broken(s):
        raise RuntimeError("CUDA error: an illegal memory access\nsecond line")

    def unavailable(s):
        raise gc.Skipped("NCCL is not available")

    monkeypatch.setattr(gc, "CHECKS", [("a", broken), ("b", unavailable), ("c", lambda s: "fine")])
    monkeypatch.setattr(gc, "header", lambda: "gpu-check: a fake GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gc.main([]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "gpu-check: a fake GPU",
        "FAIL a: RuntimeError: CUDA error: an illegal memory access",
        "SKIP b: NCCL is not available",
        "PASS c: fine",
        "gpu-check: 1 passed, 1 failed, 1 skipped"]


def test_bf16_losses_off_the_fp32_ones_fail(setup, monkeypatch):
    losses = gc._losses

    def off(model, images, poses, step, amp):
        out = losses(model, images, poses, step, amp)
        return {k: v * 1.5 if amp and k == "pose" else v for k, v in out.items()}

    monkeypatch.setattr(gc, "_losses", off)
    with pytest.raises(AssertionError, match=r"bf16 loss off the fp32 one \(pose step 1"):
        gc.check_amp(setup)


def test_a_resumed_run_with_other_weights_fails(setup, monkeypatch):
    train = gc.train

    def perturbed(*args, **kwargs):  # the resumed run ends with one weight changed
        result = train(*args, **kwargs)
        if Path(args[4]).name == "resume_split" and kwargs.get("stop_after_epoch") is None:
            path = Path(args[4]) / "model.pt"
            saved = torch.load(path, weights_only=True)
            saved["model"]["pose_head.fc.bias"][0] += 1e-3
            torch.save(saved, path)
        return result

    monkeypatch.setattr(gc, "train", perturbed)
    with pytest.raises(AssertionError, match=r"1 of \d+ tensors differ after resume \(max \|diff\| 0.001"):
        gc.check_resume(setup)
