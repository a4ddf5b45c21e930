"""The study's figures, on :class:`matplotlib.figure.Figure` objects (no pyplot state), and saving them.

All errors are in degrees; every figure draws one panel per test set, means
with 95% t-intervals over seeds where seeds are averaged.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_write
from ..metrics import ANGLE_NAMES
from .columns import is_reference, reference_method, require_columns, sort_rows
from .stats import mean_ci


def _new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig, path_stem: str | os.PathLike, formats: Iterable[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<path_stem>.png`` and ``.pdf`` (atomically); returns the paths."""
    stem = Path(path_stem)
    paths = []
    for fmt in formats:
        target = stem.with_name(stem.name + f".{fmt}")
        paths.append(atomic_write(target, lambda tmp, f=fmt: fig.savefig(tmp, format=f, dpi=dpi)))
    return paths


def _finish(fig, save: str | os.PathLike | None):
    """``fig``, after writing it to ``<save>.png`` and ``<save>.pdf`` when ``save`` is given."""
    if save is not None:
        save_figure(fig, save)
    return fig


def _variant_labels(df: pd.DataFrame, with_backbone: bool = False) -> pd.Series:
    """``scenario: method`` (``baseline`` alone), with ``[init]`` where a pair has several inits.

    With ``with_backbone``, `` (backbone)`` is added when the rows have several backbones.
    """
    method = df["method"].astype(str)
    lab = np.where(method.isin(["none", "", "-"]), df["scenario"].astype(str), df["scenario"].astype(str) + ": " + method)
    lab = pd.Series(lab, index=df.index)
    n_init = df.groupby(["scenario", "method"])["init"].transform(lambda s: s.astype(str).nunique())
    lab = lab.where(n_init <= 1, lab + " [" + df["init"].astype(str) + "]")
    if with_backbone and df["backbone"].astype(str).nunique() > 1:
        lab = lab + " (" + df["backbone"].astype(str) + ")"
    return lab


def _palette(n: int):
    import seaborn as sns

    return sns.color_palette("colorblind", max(n, 1))


def _by_test_set(df: pd.DataFrame, test_set):
    sets = [test_set] if test_set is not None else sorted(df["test_set"].astype(str).unique())
    return sets, df.assign(test_set=df["test_set"].astype(str))


def _main_label_fraction(df: pd.DataFrame) -> float:
    variants = df.groupby("label_fraction")[["scenario", "method"]].apply(lambda g: len(g.drop_duplicates()))
    return float(max(variants.index, key=lambda f: (variants[f], f)))


def plot_error_by_method(df: pd.DataFrame, metric: str = "mae", label_fraction: float | None = None,
                         test_set: str | None = None, save: str | os.PathLike | None = None):
    """Bar chart of the mean error by scenario and method, with 95% t-intervals over seeds.

    One panel per test set. ``label_fraction`` picks the runs to show (default:
    the fraction with the most distinct variants, the largest one on a tie:
    the setting where the whole design was run). Runs with
    several backbones are shown as separate bars. Returns the Figure; with
    ``save`` also writes ``<save>.png`` and ``<save>.pdf``.
    """
    require_columns(df, "plot_error_by_method")
    if df.empty:
        raise ValueError("plot_error_by_method: the results table is empty")
    lf = _main_label_fraction(df) if label_fraction is None else float(label_fraction)
    sub = df[np.isclose(df["label_fraction"].astype(float), lf)]
    if sub.empty:
        raise ValueError(f"no runs with label_fraction={lf}; available: {sorted(df['label_fraction'].unique())}")
    sets, sub = _by_test_set(sub, test_set)
    sub = sub.assign(_label=_variant_labels(sub, with_backbone=True))
    order = list(dict.fromkeys(sort_rows(sub)["_label"]))
    scen = list(dict.fromkeys(sort_rows(sub)["scenario"]))
    colors = dict(zip(scen, _palette(len(scen))))
    fig, axes = _new_figure(len(sets), width=max(4.5, 0.55 * len(order) + 2), height=4.2)
    for ax, ts in zip(axes, sets):
        s = sub[sub["test_set"] == ts]
        labels, means, halves, cols = [], [], [], []
        for lab in order:
            g = s[s["_label"] == lab]
            if g.empty:
                continue
            m, h = mean_ci(g[metric].to_numpy(float))
            labels.append(f"{lab}\n(seeds={len(g)})")
            means.append(m)
            halves.append(h)
            cols.append(colors[g["scenario"].iloc[0]])
        x = np.arange(len(labels))
        ax.bar(x, means, yerr=halves, color=cols, capsize=4, edgecolor="black", linewidth=0.5)
        base = s[is_reference(s, "baseline", reference_method(s))]
        if not base.empty:
            ax.axhline(base[metric].mean(), color="grey", linestyle="--", linewidth=1, label="baseline mean")
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(f"{_metric_title(metric)} (degrees)")
        ax.set_title(f"{ts} — label fraction {lf:g}")
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[s_], edgecolor="black", label=s_) for s_ in scen]
    if (sub["scenario"] == "baseline").any():
        handles.append(Line2D([], [], color="grey", linestyle="--", label="baseline mean"))
    fig.legend(handles=handles, title="scenario\n(bar: mean,\nwhisker: 95% CI\nover seeds)", fontsize=8,
               title_fontsize=8, loc="outside right upper")
    return _finish(fig, save)


def _metric_title(metric: str) -> str:
    return {"mae": "MAE", "geodesic": "geodesic error", "yaw": "yaw error", "pitch": "pitch error",
            "roll": "roll error", "mae_err": "MAE"}.get(metric, metric)


def plot_label_efficiency(df: pd.DataFrame, metric: str = "mae", test_set: str | None = None,
                          save: str | os.PathLike | None = None):
    """Error against label fraction, one line per scenario/method: mean and 95% t-band over seeds.

    One panel per test set; the legend sits right of the panels (never over
    the data) and the y axis starts at 0, so that a small spread is not
    zoomed into a cliff. The x axis is logarithmic when the fractions span a
    factor of 10 or more; fractions (<= 1) are labelled as percentages. With
    a single label fraction there is no line to draw: each scenario/method is
    a point with its 95% error bar, side by side, and the title says so.
    """
    require_columns(df, "plot_label_efficiency")
    if df.empty:
        raise ValueError("plot_label_efficiency: the results table is empty")
    sets, sub = _by_test_set(df, test_set)
    sub = sub.assign(_label=_variant_labels(sub, with_backbone=True))
    order = list(dict.fromkeys(sort_rows(sub)["_label"]))
    colors = dict(zip(order, _palette(len(order))))
    markers = "osD^v<>pX*h"
    fr = sub["label_fraction"].astype(float)
    single = fr.nunique() == 1
    log_x = not single and fr.min() > 0 and fr.max() / fr.min() >= 10
    fmt = (lambda t: f"{100 * t:g}%") if fr.max() <= 1 else (lambda t: f"{t:g}")  # noqa: E731
    unit = "fraction of labeled training images" if fr.max() <= 1 else "labeled training images"
    fig, axes = _new_figure(len(sets), width=6.0, height=4.2)
    fig.set_figwidth(fig.get_figwidth() + 2.5)  # room for the legend right of the panels
    handles = {}
    for ax, ts in zip(axes, sets):
        s = sub[sub["test_set"] == ts]
        for i, lab in enumerate(order):
            g = s[s["_label"] == lab]
            if g.empty:
                continue
            style = dict(marker=markers[i % len(markers)], color=colors[lab], label=lab)
            if single:
                m, h = mean_ci(g[metric].to_numpy(float))
                handles[lab] = ax.errorbar([i], [m], yerr=[h], linestyle="none", capsize=4, **style)
                continue
            pts = [(f, *mean_ci(gg[metric].to_numpy(float))) for f, gg in g.groupby("label_fraction")]
            f, m, h = map(np.asarray, zip(*pts))
            handles[lab], = ax.plot(f, m, linestyle="--" if g["scenario"].iloc[0] == "baseline" else "-", **style)
            ax.fill_between(f, m - h, m + h, color=colors[lab], alpha=0.15, linewidth=0)
        if single:
            ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(order) - 0.5)
            ax.set_xlabel(f"{unit}: {fmt(fr.iloc[0])} for every run")
            ax.set_title(f"{ts}: one label fraction ({fmt(fr.iloc[0])}), mean and 95% CI over seeds")
        else:
            if log_x:
                ax.set_xscale("log")
            ticks = sorted(s["label_fraction"].astype(float).unique())
            ax.set_xticks(ticks, [fmt(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel(unit + (" (log scale)" if log_x else ""))
            ax.set_title(f"{ts}: label efficiency (mean, 95% CI over seeds)")
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"{_metric_title(metric)} (degrees)")
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(handles=[handles[lab] for lab in order if lab in handles], fontsize=8, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _finish(fig, save)


def budget_series(df: pd.DataFrame) -> dict:
    """``{(pretrain_method, label_fraction): rows}`` of the ``pretrain`` scenario with >= 2 pre-training budgets."""
    if "pretrain_epochs" not in df:
        return {}
    pre = df[(df["scenario"] == "pretrain") & df["pretrain_epochs"].notna()]
    return {key: g for key, g in pre.groupby(["pretrain_method", "label_fraction"])
            if g["pretrain_epochs"].nunique() >= 2}


def plot_pretrain_budget(df: pd.DataFrame, metric: str = "mae", test_set: str | None = None,
                         save: str | os.PathLike | None = None):
    """Fine-tuned error against SSL pre-training epochs (0 = the baseline), mean and 95% CI over seeds.

    One line per pre-training method and label fraction, drawn from the
    ``pretrain`` rows whose ``config.json`` records ``pretrain_epochs`` (a
    study with ``pretrain_train`` variants); the baseline of the same label
    fraction is the point at 0 epochs. x axis: symmetric log (0, then 1, 4, 16...).
    """
    require_columns(df, "plot_pretrain_budget")
    series = budget_series(df)
    if not series:
        raise ValueError("plot_pretrain_budget: no pre-training method was run with two or more budgets "
                         "(pretrain_train: {epochs: ...} variants)")
    sets, sub = _by_test_set(df, test_set)
    colors = dict(zip(series, _palette(len(series))))
    fig, axes = _new_figure(len(sets), width=6.0, height=4.2)
    for ax, ts in zip(axes, sets):
        s = sub[sub["test_set"] == ts]
        for (method, lf), rows in series.items():
            base = s[is_reference(s, "baseline", reference_method(s)) & (s["label_fraction"] == lf)]
            base = base.assign(pretrain_epochs=0)
            g = pd.concat([base, rows[rows["test_set"].astype(str) == ts]])
            pts = [(e, *mean_ci(gg[metric].to_numpy(float))) for e, gg in g.groupby("pretrain_epochs")]
            if not pts:
                continue
            x, m, h = map(np.asarray, zip(*pts))
            ax.errorbar(x, m, yerr=h, marker="o", capsize=4, color=colors[(method, lf)],
                        label=f"{method}, {lf:.0%} labels")
        budgets = sorted(set(float(e) for _, r in series.items() for e in r["pretrain_epochs"]) | {0.0})
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel("SSL pre-training epochs over the unlabeled pool (0 = baseline)")
        ax.set_ylabel(f"fine-tuned {_metric_title(metric)} (degrees)")
        ax.set_title(f"{ts}: pre-training budget (mean, 95% CI over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _finish(fig, save)


def plot_error_vs_angle(predictions: pd.DataFrame, angle: str = "yaw", bins: int | Sequence[float] = 12,
                        error: str = "mae", by: str = "variant", test_set: str | None = None,
                        min_count: int = 5, save: str | os.PathLike | None = None):
    """Mean error against the ground-truth ``angle`` (binned), one line per group.

    ``predictions`` comes from :func:`collect_predictions`. ``error``: ``mae``
    (mean of the yaw/pitch/roll errors of a sample), ``yaw``, ``pitch``,
    ``roll`` or ``geodesic``. ``by``: ``variant`` (scenario: method, seeds
    pooled) or ``run`` (one line per run). ``bins``: a number of equal-width
    bins over the observed range, or the bin edges in degrees. Bins with fewer
    than ``min_count`` samples of a group are not drawn: the line has a gap
    there, and the panel's title says how many bins were left out. One panel
    per test set.
    """
    if angle not in ANGLE_NAMES:
        raise ValueError(f"angle must be one of {ANGLE_NAMES}, got {angle!r}")
    err_col = {"mae": "mae_err", "geodesic": "geodesic_err", **{a: f"{a}_err" for a in ANGLE_NAMES}}.get(error)
    if err_col is None:
        raise ValueError(f"error must be 'mae', 'geodesic', 'yaw', 'pitch' or 'roll', got {error!r}")
    if by not in ("variant", "run"):
        raise ValueError(f"by must be 'variant' or 'run', got {by!r}")
    need = [f"{angle}_true", err_col, "scenario", "method", "init", "run"]
    missing = [c for c in need if c not in predictions]
    if missing or predictions.empty:
        raise ValueError(f"plot_error_vs_angle needs the output of collect_predictions() "
                         f"(missing columns {missing}, {len(predictions)} rows)")
    sets, p = _by_test_set(predictions, test_set)
    p = p.assign(_label=_variant_labels(p) if by == "variant" else p["run"].astype(str))
    true = p[f"{angle}_true"].astype(float)
    edges = (np.linspace(np.floor(true.min()), np.ceil(true.max()), int(bins) + 1)
             if np.isscalar(bins) else np.asarray(bins, float))
    centers = 0.5 * (edges[:-1] + edges[1:])
    p["_bin"] = pd.cut(true, edges, labels=False, include_lowest=True)
    order = list(dict.fromkeys(sort_rows(p.drop_duplicates("_label"))["_label"]))
    colors = dict(zip(order, _palette(len(order))))
    fig, axes = _new_figure(len(sets), width=6.0, height=4.2)
    for ax, ts in zip(axes, sets):
        s = p[(p["test_set"] == ts) & p["_bin"].notna()]
        dropped = np.zeros(len(centers), bool)  # bins some line does not draw
        for lab in order:
            g = s[s["_label"] == lab]
            if g.empty:
                continue
            stat = g.groupby("_bin")[err_col].agg(["mean", "count"]).reindex(range(len(centers)))
            few = ~(stat["count"] >= min_count).to_numpy()
            dropped |= few
            # NaN at a dropped bin: the line breaks there instead of running straight across it
            ax.plot(centers, stat["mean"].mask(few), marker="o", markersize=3, color=colors[lab], label=lab)
        counts = np.bincount(s["_bin"].astype(int), minlength=len(centers)) if len(s) else np.zeros(len(centers))
        ax2 = ax.twinx()
        ax2.bar(centers, counts, width=np.diff(edges) * 0.9, color="grey", alpha=0.12, zorder=0)
        ax2.set_ylabel("samples per bin (all lines)", color="grey", fontsize=8)
        ax2.tick_params(axis="y", colors="grey", labelsize=7)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_xlabel(f"ground-truth {angle} (degrees)")
        ax.set_ylabel(f"{_metric_title(error)} (degrees)")
        k = int(dropped.sum())
        note = f"\nbins with < {min_count} samples not drawn ({k} bin{'s' * (k != 1)})" if k else ""
        ax.set_title(f"{ts}: error vs ground-truth {angle}{note}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _finish(fig, save)

