"""BIWI Kinect Head Pose: the raw database and FSA-Net's preprocessed ``.npz`` files.

Raw layout (``kinect_head_pose_db/hpdb``)
    ``ROOT/<seq>/frame_XXXXX_rgb.png`` with ``frame_XXXXX_pose.txt`` (a 3x3
    rotation matrix, then the head centre in mm, in the depth camera's
    frame) and one ``ROOT/<seq>/rgb.cal`` per sequence (3x3 intrinsics K, 4
    distortion values, extrinsic rotation ``R_e`` and translation ``T_e`` in mm,
    image size). ``ROOT`` may also be a single sequence folder.

    Angles: the Hopenet / FSA-Net conversion of the file's matrix ``M``,
    ``R = M.T; roll = -atan2(R10, R00); yaw = -atan2(-R20, sqrt(R21^2 + R22^2));
    pitch = atan2(R21, R22)``, which equals ``flip_pose(matrix_to_euler(M.T))``
    in :mod:`hpelib.angles` (that is how we compute it). Frame 00054 of
    sequence 12 gives yaw 32.28, pitch 21.55, roll 9.13 degrees.

    Crop: the head centre ``c`` is moved into the colour camera with
    ``R_e @ c + T_e`` (checked on the sample frames: with this direction the
    depth points of the head land exactly on the face in the colour image;
    the inverse direction is off by ~20 px) and projected with K. The face
    region is a square of ``box_mm`` (default 300 mm: a head from chin to crown is
    about 230 mm, plus margin, close to the loose crops of 300W-LP
    training) centred on that point, i.e. ``fx * box_mm / z`` pixels wide.
    This is our choice: the references crop BIWI with a face detector.

    Protocol 2 split (FSA-Net's 70/30, 16 train / 8 test sequences): by
    default (``split_seed=None``) the fixed split of FSA-Net's data
    preparation, which takes the sequence folders in order: ``split="train"``
    is sequences 01-16 (:data:`FSANET_TRAIN_SEQUENCES`), ``"test"`` is 17-24
    (:data:`FSANET_TEST_SEQUENCES`). ``split_seed=S`` instead shuffles the
    sorted folders with ``numpy.random.default_rng(S)`` and takes the first
    ``round(train_fraction * n)`` for training (folders with other names, or
    other fractions). Whole sequences, never frames, so no person/session is
    in both. ``"all"`` takes every sequence (protocol 1 evaluation).

FSA-Net ``.npz`` (``BIWI_train.npz``, ``BIWI_test.npz``, ``BIWI_noTrack.npz``)
    keys ``image`` uint8 ``[N, 64, 64, 3]`` in **BGR** order (OpenCV) and
    ``pose`` ``[N, 3]`` (yaw, pitch, roll) degrees; we swap to RGB. ``ROOT`` is
    an ``.npz`` file, or a folder with ``BIWI_<split>.npz`` (``"all"`` ->
    ``BIWI_noTrack.npz``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..angles import flip_pose, matrix_to_euler
from .base import ArraySource, FileSource, FixedRegions, PoseDataset
from .errors import DataError

__all__ = ["FSANET_TRAIN_SEQUENCES", "FSANET_TEST_SEQUENCES", "read_biwi_pose", "read_biwi_calibration",
           "biwi_face_box", "biwi_sequence_split", "load_biwi", "load_biwi_raw", "load_biwi_npz"]

_FRAME = re.compile(r"^frame_(\d+)_rgb\.png$")
NPZ_FILES = {"train": "BIWI_train.npz", "test": "BIWI_test.npz", "all": "BIWI_noTrack.npz"}


def _numbers(path: Path, what: str, need: int) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: {what} not found; every BIWI sequence folder needs it (see data/README.md)")
    try:
        vals = np.array(path.read_text().split(), dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: {what} does not parse as numbers ({e}); re-download BIWI") from e
    if vals.size < need:
        raise DataError(f"{path}: {what} holds {vals.size} numbers, expected at least {need}; re-download BIWI")
    return vals


def read_biwi_pose(path) -> tuple[np.ndarray, np.ndarray]:
    """``(pose, centre)``: (yaw, pitch, roll) degrees (Hopenet/FSA-Net convention) and the head centre (mm)."""
    path = Path(path)
    vals = _numbers(path, "pose file", 12)
    m = vals[:9].reshape(3, 3)
    pose = flip_pose(matrix_to_euler(m.T))
    return pose, vals[9:12]


def read_biwi_calibration(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, R_e, T_e)`` of an ``rgb.cal`` file."""
    vals = _numbers(Path(path), "calibration file", 25)
    return vals[:9].reshape(3, 3), vals[13:22].reshape(3, 3), vals[22:25]


def biwi_face_box(centre, calibration, box_mm: float = 300.0) -> np.ndarray:
    """Square face box (x0, y0, x1, y1) in colour-image pixels around the projected head centre."""
    k, r_e, t_e = calibration
    p = r_e @ np.asarray(centre, dtype=np.float64) + t_e
    if p[2] <= 0:
        raise DataError(f"head centre {centre} is behind the camera; the pose file is corrupt")
    u = k @ p
    cx, cy = u[0] / u[2], u[1] / u[2]
    half = 0.5 * k[0, 0] * box_mm / p[2]
    return np.array([cx - half, cy - half, cx + half, cy + half])


#: FSA-Net's BIWI protocol 2 (70/30): the first 16 of the 24 sequence folders train, the last 8 test
FSANET_TRAIN_SEQUENCES = tuple(f"{i:02d}" for i in range(1, 17))
FSANET_TEST_SEQUENCES = tuple(f"{i:02d}" for i in range(17, 25))


def biwi_sequence_split(sequences, split: str, train_fraction: float = 0.7, split_seed: int | None = None) -> list:
    """The sequences of ``split`` ("train", "test" or "all"): FSA-Net's fixed split, or a seeded one."""
    seqs = sorted(sequences)
    if split == "all":
        return seqs
    if split not in ("train", "test"):
        raise ValueError(f"BIWI split must be 'train', 'test' or 'all', got {split!r}")
    if split_seed is None:
        other = [s for s in seqs if s not in FSANET_TRAIN_SEQUENCES + FSANET_TEST_SEQUENCES + (".",)]
        if other:
            raise DataError(f"BIWI sequence folders {other} are not among FSA-Net's 01..24; their fixed split "
                            "cannot place them: pass split_seed=<int> for a seeded split of your folders")
        keep = FSANET_TRAIN_SEQUENCES if split == "train" else FSANET_TEST_SEQUENCES
        return [s for s in seqs if s in keep]
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    order = np.random.default_rng(split_seed).permutation(len(seqs))
    n_train = int(round(train_fraction * len(seqs)))
    chosen = order[:n_train] if split == "train" else order[n_train:]
    return sorted(seqs[i] for i in chosen)


def _frames(folder: Path):
    return sorted(p for p in folder.iterdir() if _FRAME.match(p.name))


def load_biwi_raw(root, preset, *, split="all", seed=0, cache_dir=None, cache_resolution=None, box_mm=300.0,
                  train_fraction=0.7, split_seed=None) -> PoseDataset:
    root = Path(root)
    if _frames(root):
        sequences = {".": root}
    else:
        sequences = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _frames(p)}
    if not sequences:
        raise DataError(f"{root}: no BIWI frames (frame_XXXXX_rgb.png) here or in its sub-folders; unpack "
                        "kinect_head_pose_db so that ROOT/01/frame_00003_rgb.png exists (see data/README.md)")
    chosen = biwi_sequence_split(sequences, split, train_fraction, split_seed)
    if not chosen:
        raise DataError(f"{root}: the {split!r} split has no sequence ({len(sequences)} found: "
                        f"{sorted(sequences)}); with a single sequence use split='all'")
    names, paths, poses, boxes = [], [], [], []
    for seq in chosen:
        folder = sequences[seq]
        cal = read_biwi_calibration(folder / "rgb.cal")
        for img in _frames(folder):
            pose, centre = read_biwi_pose(img.with_name(img.name.replace("_rgb.png", "_pose.txt")))
            names.append(img.relative_to(root).as_posix())
            paths.append(img)
            poses.append(pose)
            boxes.append(biwi_face_box(centre, cal, box_mm))
    return PoseDataset(load=FileSource(paths), names=names, poses=np.array(poses), regions=FixedRegions(
        np.array(boxes)), preset=preset, seed=seed, cache_dir=cache_dir, cache_resolution=cache_resolution,
        dataset_id=f"biwi:{root.resolve()}:{box_mm}")


def load_biwi_npz(path, preset, *, seed=0, cache_dir=None, cache_resolution=None) -> PoseDataset:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in ("image", "pose") if k not in d.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {missing} (found {d.files}); expected FSA-Net's BIWI "
                                "npz with 'image' [N,64,64,3] BGR uint8 and 'pose' [N,3]")
            images, pose = d["image"], d["pose"]
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; see data/README.md for the BIWI .npz files") from None
    except Exception as e:
        raise DataError(f"{path}: cannot read the .npz file ({type(e).__name__}: {e}); re-create it") from e
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"{path}: 'image' must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    pose = np.asarray(pose, dtype=np.float32)
    if pose.shape != (len(images), 3):
        raise DataError(f"{path}: 'pose' must be [N, 3] = [{len(images)}, 3], got {pose.shape}")
    if len(images) == 0:
        raise DataError(f"{path}: holds no images")
    names = [f"{path.name}:{i:05d}" for i in range(len(images))]
    return PoseDataset(load=ArraySource(images, bgr=True), names=names, poses=pose, regions=FixedRegions(None),
                       preset=preset, seed=seed, cache_dir=cache_dir, cache_resolution=cache_resolution,
                       dataset_id=f"biwi_npz:{path.resolve()}")


def load_biwi(root, preset, *, split="all", seed=0, cache_dir=None, cache_resolution=None, format="auto",
              box_mm=300.0, train_fraction=0.7, split_seed: int | None = None) -> PoseDataset:
    """BIWI from ``root``: raw Kinect folders or FSA-Net ``.npz`` (``format`` "auto", "raw" or "npz").

    ``box_mm``, ``train_fraction`` and ``split_seed`` apply to the raw folders
    (:func:`load_biwi_raw`; ``split_seed=None``: FSA-Net's fixed 16/8 split,
    ``train_fraction`` is then unused); the ``.npz`` files come cropped and split.
    """
    root = Path(root)
    if format not in ("auto", "raw", "npz"):
        raise ValueError(f"BIWI format must be 'auto', 'raw' or 'npz', got {format!r}")
    if not root.exists():
        raise DataError(f"{root}: not found; download BIWI (raw kinect_head_pose_db or FSA-Net's BIWI_*.npz) "
                        "and put it there (see data/README.md)")
    common = dict(seed=seed, cache_dir=cache_dir, cache_resolution=cache_resolution)
    if root.is_file():
        if format == "raw":
            raise DataError(f"{root}: is a file; format='raw' needs the kinect_head_pose_db folder")
        return load_biwi_npz(root, preset, **common)
    if format == "npz" or (format == "auto" and any(root.glob("*.npz")) and not _frames(root)
                           and not any(p.is_dir() and _frames(p) for p in root.iterdir())):
        if split not in NPZ_FILES:
            raise ValueError(f"BIWI split must be one of {sorted(NPZ_FILES)}, got {split!r}")
        f = root / NPZ_FILES[split]
        if not f.exists():
            raise DataError(f"{f}: not found for split {split!r}; .npz files here: "
                            f"{sorted(p.name for p in root.glob('*.npz'))} (see data/README.md)")
        return load_biwi_npz(f, preset, **common)
    return load_biwi_raw(root, preset, split=split, **common, box_mm=box_mm, train_fraction=train_fraction,
                         split_seed=split_seed)
