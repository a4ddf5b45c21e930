"""Barlow Twins (Zbontar et al., 2021): make the cross-correlation of two views' embeddings the identity.

Views: as SimCLR (``[2B, C, H, W]``, first views then second views, the
pose-preserving augmentations of :mod:`hpelib.ssl.augment`).

Projector: ``Linear -> BN -> ReLU -> Linear`` (the paper uses three 8192-wide
layers on ImageNet; here two layers, defaults hidden = out = 512, for small
backbones and batches).

Loss: each embedding dimension is standardized over the batch (zero mean,
unit *biased* variance, as the paper's ``BatchNorm1d(affine=False)``), then
``C = z1n.T @ z2n / N`` (``[D, D]``) and
``loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.
Default ``lambda = 5e-3`` (the paper's value, tuned for D = 8192; with a
smaller D a larger value may suit, it is the option ``lambd``).
"""
from __future__ import annotations

import torch
from torch import nn

from .two_view import TwoViewTask

__all__ = ["BarlowTwinsTask", "barlow_twins_loss"]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins loss of two ``[N, D]`` embeddings (standardized here over the batch)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"barlow_twins_loss needs two [N, D] tensors of equal shape, got "
                         f"{tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError("barlow_twins_loss needs a batch of at least 2 images")

    def standardize(z):
        z = z.float()
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = standardize(z1).t() @ standardize(z2) / n
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off


class BarlowTwinsTask(TwoViewTask):
    name = "barlow"

    def __init__(self, feat_dim: int, lambd: float = 5e-3, hidden: int = 512, out_dim: int = 512,
                 augment: dict | None = None):
        super().__init__(feat_dim, augment)
        if float(lambd) < 0:
            raise ValueError(f"barlow: lambd must be >= 0, got {lambd!r}")
        self.lambd = float(lambd)
        self.projector = nn.Sequential(nn.Linear(self.feat_dim, hidden), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(z1, z2, self.lambd)
