"""Readers of the real formats (on tiny files written by conftest) and their errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import BIWI_K, BIWI_T, TINY_LABELS, face_landmarks, write_biwi_pose, write_jpg, write_mat

from hpelib.data import DataError, build_dataset
from hpelib.data.biwi import biwi_face_box, biwi_sequence_split
from hpelib.data.crops import AFLW2000_FACTORS, LP300W_FACTORS, enlarge_box, landmark_box
from hpelib.data.mat_sets import read_mat_label


def _kept(labels, limit=99.0):
    return {k: v for k, v in labels.items() if max(abs(a) for a in v) <= limit}


# ------------------------------------------------------------------ AFLW2000 / 300W-LP
def test_aflw2000_labels_filter_and_items(tiny_aflw2000):
    ds = build_dataset("aflw2000", root=tiny_aflw2000, train=False, image_size=32)
    kept = _kept(TINY_LABELS["aflw2000"])
    assert ds.names == sorted(kept)
    np.testing.assert_allclose(ds.poses, np.array([kept[n] for n in ds.names]), atol=1e-4)
    image, pose = ds[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    np.testing.assert_allclose(pose.numpy(), kept[ds.names[1]], atol=1e-4)
    everything = build_dataset("aflw2000", root=tiny_aflw2000, train=False, max_angle=None)
    assert len(everything) == 5


def test_read_mat_label_reorders_radians(tmp_path):
    write_mat(tmp_path / "a.mat", (12.5, -33.0, 7.25), face_landmarks(21))
    pose, pt2d = read_mat_label(tmp_path / "a.mat")
    np.testing.assert_allclose(pose, [12.5, -33.0, 7.25], atol=1e-9)
    assert pt2d.shape == (2, 21)


def test_aflw2000_box_keeps_invisible_landmarks_unless_asked(tiny_aflw2000):
    ds = build_dataset("aflw2000", root=tiny_aflw2000, train=False)
    i = ds.names.index("image00002.jpg")  # written with landmarks 3 and 7 at -1
    _, pt2d = read_mat_label(tiny_aflw2000 / "image00002.mat")
    reference = landmark_box(pt2d, drop_invisible=False)
    np.testing.assert_allclose(reference[:2], [-1, -1])  # the -1 points stretch the box
    np.testing.assert_allclose(ds.regions.boxes[i], enlarge_box(reference, 0.2, AFLW2000_FACTORS))
    tight = build_dataset("aflw2000", root=tiny_aflw2000, train=False, drop_invisible_landmarks=True)
    np.testing.assert_allclose(landmark_box(pt2d, drop_invisible=True), [40, 30, 80, 75])
    np.testing.assert_allclose(tight.regions.boxes[i], enlarge_box([40, 30, 80, 75], 0.2, AFLW2000_FACTORS))
    assert ds.preset.crop_fraction == 1.0  # Hopenet's Scale(224) + CenterCrop(224)


def test_aflw2000_training_boxes_with_a_random_k(tiny_aflw2000):
    """k_range: each training item's box grows by its own k in [lo, hi) (AFLW2000's factors); tests keep k."""
    ds = build_dataset("aflw2000", root=tiny_aflw2000, train=True, image_size=24, k_range=(0.1, 0.5))
    _, pt2d = read_mat_label(tiny_aflw2000 / "image00001.mat")
    box = landmark_box(pt2d)
    np.testing.assert_allclose(ds.regions.outer(0), enlarge_box(box, 0.5, AFLW2000_FACTORS))
    draws = [ds.regions.region(0, np.random.default_rng(s)) for s in range(20)]
    ks = [(b[2] - b[0]) for b in draws]
    assert len(set(np.round(ks, 6))) == 20  # a new k each draw
    lo, hi = enlarge_box(box, 0.1, AFLW2000_FACTORS), enlarge_box(box, 0.5, AFLW2000_FACTORS)
    assert all(lo[0] >= b[0] >= hi[0] and lo[2] <= b[2] <= hi[2] for b in draws)
    ds.set_epoch(0)
    first = ds[0][0]
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0][0])
    fixed = build_dataset("aflw2000", root=tiny_aflw2000, train=False, k_range=(0.1, 0.5))
    np.testing.assert_allclose(fixed.regions.boxes[0], enlarge_box(box, 0.2, AFLW2000_FACTORS))


def test_300w_lp_walks_known_folders_only(tiny_300w_lp):
    ds = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24)
    kept = _kept(TINY_LABELS["300w_lp"])
    assert ds.names == sorted(kept)
    assert not any(n.startswith("landmarks/") for n in ds.names)
    np.testing.assert_allclose(ds.poses, np.array([kept[n] for n in ds.names]), atol=1e-4)
    only_afw = build_dataset("300w_lp", root=tiny_300w_lp, subsets=("AFW",))
    assert only_afw.names == ["AFW/AFW_1_0.jpg", "AFW/AFW_1_1.jpg"]
    image, pose = ds[0]
    assert image.shape == (3, 24, 24) and torch.isfinite(pose).all()


def test_300w_lp_eval_uses_fixed_k(tiny_300w_lp):
    ds = build_dataset("300w_lp", root=tiny_300w_lp, train=False, eval_k=0.25)
    _, pt2d = read_mat_label(tiny_300w_lp / "AFW" / "AFW_1_0.mat")
    np.testing.assert_allclose(ds.regions.boxes[0], enlarge_box(landmark_box(pt2d), 0.25, LP300W_FACTORS))


# ------------------------------------------------------------------ BIWI
def _hopenet_euler(m):
    """The Hopenet/FSA-Net formula written out, as an independent check."""
    r = np.asarray(m).T
    roll = -np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    yaw = -np.degrees(np.arctan2(-r[2, 0], np.sqrt(r[2, 1] ** 2 + r[2, 2] ** 2)))
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    return np.array([yaw, pitch, roll])


def test_biwi_raw_labels_follow_hopenet_formula(tiny_biwi_raw):
    mats = np.load(tiny_biwi_raw / "matrices.npy")
    ds = build_dataset("biwi", root=tiny_biwi_raw, split="all", train=False, image_size=32)
    assert len(ds) == 8 and ds.names[0] == "01/frame_00003_rgb.png" and ds.names[-1] == "04/frame_00010_rgb.png"
    expected = np.array([_hopenet_euler(m) for m in mats.reshape(-1, 3, 3)])
    np.testing.assert_allclose(ds.poses, expected, atol=1e-3)
    assert ds[0][0].shape == (3, 32, 32)


def test_biwi_face_box_projects_with_extrinsics():
    box = biwi_face_box((0.0, 0.0, 1000.0), (BIWI_K, np.eye(3), BIWI_T), box_mm=200.0)
    cx = 80 + 100 * 5.0 / 1000  # (R c + T) projected
    cy = 60 + 100 * -3.0 / 1000
    np.testing.assert_allclose(box, [cx - 10, cy - 10, cx + 10, cy + 10])


def test_biwi_split_is_fsanets_16_8_or_seeded_whole_sequences(tiny_biwi_raw):
    seqs = [f"{i:02d}" for i in range(1, 25)]
    train, test = biwi_sequence_split(seqs, "train"), biwi_sequence_split(seqs, "test")
    assert train == [f"{i:02d}" for i in range(1, 17)] and test == [f"{i:02d}" for i in range(17, 25)]
    with pytest.raises(DataError, match=r"\['kinect_extra'\].*split_seed"):
        biwi_sequence_split(seqs + ["kinect_extra"], "train")
    seeded = biwi_sequence_split(seqs, "train", split_seed=0)
    assert len(seeded) == 17 and len(biwi_sequence_split(seqs, "test", split_seed=0)) == 7
    assert biwi_sequence_split(seqs, "train", split_seed=1) != seeded
    # the tiny set has sequences 01..04 only: all FSA-Net training sequences
    with pytest.raises(DataError, match="'test' split has no sequence"):
        build_dataset("biwi", root=tiny_biwi_raw, split="test", train=False)
    tr = build_dataset("biwi", root=tiny_biwi_raw, split="train", train=False, split_seed=0)
    te = build_dataset("biwi", root=tiny_biwi_raw, split="test", train=False, split_seed=0)
    tr_seq, te_seq = {n.split("/")[0] for n in tr.names}, {n.split("/")[0] for n in te.names}
    assert tr_seq.isdisjoint(te_seq) and len(tr_seq | te_seq) == 4 and len(tr) + len(te) == 8


def test_biwi_npz_converts_bgr_and_reads_split(tiny_biwi_npz):
    ds = build_dataset("biwi", root=tiny_biwi_npz, split="test", train=False, image_size=16, crop_fraction=1.0)
    assert len(ds) == 3 and ds.names[0] == "BIWI_test.npz:00000"
    from hpelib.data import denormalize

    rgb = denormalize(ds[2][0])
    assert abs(int(rgb[0, 12, 0]) - 10) <= 2 and abs(int(rgb[0, 12, 2]) - 200) <= 2  # R, B swapped back
    np.testing.assert_allclose(ds.poses[:, 0], [-50, 0, 50])
    single = build_dataset("biwi", root=tiny_biwi_npz / "BIWI_train.npz", train=False)
    assert len(single) == 6


# ------------------------------------------------------------------ folder
def test_folder_lists_recursively_with_nan_poses(tiny_faces):
    ds = build_dataset("folder", root=tiny_faces, train=False, image_size=20)
    assert ds.names == ["a/b/y.png", "a/x.jpg", "z.JPG"]
    assert np.isnan(ds.poses).all()
    image, pose = ds[0]
    assert image.shape == (3, 20, 20) and torch.isnan(pose).all()


# ------------------------------------------------------------------ build_dataset arguments
def test_build_dataset_rejects_unknown_name_and_option(tiny_aflw2000):
    with pytest.raises(ValueError, match="valid names.*aflw2000"):
        build_dataset("aflw3000", root=tiny_aflw2000)
    with pytest.raises(ValueError, match=r"unknown option.*'box_mm'.*valid options.*drop_invisible_landmarks"):
        build_dataset("aflw2000", root=tiny_aflw2000, box_mm=3)
    with pytest.raises(ValueError, match="split"):
        build_dataset("aflw2000", root=tiny_aflw2000, split="val")
    with pytest.raises(ValueError, match="root"):
        build_dataset("folder")


# ------------------------------------------------------------------ bad input -> DataError naming the file
def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*image00002\.jpg"):
        build_dataset("aflw2000", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        build_dataset("aflw2000", root=tmp_path / "empty")
    with pytest.raises(DataError, match="empty.*AFW"):
        build_dataset("300w_lp", root=tmp_path / "empty")
    with pytest.raises(DataError, match="empty"):
        build_dataset("folder", root=tmp_path / "empty")
    with pytest.raises(DataError, match="empty"):
        build_dataset("biwi", root=tmp_path / "empty")
    assert issubclass(DataError, ValueError)


def test_missing_label_file(tiny_aflw2000, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_aflw2000, root)
    (root / "image00005.mat").unlink()
    with pytest.raises(DataError, match=r"image00005\.mat"):
        build_dataset("aflw2000", root=root)


@pytest.mark.parametrize("content", ["garbage", "no_pose", "bad_shape", "bad_pt2d"])
def test_corrupt_mat(tiny_aflw2000, tmp_path, content):
    import scipy.io

    root = tmp_path / "a"
    shutil.copytree(tiny_aflw2000, root)
    bad = root / "image00002.mat"
    if content == "garbage":
        bad.write_bytes(b"this is not a mat file at all" * 10)
    elif content == "no_pose":
        scipy.io.savemat(str(bad), {"pt2d": face_landmarks(21)})
    elif content == "bad_shape":
        scipy.io.savemat(str(bad), {"Pose_Para": np.zeros((1, 2)), "pt2d": face_landmarks(21)})
    else:
        scipy.io.savemat(str(bad), {"Pose_Para": np.zeros((1, 7)), "pt2d": np.zeros((3, 21))})
    with pytest.raises(DataError, match=r"image00002\.mat"):
        build_dataset("aflw2000", root=root)


def test_corrupt_image_names_file(tiny_aflw2000, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(tiny_aflw2000, root)
    (root / "image00001.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = build_dataset("aflw2000", root=root, train=False)
    with pytest.raises(DataError, match=r"image00001\.jpg.*corrupt"):
        ds[0]
    with pytest.raises(DataError, match=r"image00001\.jpg"):
        build_dataset("aflw2000", root=root, train=False, cache_dir=tmp_path / "cache")


def test_biwi_bad_pose_and_missing_calibration(tiny_biwi_raw, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(tiny_biwi_raw, root)
    (root / "02" / "frame_00003_pose.txt").write_text("1 0 0\n0 1 x\n")
    with pytest.raises(DataError, match=r"02/frame_00003_pose\.txt"):
        build_dataset("biwi", root=root, split="all")
    write_biwi_pose(root / "02" / "frame_00003_pose.txt", np.eye(3), (0, 0, 900))
    (root / "03" / "frame_00010_pose.txt").unlink()
    with pytest.raises(DataError, match=r"03/frame_00010_pose\.txt"):
        build_dataset("biwi", root=root, split="all")
    write_biwi_pose(root / "03" / "frame_00010_pose.txt", np.eye(3), (0, 0, 900))
    (root / "04" / "rgb.cal").unlink()
    with pytest.raises(DataError, match=r"04/rgb\.cal"):
        build_dataset("biwi", root=root, split="all")


def test_biwi_single_sequence_needs_split_all(tiny_biwi_raw):
    with pytest.raises(DataError, match="split='all'"):
        build_dataset("biwi", root=tiny_biwi_raw / "01", split="test")
    assert len(build_dataset("biwi", root=tiny_biwi_raw / "01", split="all")) == 2


def test_biwi_npz_bad_files(tmp_path):
    np.savez(tmp_path / "BIWI_train.npz", image=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"BIWI_train\.npz.*'pose'"):
        build_dataset("biwi", root=tmp_path, split="train")
    np.savez(tmp_path / "BIWI_test.npz", image=np.zeros((2, 8, 8, 3), np.uint8), pose=np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"BIWI_test\.npz.*\[N, 3\]"):
        build_dataset("biwi", root=tmp_path, split="test")
    with pytest.raises(DataError, match=r"BIWI_noTrack\.npz"):
        build_dataset("biwi", root=tmp_path, split="all")
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"x\.npz"):
        build_dataset("biwi", root=tmp_path / "x.npz")


def test_corrupt_folder_image(tmp_path):
    write_jpg(tmp_path / "ok.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG nope")
    ds = build_dataset("folder", root=tmp_path, train=False)
    with pytest.raises(DataError, match=r"bad\.png"):
        ds[0]


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "P", "LA", "CMYK", "L", "RGBA", "PA"])
def test_every_image_mode_reads_as_its_8_bit_rgb_copy(tmp_path, mode):
    """A 16-bit or float picture is scaled, not clipped to white; other modes through Pillow's conversion."""
    from PIL import Image

    from hpelib.data.crops import load_image, to_rgb8
    from hpelib.predict.predictor import as_rgb

    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (6, 1))  # 6 x 25, values 0..240
    eight = np.repeat(gray[..., None], 3, axis=-1)
    made = {"I;16": lambda: Image.fromarray(gray.astype(np.uint16) * 257),  # opens as I;16
            "I": lambda: Image.fromarray(gray.astype(np.int32) * 257, mode="I"),
            "F": lambda: Image.fromarray(gray.astype(np.float32) / 255.0, mode="F"),
            "P": lambda: Image.fromarray(eight).convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
            "LA": lambda: Image.fromarray(gray).convert("LA"), "CMYK": lambda: Image.fromarray(eight).convert("CMYK"),
            "L": lambda: Image.fromarray(gray), "RGBA": lambda: Image.fromarray(eight).convert("RGBA"),
            "PA": lambda: Image.fromarray(eight).convert("PA")}[mode]()
    assert made.mode == ("I;16" if mode == "I;16" else mode)
    got = np.asarray(to_rgb8(made))
    assert got.dtype == np.uint8 and got.shape == (6, 25, 3)
    # a palette holds the colours it was quantized to: those, exactly; the other modes: the 8-bit picture
    want = np.asarray(made.convert("RGBA").convert("RGB")) if mode in ("P", "PA") else eight
    assert np.abs(got.astype(int) - want).max() <= 1, mode
    if mode in ("I;16", "P", "LA", "L"):  # modes a PNG file keeps: read from disk too, and by the predictor's path
        made.save(tmp_path / "x.png")
        assert np.abs(np.asarray(load_image(tmp_path / "x.png")).astype(int) - want).max() <= 1
    assert np.array_equal(as_rgb(made), got)
