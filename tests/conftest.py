"""Shared test fixtures: where the real data lives, and tiny data sets in the real formats.

Real data (read-only, never copied): ``$HPELIB_SHARED_DATA`` if set, else
``<repo>/../shared/data``. The ``shared_data`` fixture returns that folder and
skips the test when it is absent; ``shared_aflw2000``, ``shared_biwi`` and
``shared_unlabeled`` return its sub-folders (skipping when missing).

Tiny data (session-scoped, written once into a temporary folder, treat as
read-only; copy with ``shutil.copytree`` before modifying):
``tiny_aflw2000`` (5 images, 2 beyond +-99 degrees), ``tiny_300w_lp`` (AFW,
AFW_Flip, HELEN, plus a ``landmarks/`` folder that readers must ignore),
``tiny_biwi_raw`` (4 sequences x 2 frames), ``tiny_biwi_npz``
(``BIWI_train.npz``/``BIWI_test.npz``), ``tiny_faces`` (nested folder of
jpg/png). The labels each fixture wrote are in ``TINY_LABELS``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HPELIB_SHARED_DATA", REPO.parent / "shared" / "data"))

# (yaw, pitch, roll) degrees written into the tiny label files, by relative name
TINY_LABELS: dict[str, dict[str, tuple]] = {
    "aflw2000": {
        "image00001.jpg": (10.0, -5.0, 3.0),
        "image00002.jpg": (45.0, 20.0, -10.0),
        "image00003.jpg": (-120.0, 0.0, 0.0),  # removed by the +-99 filter
        "image00004.jpg": (0.0, 100.0, 0.0),  # removed by the +-99 filter
        "image00005.jpg": (-30.0, 60.0, 15.0),
    },
    "300w_lp": {
        "AFW/AFW_1_0.jpg": (5.0, 1.0, 2.0),
        "AFW/AFW_1_1.jpg": (25.0, -10.0, 4.0),
        "AFW_Flip/AFW_1_0.jpg": (-5.0, 1.0, -2.0),
        "HELEN/HELEN_7_0.jpg": (-60.0, 30.0, -20.0),
        "HELEN/HELEN_7_1.jpg": (98.0, 0.0, 0.0),
        "HELEN/HELEN_7_2.jpg": (0.0, 0.0, -99.5),  # removed by the +-99 filter
    },
}


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set HPELIB_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test when it is absent."""
    return _require(SHARED_DATA, "shared data")


@pytest.fixture(scope="session")
def shared_aflw2000(shared_data) -> Path:
    return _require(shared_data / "aflw2000", "shared AFLW2000 files")


@pytest.fixture(scope="session")
def shared_biwi(shared_data) -> Path:
    return _require(shared_data / "biwi_sample", "shared BIWI sample frames")


@pytest.fixture(scope="session")
def shared_unlabeled(shared_data) -> Path:
    return _require(shared_data / "aflw_unlabeled", "shared unlabeled AFLW crops")


# --------------------------------------------------------------------------- writers
def smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: red grows with x, green with y, blue a seed-dependent constant."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    b = np.full((height, width), (37 * seed) % 200 + 30.0)
    return np.stack([x, y, b], -1).round().astype(np.uint8)


def write_jpg(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def write_mat(path: Path, pose_ypr_deg, pt2d) -> None:
    """A 3DDFA-style label: Pose_Para [1, 7] (pitch, yaw, roll radians, ...) and pt2d."""
    import scipy.io

    yaw, pitch, roll = np.radians(pose_ypr_deg)
    para = np.array([[pitch, yaw, roll, 0.0, 0.0, 0.0, 1.0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"Pose_Para": para, "pt2d": np.asarray(pt2d, dtype=np.float64)})


def face_landmarks(n: int, box=(40, 30, 80, 75), invisible=()) -> np.ndarray:
    """[2, n] landmarks spread over ``box`` (corners included); indices in ``invisible`` set to -1."""
    x0, y0, x1, y1 = box
    t = np.linspace(0, 1, n)
    pts = np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * ((t * 7) % 1)])
    pts[:, 0] = (x0, y0)
    pts[:, -1] = (x1, y1)
    for i in invisible:
        pts[:, i] = -1
    return pts


@pytest.fixture(scope="session")
def tiny_aflw2000(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aflw2000")
    for i, (name, pose) in enumerate(TINY_LABELS["aflw2000"].items()):
        write_jpg(root / name, smooth_image(120, 100, i))
        write_mat((root / name).with_suffix(".mat"), pose, face_landmarks(21, invisible=(3, 7) if i == 1 else ()))
    return root


@pytest.fixture(scope="session")
def tiny_300w_lp(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("300w_lp")
    for i, (name, pose) in enumerate(TINY_LABELS["300w_lp"].items()):
        write_jpg(root / name, smooth_image(100, 90, i))
        write_mat((root / name).with_suffix(".mat"), pose, face_landmarks(68, box=(30, 35, 70, 70)))
    # 300W-LP ships landmark-only .mat files in landmarks/: readers must not walk it
    import scipy.io

    (root / "landmarks" / "AFW").mkdir(parents=True)
    scipy.io.savemat(str(root / "landmarks" / "AFW" / "AFW_1_0_pts.mat"), {"pts_2d": np.zeros((68, 2))})
    write_jpg(root / "landmarks" / "AFW" / "stray.jpg", smooth_image(10, 10))
    return root


BIWI_K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
BIWI_T = np.array([5.0, -3.0, 0.0])


def write_biwi_cal(path: Path, k=BIWI_K, r=np.eye(3), t=BIWI_T) -> None:
    lines = [" ".join(f"{v:g}" for v in row) + " " for row in k]
    lines += ["", "0 0 0 0 ", ""]
    lines += [" ".join(f"{v:g}" for v in row) + " " for row in r]
    lines += ["", " ".join(f"{v:g}" for v in t) + " ", "", "160 120"]
    path.write_text("\n".join(lines) + "\n")


def write_biwi_pose(path: Path, matrix, centre) -> None:
    rows = [" ".join(f"{v:.7g}" for v in row) + " " for row in np.asarray(matrix)]
    path.write_text("\n".join(rows) + "\n\n" + " ".join(f"{v:g}" for v in centre) + " \n")


@pytest.fixture(scope="session")
def tiny_biwi_raw(tmp_path_factory) -> Path:
    """4 sequences (01..04) x 2 frames; the pose matrices are in ``<root>/matrices.npy`` [4, 2, 3, 3]."""
    from scipy.spatial.transform import Rotation

    root = tmp_path_factory.mktemp("biwi_raw")
    mats = Rotation.random(8, random_state=3).as_matrix().reshape(4, 2, 3, 3)
    for s in range(4):
        seq = root / f"{s + 1:02d}"
        seq.mkdir()
        write_biwi_cal(seq / "rgb.cal")
        for f in range(2):
            stem = seq / f"frame_{f * 7 + 3:05d}"
            write_jpg(stem.with_name(stem.name + "_rgb.png"), smooth_image(160, 120, s * 2 + f))
            write_biwi_pose(stem.with_name(stem.name + "_pose.txt"), mats[s, f], (10.0 * s, -5.0, 800.0 + 50 * f))
    np.save(root / "matrices.npy", mats)
    return root


@pytest.fixture(scope="session")
def tiny_biwi_npz(tmp_path_factory) -> Path:
    """``BIWI_train.npz`` (6 images) and ``BIWI_test.npz`` (3): BGR images with B=200, G=i*10, R=10."""
    root = tmp_path_factory.mktemp("biwi_npz")
    for split, n in (("train", 6), ("test", 3)):
        img = np.zeros((n, 16, 16, 3), np.uint8)
        img[..., 0] = 200
        img[..., 1] = (np.arange(n) * 10)[:, None, None]
        img[..., 2] = 10
        img[:, :, :8, 1] = 255  # a left/right asymmetry for flip tests
        pose = np.stack([np.linspace(-50, 50, n), np.linspace(-20, 20, n), np.linspace(5, 15, n)], 1)
        np.savez(root / f"BIWI_{split}.npz", image=img, pose=pose.astype(np.float32))
    return root


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """Nested folder: a/x.jpg, a/b/y.png, z.JPG and a non-image notes.txt."""
    from PIL import Image

    root = tmp_path_factory.mktemp("faces")
    write_jpg(root / "a" / "x.jpg", smooth_image(40, 40, 1))
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(smooth_image(30, 50, 2)).save(root / "a" / "b" / "y.png")
    write_jpg(root / "z.JPG", smooth_image(50, 50, 3))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite: the tests use tiny tensors, for which OpenMP threads
    competing for a small CPU make steps up to 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
