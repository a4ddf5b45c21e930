"""The one angle convention of hpelib.

Poses are ``(yaw, pitch, roll)`` in **degrees**, in that order, everywhere in the
package (tensors of shape ``[..., 3]``), with the signs that 300W-LP and
AFLW2000-3D store in ``Pose_Para[0][:3]`` (which holds pitch, yaw, roll in
radians: the readers reorder it).

The rotation matrix of a pose is ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` with the
right-handed elementary rotations below. This is the matrix that 3DDFA,
Hopenet and 6DRepNet build from the labels and the one 6DRepNet's geodesic loss
compares. Looking at the image (x to the right, y up, z towards the viewer), the
head model is turned by ``R.T`` (3DDFA's MATLAB code applies the transpose),
which gives these visible meanings:

* positive yaw: the nose turns to the image's left;
* positive pitch: the face looks up;
* positive roll: the head tilts clockwise in the image.

A horizontal flip of the image negates yaw and roll and keeps pitch.

Every function accepts ``torch.Tensor`` or ``numpy`` input and returns the same
kind (float64 numpy stays float64).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "sixd_to_matrix",
    "matrix_to_sixd",
    "flip_pose",
    "wrap_degrees",
    "alternative_euler",
    "geodesic_degrees",
    "head_rotation",
    "project_axes",
]


def _as_tensor(x):
    if isinstance(x, torch.Tensor):
        return x, False
    arr = np.asarray(x)
    dtype = torch.float64 if arr.dtype == np.float64 else torch.float32
    return torch.as_tensor(arr, dtype=dtype), True


def _back(t: torch.Tensor, was_numpy: bool):
    return t.detach().cpu().numpy() if was_numpy else t


def _check_last(t: torch.Tensor, size: int, what: str):
    if t.shape[-1] != size:
        raise ValueError(f"{what} must have a last dimension of {size}, got shape {tuple(t.shape)}")


def euler_to_matrix(angles):
    """``[..., 3]`` (yaw, pitch, roll) degrees -> ``[..., 3, 3]`` with R = Rz(roll) Ry(yaw) Rx(pitch)."""
    t, np_in = _as_tensor(angles)
    _check_last(t, 3, "angles")
    rad = torch.deg2rad(t if t.is_floating_point() else t.float())
    y, p, r = rad.unbind(-1)
    cy, sy = torch.cos(y), torch.sin(y)
    cp, sp = torch.cos(p), torch.sin(p)
    cr, sr = torch.cos(r), torch.sin(r)
    rows = [
        torch.stack([cr * cy, cr * sy * sp - sr * cp, cr * sy * cp + sr * sp], -1),
        torch.stack([sr * cy, sr * sy * sp + cr * cp, sr * sy * cp - cr * sp], -1),
        torch.stack([-sy, cy * sp, cy * cp], -1),
    ]
    return _back(torch.stack(rows, -2), np_in)


def matrix_to_euler(matrix):
    """``[..., 3, 3]`` -> ``[..., 3]`` (yaw, pitch, roll) degrees, yaw in [-90, 90].

    The inverse of :func:`euler_to_matrix` on its principal branch (the one
    6DRepNet's ``compute_euler_angles_from_rotation_matrices`` returns).
    """
    t, np_in = _as_tensor(matrix)
    if t.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must have shape [..., 3, 3], got {tuple(t.shape)}")
    sy = torch.sqrt(t[..., 0, 0] ** 2 + t[..., 1, 0] ** 2)
    yaw = torch.atan2(-t[..., 2, 0], sy)
    singular = sy < 1e-6
    pitch = torch.where(singular, torch.atan2(-t[..., 1, 2], t[..., 1, 1]), torch.atan2(t[..., 2, 1], t[..., 2, 2]))
    roll = torch.where(singular, torch.zeros_like(yaw), torch.atan2(t[..., 1, 0], t[..., 0, 0]))
    return _back(torch.rad2deg(torch.stack([yaw, pitch, roll], -1)), np_in)


def sixd_to_matrix(x):
    """6D representation (two first columns of R, Zhou et al. 2019) -> rotation matrix.

    Gram-Schmidt on the two 3-vectors, as in 6DRepNet: ``x[..., :3]`` is the
    first column, ``x[..., 3:]`` the second.
    """
    t, np_in = _as_tensor(x)
    _check_last(t, 6, "6D representation")
    a1, a2 = t[..., :3], t[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return _back(torch.stack([b1, b2, b3], -1), np_in)


def matrix_to_sixd(matrix):
    """Rotation matrix -> 6D representation (its first two columns, concatenated)."""
    t, np_in = _as_tensor(matrix)
    return _back(torch.cat([t[..., :, 0], t[..., :, 1]], -1), np_in)


def flip_pose(angles):
    """Pose of the horizontally mirrored image: yaw and roll change sign."""
    t, np_in = _as_tensor(angles)
    _check_last(t, 3, "angles")
    sign = torch.tensor([-1.0, 1.0, -1.0], dtype=t.dtype, device=t.device)
    return _back(t * sign, np_in)


def wrap_degrees(x):
    """Wrap angles (degrees) into [-180, 180)."""
    t, np_in = _as_tensor(x)
    return _back(torch.remainder(t + 180.0, 360.0) - 180.0, np_in)


def alternative_euler(angles):
    """The other Euler triplet of the same rotation: (180 - yaw, pitch + 180, roll + 180), wrapped.

    Every rotation away from gimbal lock has exactly two (yaw, pitch, roll)
    triplets under R = Rz Ry Rx; metrics compare against the closer one.
    """
    t, np_in = _as_tensor(angles)
    _check_last(t, 3, "angles")
    y, p, r = t.unbind(-1)
    alt = torch.stack([180.0 - y, p + 180.0, r + 180.0], -1)
    return _back(wrap_degrees(alt), np_in)


def geodesic_degrees(r1, r2):
    """Angle (degrees) of the rotation taking ``r1`` to ``r2``; both ``[..., 3, 3]``."""
    a, np_in = _as_tensor(r1)
    b, _ = _as_tensor(r2)
    b = b.to(a.dtype)
    trace = (a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1)
    cos = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0)
    return _back(torch.rad2deg(torch.acos(cos)), np_in)


def head_rotation(angles):
    """Rotation that turns a frontal head model into the posed head, in view coordinates.

    View coordinates: x to the image's right, y up, z towards the viewer. A
    frontal model has its nose along +z and the top of its head along +y. This
    is ``R.T`` (see the module docstring); the synthetic renderer and
    :func:`project_axes` use it so that drawings and renders follow the labels.
    """
    m = euler_to_matrix(angles)
    return m.swapaxes(-1, -2) if isinstance(m, np.ndarray) else m.transpose(-1, -2)


def project_axes(angles, size: float = 1.0):
    """Image-plane directions (x right, y **down**, as for drawing) of the head's axes.

    Returns ``[..., 3, 2]``: rows are the head's x axis (towards the image's
    right at a frontal pose), its y axis (up, towards the top of the head) and
    its z axis (out of the face, along the nose), each scaled by ``size``.
    """
    m = head_rotation(angles)
    t, np_in = _as_tensor(m)
    cols = t.transpose(-1, -2)[..., :2]  # row i = image of head axis i: (x, y_up)
    flip = torch.tensor([1.0, -1.0], dtype=t.dtype, device=t.device)
    return _back(cols * flip * size, np_in)
