"""How many CPU worker-cores the training loader needs to keep a GPU busy with ResNet-50 at 224 px (not a test).

cores needed = GPU training images/s / loader samples/s per worker-core.

* Loader samples/s per worker-core: ``benchmarks/loader_speed.py``'s
  measurement with one DataLoader worker, on this machine, at ``--size``
  (224), for hpelib's loader and the Hopenet-style reference, alternating.
* GPU images/s: measured when CUDA is available (full training steps of
  ResNet-50 with the binned pose head at 224 px, bf16 autocast, channels_last,
  ``benchmarks/throughput.py``'s ``make_step``/``time_steps``); otherwise the
  published figure below, and the result is labelled *estimated*.

Published figure (no GPU): NVIDIA DeepLearningExamples, "ResNet50 v1.5 For
PyTorch" (PyTorch/Classification/ConvNets/resnet50v1.5/README.md), section
"Training performance: NVIDIA DGX A100 (8x A100 80GB)": 2470 img/s on 1 GPU
with mixed precision. It is an A100 figure (no per-GPU H100 figure for this
recipe was found); an H100/H200 trains faster, so for those the estimate is a
lower bound. ``--gpu-rate`` takes another figure.

    python benchmarks/gpu_feed.py
    python benchmarks/gpu_feed.py --gpu-rate 5000 --gpu-source "my H100 measurement"
"""
from __future__ import annotations

import argparse

import torch

from hpelib.models import ModelConfig, build_model
from loader_speed import DEFAULT_ROOT, REPO, alternating_medians, build_variants, machine_line, rate_functions
from throughput import make_step, time_steps

PUBLISHED_RATE = 2470.0
PUBLISHED_SOURCE = ('NVIDIA DeepLearningExamples, "ResNet50 v1.5 For PyTorch", Training performance: NVIDIA DGX A100 '
                    "(8x A100 80GB), 1 GPU, mixed precision, 2470 img/s; "
                    "https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/Classification/ConvNets/"
                    "resnet50v1.5/README.md (an A100 figure: an H100-class GPU is faster, so the cores are a lower "
                    "bound for it)")


def measured_gpu_rate(batch: int, steps: int, warmup: int, size: int = 224) -> float:
    """Training images/s of ResNet-50 + binned pose head on the first CUDA device (bf16, channels_last)."""
    device = torch.device("cuda")
    model = build_model(ModelConfig(backbone="resnet50", pose_head="binned")).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    poses = (torch.rand(batch, 3, device=device) - 0.5) * 120
    return batch / time_steps(make_step(model, images, poses, device, amp=True), steps, warmup, device)


def gpu_rate(args) -> tuple[float, str]:
    """(images/s, where the figure comes from)."""
    if args.gpu_rate is not None:
        return args.gpu_rate, f"given: {args.gpu_source or '--gpu-rate'} (estimated)"
    if torch.cuda.is_available():
        rate = measured_gpu_rate(args.gpu_batch, args.gpu_steps, 3)
        return rate, (f"measured on {torch.cuda.get_device_name(0)}: ResNet-50 + binned head, 224 px, batch "
                      f"{args.gpu_batch}, bf16 autocast, channels_last, median of {args.gpu_steps} steps")
    return PUBLISHED_RATE, f"estimated (no CUDA device here) from the published figure: {PUBLISHED_SOURCE}"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="AFLW2000-3D folder for the loader measurement")
    p.add_argument("--size", type=int, default=224, help="loader image side in pixels")
    p.add_argument("--jitter", type=float, default=0.0, help="colour jitter of the loaders (hpelib's default: 0)")
    p.add_argument("--batch", type=int, default=32, help="loader batch size")
    p.add_argument("--rounds", type=int, default=3, help="timed loader epochs per variant (median reported)")
    p.add_argument("--cache-dir", default=str(REPO / "data" / "cache"))
    p.add_argument("--gpu-rate", type=float, help="GPU training images/s to use instead of measuring/publishing")
    p.add_argument("--gpu-source", default="", help="where --gpu-rate comes from (printed)")
    p.add_argument("--gpu-batch", type=int, default=128)
    p.add_argument("--gpu-steps", type=int, default=10)
    args = p.parse_args(argv)

    print(machine_line())
    rate, source = gpu_rate(args)
    estimated = "estimated" in source
    print(f"# GPU: {rate:.0f} training images/s, {source}")
    variants = build_variants(args.root, args.size, args.jitter, args.cache_dir)
    per_core = alternating_medians(rate_functions(variants, args.batch, workers=1), args.rounds, warmup=1)
    print(f"# loaders: {args.size} px, colour jitter {args.jitter}, batch {args.batch}, 1 DataLoader worker "
          f"(= one core), median of {args.rounds} epochs, variants alternating")
    label = "estimated" if estimated else "measured GPU rate"
    print(f"| loader | samples/s per worker-core | worker-cores needed ({label}) |")
    print("|---|---:|---:|")
    cores = {name: rate / r for name, r in per_core.items()}
    for name, r in per_core.items():
        print(f"| {name} | {r:.0f} | {cores[name]:.1f} |")
    return cores


if __name__ == "__main__":
    main()
