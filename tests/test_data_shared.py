"""Checks against the real data in the shared folder (skipped when it is absent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpelib.data import build_dataset

pytestmark = pytest.mark.shared


def test_aflw2000_half_keeps_985_after_filter(shared_aflw2000):
    assert len(list(shared_aflw2000.glob("*.jpg"))) == 1000
    ds = build_dataset("aflw2000", root=shared_aflw2000, train=False, image_size=32)
    assert len(ds) == 985
    assert np.abs(ds.poses).max() <= 99.0
    image, pose = ds[0]
    assert image.shape == (3, 32, 32) and torch.isfinite(image).all()
    np.testing.assert_allclose(pose.numpy(), ds.poses[0])


def _hopenet_aflw2000_box(mat_file):
    """Hopenet's ``AFLW2000`` loader (datasets.py), written out: min/max over all 21 points, k = 0.2,
    sides moved in order so that the right and bottom see the moved left and top."""
    import scipy.io

    pt2d = scipy.io.loadmat(str(mat_file))["pt2d"]
    x_min, y_min, x_max, y_max = min(pt2d[0, :]), min(pt2d[1, :]), max(pt2d[0, :]), max(pt2d[1, :])
    k = 0.20
    x_min -= 2 * k * abs(x_max - x_min)
    y_min -= 2 * k * abs(y_max - y_min)
    x_max += 2 * k * abs(x_max - x_min)
    y_max += 0.6 * k * abs(y_max - y_min)
    return [x_min, y_min, x_max, y_max]


def test_aflw2000_test_box_is_hopenets_on_every_shared_file(shared_aflw2000):
    ds = build_dataset("aflw2000", root=shared_aflw2000, train=False, image_size=32)
    want = np.array([_hopenet_aflw2000_box((shared_aflw2000 / n).with_suffix(".mat")) for n in ds.names])
    np.testing.assert_allclose(ds.regions.boxes, want, rtol=0, atol=1e-9)
    tight = build_dataset("aflw2000", root=shared_aflw2000, train=False, image_size=32, drop_invisible_landmarks=True)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ratio = area(ds.regions.boxes) / area(tight.regions.boxes)
    assert (ratio >= 1 - 1e-9).all() and 2.0 < np.median(ratio[ratio > 1 + 1e-9]) < 4.0


def test_biwi_sample_frames_decode_to_reference_angles(shared_biwi):
    ds = build_dataset("biwi", root=shared_biwi, split="all", train=False, image_size=32)
    assert ds.names == ["frame_00054_rgb.png", "frame_00427_rgb.png"]
    np.testing.assert_allclose(ds.poses, [[32.28, 21.55, 9.13], [-22.37, -9.87, 1.90]], atol=0.05)
    # the face box lies inside the 640x480 frame, around the projected head centre
    boxes = ds.regions.boxes
    assert (boxes[:, :2] > 0).all() and (boxes[:, 2] < 640).all() and (boxes[:, 3] < 480).all()
    assert ds[1][0].shape == (3, 32, 32)


def test_unlabeled_folder_counts_19080_with_nan_poses(shared_unlabeled):
    ds = build_dataset("folder", root=shared_unlabeled, train=True, image_size=32)
    assert len(ds) == 19080
    assert np.isnan(ds.poses).all() and len(set(ds.names)) == 19080
    image, pose = ds[19079]
    assert image.shape == (3, 32, 32) and torch.isnan(pose).all()
