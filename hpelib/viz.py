"""Drawing head poses on face images (for notebooks and figures).

The axes are drawn from :func:`hpelib.angles.project_axes` (the one place that
turns a pose into image-plane directions): the head's x axis (towards the
image's right for a frontal face) in red, its y axis (towards the top of the
head) in green and its z axis (out of the face, along the nose) in blue, the
colours Hopenet's ``draw_axis`` uses. The projection is orthographic: a
frontal pose draws the z axis as a point. Ground truth is drawn solid, a
prediction dashed. :func:`axis_ends` and :data:`AXIS_RGB` are the same axes
and colours for drawing into pixels (``hpelib.predict`` draws them with OpenCV).

Also the figures of a run: its loss curves (:func:`plot_losses`), the
histograms of its test errors (:func:`error_histograms`) and its predictions
drawn on the data set's images (:func:`prediction_grid`, with
:func:`extreme_predictions` to pick the best and worst).

Figures are :class:`matplotlib.figure.Figure` objects built without pyplot
(no global state, no backend needed); Jupyter shows them inline when they are
the last value of a cell, and ``fig.savefig`` writes them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from .angles import project_axes
from .runs import ERROR_COLUMNS, PRED_COLUMNS, with_errors

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AXIS_COLORS", "AXIS_RGB", "axis_ends", "display_image", "draw_pose_axes", "pose_grid", "dataset_grid",
           "extreme_predictions", "prediction_grid", "plot_losses", "error_histograms"]

#: colours of the head's x, y and z axes
AXIS_COLORS = ("tab:red", "tab:green", "tab:blue")
#: the same colours as 8-bit RGB, for drawing into pixels
AXIS_RGB = tuple(tuple(round(255 * c) for c in to_rgb(name)) for name in AXIS_COLORS)


def axis_ends(pose, center, size: float) -> np.ndarray | None:
    """End points ``[3, 2]`` (x right, y down, pixels) of the head's x, y, z axes drawn from ``center``.

    ``pose``: (yaw, pitch, roll) degrees; ``size``: axis length in pixels.
    None when the pose is not finite (nothing to draw). Row ``i`` goes with
    colour ``i`` of :data:`AXIS_COLORS` / :data:`AXIS_RGB`.
    """
    p = np.asarray(torch.as_tensor(pose).detach().cpu(), dtype=np.float64).reshape(3)
    if not np.isfinite(p).all():
        return None
    return np.asarray(center, dtype=np.float64).reshape(1, 2) + project_axes(p, float(size))


def display_image(image) -> np.ndarray:
    """Anything image-like -> ``[H, W, 3]`` array matplotlib can show.

    A ``[3, H, W]`` tensor is taken as an ImageNet-normalized network input and
    undone with :func:`hpelib.data.transforms.denormalize`; an ``[H, W, 3]``
    (or ``[H, W]``) array or tensor is shown as it is (uint8 0-255 or float 0-1).
    """
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        from .data.transforms import denormalize

        return denormalize(image)
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"cannot show an image of shape {arr.shape}: expected [3, H, W] tensor or [H, W, 3] array")
    return arr


def draw_pose_axes(ax, image, pose=None, pred=None, size: float | None = None, center=None,
                   linewidth: float = 2.0, title: str | None = None):
    """Show ``image`` on ``ax`` with the axes of ``pose`` (solid) and ``pred`` (dashed).

    ``pose``/``pred``: (yaw, pitch, roll) degrees, or None to skip (NaN poses
    are skipped too). ``size``: axis length in pixels (default: 40% of the
    image side); ``center``: (x, y) pixel of the axes' origin (default: the
    image centre). Returns ``ax``.
    """
    img = display_image(image)
    h, w = img.shape[:2]
    ax.imshow(img)
    size = 0.4 * min(h, w) if size is None else float(size)
    cx, cy = ((w - 1) / 2.0, (h - 1) / 2.0) if center is None else (float(center[0]), float(center[1]))
    for p, style in ((pose, "-"), (pred, "--")):
        ends = None if p is None else axis_ends(p, (cx, cy), size)
        if ends is None:
            continue
        for (ex, ey), color in zip(ends, AXIS_COLORS):
            ax.plot([cx, ex], [cy, ey], style, color=color, linewidth=linewidth)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def pose_grid(images: Sequence, poses: Sequence | None = None, preds: Sequence | None = None,
              titles: Sequence[str] | None = None, ncols: int = 6, tile_inches: float = 1.8,
              suptitle: str | None = None) -> Figure:
    """A grid of images with their pose axes (``poses`` solid, ``preds`` dashed)."""
    n = len(images)
    if n == 0:
        raise ValueError("pose_grid: no images to show")
    for what, seq in (("poses", poses), ("preds", preds), ("titles", titles)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"pose_grid: {len(seq)} {what} for {n} images")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(tile_inches * ncols, tile_inches * nrows + (0.3 if suptitle else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        draw_pose_axes(ax, images[i], None if poses is None else poses[i], None if preds is None else preds[i],
                       title=None if titles is None else titles[i])
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _fmt_pose(p) -> str:
    p = np.asarray(p, dtype=float)
    return "unlabeled" if not np.isfinite(p).all() else "y{:.0f} p{:.0f} r{:.0f}".format(*p)


def dataset_grid(dataset, indices: Sequence[int] | None = None, preds: dict | Sequence | None = None,
                 n: int = 12, ncols: int = 6, seed: int = 0, suptitle: str | None = None) -> Figure:
    """Samples of an hpelib data set with their labelled axes (and predictions, dashed).

    ``indices``: which samples (default: ``n`` picked at random with ``seed``).
    ``preds``: predictions aligned with ``indices``, or ``{index: pose}``.
    Titles give the true (yaw, pitch, roll), rounded.
    """
    if indices is None:
        rng = np.random.default_rng(seed)
        indices = sorted(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False).tolist())
    indices = [int(i) for i in indices]
    items = [dataset[i] for i in indices]
    images = [im for im, _ in items]
    poses = [p for _, p in items]
    if isinstance(preds, dict):
        preds = [preds.get(i) for i in indices]
    titles = [_fmt_pose(p) for p in poses]
    return pose_grid(images, poses, preds, titles, ncols=ncols, suptitle=suptitle)


def extreme_predictions(predictions, k: int = 6, error: str = "mae_err"):
    """``(best, worst)``: the ``k`` rows of a predictions table with the smallest / largest error.

    ``predictions`` is a ``predictions.csv`` as a DataFrame (see
    :func:`hpelib.engine.evaluate`); ``error`` is a column, or ``mae_err`` (the
    mean of the three angle errors, added by :func:`hpelib.runs.with_errors`
    when absent). Unlabeled rows (NaN error) are left out.
    """
    df = with_errors(predictions) if error == "mae_err" and "mae_err" not in predictions else predictions
    if error not in df:
        raise ValueError(f"predictions have no column {error!r}; columns: {list(df.columns)}")
    df = df[np.isfinite(df[error].to_numpy(float))].sort_values(error, kind="stable")
    return df.head(k), df.tail(k).iloc[::-1]


def prediction_grid(dataset, rows: pd.DataFrame, title: str, ncols: int = 6) -> Figure:
    """The samples of a predictions table with their true (solid) and predicted (dashed) axes.

    ``rows``: rows of a ``predictions.csv`` made on ``dataset`` (e.g. one of
    :func:`extreme_predictions`), found in the data set by ``name``
    (``dataset.names``). Each title gives the true pose and the sample's MAE.
    Raises ``ValueError``, naming one, when a name is not in the data set.
    """
    index = {str(name): i for i, name in enumerate(dataset.names)}
    names = [str(name) for name in rows["name"]]
    missing = [name for name in names if name not in index]
    if missing:
        raise ValueError(f"{len(missing)} prediction names are not in the data set (e.g. {missing[0]!r}): "
                         "the predictions must come from an evaluation on this data set")
    rows = rows if "mae_err" in rows else with_errors(rows)
    preds = list(rows[list(PRED_COLUMNS)].to_numpy(float, copy=True))  # writable: torch warns otherwise
    fig = dataset_grid(dataset, indices=[index[name] for name in names], preds=preds, ncols=ncols, suptitle=title)
    for ax, err in zip(fig.axes, rows["mae_err"]):
        ax.set_title(ax.get_title() + f"\nMAE {err:.1f}", fontsize=7)
    return fig


def plot_losses(losses: pd.DataFrame, title: str) -> Figure:
    """Loss curves: one line per column of ``losses`` (per-epoch means indexed by epoch, as
    :meth:`hpelib.runs.RunFolder.losses` gives them), with markers, on a log y axis."""
    if losses.empty:
        raise ValueError("plot_losses: no losses to draw")
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    for name in losses.columns:
        ax.plot(losses.index, losses[name], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def error_histograms(predictions: pd.DataFrame, bins: int = 20) -> Figure:
    """Histograms of the yaw, pitch, roll and geodesic errors of a predictions table (unlabeled rows left out).

    Error columns missing from ``predictions`` are computed (:func:`hpelib.runs.with_errors`).
    """
    df = with_errors(predictions)
    fig = Figure(figsize=(9, 2.8))
    axes = fig.subplots(1, len(ERROR_COLUMNS), sharey=True)
    for ax, col in zip(axes, ERROR_COLUMNS):
        ax.hist(df[col].dropna(), bins=bins)
        ax.set_xlabel(col.replace("_err", " error (deg)"))
    axes[0].set_ylabel("images")
    fig.tight_layout()
    return fig
