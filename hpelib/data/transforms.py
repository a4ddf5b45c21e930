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
position (2 uniforms), flip (1), jitter (3).

The uint8 pipeline (what the engine's loaders move)
    A preset's ``finish`` returns the *raw item* ``(uint8 [3, S, S] image,
    pose, jitter factors [3])``: geometry and flip are done in the DataLoader
    worker, and the image stays 8-bit (a quarter of float32's bytes between
    processes). :func:`finish_batch` turns a collated batch into the model's
    input on the training device, after the copy: colour jitter (brightness,
    contrast, saturation: one affine map per image, see
    :func:`jitter_batch`), ``/255`` and ImageNet normalisation
    (:func:`normalize`). ``dataset[i]`` is the same finishing step applied to
    one item, and :func:`to_tensor` (the test crop of
    :class:`hpelib.models.InputSpec`, predict, export) is :func:`normalize` of
    the same uint8 pixels: there is one definition of the tensor the model
    sees. Test-time base crops are resized with Pillow's antialiased bilinear
    filter at sub-pixel boxes; the training crop inside the cached base crop
    is resized with torch's antialiased bilinear filter on the box rounded to
    whole pixels (:func:`hpelib.data.crops.crop_resize_chw`), 2.4x as fast at
    224 px (docs/ENGINE.md gives the measured difference to Pillow's).
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
    "normalize",
    "jitter_batch",
    "finish_batch",
    "finish_item",
    "denormalize",
    "square_in_box",
    "centred_square",
    "jitter_factors",
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


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0..255) ``[..., 3, H, W]`` -> float32 ``/255`` and ImageNet mean/std normalised.

    The one normalisation of hpelib: the batches of the engine
    (:func:`finish_batch`), the items of ``dataset[i]`` and the test crops of
    predict/export (:func:`to_tensor`) all go through it.
    """
    t = images.float() if images.dtype != torch.float32 else images.clone()
    return t.div_(255.0).sub_(_MEAN.to(t.device)).div_(_STD.to(t.device))  # in place: one buffer per batch


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` RGB -> normalized ``FloatTensor[3, H, W]`` (ImageNet mean/std)."""
    arr = np.ascontiguousarray(image)
    if not arr.flags.writeable:  # memmap / cache rows: torch wants writable memory
        arr = arr.copy()
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"to_tensor expects a uint8 [H, W, 3] array, got {arr.dtype} {arr.shape}")
    return normalize(torch.from_numpy(arr).permute(2, 0, 1))


def to_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` (array or read-only cache row) -> a uint8 ``[3, H, W]`` tensor of its own memory."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)


_GRAY = torch.tensor([0.299, 0.587, 0.114])


def jitter_batch(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Colour jitter of float 0..255 images ``[N, 3, H, W]``: brightness, contrast, saturation ``factors [N, 3]``.

    Brightness ``x*b``, contrast ``(x - m)*c + m`` around the mean grey ``m``
    of the brightened image, saturation ``g + (x - g)*s`` around each pixel's
    grey ``g`` (weights 0.299, 0.587, 0.114, which sum to 1), clipped to
    0..255 once at the end. As the grey is linear and the weights sum to one,
    this is one affine map per image: ``x' = b*c*s*x + b*c*(1-s)*gray(x) +
    b*(1-c)*mean(gray(x))``.
    """
    x = images.float()
    f = factors.to(x.device, torch.float32)
    b, c, s = (f[:, i].view(-1, 1, 1) for i in range(3))
    gray = torch.tensordot(_GRAY.to(x.device), x, dims=([0], [1]))  # [N, H, W]
    a = b * c
    d = b * gray.mean((1, 2), keepdim=True) * (1.0 - c)
    out = x * (a * s)[:, None] + (gray * (a * (1.0 - s)) + d)[:, None]
    return out.clamp_(0.0, 255.0)


def finish_batch(images: torch.Tensor, factors: torch.Tensor | None = None, device=None,
                 channels_last: bool = False) -> torch.Tensor:
    """A collated uint8 batch ``[N, 3, S, S]`` -> the model's input: copied to ``device``, jittered, normalised.

    ``factors [N, 3]`` are the items' jitter factors (all ones: no jitter,
    which is checked before the copy so a GPU run does not wait for it).
    The copy is non-blocking (the engine's loaders pin memory on CUDA).
    """
    jitter = factors is not None and not bool((factors == 1).all())
    if device is not None:
        images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if jitter:
        images = jitter_batch(images, factors)
    return normalize(images)


def finish_item(image: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`finish_batch` of one raw item's image (``dataset[i]``)."""
    return finish_batch(image[None], None if factors is None else factors[None])[0]


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


def jitter_factors(strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation factors in ``[1 - strength, 1 + strength]``; 3 uniforms from ``rng``.

    The uniforms are drawn even when ``strength`` is 0 (factors all 1), so
    the draws of later augmentations never depend on the jitter setting.
    """
    u = rng.random(3)
    if strength <= 0:
        return torch.ones(3)
    return torch.from_numpy(1.0 + strength * (2.0 * u - 1.0)).float()


class EvalPreset:
    """Deterministic test-time geometry: centred square of the region, resized to ``size``."""

    train = False

    def __init__(self, size: int, crop_fraction: float = EVAL_CROP_FRACTION):
        _check_size_fraction(size, crop_fraction)
        self.size = int(size)
        self.crop_fraction = float(crop_fraction)

    def square(self, region, rng=None) -> np.ndarray:
        return square_in_box(region, self.crop_fraction, None)

    def finish(self, image: torch.Tensor, pose: np.ndarray, rng=None):
        """The raw item of a test crop: ``(uint8 [3, S, S], pose, no-jitter factors)``."""
        return image, torch.as_tensor(np.asarray(pose, dtype=np.float32)), torch.ones(3)

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

    def finish(self, image: torch.Tensor, pose: np.ndarray, rng=None):
        """The raw item of a training crop ``image`` (uint8 ``[3, S, S]``): flipped with its label, jitter factors."""
        pose = np.asarray(pose, dtype=np.float32)
        factors = torch.ones(3)
        if rng is not None:
            do_flip = rng.random() < 0.5
            if self.flip and do_flip:
                image = image.flip(-1)
                pose = flip_pose(pose).astype(np.float32)
            factors = jitter_factors(self.color_jitter, rng)
        return image, torch.as_tensor(pose), factors

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
