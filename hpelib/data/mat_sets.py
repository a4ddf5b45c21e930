"""300W-LP and AFLW2000-3D: ``.jpg`` images with 3DDFA ``.mat`` labels.

Label file (MATLAB ``.mat``, read with :func:`scipy.io.loadmat`)
    ``Pose_Para``: ``[1, 7]``, the first three values pitch, yaw, roll in
    **radians**; we return (yaw, pitch, roll) **degrees**, the
    :mod:`hpelib.angles` convention. ``pt2d``: ``[2, L]`` 2D landmarks (row 0 x,
    row 1 y; L = 68 in 300W-LP, 21 in AFLW2000 where an invisible one is
    stored as ``(-1, 452)`` on these 450x450 images).

Face box (the reference protocol of Hopenet and 6DRepNet, the default)
    The min/max over **all** landmarks, invisible ones included, as both
    references' ``AFLW2000`` and ``Pose_300W_LP`` loaders do: on a face with
    invisible points the box reaches the left edge (x = -1) and below the
    bottom (y = 452). ``drop_invisible_landmarks=True`` gives the tighter box
    of the visible landmarks only (hpelib's former default; it is the frame
    that ``hpelib.predict``'s detector correction targets). On the 1000
    shared AFLW2000 images, 860 have an invisible landmark, and there the
    reference box is a median 2.9x larger in area.

Filter
    As Hopenet/6DRepNet, a sample is kept only if all three angles are within
    ``[-max_angle, max_angle]`` (``max_angle=99``; 1969 of the 2000 AFLW2000
    images). ``max_angle=None`` keeps everything.

Crops (see :mod:`hpelib.data.crops`)
    * 300W-LP, training: box enlarged by a random ``k`` in ``[0.2, 0.4)``
      with 6DRepNet's factors: left/right/bottom by ``0.6 k``, top by ``2 k``
      times the width/height. Evaluation (``train=False``): fixed ``eval_k``
      (default 0.3, the middle of the training range; the references never
      evaluate on 300W-LP, so this is our choice).
    * AFLW2000 (test crop of Hopenet and 6DRepNet): ``k = 0.2``, left, top
      and right by ``2 k``, bottom by ``0.6 k``. With ``train=True`` (k-fold
      training on AFLW2000) the same box is used and the training preset adds
      its random square, flip and jitter.

    The test crop of the box is the evaluation preset's centred square
    (Hopenet's ``Scale(224) + CenterCrop(224)``, :mod:`hpelib.data.transforms`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import scipy.io

from .base import FileSource, FixedRegions, PoseDataset, RandomEnlarge
from .crops import AFLW2000_FACTORS, LP300W_FACTORS, FaceBoxes, landmark_box
from .errors import DataError
from ..io import atomic_write

__all__ = ["LP300W_SUBSETS", "read_mat_label", "list_pairs", "load_300w_lp", "load_aflw2000"]

LP300W_SUBSETS = ("AFW", "AFW_Flip", "HELEN", "HELEN_Flip", "IBUG", "IBUG_Flip", "LFPW", "LFPW_Flip")


def read_mat_label(path) -> tuple[np.ndarray, np.ndarray]:
    """``(pose, pt2d)`` of a 3DDFA label file: (yaw, pitch, roll) degrees float64 and ``[2, L]`` landmarks."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: label file not found; every image needs its .mat file next to it "
                        "(see data/README.md)")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises many kinds (ValueError, TypeError, MatReadError, OSError)
        raise DataError(f"{path}: cannot read the .mat label file ({type(e).__name__}: {e}); "
                        "re-download the data set") from e
    for key in ("Pose_Para", "pt2d"):
        if key not in mat:
            raise DataError(f"{path}: missing '{key}' in the .mat file; this is not a 300W-LP/AFLW2000-3D "
                            "label file (re-download the data set)")
    para = np.asarray(mat["Pose_Para"], dtype=np.float64)
    if para.ndim != 2 or para.shape[0] < 1 or para.shape[1] < 3:
        raise DataError(f"{path}: 'Pose_Para' must have shape [1, 7] (pitch, yaw, roll, ...), got {para.shape}")
    pitch, yaw, roll = np.degrees(para[0, :3])
    pose = np.array([yaw, pitch, roll])
    if not np.isfinite(pose).all():
        raise DataError(f"{path}: 'Pose_Para' holds non-finite angles {para[0, :3].tolist()}")
    pt2d = np.asarray(mat["pt2d"], dtype=np.float64)
    if pt2d.ndim != 2 or pt2d.shape[0] != 2:
        raise DataError(f"{path}: 'pt2d' must have shape [2, L], got {pt2d.shape}")
    return pose, pt2d


def list_pairs(folder: Path, root: Path) -> list[tuple[str, Path, Path]]:
    """``(name, image, mat)`` for every ``*.jpg`` in ``folder`` (sorted); the ``.mat`` must exist."""
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(".jpg"):
            img = Path(entry.path)
            mat = img.with_suffix(".mat")
            if not mat.exists():
                raise DataError(f"{mat}: label file missing for image {img}; restore it or remove the image "
                                "(see data/README.md)")
            out.append((img.relative_to(root).as_posix(), img, mat))
    return out


def _read_labels(pairs, max_angle, drop_invisible, cache_dir=None):
    """Names, image paths, poses and landmark boxes of the samples that pass the filter.

    With ``cache_dir`` the parsed labels are stored in ``labels-<key>.npz``,
    keyed by every label file's path, size and modification time and by the
    filter settings, so that building the data set again (e.g. 122k 300W-LP
    files, about a minute) does not read the ``.mat`` files again.
    """
    index = None
    if cache_dir is not None:
        h = hashlib.sha1(repr((max_angle, drop_invisible)).encode())
        for name, _, mat in pairs:
            st = mat.stat()
            h.update(f"{name}|{mat}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        index = Path(cache_dir) / f"labels-{h.hexdigest()[:16]}.npz"
        if index.is_file():
            with np.load(index) as z:
                keep = z["keep"]
                return ([pairs[i][0] for i in keep], [pairs[i][1] for i in keep],
                        z["poses"].astype(np.float32), z["boxes"])
    keep, poses, boxes = [], [], []
    for i, (name, img, mat) in enumerate(pairs):
        pose, pt2d = read_mat_label(mat)
        if max_angle is not None and np.abs(pose).max() > max_angle:
            continue
        keep.append(i)
        poses.append(pose)
        boxes.append(landmark_box(pt2d, drop_invisible, where=str(mat)))
    poses = np.array(poses, dtype=np.float32).reshape(-1, 3)
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if index is not None:
        def save(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, keep=np.array(keep, dtype=np.int64), poses=poses, boxes=boxes)

        atomic_write(index, save)
    return [pairs[i][0] for i in keep], [pairs[i][1] for i in keep], poses, boxes


def _check_root(root, what, example):
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; download {what} and unpack it so that {example} exists "
                        "(see data/README.md)")
    return root


def load_300w_lp(root, preset, *, split="all", seed=0, cache_dir=None, cache_resolution=None, k_range=(0.2, 0.4),
                 eval_k=0.3, max_angle=99.0, drop_invisible_landmarks=False, subsets=LP300W_SUBSETS) -> PoseDataset:
    """300W-LP from ``root`` holding ``AFW/``, ``AFW_Flip/``, ``HELEN/`` ... (each ``*.jpg`` + ``*.mat``).

    A single set: ``split`` (part of every data set loader's signature) is ignored.
    """
    root = _check_root(root, "300W-LP", f"{Path(root) / 'AFW' / 'AFW_134212_1_0.jpg'}")
    unknown = [s for s in subsets if s not in LP300W_SUBSETS]
    if unknown:
        raise ValueError(f"unknown 300W-LP subsets {unknown}; valid: {list(LP300W_SUBSETS)}")
    pairs = []
    found = [s for s in subsets if (root / s).is_dir()]
    if not found:
        raise DataError(f"{root}: none of the 300W-LP folders {list(subsets)} is there; unpack 300W-LP so that "
                        f"{root / 'AFW'} exists (see data/README.md)")
    for s in found:
        pairs.extend(list_pairs(root / s, root))
    if not pairs:
        raise DataError(f"{root}: no .jpg images in {found}; the 300W-LP download is incomplete "
                        "(see data/README.md)")
    names, paths, poses, lm = _read_labels(pairs, max_angle, drop_invisible_landmarks, cache_dir)
    if not names:
        raise DataError(f"{root}: every sample was removed by the +-{max_angle} degree filter")
    faces = FaceBoxes(lm, eval_k, LP300W_FACTORS)
    regions = RandomEnlarge(lm, k_range, LP300W_FACTORS) if preset.train else FixedRegions(faces.regions())
    return PoseDataset(load=FileSource(paths), names=names, poses=poses, regions=regions, preset=preset, seed=seed,
                       cache_dir=cache_dir, cache_resolution=cache_resolution,
                       dataset_id=f"300w_lp:{root.resolve()}", face_boxes=faces)


def load_aflw2000(root, preset, *, split="all", seed=0, cache_dir=None, cache_resolution=None, k=0.2,
                  max_angle=99.0, drop_invisible_landmarks=False, k_range=None) -> PoseDataset:
    """AFLW2000-3D from a flat folder of ``imageNNNNN.jpg`` + ``imageNNNNN.mat`` (a single set: ``split`` is ignored).

    ``k_range=(lo, hi)``, training only (k-fold training on AFLW2000): each item's box is enlarged by a random
    ``k`` in ``[lo, hi)`` with AFLW2000's factors instead of the fixed ``k``, as 300W-LP's training boxes are
    (Hopenet's random loose crop); the test crop keeps ``k``.
    """
    root = _check_root(root, "AFLW2000-3D", f"{Path(root) / 'image00002.jpg'}")
    pairs = list_pairs(root, root)
    if not pairs:
        raise DataError(f"{root}: no .jpg images; download AFLW2000-3D and unpack it so that "
                        f"{root / 'image00002.jpg'} exists (see data/README.md)")
    names, paths, poses, lm = _read_labels(pairs, max_angle, drop_invisible_landmarks, cache_dir)
    if not names:
        raise DataError(f"{root}: every sample was removed by the +-{max_angle} degree filter")
    faces = FaceBoxes(lm, k, AFLW2000_FACTORS)
    regions = (RandomEnlarge(lm, k_range, AFLW2000_FACTORS) if preset.train and k_range is not None
               else FixedRegions(faces.regions()))
    return PoseDataset(load=FileSource(paths), names=names, poses=poses, regions=regions,
                       preset=preset, seed=seed, cache_dir=cache_dir, cache_resolution=cache_resolution,
                       dataset_id=f"aflw2000:{root.resolve()}", face_boxes=faces)
