"""Image transforms: normalization, the train/eval presets, display helpers.

Every data set turns a *region* of the image (a rectangle in image pixels:
the enlarged landmark box, BIWI's metric box, or the whole picture) into the
final ``S x S`` image with one of two presets:

``EvalPreset(size, crop_fraction=1.0)``
    A centred square of side ``crop_fraction * min(w, h)`` of the region,
    resized to ``S x S``. The default is Hopenet's test crop
    (``test_hopenet.py``: ``Scale(224) + CenterCrop(224)``: the centred square
    of the whole shorter side), expressed as a box so it works at any ``S``;
    ``crop_fraction=224/256`` gives ``Resize(256) + CenterCrop(224)``
    (6DRepNet's test script). Two sub-pixel departures: the box is not
    truncated to integers before the crop (the references' ``int()``), and
    the square is cut before resizing rather than after (the same pixels,
    resampled once).
``TrainPreset(size, crop_fraction=224/240, flip=True, color_jitter=0.0)``
    A square of side ``crop_fraction * min(w, h)`` at a uniformly random
    position inside the region (Hopenet's ``Scale(240) + RandomCrop(224)``),
    then a horizontal flip with probability 0.5 that also negates yaw and roll
    (:func:`hpelib.angles.flip_pose`), then optional light colour jitter
    (brightness, contrast, saturation factors drawn in ``[1-j, 1+j]``).

All randomness comes from the ``numpy.random.Generator`` the data set passes
in (built from ``(seed, epoch, index)``), drawn in a fixed order: square
position (2 uniforms), flip (1), jitter (3). Images are resized with Pillow's
antialiased bilinear filter.
"""
from __future__ import annotations

import numpy as np
import torch

from ..angles import flip_pose

__all__ = [
    "EVAL_CROP_FRACTION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_tensor",
    "denormalize",
    "square_in_box",
    "centred_square",
    "color_jitter",
    "EvalPreset",
    "TrainPreset",
    "make_preset",
]

#: Hopenet's test crop, Scale(224) + CenterCrop(224): the centred square of the region's shorter side
EVAL_CROP_FRACTION = 1.0
#: the test crop fraction of hpelib before the reference protocol (6DRepNet's Resize(256) + CenterCrop(224)),
#: for models saved without their input spec
FORMER_EVAL_CROP_FRACTION = 224 / 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` RGB -> normalized ``FloatTensor[3, H, W]`` (ImageNet mean/std)."""
    arr = np.ascontiguousarray(image)
    if not arr.flags.writeable:  # memmap / cache rows: torch wants writable memory
        arr = arr.copy()
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"to_tensor expects a uint8 [H, W, 3] array, got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
    return (t - _MEAN) / _STD


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Normalized ``[3, H, W]`` tensor -> uint8 ``[H, W, 3]`` numpy array, for display."""
    t = torch.as_tensor(tensor).detach().float().cpu()
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"denormalize expects a [3, H, W] tensor, got shape {tuple(t.shape)}")
    t = t * _STD + _MEAN
    return (t.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def centred_square(image_width: int, image_height: int, region, fraction: float) -> np.ndarray:
    """The test-time crop of a picture: the centred square of ``region`` (``fraction`` x its shorter side).

    ``region=None`` is the whole picture treated as a square: the square is
    taken in normalized coordinates and scaled back, as whole-picture data
    sets (folders, synthetic heads) crop.
    """
    if region is None:
        unit = square_in_box((0.0, 0.0, 1.0, 1.0), fraction, None)
        return unit * np.array([image_width, image_height, image_width, image_height], dtype=np.float64)
    return square_in_box(region, fraction, None)


def square_in_box(box, fraction: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Square sub-box of ``box`` (x0, y0, x1, y1) with side ``fraction * min(w, h)``.

    Centred when ``rng`` is None, else at a uniformly random position inside
    the box (two uniforms drawn from ``rng``, x then y).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    side = fraction * min(w, h)
    if rng is None:
        ux = uy = 0.5
    else:
        ux, uy = rng.random(2)
    sx = x0 + ux * (w - side)
    sy = y0 + uy * (h - side)
    return np.array([sx, sy, sx + side, sy + side], dtype=np.float64)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter of a uint8 image; 3 uniforms from ``rng``."""
    b, c, s = 1.0 + strength * (2.0 * rng.random(3) - 1.0)
    if strength <= 0:
        return image
    x = image.astype(np.float32) * b
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray.mean()) * c + gray.mean()
    gray = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = gray + (x - gray) * s
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


class EvalPreset:
    """Deterministic test-time geometry: centred square of the region, resized to ``size``."""

    train = False

    def __init__(self, size: int, crop_fraction: float = EVAL_CROP_FRACTION):
        _check_size_fraction(size, crop_fraction)
        self.size = int(size)
        self.crop_fraction = float(crop_fraction)

    def square(self, region, rng=None) -> np.ndarray:
        return square_in_box(region, self.crop_fraction, None)

    def finish(self, image: np.ndarray, pose: np.ndarray, rng=None):
        return to_tensor(image), torch.as_tensor(np.asarray(pose, dtype=np.float32))

    def __repr__(self):
        return f"EvalPreset(size={self.size}, crop_fraction={self.crop_fraction:.4f})"


class TrainPreset(EvalPreset):
    """Training augmentation: random square, flip with label flip, optional colour jitter."""

    train = True

    def __init__(self, size: int, crop_fraction: float = 224 / 240, flip: bool = True, color_jitter: float = 0.0):
        super().__init__(size, crop_fraction)
        if not 0.0 <= float(color_jitter) < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
        self.flip = bool(flip)
        self.color_jitter = float(color_jitter)

    def square(self, region, rng=None) -> np.ndarray:
        return square_in_box(region, self.crop_fraction, rng)

    def finish(self, image: np.ndarray, pose: np.ndarray, rng=None):
        pose = np.asarray(pose, dtype=np.float32)
        if rng is not None:
            do_flip = rng.random() < 0.5
            if self.flip and do_flip:
                image = image[:, ::-1]
                pose = flip_pose(pose).astype(np.float32)
            image = color_jitter(image, self.color_jitter, rng)
        return to_tensor(image), torch.as_tensor(pose)

    def __repr__(self):
        return (f"TrainPreset(size={self.size}, crop_fraction={self.crop_fraction:.4f}, "
                f"flip={self.flip}, color_jitter={self.color_jitter})")


def make_preset(size: int, train: bool, crop_fraction: float | None = None, flip: bool = True,
                color_jitter: float = 0.0) -> EvalPreset:
    """The preset for ``train``; ``crop_fraction=None`` takes the preset's default."""
    if train:
        kw = {} if crop_fraction is None else {"crop_fraction": crop_fraction}
        return TrainPreset(size, flip=flip, color_jitter=color_jitter, **kw)
    return EvalPreset(size) if crop_fraction is None else EvalPreset(size, crop_fraction)


def _check_size_fraction(size, fraction):
    if int(size) < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {size}")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {fraction}")
