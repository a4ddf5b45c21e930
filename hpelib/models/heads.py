"""Pose heads and their losses: feature ``[B, feat_dim]`` -> output -> (loss against labels, angles).

Every head is a :class:`PoseHead` (the interface the HMTL model uses),
registered by name in :data:`POSE_HEADS` and built by
``build_pose_head(name, feat_dim, **options)``; its options are its
constructor's keyword parameters after ``feat_dim``.

``binned`` (Hopenet, Ruiz et al. 2018)
    Three linear classifiers (yaw, pitch, roll) over 66 bins of 3 degrees
    covering [-99, 99) (bin ``i`` = [-99 + 3i, -96 + 3i)). Loss per angle =
    cross-entropy on the label's bin + ``alpha`` * MSE (degrees^2) between the
    softmax expected value and the label, summed over the three angles as
    Hopenet does. Choices where Hopenet's code differs or the paper is silent:
    the expected value uses the bin **centres** (-97.5 + 3i; Hopenet's code
    uses the left edges, ``3i - 99``, a constant 1.5 degree bias); labels
    outside the range go to the first/last bin and are clamped to the
    representable range [-97.5, 97.5] for the MSE (Hopenet drops such samples
    from its lists instead). Default ``alpha=0.01``, chosen by measurement on
    the baseline alone (docs/STUDY.md, "Loss scales"): the MSE term is then of
    the order of the cross-entropy (at initialisation ~10 against ~12.6 for
    the three angles) instead of ~80x larger with alpha 1, so SSL weights next
    to it mean what they say. Hopenet's paper compares alpha in {0.001 ... 2},
    its released models use 1 and 2, its script's default is 0.001.
``regression``
    ``Linear(feat_dim, 3)`` times ``scale`` (default 10: the linear layer
    works in units of 10 degrees, so labels of up to ~100 degrees need outputs
    of order 10, not 100, while a larger scale makes the first Adam steps
    overshoot; 1 = plain degrees), L1 loss in degrees averaged over
    angles (``loss="l1"``, default: it is the MAE that is reported; ``"mse"``
    gives the mean squared error in degrees^2).
``6d`` (6DRepNet, Hempel et al. 2022)
    ``Linear(feat_dim, 6)`` -> Gram-Schmidt -> rotation matrix
    (:func:`hpelib.angles.sixd_to_matrix`), geodesic loss in **radians**
    against ``euler_to_matrix(label)`` (the arccos argument clamped to
    ``[-1 + eps, 1 - eps]`` as 6DRepNet does, so gradients stay finite);
    angles from :func:`hpelib.angles.matrix_to_euler`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hpelib.angles import euler_to_matrix, matrix_to_euler, sixd_to_matrix
from hpelib.registry import Registry

__all__ = ["POSE_HEADS", "PoseHead", "BinnedHead", "RegressionHead", "SixDHead", "build_pose_head",
           "geodesic_loss"]

POSE_HEADS = Registry("pose head", supplied=("feat_dim",))
"""The pose heads by name; add one with ``@POSE_HEADS.register(name)`` on a :class:`PoseHead` subclass."""


class PoseHead(nn.Module):
    """Base class of the pose heads: backbone features -> head output -> (loss, angles).

    What :class:`hpelib.models.HMTLModel` calls:

    * ``__init__(feat_dim, **options)``: ``feat_dim`` is supplied by the model
      (the backbone's feature size); the other keyword parameters are the
      head's ``pose_options``;
    * ``forward(features) -> output``: ``features`` ``[B, feat_dim]``; the
      output may be any tensor (logits, angles, matrices ...);
    * ``loss(output, poses) -> 0-d tensor``: ``poses`` ``[B, 3]`` float32 (yaw,
      pitch, roll) degrees, all finite (unlabelled samples never reach it);
    * ``predict(output) -> [B, 3]``: (yaw, pitch, roll) degrees, differentiable.

    A head must own at least one parameter: a batch without labels gives a
    zero pose loss built from the head's parameters, which keeps them in the
    graph (DDP).
    """

    def __init__(self, feat_dim: int):
        super().__init__()
        if int(feat_dim) <= 0:
            raise ValueError(f"feat_dim must be a positive integer, got {feat_dim!r}")
        self.feat_dim = int(feat_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@POSE_HEADS.register("binned")
class BinnedHead(PoseHead):
    def __init__(self, feat_dim: int, alpha: float = 0.01, num_bins: int = 66, bin_width: float = 3.0,
                 low: float = -99.0):
        super().__init__(feat_dim)
        if float(alpha) < 0:
            raise ValueError(f"binned head: alpha must be >= 0, got {alpha!r}")
        self.alpha, self.num_bins, self.bin_width, self.low = float(alpha), int(num_bins), float(bin_width), float(low)
        self.fc = nn.Linear(feat_dim, 3 * self.num_bins)
        self.register_buffer("centers", self.low + self.bin_width * (torch.arange(self.num_bins) + 0.5), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 3, num_bins]``."""
        return self.fc(features).reshape(-1, 3, self.num_bins)

    def bin_index(self, poses: torch.Tensor) -> torch.Tensor:
        """Bin of each angle ``[B, 3]`` int64, clamped to ``0..num_bins-1``."""
        idx = torch.floor((poses - self.low) / self.bin_width)
        return idx.clamp(0, self.num_bins - 1).long()

    def expected(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax expected value in degrees ``[B, 3]``."""
        return (logits.float().softmax(-1) * self.centers).sum(-1)

    def loss(self, logits: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float().reshape(-1, self.num_bins), self.bin_index(poses).reshape(-1),
                             reduction="none").reshape(-1, 3).mean(0)
        lim = float(self.centers[-1])
        mse = (self.expected(logits) - poses.clamp(-lim, lim)).pow(2).mean(0)
        return (ce + self.alpha * mse).sum()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return self.expected(logits)


@POSE_HEADS.register("regression")
class RegressionHead(PoseHead):
    LOSSES = ("l1", "mse")

    def __init__(self, feat_dim: int, loss: str = "l1", scale: float = 10.0):
        super().__init__(feat_dim)
        if loss not in self.LOSSES:
            raise ValueError(f"regression head: loss must be one of {self.LOSSES}, got {loss!r}")
        self.loss_name, self.scale = loss, float(scale)
        self.fc = nn.Linear(feat_dim, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Angles in degrees ``[B, 3]``."""
        return self.fc(features).float() * self.scale

    def loss(self, out: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "l1":
            return F.l1_loss(out, poses)
        return F.mse_loss(out, poses)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out


def geodesic_loss(r_pred: torch.Tensor, r_true: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean geodesic distance in radians between ``[B, 3, 3]`` rotation matrices (6DRepNet's loss)."""
    trace = (r_pred.transpose(-1, -2) @ r_true).diagonal(dim1=-2, dim2=-1).sum(-1)
    cos = ((trace - 1) / 2).clamp(-1 + eps, 1 - eps)
    return torch.acos(cos).mean()


@POSE_HEADS.register("6d")
class SixDHead(PoseHead):
    def __init__(self, feat_dim: int):
        super().__init__(feat_dim)
        self.fc = nn.Linear(feat_dim, 6)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Rotation matrices ``[B, 3, 3]``."""
        return sixd_to_matrix(self.fc(features).float())

    def loss(self, matrices: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        return geodesic_loss(matrices, euler_to_matrix(poses.float()))

    def predict(self, matrices: torch.Tensor) -> torch.Tensor:
        return matrix_to_euler(matrices)


def build_pose_head(name: str, feat_dim: int, **options) -> PoseHead:
    """Build the pose head ``name`` for features of size ``feat_dim`` (``ValueError`` for unknown names/options)."""
    return POSE_HEADS.build(name, feat_dim, **options)
