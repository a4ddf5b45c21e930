"""Training throughput of the baseline and of each HMTL variant (not a test).

For one backbone, image size and batch, it times full training steps
(zero_grad, ``model.losses``, backward, Adam step, as the engine runs them,
with bf16 autocast and channels_last on CUDA) of

* ``backbone``: the plain backbone, loss = mean of its features (the reference);
* ``baseline``: the pose head only (HPE without SSL);
* ``+<task>``: the pose head plus one SSL task as auxiliary loss, for each task,

and prints images/s and the cost of a step relative to the plain backbone
step measured in the same run (ratio > 1: slower). Inputs are random tensors:
throughput does not depend on image content.

    python benchmarks/throughput.py --backbone resnet50 --size 224 --batch 64 --steps 20 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch

from hpelib.engine.config import TrainConfig, resolve_device
from hpelib.models import ModelConfig, build_model
from hpelib.ssl import TASKS


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, steps: int, warmup: int, device) -> float:
    """Median seconds per call of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def make_step(model, images, poses, device, amp: bool, backbone_only: bool = False):
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if backbone_only:
                loss = model.backbone(images).float().mean()
            else:
                loss = model.losses(images, poses, generator=gen)["total"]
        loss.backward()
        opt.step()

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18-narrow")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--pose-head", default="binned")
    p.add_argument("--tasks", nargs="*", default=sorted(TASKS), help="SSL tasks to test as auxiliary losses")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    tc = TrainConfig(device=str(device))
    amp, cl = tc.use_amp(device), tc.use_channels_last(device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if cl:
        images = images.contiguous(memory_format=torch.channels_last)
    poses = (torch.rand(args.batch, 3, device=device) - 0.5) * 120

    variants = [("backbone", dict(pose_head=args.pose_head), True), ("baseline", dict(pose_head=args.pose_head), False)]
    variants += [(f"+{t}", dict(pose_head=args.pose_head, ssl_tasks={t: {"weight": 1.0}}), False) for t in args.tasks]
    print(f"# device={device} backbone={args.backbone} size={args.size} batch={args.batch} "
          f"steps={args.steps} amp={'bf16' if amp else 'off'} channels_last={cl} threads={torch.get_num_threads()}")
    secs = {}
    # The plain backbone is timed first and again last (the first timings of a
    # process include one-off kernel selection); the faster of the two is the reference.
    for name, extra, backbone_only in variants + variants[:1]:
        model = build_model(ModelConfig(backbone=args.backbone, **extra)).to(device).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        sec = time_steps(make_step(model, images, poses, device, amp, backbone_only), args.steps, args.warmup, device)
        secs[name] = min(sec, secs.get(name, float("inf")))
        del model
    ref = secs["backbone"]
    rows = [(name, args.batch / sec, sec / ref) for name, sec in secs.items()]
    print("| variant | images/s | step time vs. plain backbone |")
    print("|---|---:|---:|")
    for name, ips, ratio in rows:
        print(f"| {name} | {ips:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
