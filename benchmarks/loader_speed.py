"""Training loader speed: hpelib's loader vs a Hopenet-style loader, as a ratio measured in one run (not a test).

Both loaders read the same AFLW2000-3D pictures with the same augmentation
(random square of 224/240 of the enlarged face box resized to ``S``, flip
with label flip, optional colour jitter) through the same ``DataLoader``
settings (``hpelib.engine.data``):

* ``hpelib``: the engine's ``train_loader`` on ``build_dataset("aflw2000",
  train=True, cache_dir=...)``; the decoded-crop cache is built before timing.
* ``reference``: :class:`ReferenceSet`, written here after deep-head-pose's
  ``datasets.py``: per sample, PIL open + crop of the enlarged face box, flip
  with label flip, then torchvision ``Resize(S * 240/224)``, ``RandomCrop(S)``,
  ``ColorJitter``, ``ToTensor``, ``Normalize``. The face boxes and poses are
  handed over in memory (Hopenet reads the ``.mat`` file of every sample
  again, which would only slow the reference down).
* prototypes of the change proposed for 224 px (unless ``--no-prototype``),
  :class:`ProposedPath` on the same cache, geometry and random draws:
  ``proposed``: the resize done by torch (uint8, antialiased bilinear) on the
  crop box rounded to whole pixels, and flip, colour jitter and
  normalisation fused into a few tensor operations, per item;
  ``proposed-uint8``: the same, but the items stay uint8 and jitter and
  normalisation run on the batch (:func:`finish_batch`, meant for the
  training device); ``proposed-base``: the workers ship the cached base crop
  and its box, and crop, resize, flip, jitter and normalisation all run on
  the batch.

The variants alternate (A, B, C, ..., then backwards) and the medians are
reported, so that changing load from other processes hits them alike. A
measurement is one epoch of a fresh loader; its first ``workers`` batches
(worker start-up) are not timed. Rates are samples/s per worker (total /
workers). ``--profile`` adds, per size, what the DataLoader alone moves per
second (ready items of each payload) and, per variant, a per-sample
breakdown (cProfile, one process, one thread; the profiler inflates code
with many Python calls, the reference most), and for the prototypes how far
their images are from hpelib's.

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
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

import hpelib.data.base as data_base
from hpelib.angles import flip_pose
from hpelib.data import IMAGENET_MEAN, IMAGENET_STD, TrainPreset, build_dataset
from hpelib.data.crops import crop_resize
from hpelib.data.transforms import color_jitter, to_tensor
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


# --------------------------------------------------------------------------- prototypes of the proposed change
_SCALE = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(3, 1, 1))
_SHIFT = -torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
_GRAY = torch.tensor([0.299, 0.587, 0.114])
MODES = ("item", "uint8", "base")


def torch_crop_resize(image: np.ndarray, box, size: int) -> torch.Tensor:
    """uint8 ``[3, size, size]``: ``box`` rounded to whole pixels, resized with torch's antialiased bilinear."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    crop = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1)[None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def defer_crop(image: np.ndarray, box, size: int) -> tuple:
    """No crop in the worker: the base crop (uint8 ``[3, B, B]``) and the box, for :func:`crop_batch`."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1), torch.as_tensor(box, dtype=torch.float32)


def crop_batch(bases: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``[N, 3, size, size]`` (0..255) cut from uint8 base crops ``[N, 3, B, B]`` on their device.

    ``roi_align`` (bilinear, 2x2 samples per output pixel, which smooths a
    little like an antialiased resize) at the exact sub-pixel boxes, then the flips.
    """
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=torch.float32)[:, None], boxes], 1)
    out = roi_align(bases.float(), rois.to(bases.device), output_size=size, sampling_ratio=2, aligned=True)
    return torch.where(flips.to(out.device).view(-1, 1, 1, 1), out.flip(-1), out)


def jitter_normalize(images: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` (uint8, or float 0..255) -> normalised float: jitter and normalisation in one map.

    ``factors`` ``[N, 3]``: brightness, contrast, saturation per image (None:
    no jitter). hpelib's jitter is linear in the pixels until its final clip
    (the grey weights sum to 1): ``x' = a*s*x + a*(1-s)*gray(x) + d`` with
    ``a = b*c`` and ``d = b*mean(gray(x))*(1-c)``; so are ``/255`` and the
    normalisation. Equal to hpelib's up to the uint8 rounding hpelib does
    after the jitter. Works per item (N = 1) or on a batch on any device.
    """
    x = images.float()
    if factors is not None and not bool((factors == 1).all()):
        b, c, s = (factors[:, i].to(x).view(-1, 1, 1) for i in range(3))
        gray = torch.tensordot(x, _GRAY.to(x), dims=([1], [0]))
        a, d = b * c, b * gray.mean((1, 2), keepdim=True) * (1.0 - c)
        x.mul_((a * s)[:, None]).add_((gray * (a * (1.0 - s)) + d)[:, None]).clamp_(0.0, 255.0)
    return x.mul_(_SCALE.to(x)).add_(_SHIFT.to(x))


def finish_batch(batch, size: int) -> tuple:
    """A collated batch of any prototype mode -> ``(normalised images, poses)``, as hpelib's loader gives."""
    if len(batch) == 2:  # "item": already finished
        return batch
    if len(batch) == 3:  # "uint8": images, poses, factors
        images, poses, factors = batch
        return jitter_normalize(images, factors), poses
    bases, boxes, flips, factors, poses = batch  # "base"
    return jitter_normalize(crop_batch(bases, boxes, flips, size), factors), poses


class FusedPreset(TrainPreset):
    """``TrainPreset`` for the prototypes; ``mode`` says how much of an item the worker makes.

    It draws the same numbers from the item's generator in the same order
    (flip, then the three jitter factors) and, by ``mode``, returns:

    * ``"item"``: ``(normalised image, pose)``, from the uint8 tensor of
      :func:`torch_crop_resize`, jitter and normalisation fused per item;
    * ``"uint8"``: ``(uint8 image, pose, jitter factors)``: jitter and
      normalisation on the batch (:func:`finish_batch`, on the training device);
    * ``"base"``: ``(uint8 base crop, box, flip, jitter factors, pose)`` from
      :func:`defer_crop`: crop, resize, flip, jitter and normalisation on the batch.
    """

    def __init__(self, *args, mode: str = "item", **kwargs):
        super().__init__(*args, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def finish(self, image, pose, rng=None):
        pose = np.asarray(pose, dtype=np.float32)
        flipped = rng.random() < 0.5 and self.flip
        factors = torch.from_numpy(1.0 + self.color_jitter * (2.0 * rng.random(3) - 1.0)).float()
        if self.color_jitter <= 0:
            factors = torch.ones(3)
        if flipped:
            pose = flip_pose(pose).astype(np.float32)
        if self.mode == "base":
            return (*image, torch.tensor(flipped), factors, torch.as_tensor(pose))
        image = image.flip(-1) if flipped else image
        if self.mode == "uint8":
            return image, torch.as_tensor(pose), factors
        return jitter_normalize(image[None], factors[None])[0], torch.as_tensor(pose)


class ProposedPath(Dataset):
    """Prototype: the items of the hpelib training set ``ds`` made by a proposed faster path.

    The geometry and the random draws are ``PoseDataset.__getitem__``'s own
    (it is called, on the same cache); only the resize (:func:`torch_crop_resize`,
    or :func:`defer_crop` in mode ``"base"``, swapped in for ``crop_resize``
    while an item is made) and the preset (:class:`FusedPreset`) change.
    """

    def __init__(self, ds, mode: str = "item"):
        self.ds = ds
        p = ds.preset
        self.preset = FusedPreset(p.size, p.crop_fraction, p.flip, p.color_jitter, mode=mode)
        self.crop = defer_crop if mode == "base" else torch_crop_resize

    def __len__(self):
        return len(self.ds)

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __getitem__(self, index):
        preset, data_base.crop_resize = self.ds.preset, self.crop
        self.ds.preset = self.preset
        try:
            return self.ds[index]
        finally:
            self.ds.preset, data_base.crop_resize = preset, crop_resize


# --------------------------------------------------------------------------- measuring
VARIANTS = {
    "hpelib": "hpelib's training loader (decoded-crop cache)",
    "reference": "Hopenet-style loader (PIL + torchvision per sample)",
    "proposed": "prototype: hpelib + torch resize + fused jitter/normalise per item",
    "proposed-uint8": "prototype: as proposed, uint8 items; jitter/normalise on the batch (training device)",
    "proposed-base": "prototype: uint8 cached base crops + boxes; crop/resize/flip/jitter/normalise on the batch",
}
PROTOTYPE_MODES = {"proposed": "item", "proposed-uint8": "uint8", "proposed-base": "base"}


def build_variants(root, size: int, jitter: float, cache_dir, prototype: bool = True) -> dict:
    """The data sets of each variant in :data:`VARIANTS` (the prototypes unless ``prototype=False``)."""
    def hpelib_set():
        return build_dataset("aflw2000", root=root, image_size=size, train=True, cache_dir=cache_dir,
                             color_jitter=jitter)

    ds = hpelib_set()
    variants = {"hpelib": ds, "reference": ReferenceSet.like(ds, jitter)}
    if prototype:
        variants.update({name: ProposedPath(hpelib_set(), mode) for name, mode in PROTOTYPE_MODES.items()})
    return variants


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
    "hpelib": {"item": data_base.PoseDataset.__getitem__, "cache read": data_base.PoseDataset.base_crop,
               "crop_resize (Pillow)": crop_resize, "colour jitter": color_jitter, "to_tensor": to_tensor},
    "reference": {"item": ReferenceSet.__getitem__, "open": Image.open, "decode (convert)": Image.Image.convert,
                  "crop": Image.Image.crop, "Resize": T.Resize.forward, "RandomCrop": T.RandomCrop.forward,
                  "ColorJitter": T.ColorJitter.forward, "ToTensor": T.ToTensor.__call__,
                  "Normalize": T.Normalize.forward},
    "proposed": {"item": ProposedPath.__getitem__, "cache read": data_base.PoseDataset.base_crop,
                 "torch_crop_resize": torch_crop_resize, "jitter + normalise": jitter_normalize},
}
PROFILE_STAGES["proposed-uint8"] = PROFILE_STAGES["proposed"]
PROFILE_STAGES["proposed-base"] = {"item": ProposedPath.__getitem__, "cache read": data_base.PoseDataset.base_crop,
                                   "defer_crop": defer_crop}


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
        return self.image.clone(), self.pose


def print_transport(size: int, n: int, args) -> None:
    """Samples/s of one DataLoader worker moving ready items of each payload (the ceiling of any loader)."""
    base = max(int(round(1.25 * size)), size)  # hpelib's default cache resolution
    payloads = {f"float32 [3,{size},{size}] (hpelib, reference)": ((3, size, size), torch.float32),
                f"uint8 [3,{size},{size}] (proposed-uint8)": ((3, size, size), torch.uint8),
                f"uint8 [3,{base},{base}] (proposed-base)": ((3, base, base), torch.uint8)}
    sets = {name: ReadyItems(n, shape, dtype) for name, (shape, dtype) in payloads.items()}
    rates = alternating_medians({name: rate_functions({"ready": ds}, args.batch, 1)["ready"]
                                 for name, ds in sets.items()}, args.rounds, args.warmup)
    print(f"# {size} px: DataLoader transport alone (ready items, 1 worker), samples/s: "
          + ", ".join(f"{name} {r:.0f}" for name, r in rates.items()))


def check_prototypes(variants: dict, n: int = 16) -> str:
    """How far the prototypes' images are from hpelib's on the same items, and the batch step's cost here."""
    from torch.utils.data import default_collate

    hp = variants["hpelib"]
    n = min(n, len(hp))
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = default_collate([hp[i] for i in range(n)])
    parts = []
    for name in PROTOTYPE_MODES:
        batch = default_collate([variants[name][i] for i in range(n)])
        images, poses = finish_batch(batch, hp.image_size)
        diff = float(((images - expected[0]) * std * 255).abs().mean())
        same = "same poses" if torch.equal(poses, expected[1]) else "POSES DIFFER"
        cost = ""
        if name != "proposed":
            with one_thread():
                step = {name: lambda: seconds(finish_batch, batch, hp.image_size)}
                us = alternating_medians(step, 5)[name] * 1e6 / n
            cost = f", batch step {us:.0f} us/sample on one core here"
        parts.append(f"{name} {diff:.2f}/255, {same}{cost}")
    return "mean |pixel difference| to hpelib's images: " + "; ".join(parts)


def seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(root, size: int, jitter: float, args) -> list[dict]:
    """The rows of one image size and jitter: samples/s per worker of each variant, for each worker count."""
    variants = build_variants(root, size, jitter, args.cache_dir, not args.no_prototype)
    label = f"{size} px, jitter {jitter}"
    if args.profile:
        print_profile(variants, label, args.profile_samples)
    if "proposed" in variants:
        print(f"# {label}: " + check_prototypes(variants))
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
    p.add_argument("--no-prototype", action="store_true", help="leave out the prototype of the proposed change")
    return p


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    print(machine_line())
    print(f"# data: AFLW2000-3D at {args.root}; batch {args.batch}, flip on; median of {args.rounds} epochs "
          "per variant, variants alternating; samples/s per DataLoader worker")
    for name, what in VARIANTS.items():
        if name in ("hpelib", "reference") or not args.no_prototype:
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
