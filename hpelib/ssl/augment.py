"""Batched, seeded image augmentations for the contrastive tasks (SimCLR, Barlow Twins).

They work on a **normalized** batch ``[B, 3, H, W]`` (ImageNet mean/std, as
every hpelib data set returns) on any device, draw every random number from a
``torch.Generator`` (on the generator's device, then moved), and return a
normalized batch of the same shape. Each image gets its own parameters.

Pipeline (SimCLR's order): random resized crop -> colour jitter (brightness,
contrast, saturation, in that fixed order, each factor uniform in
``[1 - s, 1 + s]``, applied to an image with probability ``jitter_prob``) ->
grayscale (``grayscale_prob``) -> Gaussian blur (``blur_prob``, off by
default: SimCLR uses it on ImageNet but not on small images).

**Pose-preserving by default.** Horizontal flip (``flip_prob``) and in-plane
rotation (``max_rotation`` degrees) are available but OFF: SimCLR and Barlow
Twins make the representation *invariant* to every augmentation of the pair,
and a representation invariant to flips cannot tell yaw +30 from -30 (nor roll
sign), one invariant to rotations loses roll. Crops and colour changes leave
the head pose unchanged. (Hue jitter is not implemented.)

The crop follows torchvision's ``RandomResizedCrop`` (area fraction uniform in
``crop_scale``, log-uniform aspect ratio in ``crop_ratio``) but, instead of
retrying, clips the crop's sides to the image; it is resampled bilinearly to
the input size with ``grid_sample`` (pixels outside the image, only possible
with rotation, become 0 = the mean colour).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["AugmentConfig", "augment"]

_GRAY = (0.299, 0.587, 0.114)


@dataclass
class AugmentConfig:
    """Augmentation parameters; defaults are SimCLR's recipe at colour strength 0.5, without blur/flip."""

    crop_scale: tuple = (0.4, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple = (0.1, 2.0)
    flip_prob: float = 0.0  # OFF: erases yaw/roll sign information (see module doc)
    max_rotation: float = 0.0  # degrees; OFF: erases roll information

    @classmethod
    def from_dict(cls, d: dict | None) -> "AugmentConfig":
        d = dict(d or {})
        valid = [f.name for f in fields(cls)]
        bad = sorted(set(d) - set(valid))
        if bad:
            raise ValueError(f"unknown augmentation option(s) {bad}; valid options: {valid}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def validate(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_rotation < 0:
            raise ValueError(f"max_rotation must be >= 0 degrees, got {self.max_rotation}")


def _u(n: int, lo: float, hi: float, generator, device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return (lo + (hi - lo) * torch.rand(n, generator=generator, device=gdev)).to(device)


def _geometric(x: torch.Tensor, cfg: AugmentConfig, g) -> torch.Tensor:
    b, dev = x.shape[0], x.device
    area = _u(b, cfg.crop_scale[0], cfg.crop_scale[1], g, dev)
    logr = _u(b, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), g, dev)
    ratio = logr.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # half-width in normalized [-1, 1] coordinates
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (2 * _u(b, 0, 1, g, dev) - 1) * (1 - w)
    cy = (2 * _u(b, 0, 1, g, dev) - 1) * (1 - h)
    flip = torch.where(_u(b, 0, 1, g, dev) < cfg.flip_prob, -1.0, 1.0)
    ang = torch.deg2rad(_u(b, -cfg.max_rotation, cfg.max_rotation, g, dev))
    cos, sin = ang.cos(), ang.sin()
    theta = torch.stack([
        torch.stack([cos * w * flip, -sin * h, cx], -1),
        torch.stack([sin * w * flip, cos * h, cy], -1),
    ], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x01: torch.Tensor) -> torch.Tensor:
    wts = torch.tensor(_GRAY, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 * wts).sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    b, c, hgt, wid = x.shape
    k = max(3, int(0.1 * min(hgt, wid)) // 2 * 2 + 1)
    t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    ker = torch.exp(-0.5 * (t[None] / sigma[:, None].to(x.dtype)) ** 2)
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [b*c, k]
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), ker.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), ker.view(b * c, 1, k, 1), groups=b * c)
    return y.reshape(b, c, hgt, wid)


def augment(images: torch.Tensor, generator: torch.Generator | None = None,
            config: AugmentConfig | None = None) -> torch.Tensor:
    """One random augmentation of every image of a normalized batch ``[B, 3, H, W]`` (same shape out)."""
    cfg = config or AugmentConfig()
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"augment expects a normalized RGB batch [B, 3, H, W], got {tuple(images.shape)}")
    b, dev, dt = images.shape[0], images.device, images.dtype
    mean = torch.tensor(IMAGENET_MEAN, dtype=dt, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dt, device=dev).view(1, 3, 1, 1)

    x = _geometric(images, cfg, generator)
    x = (x * std + mean).clamp(0, 1)  # to [0, 1] RGB; the zero padding became the mean colour

    jit = _u(b, 0, 1, generator, dev) < cfg.jitter_prob
    one = torch.ones(b, device=dev)
    fb = torch.where(jit, _u(b, 1 - cfg.brightness, 1 + cfg.brightness, generator, dev), one).to(dt).view(b, 1, 1, 1)
    fc = torch.where(jit, _u(b, 1 - cfg.contrast, 1 + cfg.contrast, generator, dev), one).to(dt).view(b, 1, 1, 1)
    fs = torch.where(jit, _u(b, 1 - cfg.saturation, 1 + cfg.saturation, generator, dev), one).to(dt).view(b, 1, 1, 1)
    x = (x * fb).clamp(0, 1)
    m = _gray(x).mean((2, 3), keepdim=True)
    x = ((x - m) * fc + m).clamp(0, 1)
    gry = _gray(x)
    x = ((x - gry) * fs + gry).clamp(0, 1)

    to_gray = (_u(b, 0, 1, generator, dev) < cfg.grayscale_prob).view(b, 1, 1, 1)
    x = torch.where(to_gray, _gray(x).expand_as(x), x)

    if cfg.blur_prob > 0:
        do_blur = (_u(b, 0, 1, generator, dev) < cfg.blur_prob).view(b, 1, 1, 1)
        sigma = _u(b, cfg.blur_sigma[0], cfg.blur_sigma[1], generator, dev)
        x = torch.where(do_blur, _blur(x, sigma), x)
    return (x - mean) / std
