"""RotNet (Gidaris et al., 2018): predict which of 0/90/180/270 degrees the image was rotated by.

Views
    ``mode="all"`` (default, as in RotNet's training code): the four rotations
    of every image, ``[4B, C, H, W]`` ordered rotation-major (all images at
    0 degrees, then all at 90, ...), targets ``0..3``. ``mode="random"``: one
    uniformly random rotation per image, ``[B, C, H, W]`` (cheaper; the choice
    of some HMTL-style reimplementations).

Rotations are ``torch.rot90`` over the spatial dimensions (counter-clockwise
for k > 0), so the images must be square.

Head: a 4-way linear classifier (``head="linear"``, default) or a small MLP
(``head="mlp"``); cross-entropy loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SSLTask, check_images, make_head, match_memory_format, randint

__all__ = ["RotationTask"]


class RotationTask(SSLTask):
    name = "rotation"
    MODES = ("all", "random")

    def __init__(self, feat_dim: int, mode: str = "all", head: str = "linear", hidden: int | None = None):
        super().__init__(feat_dim)
        if mode not in self.MODES:
            raise ValueError(f"rotation: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.head = make_head(self.feat_dim, 4, head, hidden)

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        check_images(images, "rotation")
        b, _, h, w = images.shape
        if h != w:
            raise ValueError(f"rotation: images must be square to be rotated by 90 degrees, got {h}x{w}")
        if self.mode == "all":
            views = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)], 0)
            targets = torch.arange(4, device=images.device).repeat_interleave(b)
        else:
            targets = randint(4, (b,), generator, images.device)
            views = images.clone()
            for k in range(1, 4):
                sel = (targets == k).nonzero(as_tuple=True)[0]
                if sel.numel():
                    views[sel] = torch.rot90(images[sel], k, dims=(2, 3))
        return match_memory_format(views, images), targets

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(features), targets)
