"""SimCLR (Chen et al., 2020): two augmented views per image, NT-Xent contrastive loss.

Views: two pose-preserving augmentations of every image (see
:mod:`hpelib.ssl.two_view`; options in ``augment={...}``).

Head: the projection MLP ``Linear(feat_dim, hidden) -> ReLU -> Linear(hidden,
out_dim)`` (SimCLR v1, 2 layers; defaults hidden 512, out 128). The loss is
computed on the projections; the backbone feature is the representation.

Loss: NT-Xent (normalized temperature-scaled cross-entropy). With ``z`` the
L2-normalized projections of the 2N views and ``s_ij = z_i . z_j / tau``, each
view's positive is the other view of its image and all other 2N - 2 views are
negatives; ``loss = mean_i -log(exp(s_ip) / sum_{j != i} exp(s_ij))``.
Default temperature 0.5 (SimCLR's value for small batches, e.g. its CIFAR-10
experiments; it uses 0.1 only with batches of thousands).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .two_view import TwoViewTask

__all__ = ["SimCLRTask", "nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent loss of ``N`` positive pairs ``(z1[i], z2[i])``, both ``[N, D]`` (not necessarily normalized)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent needs two [N, D] tensors of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError("nt_xent needs at least 2 pairs (a batch of >= 2 images) to have negatives")
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=1)
    sim = z @ z.t() / float(temperature)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)


class SimCLRTask(TwoViewTask):
    name = "simclr"

    def __init__(self, feat_dim: int, temperature: float = 0.5, hidden: int = 512, out_dim: int = 128,
                 augment: dict | None = None):
        super().__init__(feat_dim, augment)
        if float(temperature) <= 0:
            raise ValueError(f"simclr: temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.projector = nn.Sequential(nn.Linear(self.feat_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature)
