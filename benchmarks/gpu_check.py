"""``make gpu-check``: exercise every CUDA path of hpelib on one machine, then time ResNet-50 (not a unit test).

    python benchmarks/gpu_check.py [--batch 64] [--steps 10] [--size 224]

Each check is a function ``check_<name>(setup) -> str`` that raises on
failure and returns a one-line detail on success; :func:`run_check` runs it,
catches its failure and prints ``PASS|FAIL|SKIP <name>: <detail>``, so every
check runs whatever the others do. The checks (tolerances in the constants below):

* ``bf16-autocast``: a few training steps of ResNet-50 with every SSL task
  under bf16 autocast give float32, finite losses close to an fp32 run's;
* ``channels-last``: the engine's ``channels_last: auto`` is on for CUDA and
  predicts what the contiguous layout predicts;
* ``pinned-loader``: the engine's training loader (uint8 items, pinned
  memory on CUDA) with 2 workers delivers the batches of 0 workers, equal
  after the finishing step on the device;
* ``ssl-views``: each task's ``make_views`` on a CUDA batch equals its views
  on the CPU batch for the same CPU generator (what the engine hands it);
* ``resume``: a run stopped after epoch 1 and resumed ends with the weights
  of an uninterrupted run (bit-identical, with ``cudnn.deterministic``);
* ``ddp``: ``torchrun`` of the engine CLI on a tiny synthetic config over the
  visible GPUs (NCCL; one process when there is one GPU);
* ``study-gpus``: the study runner with ``--jobs 2 --gpus ...`` gives each
  run's kernel one GPU through ``CUDA_VISIBLE_DEVICES``;
* ``eval-cuda-vs-cpu``: :func:`hpelib.engine.evaluate` on CUDA predicts what
  it predicts on the CPU;
* ``throughput``: ``benchmarks/throughput.py``'s table for ResNet-50 at 224 px.

Without a CUDA device it prints one ``SKIP`` line and exits with status 0;
otherwise it ends with ``gpu-check: N passed, M failed, K skipped`` and exits
with status 1 when a check failed.

Why a script in ``benchmarks/`` rather than a module of the package: it is a
tool for a machine, like the throughput benchmark it reuses (imported from
the same folder), not something a user of ``hpelib`` imports; the check
functions take a ``device`` (through :class:`Setup`) so that
``tests/test_gpu_check.py`` runs their logic on the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpelib.data import build_dataset
from hpelib.engine import TrainConfig, evaluate, train
from hpelib.engine.data import batch_inputs, train_loader
from hpelib.engine.evaluate import predict_dataset
from hpelib.models import ModelConfig, build_model
from hpelib.ssl import TASKS, build_task

REPO = Path(__file__).resolve().parents[1]

# Tolerances (provisional until the first GPU run; each PASS line prints the measured value). The
# comparisons of predictions and views run in strict float32 (TF32 off, see _strict_fp32): TF32, which
# PyTorch enables by default for cuDNN convolutions, moves a random ResNet-50's predictions by about a
# degree (its 10-bit mantissa, simulated on the CPU), which would hide the errors the checks look for.
LOSS_RTOL, LOSS_ATOL = 0.1, 0.05  # bf16-autocast vs fp32 losses of the same weights, per component and step
VIEW_ATOL = 1e-4  # simclr/barlow views (float resampling, blur convolution); the other tasks: exact
PRED_ATOL_DEG = 0.05  # predictions (degrees): channels_last vs contiguous, CUDA vs CPU
EXACT_VIEW_TASKS = ("rotation", "jigsaw", "jigsaw_perm")  # pure data movement: bit-identical views


class Skipped(Exception):
    """Raised by a check that cannot run here; :func:`run_check` prints ``SKIP``."""


@dataclass
class Setup:
    """What the checks run on: the device, a scratch folder, the model and data sizes.

    The defaults are those of ``make gpu-check``; the CPU tests pass a small
    backbone and image size. ``nproc`` (DDP processes) defaults to the number
    of visible GPUs (1 off CUDA), ``gpus`` (the study runner's ``--gpus``) to
    two of the visible ones (``0,0`` with one GPU).
    """

    device: torch.device
    workdir: Path
    backbone: str = "resnet50"
    size: int = 64
    batch: int = 8
    nproc: int | None = None
    gpus: list[str] | None = None
    bench: dict = field(default_factory=lambda: {"backbone": "resnet50", "size": 224, "batch": 64, "steps": 10})

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


# --------------------------------------------------------------------------- helpers
def _synthetic(s: Setup, split: str = "train", n: int = 16, train_aug: bool = True):
    """A small rendered-heads set at ``s.size`` px (rendered once into the scratch folder)."""
    return build_dataset("synthetic", root=s.workdir / "synthetic", split=split, image_size=s.size, n=n,
                         train=train_aug, seed=7)


def _images(s: Setup) -> torch.Tensor:
    """A seeded random CPU batch ``[s.batch, 3, s.size, s.size]``."""
    return torch.randn(s.batch, 3, s.size, s.size, generator=torch.Generator().manual_seed(0))


def _settled_model(s: Setup, dataset) -> nn.Module:
    """A randomly initialized pose model in eval mode whose BatchNorm statistics are those of ``dataset``.

    With the initial statistics (mean 0, variance 1) a deep random ResNet's
    activations grow block after block and the binned head's softmax
    saturates, which makes predictions jump between bins for tiny differences.
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=s.backbone, init="random", pose_head="binned"))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of the batch below
    model.train()
    with torch.no_grad():
        model.features(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    return model.eval()


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@contextlib.contextmanager
def _settings(*settings):
    """Apply ``(object, attribute, value)`` settings inside the block; the previous values come back after."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in settings]
    try:
        for obj, name, value in settings:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _strict_fp32():
    """No TF32 in convolutions and matrix products inside the block (float32 on CUDA as on the CPU)."""
    return _settings((torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False))


def _deterministic_cudnn():
    """cuDNN restricted to deterministic algorithms, without autotuning, inside the block."""
    return _settings((torch.backends.cudnn, "deterministic", True), (torch.backends.cudnn, "benchmark", False))


def _run(cmd: list[str], what: str, timeout: float = 300) -> str:
    """Run ``cmd`` from the repository root; its output, or ``AssertionError`` with its last line."""
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        last = next((line for line in reversed(output.splitlines()) if line.strip()), "no output")
        raise AssertionError(f"{what} exited with status {proc.returncode}: {last.strip()}")
    return output


# --------------------------------------------------------------------------- checks
def _losses(model, images, poses, step: int, amp: bool) -> dict:
    """``model.losses`` of one batch (SSL views from a CPU generator seeded with ``step``), bf16 autocast if ``amp``."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        return model.losses(images, poses, torch.Generator().manual_seed(step))


def check_amp(s: Setup, steps: int = 3) -> str:
    """bf16 autocast training steps: float32 finite losses, within the tolerance of fp32 losses on the same weights.

    A model with the pose head and every SSL task takes ``steps`` Adam steps
    on its bf16 autocast losses; before each step the fp32 losses of the same
    weights and batch are the reference (so the runs cannot drift apart).
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=s.backbone, init="random", pose_head="binned",
                                    ssl_tasks=sorted(TASKS))).to(s.device)
    images = _images(s).to(s.device)
    if TrainConfig().use_channels_last(s.device):
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    poses = ((torch.rand(s.batch, 3, generator=torch.Generator().manual_seed(1)) - 0.5) * 120).to(s.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    worst, where = 0.0, "all equal"
    for step in range(steps):
        with torch.no_grad():
            ref = {k: v.item() for k, v in _losses(model, images, poses, step, amp=False).items()}
        losses = _losses(model, images, poses, step, amp=True)
        bad = {k: (v.dtype, v.item()) for k, v in losses.items() if v.dtype != torch.float32 or not torch.isfinite(v)}
        assert not bad, f"losses not float32 and finite at step {step + 1}: {bad}"
        for k, v in losses.items():
            excess = abs(v.item() - ref[k]) / (LOSS_ATOL + LOSS_RTOL * abs(ref[k]))
            if excess > worst:
                worst, where = excess, f"{k} step {step + 1}: bf16 {v.item():.4g} vs fp32 {ref[k]:.4g}"
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
    assert worst <= 1, f"bf16 loss off the fp32 one ({where}; tolerance {LOSS_RTOL:g} rel + {LOSS_ATOL:g})"
    return f"{steps} steps x {len(ref)} losses float32 and finite; worst {worst:.2f} of the tolerance ({where})"


def check_channels_last(s: Setup) -> str:
    """``channels_last: auto`` is on for CUDA, and its predictions equal the contiguous layout's (strict float32)."""
    if s.cuda:
        assert TrainConfig().use_channels_last(s.device), "channels_last 'auto' is off on CUDA"
    ds = _synthetic(s, "test", train_aug=False)
    model = _settled_model(s, ds).to(s.device)
    with _strict_fp32():
        plain, _ = predict_dataset(model, ds, s.batch, s.device, channels_last=False)
        model = model.to(memory_format=torch.channels_last)
        cl, _ = predict_dataset(model, ds, s.batch, s.device, channels_last=True)
    diff = _max_diff(plain, cl)
    assert diff <= PRED_ATOL_DEG, f"channels_last predictions differ by {diff:.3g} deg (tolerance {PRED_ATOL_DEG})"
    return f"max |diff| {diff:.2g} deg over {len(ds)} images (tolerance {PRED_ATOL_DEG})"


def check_loader(s: Setup) -> str:
    """The engine's training loader with 2 workers delivers the 0-worker batches (pinned on CUDA)."""
    ds = _synthetic(s)
    runs = {w: list(train_loader(ds, TrainConfig(batch_size=4, num_workers=w, seed=1), 1, s.device))
            for w in (0, 2)}
    assert len(runs[0]) == len(runs[2]) > 0, f"{len(runs[0])} vs {len(runs[2])} batches"
    for i, (b0, b2) in enumerate(zip(runs[0], runs[2])):
        if s.cuda:
            assert b0[0].is_pinned() and b2[0].is_pinned(), f"batch {i} is not in pinned memory"
        assert b2[0].dtype == torch.uint8, f"batch {i}: the loader moves {b2[0].dtype} images, not uint8"
        (x0, p0), (x2, p2) = batch_inputs(b0, s.device), batch_inputs(b2, s.device)
        assert torch.equal(x0, x2) and torch.equal(p0, p2), f"batch {i} differs between 0 and 2 workers"
    return f"{len(runs[0])} uint8 batches identical after finishing on {s.device}, pinned={s.cuda}"


def check_views(s: Setup) -> str:
    """Each SSL task's views of a ``s.device`` batch equal those of the CPU batch for the same CPU generator."""
    x = _images(s)
    xd = x.to(s.device)
    if TrainConfig().use_channels_last(s.device):  # the layout the engine gives the batch
        xd = xd.contiguous(memory_format=torch.channels_last)
    parts = []
    for name in sorted(TASKS):  # (strict float32 below: the blur of simclr/barlow is a convolution)
        task = build_task(name, 16).to(s.device)
        with _strict_fp32():
            ref_v, ref_t = task.make_views(x, torch.Generator().manual_seed(5))
            v, t = task.make_views(xd, torch.Generator().manual_seed(5))
        assert torch.equal(ref_t, t.cpu()), f"{name}: targets differ"
        diff = _max_diff(ref_v, v.float().cpu())
        tol = 0.0 if name in EXACT_VIEW_TASKS else VIEW_ATOL
        assert v.shape == ref_v.shape and diff <= tol, f"{name}: views differ by {diff:.3g} (tolerance {tol})"
        parts.append(f"{name} {diff:.1g}")
    return f"max |diff| per task: {', '.join(parts)}"


def check_resume(s: Setup) -> str:
    """stop_after_epoch=1 then resume gives the final weights of an uninterrupted run, bit for bit."""
    model = {"backbone": s.backbone, "pose_head": "binned", "ssl_tasks": {"rotation": {"weight": 0.5},
                                                                           "simclr": {"weight": 0.5}}}
    cfg = dict(epochs=2, batch_size=4, lr=1e-4, seed=3, device=str(s.device), progress=False, max_steps_per_epoch=2)
    full, split = s.workdir / "resume_full", s.workdir / "resume_split"
    with _deterministic_cudnn():
        train(model, _synthetic(s), None, cfg, full, resume=False)
        part = train(model, _synthetic(s), None, cfg, split, resume=False, stop_after_epoch=1)
        assert not part["finished"], "stop_after_epoch=1 did not stop the run"
        train(model, _synthetic(s), None, cfg, split)
    a, b = (torch.load(d / "model.pt", weights_only=True)["model"] for d in (full, split))
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if differ:
        worst = max(_max_diff(a[k].float().cpu(), b[k].float().cpu()) for k in differ)
        raise AssertionError(f"{len(differ)} of {len(a)} tensors differ after resume (max |diff| {worst:.3g}), "
                             f"e.g. {differ[0]}")
    return f"{len(a)} tensors bit-identical (cudnn.deterministic)"


def check_ddp(s: Setup) -> str:
    """``torchrun --nproc_per_node <n>`` of the engine CLI on a tiny synthetic config (NCCL on CUDA)."""
    import torch.distributed as dist

    backend = "nccl" if s.cuda else "gloo"
    if not dist.is_available() or not (dist.is_nccl_available() if s.cuda else dist.is_gloo_available()):
        raise Skipped(f"torch.distributed with {backend} is not available")
    nproc = s.nproc or (torch.cuda.device_count() if s.cuda else 1)
    batch = 4
    n = 2 * batch * nproc  # two steps per rank
    data = {"name": "synthetic", "root": str(s.workdir / "synthetic"), "image_size": s.size, "seed": 7}
    out = s.workdir / "ddp"
    config = {"out_dir": str(out),
              "model": {"backbone": s.backbone, "pose_head": "regression", "ssl_tasks": {"rotation": {}}},
              "train": {"epochs": 1, "batch_size": batch, "device": s.device.type, "progress": False},
              "train_data": dict(data, split="train", n=n),
              "test_data": dict(data, split="test", n=8, train=False)}
    path = s.workdir / "ddp.json"
    path.write_text(json.dumps(config))
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
          "-m", "hpelib.engine.cli", "train", "--config", str(path), "--restart"], "torchrun")
    steps = json.loads((out / "history.json").read_text())["epochs"][0]["steps"]
    assert steps == 2, f"each rank ran {steps} steps, expected 2 ({n} images, batch {batch}, {nproc} ranks)"
    assert (out / "model.pt").is_file() and (out / "metrics.json").is_file(), "the run's files are missing"
    note = " (one GPU: one process)" if s.cuda and nproc == 1 else ""
    return f"{nproc} process(es), {backend}, {steps} steps per rank{note}"


_SPY_NOTEBOOK = """
import json, os, pathlib
import torch
seen = {"env": os.environ.get("CUDA_VISIBLE_DEVICES"), "devices": torch.cuda.device_count()}
out = pathlib.Path(out_dir)
(out / "gpu_seen.json").write_text(json.dumps(seen))
(out / "metrics.json").write_text(json.dumps({"n": 0}))
"""

_STUDY = """
name: gpu-check
notebooks: {nb}
report: false
image_size: 32
model: {{backbone: resnet18-narrow}}
data:
  train: {{name: synthetic, n: 8, root: {root}}}
  test: {{syn: {{name: synthetic, n: 4, root: {root}}}}}
train: {{epochs: 1}}
scenarios:
  baseline: [{{}}]
label_fractions: [1.0]
seeds: [0, 1]
"""


def _job_gpus(s: Setup) -> list[str]:
    """Two ``--gpus`` entries: ``s.gpus``, else two of the visible GPUs (the one visible GPU twice)."""
    if s.gpus:
        return list(s.gpus)
    from hpelib.study.execute import gpu_ids

    ids = gpu_ids(None) or [str(i) for i in range(torch.cuda.device_count())]
    return (ids * 2)[:2]


def check_study_gpus(s: Setup) -> str:
    """``python -m hpelib.study --jobs 2 --gpus a,b`` on a two-run study of a notebook that records its GPU."""
    import nbformat

    gpus = _job_gpus(s)
    nb_dir = s.workdir / "study_nb"
    nb_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('spec = {}\nout_dir = "."', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(_SPY_NOTEBOOK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(nb_dir / "train.ipynb"))
    study = s.workdir / "study.yaml"
    study.write_text(_STUDY.format(nb=nb_dir, root=s.workdir / "synthetic"))
    out = s.workdir / "study_out"
    _run([sys.executable, "-m", "hpelib.study", str(study), "--out", str(out), "--jobs", "2",
          "--gpus", ",".join(gpus), "--force", "--no-report"], "the study runner")
    seen = [json.loads(p.read_text()) for p in sorted(out.rglob("gpu_seen.json"))]
    envs = sorted(x["env"] or "" for x in seen)
    assert envs == sorted(gpus), f"the runs' kernels saw CUDA_VISIBLE_DEVICES {envs}, expected {sorted(gpus)}"
    if s.cuda:
        counts = [x["devices"] for x in seen]
        assert counts == [1, 1], f"the runs' kernels saw {counts} CUDA devices, expected one each"
    return f"--jobs 2 --gpus {','.join(gpus)}: the kernels saw CUDA_VISIBLE_DEVICES={','.join(envs)}"


def check_eval(s: Setup) -> str:
    """``evaluate()`` on ``s.device`` (float32, eval mode) predicts what it predicts on the CPU.

    Compared in strict float32; the detail also gives the difference with
    TF32 as PyTorch leaves it (on for cuDNN convolutions), for information.
    """
    ds = _synthetic(s, "test", train_aug=False)
    model = _settled_model(s, ds)
    on_cpu = evaluate(model, ds, batch_size=s.batch, device="cpu", progress=False)
    with _strict_fp32():
        on_dev = evaluate(model, ds, batch_size=s.batch, device=s.device, progress=False)
    diff = _max_diff(on_cpu.pred, on_dev.pred)
    assert diff <= PRED_ATOL_DEG, f"predictions differ by {diff:.3g} deg (tolerance {PRED_ATOL_DEG})"
    as_left = evaluate(model, ds, batch_size=s.batch, device=s.device, progress=False)
    tf32 = torch.backends.cudnn.allow_tf32 and s.cuda
    return (f"max |diff| {diff:.2g} deg over {len(ds)} images (tolerance {PRED_ATOL_DEG}); with the default "
            f"settings (TF32 {'on' if tf32 else 'off'}): max |diff| {_max_diff(on_cpu.pred, as_left.pred):.2g} deg")


def check_throughput(s: Setup) -> str:
    """``benchmarks/throughput.py`` (bf16 + channels_last on CUDA): its table of images/s and step-time ratios."""
    import throughput  # benchmarks/throughput.py, next to this file

    b = s.bench
    throughput.main(["--backbone", b["backbone"], "--size", str(b["size"]), "--batch", str(b["batch"]),
                     "--steps", str(b["steps"]), "--device", str(s.device)])
    return f"{b['backbone']} at {b['size']} px, batch {b['batch']}, median of {b['steps']} steps per variant"


CHECKS = [("bf16-autocast", check_amp), ("channels-last", check_channels_last), ("pinned-loader", check_loader),
          ("ssl-views", check_views), ("resume", check_resume), ("ddp", check_ddp),
          ("study-gpus", check_study_gpus), ("eval-cuda-vs-cpu", check_eval), ("throughput", check_throughput)]


# --------------------------------------------------------------------------- runner
def run_check(name: str, check, setup: Setup, echo=print) -> str:
    """Run one check; print and return its status (``PASS``, ``FAIL`` or ``SKIP``), never raise."""
    try:
        status, detail = "PASS", check(setup)
    except Skipped as e:
        status, detail = "SKIP", str(e)
    except Exception as e:  # noqa: BLE001 -- a failing check must not stop the others
        first = (str(e).strip().splitlines() or [""])[0]
        status, detail = "FAIL", f"{type(e).__name__}: {first}"[:300]
    echo(f"{status} {name}: {detail}")
    return status


def header() -> str:
    """``gpu-check: <GPU name> x<count>, torch <v>, CUDA <v>, cuDNN <v>``."""
    return (f"gpu-check: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64, help="throughput batch size")
    p.add_argument("--steps", type=int, default=10, help="timed throughput steps per variant")
    p.add_argument("--size", type=int, default=224, help="throughput image side in pixels")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("SKIP gpu-check: no CUDA device found (torch.cuda.is_available() is False); nothing was checked")
        return 0
    print(header(), flush=True)
    with tempfile.TemporaryDirectory(prefix="hpelib-gpu-check-") as tmp:
        setup = Setup(torch.device("cuda"), Path(tmp),
                      bench={"backbone": "resnet50", "size": args.size, "batch": args.batch, "steps": args.steps})
        statuses = [run_check(name, check, setup, lambda line: print(line, flush=True)) for name, check in CHECKS]
    counts = {k: statuses.count(k) for k in ("PASS", "FAIL", "SKIP")}
    print(f"gpu-check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
