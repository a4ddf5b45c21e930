"""Training loader speed: hpelib's loader vs a Hopenet-style loader, as a ratio measured in one run (not a test).

Both loaders read the same AFLW2000-3D pictures with the same augmentation
(random square of 224/240 of the enlarged face box resized to ``S``, flip
with label flip, optional colour jitter) through the same ``DataLoader``
settings (``hpelib.engine.data``):

* ``hpelib``: the engine's ``train_loader`` on ``build_dataset("aflw2000",
  train=True, cache_dir=...)``; the decoded-crop cache is built before timing.
  Its workers make uint8 items (torch resize of the training square, flip);
  jitter and normalisation run on the batch on the training device
  (:func:`hpelib.data.transforms.finish_batch`), whose cost on one CPU core
  is printed separately.
* ``reference``: :class:`ReferenceSet`, written here after deep-head-pose's
  ``datasets.py``: per sample, PIL open + crop of the enlarged face box, flip
  with label flip, then torchvision ``Resize(S * 240/224)``, ``RandomCrop(S)``,
  ``ColorJitter``, ``ToTensor``, ``Normalize``. The face boxes and poses are
  handed over in memory (Hopenet reads the ``.mat`` file of every sample
  again, which would only slow the reference down).
The variants alternate (A, B, C, ..., then backwards) and the medians are
reported, so that changing load from other processes hits them alike. A
measurement is one epoch of a fresh loader; its first ``workers`` batches
(worker start-up) are not timed. Rates are samples/s per worker (total /
workers). ``--profile`` adds, per size, what the DataLoader alone moves per
second (ready items of each payload) and, per variant, a per-sample
breakdown (cProfile, one process, one thread; the profiler inflates code
with many Python calls, the reference most). Every run also prints how far
hpelib's training images are from a Pillow resize of the same sub-pixel
squares (the resize difference of docs/ENGINE.md).

    python benchmarks/loader_speed.py --root ../shared/data/aflw2000 --profile
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import pstats
import random
import statistics
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

import hpelib.data.base as data_base
from hpelib.angles import flip_pose
from hpelib.data import IMAGENET_MEAN, IMAGENET_STD, TrainPreset, build_dataset
from hpelib.data.crops import crop_resize, crop_resize_chw
from hpelib.data.transforms import finish_batch, to_chw
from hpelib.engine import TrainConfig
from hpelib.engine.data import make_loader, train_loader

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "aflw2000"
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- shared by the reference benchmarks
def machine_line() -> str:
    """CPU model, cores, load average now, and the library versions, as one ``#`` line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"# machine: {model}, {os.cpu_count()} cores, load average {load} (1/5/15 min) at start; "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}")


def alternating_medians(calls: dict, rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median of what each of ``calls`` ({name: function returning a number}) returns over ``rounds``.

    Every round calls each function once, in turn; odd rounds go in reverse
    order (A B C, C B A, ...), so neither the load of other processes nor the
    position in a round favours one variant. ``warmup`` untimed rounds first.
    """
    values = {name: [] for name in calls}
    order = list(calls)
    for r in range(warmup + rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            value = calls[name]()
            if r >= warmup:
                values[name].append(value)
    return {name: statistics.median(v) for name, v in values.items()}


# --------------------------------------------------------------------------- the reference loader
class ReferenceSet(Dataset):
    """A Hopenet-style training set: every sample decoded, cropped and transformed on the fly.

    ``paths``, ``boxes`` (enlarged face boxes, image pixels) and ``poses``
    (yaw, pitch, roll degrees) per sample; ``size`` the output side.
    """

    def __init__(self, paths, boxes, poses, size: int, jitter: float = 0.0, flip: bool = True):
        self.paths = [str(p) for p in paths]
        self.boxes = np.asarray(boxes, dtype=np.float64)
        self.poses = np.asarray(poses, dtype=np.float32)
        self.flip = flip
        ops = [T.Resize(round(size * 240 / 224)), T.RandomCrop(size)]
        if jitter > 0:
            ops.append(T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        self.transform = T.Compose(ops + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    @classmethod
    def like(cls, ds, jitter: float):
        """The reference set of the same pictures, boxes, poses and size as hpelib's AFLW2000 set ``ds``."""
        return cls(ds.load.paths, ds.face_boxes.regions(), ds.poses, ds.image_size, jitter, ds.preset.flip)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = Image.open(self.paths[index]).convert("RGB")
        x0, y0, x1, y1 = self.boxes[index]
        image = image.crop((int(x0), int(y0), int(x1), int(y1)))
        pose = self.poses[index]
        if self.flip and random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            pose = flip_pose(pose)
        return self.transform(image), torch.as_tensor(pose, dtype=torch.float32)


# --------------------------------------------------------------------------- measuring
VARIANTS = {
    "hpelib": "hpelib's training loader (decoded-crop cache, uint8 items)",
    "reference": "Hopenet-style loader (PIL + torchvision per sample)",
}


def build_variants(root, size: int, jitter: float, cache_dir) -> dict:
    """The data sets of each variant in :data:`VARIANTS`."""
    ds = build_dataset("aflw2000", root=root, image_size=size, train=True, cache_dir=cache_dir, color_jitter=jitter)
    return {"hpelib": ds, "reference": ReferenceSet.like(ds, jitter)}


def loader_rate(make_loader_fn, workers: int) -> float:
    """Samples/s per worker of one epoch of ``make_loader_fn()``, its first batches (start-up) untimed."""
    it = iter(make_loader_fn())
    for _ in range(max(workers, 1)):
        next(it)
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += len(batch[0])
    return n / (time.perf_counter() - t0) / max(workers, 1)


def rate_functions(variants: dict, batch: int, workers: int) -> dict:
    """One rate-measuring function per variant; each call runs a new epoch (new augmentation).

    hpelib's sets go through the engine's ``train_loader``, the reference
    through the same ``make_loader`` with a seeded shuffling generator.
    """
    epoch = {"n": 0}
    cfg = TrainConfig(batch_size=batch, num_workers=workers, seed=0, progress=False)

    def rate_of(ds, engine_loader: bool):
        def rate():
            epoch["n"] += 1
            if engine_loader:
                return loader_rate(lambda: train_loader(ds, cfg, epoch["n"], CPU), workers)
            gen = torch.Generator().manual_seed(epoch["n"])
            return loader_rate(lambda: make_loader(ds, batch, shuffle=True, num_workers=workers, device=CPU,
                                                   drop_last=True, generator=gen), workers)
        return rate

    return {name: rate_of(ds, name != "reference") for name, ds in variants.items()}


def code_key(fn) -> tuple:
    code = fn.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_stages(dataset, n: int, stages: dict) -> dict[str, float]:
    """Microseconds per item spent in each of ``stages`` ({label: function}) over ``dataset[0..n)`` (cProfile)."""
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        dataset[i % len(dataset)]
    prof.disable()
    stats = pstats.Stats(prof).stats
    return {label: 1e6 * stats.get(code_key(fn), (0, 0, 0, 0.0))[3] / n for label, fn in stages.items()}


PROFILE_STAGES = {
    "hpelib": {"item": data_base.PoseDataset.raw_item, "cache read": data_base.PoseDataset.base_crop,
               "crop_resize_chw (torch)": crop_resize_chw, "flip + jitter factors": TrainPreset.finish},
    "reference": {"item": ReferenceSet.__getitem__, "open": Image.open, "decode (convert)": Image.Image.convert,
                  "crop": Image.Image.crop, "Resize": T.Resize.forward, "RandomCrop": T.RandomCrop.forward,
                  "ColorJitter": T.ColorJitter.forward, "ToTensor": T.ToTensor.__call__,
                  "Normalize": T.Normalize.forward},
}


@contextlib.contextmanager
def one_thread():
    """torch on one thread, as in a DataLoader worker (two threads on shared, loaded cores stall each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def print_profile(variants: dict, label: str, n: int) -> None:
    """One line per variant: microseconds per sample in total and in its main stages."""
    with one_thread():
        for name, ds in variants.items():
            times = profile_stages(ds, n, PROFILE_STAGES[name])
            parts = ", ".join(f"{stage} {us:.0f}" for stage, us in times.items() if stage != "item")
            print(f"# profile {label} {name}: {times['item']:.0f} us/sample ({parts})")


class ReadyItems(Dataset):
    """Items made in no time: copies of one ready tensor (what is left is the DataLoader's own cost)."""

    def __init__(self, n: int, shape, dtype):
        self.n, self.image, self.pose = n, torch.zeros(shape, dtype=dtype), torch.zeros(3)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self.image.clone(), self.pose, torch.ones(3)


def print_transport(size: int, n: int, args) -> None:
    """Samples/s of one DataLoader worker moving ready items of each payload (the ceiling of any loader)."""
    payloads = {f"float32 [3,{size},{size}] (reference)": ((3, size, size), torch.float32),
                f"uint8 [3,{size},{size}] (hpelib)": ((3, size, size), torch.uint8)}
    sets = {name: ReadyItems(n, shape, dtype) for name, (shape, dtype) in payloads.items()}
    rates = alternating_medians({name: rate_functions({"ready": ds}, args.batch, 1)["ready"]
                                 for name, ds in sets.items()}, args.rounds, args.warmup)
    print(f"# {size} px: DataLoader transport alone (ready items, 1 worker), samples/s: "
          + ", ".join(f"{name} {r:.0f}" for name, r in rates.items()))


def resize_differences(ds, n: int | None = None) -> torch.Tensor:
    """|hpelib's training image - Pillow's resize of the same sub-pixel square| of items ``0..n``, per pixel (0..255).

    The same items (same seed and epoch, so the same squares); the Pillow
    image (:func:`hpelib.data.crops.crop_resize` of the square) goes through
    the preset's own ``finish`` with the item's generator, so it is flipped
    exactly like the item.
    """
    diffs = []
    for i in range(len(ds) if n is None else min(n, len(ds))):
        base, square, rng = ds.training_square(i)
        pillow = ds.preset.finish(to_chw(crop_resize(base, square, ds.image_size)), ds.poses[i], rng)[0]
        diffs.append((ds.raw_item(i)[0].int() - pillow.int()).abs().flatten())
    return torch.cat(diffs).float()


def resize_difference(ds, n: int = 64) -> dict[str, float]:
    """Mean, 99th percentile and maximum of :func:`resize_differences` over ``n`` items, in 1/255 units."""
    d = resize_differences(ds, n)
    return {"mean": float(d.mean()), "p99": float(torch.quantile(d[:1_000_000], 0.99)), "max": float(d.max())}


def finish_cost(ds, batch: int, rounds: int = 5) -> float:
    """Microseconds per sample of :func:`~hpelib.data.transforms.finish_batch` on one CPU core (jitter and normalise)."""
    from torch.utils.data import default_collate

    images, _, factors = default_collate([ds.raw_item(i % len(ds)) for i in range(batch)])
    with one_thread():
        step = {"finish": lambda: seconds(finish_batch, images, factors, CPU)}
        return alternating_medians(step, rounds)["finish"] * 1e6 / batch


def seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(root, size: int, jitter: float, args) -> list[dict]:
    """The rows of one image size and jitter: samples/s per worker of each variant, for each worker count."""
    variants = build_variants(root, size, jitter, args.cache_dir)
    label = f"{size} px, jitter {jitter}"
    if args.profile:
        print_profile(variants, label, args.profile_samples)
    diff = resize_difference(variants["hpelib"])
    print(f"# {label}: hpelib's training images vs Pillow's resize of the same squares: |difference| mean "
          f"{diff['mean']:.2f}/255, 99th percentile {diff['p99']:.0f}/255, max {diff['max']:.0f}/255; "
          f"finish_batch (jitter + normalise) {finish_cost(variants['hpelib'], args.batch):.0f} us/sample "
          "on one CPU core (on a GPU it runs on the device)")
    rows = []
    for workers in args.workers:
        rates = alternating_medians(rate_functions(variants, args.batch, workers), args.rounds, args.warmup)
        rows.append({"size": size, "jitter": jitter, "workers": workers, **rates})
    return rows


def print_table(rows: list[dict]) -> None:
    """Samples/s per worker of each variant and its ratio to the reference."""
    others = [name for name in VARIANTS if name in rows[0] and name != "reference"]
    head = "| size | jitter | workers | reference | " + " | ".join(f"{n} | {n} / reference" for n in others)
    print(head + " |")
    print("|---:" * (4 + 2 * len(others)) + "|")
    for r in rows:
        cells = " | ".join(f"{r[n]:.0f} | {r[n] / r['reference']:.1f}x" for n in others)
        print(f"| {r['size']} | {r['jitter']} | {r['workers']} | {r['reference']:.0f} | {cells} |")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="AFLW2000-3D folder (imageNNNNN.jpg + .mat)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="image sides in pixels")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--jitter", type=float, nargs="+", default=[0.0, 0.2],
                   help="colour jitter strengths (0: none, hpelib's default)")
    p.add_argument("--rounds", type=int, default=5, help="timed epochs per variant (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--cache-dir", default=str(REPO / "data" / "cache"), help="hpelib's decoded-crop cache")
    p.add_argument("--profile", action="store_true", help="also print a per-sample breakdown of each variant")
    p.add_argument("--profile-samples", type=int, default=200)
    return p


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    print(machine_line())
    print(f"# data: AFLW2000-3D at {args.root}; batch {args.batch}, flip on; median of {args.rounds} epochs "
          "per variant, variants alternating; samples/s per DataLoader worker")
    for name, what in VARIANTS.items():
        print(f"#   {name}: {what}")
    rows = []
    for size in args.sizes:
        if args.profile:
            print_transport(size, 1024, args)
        rows += [row for jitter in args.jitter for row in measure(args.root, size, jitter, args)]
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
