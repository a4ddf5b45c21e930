"""The embedded synthetic data set: API, determinism, cache, and that the pose reads as labelled."""
from __future__ import annotations

import numpy as np
import pytest

from hpelib.angles import flip_pose
from hpelib.data import synthetic as syn
from hpelib.data.synthetic import (
    PART_NAMES,
    generate_synthetic,
    mirror_attributes,
    render_heads,
    render_with_attributes,
    sample_attributes,
    sample_poses,
)

NOSE = 1 + PART_NAMES.index("nose")
EYE_L = (1 + PART_NAMES.index("eye_left"), 1 + PART_NAMES.index("iris_left"))
EYE_R = (1 + PART_NAMES.index("eye_right"), 1 + PART_NAMES.index("iris_right"))
HAIR = 1 + PART_NAMES.index("hair")


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(column, row) centroid of a boolean [H, W] mask."""
    rows, cols = np.nonzero(mask)
    assert len(rows) > 0, "part not visible"
    return np.array([cols.mean(), rows.mean()])


def _head_centre(attrs: dict, i: int, size: int) -> np.ndarray:
    """(column, row) of the skull centre (the rotation pivot) in pixel-index units (pixel j spans [j-.5, j+.5])."""
    ox, oy = attrs["offset"][i]
    return np.array([(ox + 1) / 2 * size - 0.5, (1 - oy) / 2 * size - 0.5])


# ------------------------------------------------------------------ API basics
def test_shapes_dtypes_and_bad_input():
    poses = sample_poses(3, seed=0)
    assert poses.dtype == np.float32 and poses.shape == (3, 3)
    img = render_heads(poses, 24, seed=0)
    assert img.dtype == np.uint8 and img.shape == (3, 24, 24, 3)
    img2, parts = render_heads(poses, 24, seed=0, return_parts=True)
    assert np.array_equal(img, img2)
    assert parts.shape == (3, 24, 24) and parts.max() <= len(PART_NAMES)
    assert (parts == 0).any() and (parts > 0).mean() > 0.15  # background and a head
    assert render_heads(np.zeros((0, 3)), 16, seed=0).shape == (0, 16, 16, 3)
    with pytest.raises(ValueError, match="poses"):
        render_heads(np.zeros((3, 2)), 24, seed=0)
    with pytest.raises(ValueError, match="finite"):
        render_heads(np.full((1, 3), np.nan), 24, seed=0)
    with pytest.raises(ValueError, match="size"):
        render_heads(poses, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        render_heads(poses, 24, seed=-1)


def test_deterministic_and_index_stable():
    poses = sample_poses(5, seed=3)
    a = render_heads(poses, 32, seed=7)
    assert np.array_equal(a, render_heads(poses, 32, seed=7))
    b = render_heads(poses, 32, seed=8)
    assert all(not np.array_equal(a[i], b[i]) for i in range(5))  # other seed: other heads
    # head i depends on (seed, i) only: pieces, chunking and threads do not matter
    assert np.array_equal(a[2:4], render_heads(poses[2:4], 32, seed=7, start_index=2))
    attrs = sample_attributes(5, seed=7)
    assert np.array_equal(a, render_with_attributes(poses, attrs, 32, chunk=2, workers=2))
    assert np.array_equal(a, render_with_attributes(poses, attrs, 32, chunk=5, workers=1))
    # different heads within a batch look different even at the same pose
    same = render_heads(np.zeros((2, 3)), 32, seed=0)
    assert np.abs(same[0].astype(int) - same[1].astype(int)).mean() > 5


def test_pose_sampling_ranges():
    p = sample_poses(20000, seed=1)
    assert np.array_equal(p, sample_poses(20000, seed=1))
    assert not np.array_equal(p[:100], sample_poses(100, seed=2))
    assert np.array_equal(p[:50], sample_poses(50, seed=1))  # prefix-stable
    yaw, pitch, roll = p.T
    assert np.abs(yaw).max() <= 90 and yaw.min() < -88 and yaw.max() > 88
    assert abs(yaw.mean()) < 2 and 48 < yaw.std() < 56  # uniform on [-90, 90]: std 52
    for a in (pitch, roll):
        assert np.abs(a).max() <= 45 and np.abs(a).max() > 40
        assert abs(a.mean()) < 1 and 14 < a.std() < 20  # N(0, 20) truncated at +-45: std ~17
        assert np.mean(np.abs(a) < 20) > 0.6  # concentrated near 0, unlike a uniform
    q = sample_poses(1000, seed=0, yaw_max=30, pitch_roll_max=10)
    assert np.abs(q[:, 0]).max() <= 30 and np.abs(q[:, 1:]).max() <= 10


# ------------------------------------------------------------------ the pose is visible, with the package's signs
@pytest.fixture(scope="module")
def pose_renders():
    """Same head (attributes of index 0, seed 5) at several poses: images, part maps, skull centre."""
    size = 64
    poses = np.array([[0, 0, 0], [30, 0, 0], [-30, 0, 0], [0, 25, 0], [0, -25, 0], [0, 0, 30], [0, 0, -30]],
                     np.float32)
    one = sample_attributes(1, seed=5)
    attrs = {k: np.repeat(v, len(poses), axis=0) for k, v in one.items()}
    images, parts = render_with_attributes(poses, attrs, size, return_parts=True)
    return dict(zip(("front", "yaw+", "yaw-", "pitch+", "pitch-", "roll+", "roll-"), zip(images, parts))), \
        _head_centre(attrs, 0, size)


def test_positive_yaw_turns_nose_to_image_left(pose_renders):
    r, centre = pose_renders
    nose = {k: _centroid(r[k][1] == NOSE) - centre for k in ("front", "yaw+", "yaw-")}
    assert abs(nose["front"][0]) < 1.0
    assert nose["yaw+"][0] < -5 and nose["yaw-"][0] > 5
    # the hair (back of the head) moves the other way
    hair_x = {k: _centroid(r[k][1] == HAIR)[0] for k in ("yaw+", "yaw-")}
    assert hair_x["yaw+"] > hair_x["yaw-"] + 3
    # and the images differ clearly where the head is
    head = (r["yaw+"][1] > 0) | (r["yaw-"][1] > 0)
    assert np.abs(r["yaw+"][0].astype(int) - r["yaw-"][0].astype(int))[head].mean() > 8


def test_positive_pitch_looks_up(pose_renders):
    r, centre = pose_renders
    rows = {k: (_centroid(r[k][1] == NOSE) - centre)[1] for k in ("front", "pitch+", "pitch-")}
    assert rows["pitch+"] < rows["front"] - 4  # image rows grow downward: up = smaller row
    assert rows["pitch-"] > rows["front"] + 4
    # looking down shows more of the hair cap (top of the head), looking up less
    hair = {k: (r[k][1] == HAIR).sum() for k in ("pitch+", "pitch-")}
    assert hair["pitch-"] > 2 * hair["pitch+"]


def test_positive_roll_tilts_clockwise(pose_renders):
    r, _ = pose_renders

    def eye_line_angle(parts):
        left = _centroid(np.isin(parts, EYE_L))
        right = _centroid(np.isin(parts, EYE_R))
        dx, drow = right - left
        return np.degrees(np.arctan2(drow, dx))  # > 0: the right eye is lower = clockwise tilt

    assert abs(eye_line_angle(r["front"][1])) < 2.5
    assert 25 < eye_line_angle(r["roll+"][1]) < 35  # rendered at roll +-30
    assert -35 < eye_line_angle(r["roll-"][1]) < -25


def test_horizontal_flip_matches_flipped_pose():
    poses = np.array([[35, 10, 15], [-70, -20, 30], [5, 30, -40], [88, 0, 0]], np.float32)
    attrs = sample_attributes(len(poses), seed=11)
    direct = render_with_attributes(poses, attrs, 48)
    mirrored = render_with_attributes(flip_pose(poses), mirror_attributes(attrs), 48)
    flipped = direct[:, :, ::-1].astype(int)
    diff = np.abs(flipped - mirrored.astype(int))
    assert diff.mean() < 0.5 and (diff > 8).mean() < 0.005
    # not trivially true: without flipping, the pose differs and so does the image
    assert np.abs(direct.astype(int) - mirrored.astype(int)).mean() > 5


# ------------------------------------------------------------------ cache
def test_generate_synthetic_caches_and_reuses(tmp_path, monkeypatch):
    images, poses = generate_synthetic(tmp_path, 7, 20, seed=4, batch_size=3, progress=False)
    assert images.shape == (7, 20, 20, 3) and images.dtype == np.uint8
    assert np.array_equal(poses, sample_poses(7, seed=4))
    # same bytes as rendering directly, whatever the batch size
    assert np.array_equal(np.asarray(images), render_heads(poses, 20, seed=4))
    mem, _ = generate_synthetic(None, 7, 20, seed=4, batch_size=5, progress=False)
    assert np.array_equal(mem, np.asarray(images))
    files = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")
    assert files == sorted(p.name for p in syn.cache_paths(tmp_path, 7, 20, 4)), files  # no temporaries left
    assert f"-r{syn.RENDERER_VERSION}-" in files[0]

    def fail(*args, **kwargs):
        raise AssertionError("rendered although the cache is complete")

    monkeypatch.setattr(syn, "render_heads", fail)
    again, poses2 = generate_synthetic(tmp_path, 7, 20, seed=4, batch_size=3, progress=False)
    assert isinstance(again, np.memmap)
    assert np.array_equal(np.asarray(again), np.asarray(images)) and np.array_equal(poses2, poses)
    with pytest.raises(AssertionError, match="rendered"):  # another key is not served from this cache
        generate_synthetic(tmp_path, 7, 20, seed=5, progress=False)


def test_concurrent_generation_renders_once(tmp_path, monkeypatch):
    """Parallel runs of a study asking for the same set: one renders, the others wait and load it."""
    import threading

    calls = []
    real = syn.render_heads

    def counted(poses, *args, **kwargs):
        calls.append(len(poses))
        return real(poses, *args, **kwargs)

    monkeypatch.setattr(syn, "render_heads", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        generate_synthetic(tmp_path, 6, 16, seed=2, batch_size=6, progress=False))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [6]  # one render of the 6 heads, not three
    assert len(results) == 3 and all(np.array_equal(np.asarray(r[0]), np.asarray(results[0][0])) for r in results)


def test_incomplete_cache_is_rebuilt(tmp_path):
    img_path, pose_path = syn.cache_paths(tmp_path, 3, 16, 0)
    np.save(pose_path, sample_poses(3, 0))  # images missing (e.g. an interrupted run)
    img_path.write_bytes(b"not a npy file")
    images, _ = generate_synthetic(tmp_path, 3, 16, seed=0, progress=False)
    assert np.array_equal(np.asarray(images), render_heads(sample_poses(3, 0), 16, seed=0))
