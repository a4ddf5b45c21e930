"""HMTL training step: hpelib's one backbone pass per SSL task vs a straightforward copy and a joint pass (not a test).

For the pose head plus each SSL task as auxiliary loss (and all tasks at
once), it times full training steps (zero_grad, losses, backward, Adam step:
``benchmarks/throughput.py``'s ``make_step``) of

* ``hpelib``: ``HMTLModel.losses``: the clean batch through the backbone for
  the pose loss, then each task's views in a backbone pass of their own;
* ``separate``: :class:`SeparatePasses`, the same computed the straightforward
  way, written here (the floor of any implementation of per-task passes);
* ``joint``: :class:`JointPass`, the views of *all* tasks concatenated into
  one backbone pass (hpelib's former implementation, kept here to show why
  it was dropped);

on the same random batch, with the same weights (copies) and the same view
generator seed, alternating the three (A, B, C, C, B, A, ...) and reporting
medians and the ratios to hpelib (> 1: hpelib is faster).

Fairness check, before timing: all compute their losses on the same inputs
with the same weights. hpelib and ``separate`` do the same passes, so their
losses must agree in training mode (BatchNorm on batch statistics). The
joint pass normalises the concatenated views with their joint batch
statistics, so with several tasks its losses differ in training mode by
design; they must then agree in eval mode (BatchNorm on its running
statistics), where only the grouping of the passes differs.

    python benchmarks/hmtl_sharing.py --backbone resnet18-narrow --size 64 --batch 16
    python benchmarks/hmtl_sharing.py --backbone resnet50 --size 96 --batch 16 --rounds 3
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from hpelib.engine.config import TrainConfig, resolve_device
from hpelib.models import ModelConfig, build_model
from hpelib.ssl import TASKS
from loader_speed import alternating_medians, machine_line
from throughput import _sync, make_step


class SeparatePasses(nn.Module):
    """The HMTL losses computed the straightforward way: one backbone pass per task.

    Wraps an ``HMTLModel`` with a pose head (its weights, heads and task
    objects); ``losses`` returns the same dict as ``HMTLModel.losses``.
    All poses must be labelled (the benchmark's are).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def losses(self, images, poses, generator=None) -> dict:
        m = self.model
        out = {"pose": m.pose_head.loss(m.pose_head(m.backbone(images)), poses.float()).float()}
        total = m.pose_weight * out["pose"]
        made = [task.make_views(images, generator) for task in m.ssl.values()]
        for (name, task), f, (_, targets) in zip(m.ssl.items(), self.features([v for v, _ in made]), made):
            out[name] = task.loss(f, targets).float()
            total = total + m.ssl_weights[name] * out[name]
        out["total"] = total
        return out

    def features(self, views: list) -> list:
        """Backbone features of each task's views: one pass per task."""
        return [self.model.backbone(v) for v in views]


class JointPass(SeparatePasses):
    """The HMTL losses with the views of all tasks concatenated into one backbone pass (they share a shape)."""

    def features(self, views: list) -> list:
        return list(self.model.backbone(torch.cat(views, 0)).split([len(v) for v in views], 0))


def loss_gap(a, b, images, poses, train: bool, seed: int = 0) -> float:
    """Largest relative difference between the losses of ``a`` and ``b`` on one batch (in ``train``/eval mode)."""
    gaps = []
    for m in (a, b):
        m.train(train)
    with torch.no_grad():
        la = a.losses(images, poses, torch.Generator().manual_seed(seed))
        lb = b.losses(images, poses, torch.Generator().manual_seed(seed))
    for key in la:
        x, y = float(la[key]), float(lb[key])
        gaps.append(abs(x - y) / max(abs(x), 1e-12))
    a.train()
    b.train()
    return max(gaps)


def random_batch(batch: int, size: int, device, channels_last: bool) -> tuple:
    """Seeded random images (speed does not depend on content) and poses within +-60 degrees."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    poses = ((torch.rand(batch, 3, generator=gen) - 0.5) * 120).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.contiguous(memory_format=fmt), poses


def seconds(step, device) -> float:
    """Wall seconds of one ``step()`` (synchronised on CUDA)."""
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t0


def compare(tasks: list[str], args, device, images, poses, amp: bool, channels_last: bool) -> dict:
    """Loss check and alternating step timings of hpelib vs separate passes for one set of tasks."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=args.backbone, pose_head=args.pose_head,
                                    ssl_tasks={t: {"weight": 1.0} for t in tasks})).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    separate, joint = SeparatePasses(copy.deepcopy(model)), JointPass(copy.deepcopy(model))
    # eval mode first: it leaves the BatchNorm running statistics of the copies untouched
    gaps = {"joint_eval": loss_gap(model, joint, images, poses, train=False),
            "separate_train": loss_gap(model, separate, images, poses, train=True),
            "joint_train": loss_gap(model, joint, images, poses, train=True)}
    steps = {"hpelib": make_step(model, images, poses, device, amp),
             "separate": make_step(separate, images, poses, device, amp),
             "joint": make_step(joint, images, poses, device, amp)}
    secs = alternating_medians({name: (lambda s=s: seconds(s, device)) for name, s in steps.items()},
                               args.rounds, args.warmup)
    return {"tasks": tasks, **secs, **gaps}


def print_rows(rows: list[dict], rtol: float) -> bool:
    """The table; returns whether every loss check passed."""
    print("| variant | backbone passes hpelib / joint | hpelib s/step | separate s/step | joint s/step "
          "| separate / hpelib | joint / hpelib | loss check |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ok_all = True
    for r in rows:
        n = len(r["tasks"])
        name = "+" + r["tasks"][0] if n == 1 else f"+all {n} tasks"
        ok = r["separate_train"] <= rtol and r["joint_eval"] <= rtol and (n > 1 or r["joint_train"] <= rtol)
        check = (f"separate: train-mode losses equal (rel. diff {r['separate_train']:.1e}); joint: eval-mode "
                 f"{r['joint_eval']:.1e}, train-mode {r['joint_train']:.1e}"
                 + (" (joint BatchNorm statistics)" if n > 1 else ""))
        ok_all &= ok
        print(f"| {name} | {1 + n} / 2 | {r['hpelib']:.3f} | {r['separate']:.3f} | {r['joint']:.3f} | "
              f"{r['separate'] / r['hpelib']:.2f}x | {r['joint'] / r['hpelib']:.2f}x | "
              f"{'ok' if ok else 'FAILED'}: {check} |")
    return ok_all


def main(argv=None) -> bool:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18-narrow")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="timed steps per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--device", default="auto")
    p.add_argument("--pose-head", default="binned")
    p.add_argument("--tasks", nargs="*", default=sorted(TASKS), help="SSL tasks, each timed as auxiliary loss")
    p.add_argument("--no-combined", action="store_true", help="leave out the row with all tasks at once")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the loss check")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch intra-op threads (1 is steadier on shared, loaded cores)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    tc = TrainConfig(device=str(device))
    amp, channels_last = tc.use_amp(device), tc.use_channels_last(device)
    images, poses = random_batch(args.batch, args.size, device, channels_last)

    print(machine_line())
    print(f"# device={device} backbone={args.backbone} size={args.size} batch={args.batch} amp={'bf16' if amp else 'off'} "
          f"channels_last={channels_last} threads={torch.get_num_threads()}; median of {args.rounds} steps, "
          "implementations alternating")
    groups = [[t] for t in args.tasks] + ([list(args.tasks)] if len(args.tasks) > 1 and not args.no_combined else [])
    rows = [compare(tasks, args, device, images, poses, amp, channels_last) for tasks in groups]
    return print_rows(rows, args.rtol)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
