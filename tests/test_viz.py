"""hpelib.viz: pose axes follow hpelib.angles, grids and best/worst selection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from hpelib import viz
from hpelib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hpelib.runs import predictions_frame


def _ends(ax):
    """(start, end) points of the drawn axis lines, in drawing order."""
    return [(np.array([l.get_xdata()[0], l.get_ydata()[0]]), np.array([l.get_xdata()[1], l.get_ydata()[1]]))
            for l in ax.lines]


def test_frontal_and_turned_axes():
    ax = Figure().subplots()
    viz.draw_pose_axes(ax, np.zeros((41, 41, 3), np.uint8), pose=[0, 0, 0], size=10)
    (s0, ex), (_, ey), (_, ez) = _ends(ax)
    np.testing.assert_allclose(s0, [20, 20])
    np.testing.assert_allclose(ex - s0, [10, 0], atol=1e-9)   # head x axis: image right
    np.testing.assert_allclose(ey - s0, [0, -10], atol=1e-9)  # top of the head: up (y down in pixels)
    np.testing.assert_allclose(ez - s0, [0, 0], atol=1e-9)    # nose towards the viewer: a point

    ax = Figure().subplots()
    viz.draw_pose_axes(ax, np.zeros((41, 41, 3), np.uint8), pose=[90, 0, 0], size=10)
    assert _ends(ax)[2][1][0] == pytest.approx(10)  # positive yaw: nose to the image's left

    ax = Figure().subplots()
    viz.draw_pose_axes(ax, np.zeros((41, 41, 3), np.uint8), pose=[0, 30, 0], size=10)
    assert _ends(ax)[2][1][1] < 20  # positive pitch: looking up, the nose points up

    ax = Figure().subplots()
    viz.draw_pose_axes(ax, np.zeros((41, 41, 3), np.uint8), pose=[0, 0, 30], size=10)
    assert _ends(ax)[0][1][1] > 20  # positive roll: clockwise tilt, the x axis goes down on the right


def test_prediction_dashed_and_nan_skipped():
    ax = Figure().subplots()
    viz.draw_pose_axes(ax, np.zeros((8, 8, 3)), pose=[10, 0, 0], pred=[20, 5, 0])
    assert [l.get_linestyle() for l in ax.lines] == ["-"] * 3 + ["--"] * 3
    ax = Figure().subplots()
    viz.draw_pose_axes(ax, np.zeros((8, 8, 3)), pose=[np.nan] * 3)
    assert len(ax.lines) == 0


def test_display_image_undoes_normalization():
    rgb = torch.rand(3, 5, 5)
    normed = (rgb - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    shown = viz.display_image(normed)
    assert shown.shape == (5, 5, 3) and shown.dtype == np.uint8
    np.testing.assert_allclose(shown / 255.0, rgb.permute(1, 2, 0).numpy(), atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="cannot show"):
        viz.display_image(np.zeros((2, 3, 4, 5)))


def test_pose_grid_layout_and_errors():
    imgs = [np.zeros((8, 8, 3))] * 5
    fig = viz.pose_grid(imgs, poses=[[0, 0, 0]] * 5, titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6
    assert [a.get_title() for a in fig.axes[:5]] == list("abcde")
    assert sum(len(a.lines) for a in fig.axes) == 15
    with pytest.raises(ValueError, match="2 poses for 5 images"):
        viz.pose_grid(imgs, poses=[[0, 0, 0]] * 2)


class Tiny(torch.utils.data.Dataset):
    """Four blank images named s0..s3 with yaw 0, 10, 20, 30."""

    names = [f"s{i}" for i in range(4)]

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), torch.tensor([10.0 * i, 0.0, 0.0])


def test_dataset_grid_on_a_small_dataset():
    fig = viz.dataset_grid(Tiny(), indices=[1, 3], preds={1: [0, 0, 0]})
    assert [a.get_title() for a in fig.axes] == ["y10 p0 r0", "y30 p0 r0"]
    assert [len(a.lines) for a in fig.axes] == [6, 3]


def test_extreme_predictions():
    df = pd.DataFrame({"name": list("abcd"), "yaw_err": [1, 9, 1.5, np.nan], "pitch_err": [1, 9, 0, 0],
                       "roll_err": [1, 0, 0, 0]})
    best, worst = viz.extreme_predictions(df, k=2)
    assert list(best["name"]) == ["c", "a"] and list(worst["name"]) == ["b", "a"]
    with pytest.raises(ValueError, match="no column"):
        viz.extreme_predictions(df, error="nope")


def test_extreme_predictions_computes_errors_from_poses():
    df = predictions_frame(["a", "b", "c"], pred=[[179, 0, 0], [0, 9, 0], [0, 0, 0]],
                           true=[[-179, 0, 0], [0, 0, 0], [np.nan] * 3])
    best, worst = viz.extreme_predictions(df.drop(columns="mae_err"), k=1)
    assert list(best["name"]) == ["a"] and list(worst["name"]) == ["b"]  # wrap-aware; unlabeled "c" left out
    assert worst["mae_err"].iloc[0] == pytest.approx(3.0)


def test_prediction_grid_draws_truth_prediction_and_mae():
    rows = predictions_frame(["s3", "s1"], pred=[[33, 3, 0], [10, 0, 0]], true=[[30, 0, 0], [10, 0, 0]])
    fig = viz.prediction_grid(Tiny(), rows, "worst predictions", ncols=4)
    assert fig.get_suptitle() == "worst predictions"
    assert [a.get_title() for a in fig.axes[:2]] == ["y30 p0 r0\nMAE 2.0", "y10 p0 r0\nMAE 0.0"]
    assert [len(a.lines) for a in fig.axes[:2]] == [6, 6]  # true (solid) and predicted (dashed) axes
    with pytest.raises(ValueError, match=r"1 prediction names are not in the data set \(e.g. 'other.jpg'\)"):
        viz.prediction_grid(Tiny(), predictions_frame(["s0", "other.jpg"], np.zeros((2, 3)), np.zeros((2, 3))), "x")


def test_plot_losses_one_line_per_loss():
    losses = pd.DataFrame({"pose": [2.0, 1.0, 0.5], "rotation": [1.5, 1.2, 1.1]},
                          index=pd.Index([1, 2, 3], name="epoch"))
    fig = viz.plot_losses(losses, "training losses: rotation")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["pose", "rotation"]
    assert all(line.get_marker() == "o" and list(line.get_xdata()) == [1, 2, 3] for line in ax.lines)
    assert ax.get_yscale() == "log" and ax.get_title() == "training losses: rotation"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pose", "rotation"]
    with pytest.raises(ValueError, match="no losses"):
        viz.plot_losses(pd.DataFrame(), "empty")


def test_error_histograms_of_labelled_rows():
    rng = np.random.default_rng(0)
    true = rng.uniform(-30, 30, (50, 3))
    true[:5] = np.nan  # unlabeled rows have no errors
    fig = viz.error_histograms(predictions_frame(None, true + rng.normal(0, 3, (50, 3)), true), bins=10)
    assert len(fig.axes) == 4
    assert [a.get_xlabel() for a in fig.axes] == ["yaw error (deg)", "pitch error (deg)", "roll error (deg)",
                                                   "geodesic error (deg)"]
    assert all(len(a.patches) == 10 and sum(p.get_height() for p in a.patches) == 45 for a in fig.axes)
