"""Synthetic renderer throughput: prints images/s for a few image sizes.

Usage: python benchmarks/render_speed.py [--workers 2] [--n 512] [--sizes 32 64 128]

A script, not a test. The target is >= 200 images/s at 64x64 on 2 CPU cores
(tens of thousands of training images in a few minutes). Besides wall-clock
images/s it prints images per CPU-second, which does not depend on how busy
the machine is (the renderer is numpy: one thread per worker).
"""
from __future__ import annotations

import argparse
import time

from hpelib.data.synthetic import render_heads, sample_attributes, sample_poses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=None, help="render threads (default: usable cores, at most 4)")
    ap.add_argument("--n", type=int, default=512, help="images at 64x64; scaled by pixel count for other sizes")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--supersample", type=int, default=2)
    args = ap.parse_args()
    print(f"supersample {args.supersample}, workers {args.workers or 'default'}")

    t = time.perf_counter()
    sample_attributes(args.n, seed=0)
    print(f"attribute sampling: {args.n / (time.perf_counter() - t):10.0f} heads/s")
    for size in args.sizes:
        n = max(16, args.n * 64 * 64 // (size * size))
        poses = sample_poses(n, seed=0)
        render_heads(poses[:8], size, seed=0, supersample=args.supersample, workers=args.workers)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        render_heads(poses, size, seed=0, supersample=args.supersample, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{size:4d}x{size:<4d} n={n:5d}: {n / wall:8.1f} images/s wall, {n / cpu:8.1f} images per CPU-second")


if __name__ == "__main__":
    main()
