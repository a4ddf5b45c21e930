"""Inference speed of a pose model on the CPU: PyTorch eager vs ONNX Runtime (not a test).

The model is exported with :func:`hpelib.export.export`; both engines then
predict the same batch of random crops (speed does not depend on the image
content), timed in one run with the calls alternating: PyTorch as ``model.predict`` under
``torch.inference_mode``, ONNX Runtime with its CPU execution provider, each
with ``--threads`` intra-op threads. It prints images/s, the ratio ORT/eager
(> 1: ONNX Runtime is faster) and the largest difference between the two
predictions.

Without ``--checkpoint`` the model is a fresh random-weights one of
``--backbone`` (default ``resnet18-narrow``, the CPU backbone of
``demo_model``) at ``--size`` pixels; with it, the checkpoint's model at its
own input size.

    python benchmarks/export_speed.py
    python benchmarks/export_speed.py --backbone resnet50 --size 224 --batch 8 --iters 5
    python benchmarks/export_speed.py --checkpoint results/run/model.pt --batch 32
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from hpelib.engine.checkpoint import save
from hpelib.export import INPUT_NAME, export
from hpelib.models import InputSpec, ModelConfig, build_model, load_model, read_input_spec


def interleaved_medians(calls: dict, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each of ``calls`` ({name: function}) after ``warmup`` untimed rounds.

    The calls alternate (one of each per round), so a machine whose load
    changes during the run (shared cores) slows every engine alike.
    """
    times = {name: [] for name in calls}
    for round_ in range(warmup + iters):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def fresh_checkpoint(folder: Path, backbone: str, pose_head: str, size: int) -> Path:
    """A ``model.pt`` of a random-weights model, saved as training saves one (with its input spec)."""
    model = build_model(ModelConfig(backbone=backbone, init="random", pose_head=pose_head))
    return save({"model_config": model.config.to_dict(), "model": model.state_dict(),
                 "input": InputSpec(image_size=size).to_dict()}, folder / "model.pt")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="model.pt to time (default: a fresh random-weights model)")
    p.add_argument("--backbone", default="resnet18-narrow", help="backbone of the fresh model")
    p.add_argument("--pose-head", default="binned", help="pose head of the fresh model")
    p.add_argument("--size", type=int, default=64, help="image side of the fresh model in pixels")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=10, help="timed batches per engine (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of each engine")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else fresh_checkpoint(
            Path(tmp), args.backbone, args.pose_head, args.size)
        onnx_file = export(checkpoint, Path(tmp) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        model = load_model(checkpoint).eval()
        size = read_input_spec(checkpoint).image_size

        images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        feed = {INPUT_NAME: images.numpy()}

        def eager():
            with torch.inference_mode():
                return model.predict(images)

        def onnxruntime():
            return session.run(None, feed)[0]

        diff = float(np.abs(eager().numpy() - onnxruntime()).max())
        secs = interleaved_medians({"PyTorch eager": eager, "ONNX Runtime (CPU EP)": onnxruntime},
                                   args.iters, args.warmup)

    cfg = model.config
    print(f"# {cfg.backbone} + {cfg.pose_head} head, {size} px, batch {args.batch}, threads {args.threads}, "
          f"median of {args.iters} batches; torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"max |ORT - eager| {diff:.1e} degrees")
    print("| engine | ms / batch | images/s |")
    print("|---|---:|---:|")
    for name, sec in secs.items():
        print(f"| {name} | {1000 * sec:.1f} | {args.batch / sec:.1f} |")
    eager_s, ort_s = secs.values()
    print(f"ratio ORT/eager (images/s): {eager_s / ort_s:.2f}x")


if __name__ == "__main__":
    main()
