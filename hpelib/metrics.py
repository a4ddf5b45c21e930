"""Head pose errors, computed per sample and then averaged.

Per-angle absolute error
    A rotation has two (yaw, pitch, roll) triplets under R = Rz Ry Rx (see
    :func:`hpelib.angles.alternative_euler`). For each sample the prediction is
    written in the triplet closer to the ground truth (smaller sum of wrapped
    absolute differences), and each angle difference is wrapped into
    [-180, 180) before taking its absolute value. A prediction of yaw 179 for a
    label of -179 therefore costs 2 degrees, and a prediction that equals the
    label's other triplet costs nothing.

Geodesic error
    The angle of the rotation between the predicted and true matrices; it has
    no representation ambiguity at all.

Means are taken over samples (:func:`summarize`), so the figures do not
depend on the batch size used to compute the predictions. A pose whose angles
are not all finite (NaN) marks an unlabelled sample: :func:`labelled_rows`.
"""
from __future__ import annotations

import numpy as np
import torch

from .angles import alternative_euler, euler_to_matrix, geodesic_degrees, wrap_degrees

ANGLE_NAMES = ("yaw", "pitch", "roll")


def angle_errors(pred, target) -> np.ndarray:
    """Per-sample absolute errors ``[N, 3]`` (yaw, pitch, roll) in degrees."""
    p = np.asarray(torch.as_tensor(pred).detach().cpu(), dtype=np.float64).reshape(-1, 3)
    t = np.asarray(torch.as_tensor(target).detach().cpu(), dtype=np.float64).reshape(-1, 3)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and targets {t.shape} differ in shape")
    direct = np.abs(wrap_degrees(p - t))
    other = np.abs(wrap_degrees(alternative_euler(p) - t))
    use_other = other.sum(1) < direct.sum(1)
    return np.where(use_other[:, None], other, direct)


def geodesic_errors(pred, target) -> np.ndarray:
    """Per-sample geodesic errors ``[N]`` in degrees.

    Each argument is Euler angles (``[3]`` or ``[N, 3]``) or rotation matrices
    (``[N, 3, 3]``; a 2-D array is always read as Euler angles).
    """
    return geodesic_degrees(_matrices(pred), _matrices(target))


def _matrices(x) -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().cpu(), dtype=np.float64)
    if a.ndim >= 3 and a.shape[-2:] == (3, 3):
        return a.reshape(-1, 3, 3)
    return euler_to_matrix(a.reshape(-1, 3))


def labelled_rows(poses) -> np.ndarray:
    """Boolean mask ``[N]`` of the rows of ``poses [N, 3]`` that carry a label (all three angles finite)."""
    return np.isfinite(np.asarray(poses, dtype=np.float64).reshape(-1, 3)).all(1)


def summarize(pred, target) -> dict:
    """Mean errors: ``yaw``, ``pitch``, ``roll``, ``mae`` (mean of the three) and ``geodesic``, plus ``n``."""
    e = angle_errors(pred, target)
    g = geodesic_errors(pred, target)
    return summarize_errors(e, g)


def summarize_errors(angle_err: np.ndarray, geo_err: np.ndarray) -> dict:
    if len(angle_err) == 0:
        raise ValueError("no samples to summarize")
    means = angle_err.mean(0)
    out = {name: float(v) for name, v in zip(ANGLE_NAMES, means)}
    out["mae"] = float(means.mean())
    out["geodesic"] = float(np.mean(geo_err))
    out["n"] = int(len(angle_err))
    return out
