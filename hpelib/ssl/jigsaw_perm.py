"""Jigsaw, permutation-set formulation (Noroozi & Favaro, 2016; JiGen, Carlucci et al., 2019).

A fixed set of ``n_permutations`` orders of the 3x3 tiles (default 30, JiGen's
choice) with large pairwise Hamming distances is loaded from
``hpelib/ssl/permutations/hamming_{N}.npy`` (see
:mod:`hpelib.ssl.permutations`; sizes not shipped are generated on the fly).
Every image is shuffled with one of them (uniformly at random) and
reassembled into a full-size image (JiGen-style whole-image input, see
:mod:`hpelib.ssl.tiles`); a linear (or MLP) head classifies which one.

``include_identity=True`` adds the unshuffled image as class 0 (JiGen's
"ordered image" class) and the set's permutations become classes
``1..N``; ``identity_fraction`` is the probability of drawing class 0
(default ``1 / (N + 1)``, i.e. uniform over the N + 1 classes; JiGen biases
it upwards with its beta hyper-parameter). Without it (default, like
Noroozi & Favaro) the classes are ``0..N-1`` = the rows of the set.

Targets: ``[V]`` int64 class indices; loss: cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SSLTask, check_images, make_head, match_memory_format, rand, randint
from .permutations import load_permutations
from .tiles import shuffle_tiles, tile_size_problem

__all__ = ["JigsawPermTask"]


class JigsawPermTask(SSLTask):
    name = "jigsaw_perm"
    GRID = 3

    @classmethod
    def image_size_problem(cls, image_size: int, **options) -> str | None:
        return tile_size_problem(cls.name, image_size, cls.GRID)

    def __init__(self, feat_dim: int, n_permutations: int = 30, include_identity: bool = False,
                 identity_fraction: float | None = None, head: str = "linear", hidden: int | None = None):
        super().__init__(feat_dim)
        n = int(n_permutations)
        if n < 1:
            raise ValueError(f"jigsaw_perm: n_permutations must be >= 1, got {n_permutations!r}")
        if identity_fraction is not None:
            if not include_identity:
                raise ValueError("jigsaw_perm: identity_fraction needs include_identity=True")
            if not 0.0 <= float(identity_fraction) <= 1.0:
                raise ValueError(f"jigsaw_perm: identity_fraction must be in [0, 1], got {identity_fraction!r}")
        self.n_permutations = n
        self.include_identity = bool(include_identity)
        self.identity_fraction = (None if not include_identity
                                  else float(identity_fraction) if identity_fraction is not None else 1.0 / (n + 1))
        perms = torch.as_tensor(load_permutations(n), dtype=torch.long)
        if self.include_identity:
            perms = torch.cat([torch.arange(9).unsqueeze(0), perms], 0)
        self.register_buffer("permutations", perms, persistent=False)  # [classes, 9]
        self.n_classes = perms.shape[0]
        self.head = make_head(self.feat_dim, self.n_classes, head, hidden)

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        check_images(images, "jigsaw_perm")
        b = images.shape[0]
        if self.include_identity:
            cls = 1 + randint(self.n_permutations, (b,), generator, images.device)
            ordered = rand((b,), generator, images.device) < self.identity_fraction
            cls = torch.where(ordered, torch.zeros_like(cls), cls)
        else:
            cls = randint(self.n_permutations, (b,), generator, images.device)
        perm = self.permutations.to(images.device)[cls]
        return match_memory_format(shuffle_tiles(images, perm, self.GRID), images), cls

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(features), targets)
