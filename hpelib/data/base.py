"""The data set class every reader returns, and the region plans it crops with.

``PoseDataset`` item ``i`` is ``(image, pose)``: ``FloatTensor[3, S, S]``
(RGB, ImageNet-normalized) and ``FloatTensor[3]`` (yaw, pitch, roll) degrees,
NaN when unlabeled. Attributes: ``poses`` (float32 ``[N, 3]``), ``names``
(relative paths or ids), ``set_epoch(epoch)``. ``raw_item(i)`` is what the
engine's loaders move: ``(uint8 [3, S, S], pose, jitter factors [3])``;
``dataset[i]`` is that item finished by
:func:`hpelib.data.transforms.finish_item` (jitter and normalisation), the
step the engine runs on whole batches on the training device.

How an item is made
    1. *Base crop* (deterministic, cacheable): for evaluation, the preset's
       centred square of the sample's fixed region, at ``S x S``; for
       training, the *outer* region (for 300W-LP the ``k = 0.4`` box, for
       other sets the fixed region or the whole image) at ``C x C`` with
       ``C = cache_resolution`` (default ``round(1.25 * S)``).
    2. *Augmentation* (training only), from ``numpy.random.default_rng([seed,
       epoch, index])``: the random region (300W-LP: ``k`` in ``[0.2, 0.4)``),
       the preset's random square in it, mapped into the base crop's pixels
       and resized to ``S`` (:func:`~hpelib.data.crops.crop_resize_chw`);
       then flip (+ label flip) and the colour jitter factors.

    Whole-image data sets (folders, ``.npz`` arrays, synthetic) have no
    region: the image is treated as if first resized to a square, and the
    preset's square is taken in those normalized coordinates.

    Cached and uncached runs go through the same base crop, so they give
    identical tensors; with ``cache_dir`` the base crops of all samples are
    decoded once into one ``.npy`` file (see :mod:`hpelib.data.cache`).
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from .crops import box_in_box, crop_resize, crop_resize_chw, enlarge_box, load_image
from .transforms import EvalPreset, centred_square, finish_item, to_chw

__all__ = ["FixedRegions", "RandomEnlarge", "FileSource", "ArraySource", "PoseDataset", "make_rng", "raw_item"]

UNIT_BOX = np.array([0.0, 0.0, 1.0, 1.0])


def make_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one item: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def raw_item(dataset, index: int):
    """``dataset.raw_item(index)`` when the data set has one (hpelib's), else ``dataset[index]``.

    A data set of the user's own that returns ``(normalised float image,
    pose)`` items keeps working in the engine: finished items pass through.
    """
    get = getattr(dataset, "raw_item", None)
    return get(index) if get is not None else dataset[index]


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
            h.update(str((p.dtype, p.shape)).encode())
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


class FixedRegions:
    """One fixed region per sample (``boxes [N, 4]``), or the whole image (``boxes=None``)."""

    def __init__(self, boxes: np.ndarray | None):
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64)

    def outer(self, i: int):
        return None if self.boxes is None else self.boxes[i]

    def region(self, i: int, rng=None):
        return self.outer(i)

    def key(self) -> str:
        return _digest("fixed", self.boxes)


class RandomEnlarge:
    """Landmark boxes grown by a random ``k`` in ``[k_lo, k_hi)`` (300W-LP training).

    ``outer(i)`` is the box at ``k_hi``; every random box lies inside it.
    Draws one uniform from the generator.
    """

    def __init__(self, landmark_boxes: np.ndarray, k_range=(0.2, 0.4), factors=(0.6, 2.0, 0.6, 0.6)):
        lo, hi = (float(v) for v in k_range)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"k_range must satisfy 0 <= low <= high, got {k_range}")
        self.landmark_boxes = np.asarray(landmark_boxes, dtype=np.float64)
        self.k_range = (lo, hi)
        self.factors = tuple(float(f) for f in factors)

    def outer(self, i: int):
        return enlarge_box(self.landmark_boxes[i], self.k_range[1], self.factors)

    def region(self, i: int, rng=None):
        lo, hi = self.k_range
        k = hi if rng is None else lo + (hi - lo) * rng.random()
        return enlarge_box(self.landmark_boxes[i], k, self.factors)

    def key(self) -> str:
        return _digest("enlarge", self.landmark_boxes, self.k_range, self.factors)


class FileSource:
    """Loads image ``i`` from ``paths[i]`` (a decoded RGB PIL image)."""

    def __init__(self, paths: Sequence):
        self.paths = [str(p) for p in paths]

    def __call__(self, i: int):
        return load_image(self.paths[i])


class ArraySource:
    """Images from a uint8 ``[N, H, W, 3]`` array (or memmap); ``bgr=True`` swaps channels to RGB."""

    def __init__(self, images: np.ndarray, bgr: bool = False):
        self.images = images
        self.bgr = bool(bgr)

    def __call__(self, i: int):
        a = np.asarray(self.images[i])
        return np.ascontiguousarray(a[..., ::-1]) if self.bgr else a


class PoseDataset(Dataset):
    """A head pose data set following the ``hpelib.data`` contract (see module docstring).

    Parameters
    ----------
    load: ``load(i)`` -> PIL RGB image or uint8 ``[H, W, 3]`` array of sample ``i``.
    names, poses: per-sample ids and (yaw, pitch, roll) degrees (NaN rows = unlabeled).
    regions: :class:`FixedRegions` or :class:`RandomEnlarge` (training only).
    preset: :class:`~hpelib.data.transforms.TrainPreset` or ``EvalPreset``.
    seed: augmentation seed (non-negative int).
    cache_dir: folder for the decoded-crop cache, or None for no cache.
    cache_resolution: side ``C`` of cached training base crops.
    dataset_id: the data set kind and root, part of the cache key.
    face_boxes: :class:`~hpelib.data.crops.FaceBoxes` when the crops come from
        tight face boxes (AFLW2000, 300W-LP): a model trained or tested on it
        records the recipe to crop new face boxes the same way.
    """

    def __init__(self, *, load: Callable, names: Sequence[str], poses: np.ndarray, regions, preset: EvalPreset,
                 seed: int = 0, cache_dir=None, cache_resolution: int | None = None, dataset_id: str = "",
                 face_boxes=None):
        self.load = load
        self.face_boxes = face_boxes
        self.names = list(names)
        self.poses = np.asarray(poses, dtype=np.float32).reshape(-1, 3)
        if len(self.names) != len(self.poses):
            raise ValueError(f"{len(self.names)} names but {len(self.poses)} poses")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if preset.train is False and isinstance(regions, RandomEnlarge):
            raise ValueError("RandomEnlarge regions are for training; use FixedRegions for evaluation")
        self.regions = regions
        self.preset = preset
        self.seed = int(seed)
        self.epoch = 0
        self.image_size = preset.size
        if cache_resolution is None:
            cache_resolution = max(int(round(1.25 * preset.size)), preset.size)
        if int(cache_resolution) < preset.size:
            raise ValueError(f"cache_resolution ({cache_resolution}) must be >= image_size ({preset.size})")
        self.base_size = int(cache_resolution) if preset.train else preset.size
        self.dataset_id = dataset_id
        self.cache = None
        if cache_dir is not None and len(self.names) > 0:
            from .cache import CropCache

            self.cache = CropCache(cache_dir, self.cache_key(), len(self.names), self.base_size,
                                   label=dataset_id.split(":")[0] or "data")
            self.cache.ensure(self)

    # -- contract ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation the next items get."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int):
        """``(normalised FloatTensor[3, S, S], pose)``: :meth:`raw_item` finished as the engine finishes batches."""
        image, pose, factors = self.raw_item(index)
        return finish_item(image, factors), pose

    def raw_item(self, index: int):
        """``(uint8 [3, S, S] image, pose [3], jitter factors [3])``: the item the engine's loaders move."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)}")
        pose = self.poses[index]
        if not self.preset.train:
            return self.preset.finish(to_chw(self.base_crop(index)), pose)
        base, square, rng = self.training_square(index)
        return self.preset.finish(crop_resize_chw(base, square, self.preset.size), pose, rng)

    def training_square(self, index: int):
        """``(base crop, square in its pixels, generator)`` of training item ``index`` at the current epoch.

        The generator has drawn the geometry (region, square) and goes on
        with the preset's flip and jitter draws.
        """
        base = self.base_crop(index)
        rng = make_rng(self.seed, self.epoch, index)
        region = self.regions.region(index, rng)
        outer = self.regions.outer(index)
        if outer is None:
            square = self.preset.square(UNIT_BOX, rng) * self.base_size
        else:
            square = box_in_box(self.preset.square(region, rng), outer, self.base_size)
        return base, square, rng

    # -- base crops --------------------------------------------------------
    def cache_key(self) -> str:
        eval_part = None if self.preset.train else self.preset.crop_fraction
        return _digest("hpelib-crop-v1", self.dataset_id, self.names, self.regions.key(), self.preset.train,
                       eval_part, self.base_size)

    def base_crop(self, index: int) -> np.ndarray:
        """uint8 ``[B, B, 3]`` base crop of sample ``index`` (from the cache when there is one)."""
        if self.cache is not None:
            return np.asarray(self.cache.array()[index])
        return self.decode_base(index)

    def decode_base(self, index: int) -> np.ndarray:
        """Decode sample ``index`` and cut its base crop (never uses the cache)."""
        image = self.load(index)
        outer = self.regions.outer(index)
        if self.preset.train:
            return crop_resize(image, outer, self.base_size)
        h, w = (image.shape[:2] if isinstance(image, np.ndarray) else (image.height, image.width))
        box = centred_square(w, h, outer, self.preset.crop_fraction)
        return crop_resize(image, box, self.base_size)


    def __repr__(self):
        return (f"PoseDataset({self.dataset_id or 'data'}, n={len(self)}, preset={self.preset!r}, "
                f"seed={self.seed}, cache={'on' if self.cache is not None else 'off'})")
