"""Crops, transforms, augmentation determinism, the decoded-crop cache and subsets."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import smooth_image
from torch.utils.data import DataLoader

import hpelib.data.base as data_base
from hpelib.angles import flip_pose
from hpelib.data import DataError, build_dataset, denormalize, kfold_subsets, label_subset
from hpelib.data.crops import AFLW2000_FACTORS, LP300W_FACTORS, crop_resize, enlarge_box, landmark_box
from hpelib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, finish_batch, jitter_batch, square_in_box, to_tensor
from hpelib.engine.data import batch_inputs, make_loader


# ------------------------------------------------------------------ geometry
def test_enlarge_box_reference_formulas():
    box = np.array([100.0, 100.0, 200.0, 200.0])
    # AFLW2000 test crop, k = 0.2: x0 -= 2k w; y0 -= 2k h; x1 += 2k (x1 - new x0); y1 += 0.6k (y1 - new y0)
    np.testing.assert_allclose(enlarge_box(box, 0.2, AFLW2000_FACTORS), [60, 60, 256, 216.8])
    # 300W-LP training crop (6DRepNet), k = 0.3
    np.testing.assert_allclose(enlarge_box(box, 0.3, LP300W_FACTORS), [82, 40, 221.24, 228.8])


def test_random_boxes_nest_inside_outer_box():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0 = rng.uniform(0, 100, 2)
        box = np.array([x0, y0, x0 + rng.uniform(5, 80), y0 + rng.uniform(5, 80)])
        outer = enlarge_box(box, 0.4, LP300W_FACTORS)
        inner = enlarge_box(box, rng.uniform(0.2, 0.4), LP300W_FACTORS)
        assert (inner[:2] >= outer[:2]).all() and (inner[2:] <= outer[2:]).all()
        sq = square_in_box(inner, 224 / 240, rng)
        assert (sq[:2] >= inner[:2] - 1e-9).all() and (sq[2:] <= inner[2:] + 1e-9).all()
        assert np.isclose(sq[2] - sq[0], sq[3] - sq[1])


def test_landmark_box_ignores_invisible_points():
    pts = np.array([[10.0, -1.0, 30.0, 20.0], [5.0, -1.0, 25.0, 40.0]])
    np.testing.assert_allclose(landmark_box(pts), [10, 5, 30, 40])
    np.testing.assert_allclose(landmark_box(pts, drop_invisible=False), [-1, -1, 30, 40])
    with pytest.raises(DataError, match="lbl.mat"):
        landmark_box(-np.ones((2, 5)), where="lbl.mat")


def test_crop_resize_pads_black_and_keeps_content():
    img = smooth_image(40, 30)
    whole = crop_resize(img, (0, 0, 40, 30), 40)
    assert whole.shape == (40, 40, 3)
    out = crop_resize(img, (-20, 0, 20, 30), 20)  # left half lies outside the image
    assert out[:, :8].max() == 0 and out[:, 12:].mean() > 20


# ------------------------------------------------------------------ transforms
def test_normalize_roundtrip_and_constants():
    img = smooth_image(12, 9)
    t = to_tensor(img)
    assert t.shape == (3, 9, 12)
    np.testing.assert_allclose(t[:, 0, 0].numpy(), (img[0, 0] / 255 - np.array(IMAGENET_MEAN)) / IMAGENET_STD,
                               rtol=1e-5)
    np.testing.assert_array_equal(denormalize(t), img)


def test_flip_mirrors_image_and_negates_yaw_roll(tiny_biwi_npz):
    ds = build_dataset("biwi", root=tiny_biwi_npz, split="train", train=True, image_size=16, crop_fraction=1.0,
                       cache_resolution=16)
    plain = build_dataset("biwi", root=tiny_biwi_npz, split="train", train=False, image_size=16, crop_fraction=1.0)
    ref_img, ref_pose = plain[3]
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        img, pose = ds[3]
        if torch.allclose(pose, ref_pose):
            torch.testing.assert_close(img, ref_img)
            seen.add("plain")
        else:
            torch.testing.assert_close(pose, torch.as_tensor(flip_pose(ref_pose.numpy())))
            torch.testing.assert_close(img, ref_img.flip(-1))
            seen.add("flipped")
    assert seen == {"plain", "flipped"}


def test_color_jitter_changes_pixels_not_labels(tiny_biwi_npz):
    kw = dict(root=tiny_biwi_npz, split="train", train=True, image_size=16, flip=False, crop_fraction=1.0)
    a = build_dataset("biwi", color_jitter=0.0, **kw)[1]
    b = build_dataset("biwi", color_jitter=0.3, **kw)[1]
    torch.testing.assert_close(a[1], b[1])
    assert (a[0] - b[0]).abs().max() > 0.01


# ------------------------------------------------------------------ the uint8 pipeline
def _sequential_jitter(image: np.ndarray, b: float, c: float, s: float) -> np.ndarray:
    """Brightness, contrast, saturation one after the other, in float64, clipped at the end (the written recipe)."""
    w = np.array([0.299, 0.587, 0.114])
    x = image.astype(np.float64) * b
    m = (x @ w).mean()
    x = (x - m) * c + m
    g = (x @ w)[..., None]
    return np.clip(g + (x - g) * s, 0, 255)


def test_jitter_batch_is_brightness_contrast_saturation_in_turn():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 10, 12, 3), dtype=np.uint8)
    factors = torch.tensor([[1.2, 0.8, 1.1], [0.7, 1.3, 0.9], [1.0, 1.0, 1.0]])
    got = jitter_batch(torch.from_numpy(images).permute(0, 3, 1, 2), factors).permute(0, 2, 3, 1).numpy()
    for k in range(3):
        np.testing.assert_allclose(got[k], _sequential_jitter(images[k], *factors[k].tolist()), atol=2e-3)
    np.testing.assert_array_equal(got[2], images[2].astype(np.float32))  # factors 1: the pixels untouched


def test_raw_items_are_uint8_and_batches_finish_as_items_do(tiny_300w_lp):
    """Loader batches (uint8 items, jitter + normalisation on the batch) equal ``dataset[i]`` item by item."""
    ds = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, seed=3, color_jitter=0.3)
    ds.set_epoch(1)
    image, pose, factors = ds.raw_item(0)
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 24) and factors.shape == (3,)
    assert not torch.equal(factors, torch.ones(3))
    cpu = torch.device("cpu")
    loader = make_loader(ds, 2, shuffle=False, num_workers=2, device=cpu, drop_last=False)
    images = torch.cat([batch_inputs(b, cpu)[0] for b in loader])
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    last = next(iter(make_loader(ds, 2, shuffle=False, num_workers=0, device=cpu, drop_last=False)))
    torch.testing.assert_close(finish_batch(last[0], last[2], channels_last=True), expected[:2], rtol=0, atol=1e-5)


def test_a_data_set_of_finished_items_still_trains(tiny_aflw2000):
    """A user's own data set returning (normalised image, pose), without ``raw_item``, goes through the engine."""
    ds = build_dataset("aflw2000", root=tiny_aflw2000, train=False, image_size=24)

    class Finished(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    cpu = torch.device("cpu")
    batch = next(iter(make_loader(Finished(), 4, shuffle=False, num_workers=0, device=cpu, drop_last=False)))
    images, poses = batch_inputs(batch, cpu)
    torch.testing.assert_close(images, torch.stack([ds[i][0] for i in range(len(ds))]), rtol=0, atol=0)
    assert poses.dtype == torch.float32


# ------------------------------------------------------------------ determinism
def test_augmentation_is_a_function_of_seed_epoch_index(tiny_300w_lp):
    ds = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, seed=5, color_jitter=0.2)
    again = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, seed=5, color_jitter=0.2)
    other = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, seed=6, color_jitter=0.2)
    ds.set_epoch(2)
    again.set_epoch(2)
    other.set_epoch(2)
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i], again[i])
    assert any(not torch.equal(ds[i][0], other[i][0]) for i in range(len(ds)))
    first = [ds[i][0] for i in range(len(ds))]
    ds.set_epoch(3)
    assert any(not torch.equal(first[i], ds[i][0]) for i in range(len(ds)))
    ds.set_epoch(2)
    # worker processes see the same items as the main process
    batch = next(iter(DataLoader(ds, batch_size=len(ds), num_workers=2)))
    torch.testing.assert_close(batch[0], torch.stack(first))


def test_eval_items_do_not_depend_on_epoch(tiny_aflw2000):
    ds = build_dataset("aflw2000", root=tiny_aflw2000, train=False, image_size=24)
    a = ds[0]
    ds.set_epoch(9)
    torch.testing.assert_close(a, ds[0])


# ------------------------------------------------------------------ cache
def test_cached_training_items_equal_uncached(tiny_300w_lp, tmp_path):
    plain = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, seed=1)
    cached = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, seed=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            torch.testing.assert_close(plain[i], cached[i])


def test_parallel_builders_decode_the_cache_once(tiny_300w_lp, tmp_path, monkeypatch):
    """Runs that start together on the same data (a study with --jobs N) decode the images once."""
    import threading

    from hpelib.data.base import PoseDataset

    decoded = []
    real = PoseDataset.decode_base
    monkeypatch.setattr(PoseDataset, "decode_base", lambda self, i: decoded.append(i) or real(self, i))
    built = []
    threads = [threading.Thread(target=lambda: built.append(
        build_dataset("300w_lp", root=tiny_300w_lp, train=False, image_size=24, cache_dir=tmp_path)))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 3 and sorted(decoded) == list(range(len(built[0])))


def test_random_crop_from_outer_cache_matches_direct_crop(tiny_300w_lp):
    """The k-box cut out of the cached k=0.4 crop equals cropping the k-box from the image (up to resampling)."""
    ds = build_dataset("300w_lp", root=tiny_300w_lp, train=True, image_size=24, flip=False, cache_resolution=96)
    for i in range(len(ds)):
        rng = data_base.make_rng(ds.seed, ds.epoch, i)
        region = ds.regions.region(i, rng)
        square = ds.preset.square(region, rng)
        direct = crop_resize(ds.load(i), square, 24)
        got = denormalize(ds[i][0]).astype(float)
        assert np.abs(got - direct).mean() < 3.0


def test_cache_hit_does_not_decode(tiny_aflw2000, tmp_path, monkeypatch):
    root = tmp_path / "a"
    shutil.copytree(tiny_aflw2000, root)
    first = build_dataset("aflw2000", root=root, train=False, image_size=24, cache_dir=tmp_path / "c")
    items = [first[i] for i in range(len(first))]
    calls = []
    real = data_base.load_image
    monkeypatch.setattr(data_base, "load_image", lambda p: calls.append(p) or real(p))
    for jpg in root.glob("*.jpg"):  # sources now corrupt: only the cache can serve them
        jpg.write_bytes(b"broken")
    second = build_dataset("aflw2000", root=root, train=False, image_size=24, cache_dir=tmp_path / "c")
    for i, item in enumerate(items):
        torch.testing.assert_close(second[i], item)
    assert calls == []
    with pytest.raises(DataError):
        build_dataset("aflw2000", root=root, train=False, image_size=24)[0]
    # a different image size is a different cache entry (and needs decoding)
    with pytest.raises(DataError):
        build_dataset("aflw2000", root=root, train=False, image_size=32, cache_dir=tmp_path / "c")
    assert len(calls) >= 1


def test_label_index_cache_skips_mat_files_until_one_changes(tiny_aflw2000, tmp_path, monkeypatch):
    from hpelib.data import mat_sets

    root = tmp_path / "a"
    shutil.copytree(tiny_aflw2000, root)
    first = build_dataset("aflw2000", root=root, train=False, cache_dir=tmp_path / "c")
    reads = []
    real = mat_sets.read_mat_label
    monkeypatch.setattr(mat_sets, "read_mat_label", lambda p: reads.append(p) or real(p))
    second = build_dataset("aflw2000", root=root, train=False, cache_dir=tmp_path / "c")
    assert reads == [] and second.names == first.names
    np.testing.assert_array_equal(second.poses, first.poses)
    changed = sorted(root.glob("*.mat"))[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    build_dataset("aflw2000", root=root, train=False, cache_dir=tmp_path / "c")
    assert len(reads) == len(list(root.glob("*.mat")))


# ------------------------------------------------------------------ subsets
def test_label_subset_fraction_count_and_seed(tiny_biwi_npz, tiny_faces):
    ds = build_dataset("biwi", root=tiny_biwi_npz, split="train", train=False)
    half = label_subset(ds, 0.5, seed=0)
    assert len(half) == 3 and len(set(half.names)) == 3
    np.testing.assert_array_equal(half.poses, ds.poses[half.indices])
    torch.testing.assert_close(half[1], ds[int(half.indices[1])])
    assert label_subset(ds, 0.5, seed=0).names == half.names
    assert any(label_subset(ds, 0.5, seed=s).names != half.names for s in range(1, 6))
    assert len(label_subset(ds, 1.0, seed=0)) == 6 and len(label_subset(ds, 1, seed=0)) == 1
    assert len(label_subset(ds, 4, seed=3)) == 4
    for bad in (0.0, 1.5, 0, 7, True, "half"):
        with pytest.raises(ValueError):
            label_subset(ds, bad, seed=0)
    with pytest.raises(ValueError, match="no labelled"):
        label_subset(build_dataset("folder", root=tiny_faces), 0.5, 0)
    via_build = build_dataset("biwi", root=tiny_biwi_npz, split="train", train=False, label_fraction=0.5)
    assert via_build.names == half.names


def test_label_subset_skips_unlabelled():
    class Fake:
        poses = np.array([[1, 2, 3], [np.nan] * 3, [4, 5, 6], [np.nan] * 3], np.float32)
        names = list("abcd")

        def __len__(self):
            return 4

    sub = label_subset(Fake(), 1.0, seed=0)
    assert sub.names == ["a", "c"]


def test_kfold_tests_every_index_once(tiny_biwi_raw):
    ds = build_dataset("biwi", root=tiny_biwi_raw, split="all", train=True)
    k = 3
    tested = []
    for fold in range(k):
        train, test = kfold_subsets(ds, k, fold, seed=4)
        assert set(train.indices).isdisjoint(test.indices)
        assert len(train) + len(test) == len(ds)
        tested.extend(test.indices.tolist())
        assert train.names == [ds.names[i] for i in train.indices]
    assert sorted(tested) == list(range(len(ds)))
    a, _ = kfold_subsets(ds, k, 0, seed=4)
    b, _ = kfold_subsets(ds, k, 0, seed=4)
    assert a.names == b.names
    train.set_epoch(7)
    assert ds.epoch == 7
    with pytest.raises(ValueError):
        kfold_subsets(ds, 3, 3, seed=0)
    with pytest.raises(ValueError):
        kfold_subsets(ds, 1, 0, seed=0)


# ------------------------------------------------------------------ synthetic wrapper
def test_synthetic_wrapper_contract(monkeypatch, tmp_path):
    from hpelib.data import synthetic

    calls = []

    def fake_generate(cache_dir, n, size, seed):
        calls.append((cache_dir, n, size, seed))
        rng = np.random.default_rng(seed)
        return rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8), rng.uniform(-60, 60, (n, 3)).astype(np.float32)

    monkeypatch.setattr(synthetic, "generate_synthetic", fake_generate)  # the loader looks it up at each call
    tr = build_dataset("synthetic", root=tmp_path, split="train", n=5, image_size=16, train=True)
    te = build_dataset("synthetic", root=tmp_path, split="test", n=3, image_size=16, train=False)
    assert [c[1:] for c in calls] == [(5, 16, 0), (3, 16, 1)]
    assert str(calls[0][0]) == str(tmp_path)
    assert len(tr) == 5 and len(te) == 3 and set(tr.names).isdisjoint(te.names)
    img, pose = te[2]
    np.testing.assert_allclose(pose.numpy(), te.poses[2])
    # eval keeps the whole rendered image (crop_fraction 1.0): pixels come back unchanged
    expected = fake_generate(None, 3, 16, 1)[0][2]
    np.testing.assert_array_equal(denormalize(img), expected)
    build_dataset("synthetic", root=tmp_path, split="test", n=3, image_size=16, data_seed=2)
    assert calls[-1][3] == 5


def test_synthetic_real_generator_smoke(tmp_path):
    pytest.importorskip("hpelib.data.synthetic")
    ds = build_dataset("synthetic", root=tmp_path, split="test", n=4, image_size=16, train=True)
    image, pose = ds[0]
    assert image.shape == (3, 16, 16) and torch.isfinite(pose).all() and len(ds.poses) == 4


def test_cache_files_follow_the_umask_and_a_full_disk_is_reported(tiny_aflw2000, tmp_path, monkeypatch):
    """The shared crop cache is readable by the group/others as the umask allows (not 0600 from mkstemp)."""
    from hpelib.io import DiskFullError

    old = os.umask(0o022)
    try:
        build_dataset("aflw2000", root=tiny_aflw2000, train=False, image_size=24, cache_dir=tmp_path / "c")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "c").iterdir()}
    assert {".npy", ".json", ".npz"} <= {os.path.splitext(name)[1] for name in modes}  # crops, their record, labels
    assert set(modes.values()) == {0o644}, modes

    # too little free space is an error before decoding, not a crash when the memory map writes
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError) as info:
        build_dataset("aflw2000", root=tiny_aflw2000, train=False, image_size=24, cache_dir=tmp_path / "c2")
    msg = str(info.value)
    assert msg.startswith(f"cannot write {tmp_path / 'c2'}/aflw2000") and "1000 bytes free" in msg
    assert not list((tmp_path / "c2").glob("*.npy*"))
