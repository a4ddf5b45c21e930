"""Smoke tests of the benchmarks against reference pipelines: each runs with tiny settings and prints its ratio table.

``benchmarks/loader_speed.py`` and ``benchmarks/gpu_feed.py`` read a tiny
AFLW2000-format folder written here (8 pictures), so they need no real data.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from conftest import face_landmarks, smooth_image, write_jpg, write_mat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import each other and throughput.py from there

import gpu_feed  # noqa: E402
import hmtl_sharing  # noqa: E402
import loader_speed  # noqa: E402

RATIO = re.compile(r"\| \d+(\.\d+)?x \|")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """8 AFLW2000-3D-format pictures (jpg + mat), every pose within the +-99 degree filter."""
    root = tmp_path_factory.mktemp("aflw2000_bench")
    for i in range(8):
        name = root / f"image{i:05d}.jpg"
        write_jpg(name, smooth_image(120, 100, i))
        write_mat(name.with_suffix(".mat"), (10.0 * i - 30, 5.0, -3.0), face_landmarks(21))
    return root


def table_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| size")
            and not line.startswith("| variant") and not line.startswith("| loader")]


def test_loader_speed_prints_ratio_table(tiny_folder, tmp_path, capsys):
    rows = loader_speed.main(["--root", str(tiny_folder), "--sizes", "24", "--workers", "1", "--jitter", "0.2",
                              "--batch", "2", "--rounds", "1", "--warmup", "0", "--cache-dir", str(tmp_path),
                              "--profile", "--profile-samples", "4"])
    out = capsys.readouterr().out
    assert out.startswith("# machine: ") and "load average" in out
    assert "| size | jitter | workers | reference | hpelib | hpelib / reference |" in out
    assert len(rows) == 1 and set(loader_speed.VARIANTS) <= set(rows[0])
    assert all(RATIO.search(line) for line in table_lines(out))
    assert "# profile 24 px, jitter 0.2 hpelib:" in out
    diff = re.search(r"Pillow's resize of the same squares: \|difference\| mean ([\d.]+)/255", out)
    assert diff and float(diff.group(1)) < 3.0, out
    assert re.search(r"finish_batch \(jitter \+ normalise\) \d+ us/sample", out), out


def test_training_images_stay_within_the_documented_difference_to_pillow(tiny_folder):
    """torch's resize of the whole-pixel square vs Pillow's resize of the sub-pixel square (docs/ENGINE.md)."""
    import torch

    from hpelib.data import build_dataset

    ds = build_dataset("aflw2000", root=tiny_folder, train=True, image_size=24, seed=0)
    diffs = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        diffs.append(loader_speed.resize_differences(ds))
    d = torch.cat(diffs)
    assert float(d.mean()) <= 2.0 and float(torch.quantile(d, 0.99)) <= 12


def test_hmtl_sharing_prints_ratio_table_and_checks_losses(capsys):
    ok = hmtl_sharing.main(["--size", "32", "--batch", "4", "--rounds", "1", "--warmup", "0",
                            "--tasks", "rotation", "simclr"])
    out = capsys.readouterr().out
    assert ok, out
    lines = table_lines(out)
    assert [line.split(" | ")[0] for line in lines] == ["| +rotation", "| +simclr", "| +all 2 tasks"]
    assert all(RATIO.search(line) for line in lines)
    assert "| 3 / 2 |" in lines[-1] and "FAILED" not in out


def test_gpu_feed_prints_cores_needed(tiny_folder, tmp_path, capsys):
    cores = gpu_feed.main(["--root", str(tiny_folder), "--size", "24", "--batch", "2", "--rounds", "1",
                           "--cache-dir", str(tmp_path), "--gpu-rate", "1000", "--gpu-source", "a test figure"])
    out = capsys.readouterr().out
    assert "# GPU: 1000 training images/s, given: a test figure (estimated)" in out
    assert "worker-cores needed (estimated)" in out
    assert set(cores) == set(loader_speed.VARIANTS) and all(c > 0 for c in cores.values())


def test_gpu_feed_cites_the_published_figure_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = type("Args", (), {"gpu_rate": None})()
    rate, source = gpu_feed.gpu_rate(args)
    assert rate == gpu_feed.PUBLISHED_RATE and source.startswith("estimated")
    assert "DeepLearningExamples" in source and "https://" in source


def test_ssl_pull_prints_a_ratio_and_weight_per_task(tiny_folder, tmp_path, capsys):
    import ssl_pull

    study = tmp_path / "s.yaml"
    study.write_text(f"""name: s
image_size: 32
model: {{backbone: resnet18-narrow, pose_head: binned}}
data:
  train: {{name: aflw2000, root: "{tiny_folder}"}}
  test: {{t: {{name: aflw2000, root: "{tiny_folder}"}}}}
train: {{batch_size: 4}}
scenarios: {{baseline: [{{}}]}}
""")
    ssl_pull.main([str(study), "--alpha", "1", "0.001", "--batches", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| {")]
    assert len(rows) == 2 * 5  # two alphas x five tasks
    ratio = {(r.split("|")[1].strip(), r.split("|")[2].strip()): float(r.split("|")[3].split()[0]) for r in rows}
    # the same SSL gradient next to a 1000x lighter MSE term: a larger ratio
    assert ratio[("{'alpha': 0.001}", "rotation")] > 5 * ratio[("{'alpha': 1.0}", "rotation")]
