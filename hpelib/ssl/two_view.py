"""Shared part of the joint-embedding tasks (SimCLR, Barlow Twins): two augmented views per image.

Views: ``[2B, C, H, W]`` = ``cat([aug(x), aug(x)])`` (all first views, then all
second views) with the pose-preserving augmentations of :mod:`hpelib.ssl.augment`
(options in ``augment={...}``); targets: ``[2B]``, the image index of each view.
Subclasses define ``projector`` and ``pair_loss(z1, z2)`` on the projections.
"""
from __future__ import annotations

import torch

from .augment import AugmentConfig, augment
from .base import SSLTask, check_images, match_memory_format


class TwoViewTask(SSLTask):
    def __init__(self, feat_dim: int, augment_options: dict | None = None):
        super().__init__(feat_dim)
        self.augment_config = AugmentConfig.from_dict(augment_options)

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        check_images(images, self.name)
        views = torch.cat([augment(images, generator, self.augment_config),
                           augment(images, generator, self.augment_config)], 0)
        targets = torch.arange(images.shape[0], device=images.device).repeat(2)
        return match_memory_format(views, images), targets

    def loss(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        n = features.shape[0] // 2
        if features.shape[0] != 2 * n:
            raise ValueError(f"{self.name}: expected features of 2N views, got {features.shape[0]}")
        z = self.projector(features)
        return self.pair_loss(z[:n], z[n:])

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
