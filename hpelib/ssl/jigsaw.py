"""Jigsaw, per-tile formulation: for every grid position, which source tile is shown there?

Views: every image is cut into a 3x3 grid, its tiles are shuffled with an
independent uniformly random permutation of 9 and reassembled into a
full-size image (see :mod:`hpelib.ssl.tiles`, which also says how sizes that
are not multiples of 3 are handled). With ``unshuffled_fraction`` > 0 that
fraction of the images (in expectation) keep the identity order, like JiGen's
share of ordered images.

Targets: ``[V, 9]`` int64, ``targets[v, p]`` = index of the source tile shown
at position ``p``.

Head: nine 9-way linear classifiers, one per position, stored as one
``Linear(feat_dim, 81)`` whose output is read as ``[V, 9 positions, 9
classes]`` (mathematically the same as nine separate linear layers). Loss:
cross-entropy averaged over positions and views.

Unlike the permutation-set formulation (:mod:`hpelib.ssl.jigsaw_perm`), the
label space is all 9! orders, so nothing has to be chosen in advance; the
per-position targets are not independent, which the loss ignores.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SSLTask, check_images, make_head, match_memory_format, rand, randperm_rows
from .tiles import shuffle_tiles, tile_size_problem

__all__ = ["JigsawTask"]


class JigsawTask(SSLTask):
    name = "jigsaw"
    GRID = 3

    @classmethod
    def image_size_problem(cls, image_size: int, **options) -> str | None:
        return tile_size_problem(cls.name, image_size, cls.GRID)

    def __init__(self, feat_dim: int, unshuffled_fraction: float = 0.0, head: str = "linear",
                 hidden: int | None = None):
        super().__init__(feat_dim)
        if not 0.0 <= float(unshuffled_fraction) <= 1.0:
            raise ValueError(f"jigsaw: unshuffled_fraction must be in [0, 1], got {unshuffled_fraction!r}")
        self.unshuffled_fraction = float(unshuffled_fraction)
        self.n_tiles = self.GRID * self.GRID
        self.head = make_head(self.feat_dim, self.n_tiles * self.n_tiles, head, hidden)

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        check_images(images, "jigsaw")
        b = images.shape[0]
        perm = randperm_rows(b, self.n_tiles, generator, images.device)
        keep = rand((b,), generator, images.device) < self.unshuffled_fraction
        identity = torch.arange(self.n_tiles, device=images.device).expand(b, -1)
        perm = torch.where(keep[:, None], identity, perm)
        views = shuffle_tiles(images, perm, self.GRID)
        return match_memory_format(views, images), perm

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[V, 9, 9]``: position x source-tile scores."""
        return self.head(features).reshape(-1, self.n_tiles, self.n_tiles)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(features)
        return F.cross_entropy(logits.reshape(-1, self.n_tiles), targets.reshape(-1))
