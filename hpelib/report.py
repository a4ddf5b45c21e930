"""Results of a study: the tidy table, the paper's error tables, paired tests, figures.

A study writes one folder per run (anywhere under a results folder, nested or
not). A folder is a *run* when it holds ``config.json``; it is *complete* when
it also holds a ``metrics.json`` with the metric keys :data:`METRIC_KEYS`.
Incomplete runs (crashed, still running) are skipped with one warning that
lists them; SSL pre-training runs (``"kind": "pretrain"`` in ``config.json``)
are skipped silently: they have no pose metrics.

``config.json``
    ``run`` (id; default: the folder path relative to the results folder),
    ``scenario`` (``baseline``, ``pretrain``, ``auxiliary``, ``combined``),
    ``method`` (display string, e.g. ``rotation``, ``simclr+jigsaw``, ``none``
    for the baseline; when absent it is built from ``pretrain_method`` and
    ``aux_methods``), ``init``, ``label_fraction`` (``null`` = all labels =
    1.0), ``seed``, ``test_set``, ``backbone``, ``image_size``;
    ``model_config`` and ``train_config`` feed the ``settings`` fingerprint
    (see *Checks*). Missing keys are tolerated.

``metrics.json`` -- two accepted forms
    * flat: ``{"yaw": .., "pitch": .., "roll": .., "mae": .., "geodesic": ..,
      "n": .., "train_time_s": ..}`` -> one row, test set from ``config.json``;
    * per test set: ``{"per_test_set": {"aflw2000": {...}, "biwi": {...}}}``
      (top-level ``train_time_s`` is shared), or directly
      ``{"aflw2000": {...}, "biwi": {...}}`` (every top-level value a dict of
      metrics) -> one row per test set.

    Optional in either form (inside each test set's block): ``constant_yaw``,
    ``constant_pitch``, ``constant_roll``, ``constant_mae``, the errors of
    always predicting the mean training pose (NaN columns when absent).

``predictions.csv`` (optional)
    ``name, yaw_true, pitch_true, roll_true, yaw_pred, pitch_pred, roll_pred,
    yaw_err, pitch_err, roll_err, geodesic_err``; a run evaluated on several
    sets writes ``predictions_<test_set>.csv`` (or one file with a
    ``test_set`` column). Missing error columns are computed with
    :mod:`hpelib.metrics` (wrap-aware, closest Euler triplet).

Comparisons with the baseline
    A row is compared with the ``baseline`` scenario that has the same test
    set, label fraction and backbone (and the same seed for paired tests).
    When the study has baselines with several ``init`` values, the reference
    is, in this order: ``baseline_init`` if given; the baseline with the same
    init as the row; the only baseline init; the ``random``-init baseline
    (SSL pre-training replaces a random initialisation: that is the paper's
    comparison). The ``baseline_init`` column of the outputs says which one
    was used. :func:`paired_tests` gives the mean paired difference with its
    95% t-interval (``ci_low``, ``ci_high``); the half-width (``± detectable``
    in ``paired_tests.md``) is about the smallest effect the seeds can detect.

Checks (marked in the error tables; ``build_report`` warns and lists them in ``warnings.md``)
    * *unlearned* (column ``unlearned``, mark †): the yaw, pitch, roll or mean
      error of a row is >= :data:`UNLEARNED_RATIO` (0.8) x the constant
      predictor's error on it: not clearly better than no model.
    * *mixed settings* (column ``settings``, mark ‡): the runs averaged into
      one error-table row (:data:`ROW_KEYS`) must share ``image_size``,
      ``model_config`` but ``init`` and ``train_config`` but ``seed`` and the
      fields that do not change results (:data:`SETTINGS_IGNORED`);
      ``settings`` is a short hash of them. Rows are never dropped.

All errors are in degrees. Figures are built on :class:`matplotlib.figure.Figure`
objects (no pyplot state, so no backend or display is needed and nothing
leaks); they render inline in Jupyter and are saved as PNG + PDF atomically.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .io import atomic_write, read_json, write_text

__all__ = [
    "METRIC_KEYS",
    "RESULT_COLUMNS",
    "UNLEARNED_RATIO",
    "collect",
    "training_settings",
    "study_warnings",
    "write_results_table",
    "collect_predictions",
    "error_table",
    "to_markdown",
    "to_latex",
    "paired_tests",
    "paired_tests_markdown",
    "plot_error_by_method",
    "plot_label_efficiency",
    "plot_pretrain_budget",
    "plot_error_vs_angle",
    "save_figure",
    "build_report",
]

METRIC_KEYS = ("yaw", "pitch", "roll", "mae", "geodesic", "n", "train_time_s")
CONFIG_KEYS = ("run", "scenario", "method", "pretrain_method", "aux_methods", "init",
               "label_fraction", "seed", "test_set", "backbone", "image_size", "pretrain_epochs")
#: errors of the constant predictor (always the mean training pose); NaN when metrics.json lacks them
CONSTANT_KEYS = ("constant_yaw", "constant_pitch", "constant_roll", "constant_mae")
RESULT_COLUMNS = list(CONFIG_KEYS) + list(METRIC_KEYS) + list(CONSTANT_KEYS) + ["unlearned", "settings", "path"]
#: a run is *unlearned* when its error on yaw, pitch, roll or MAE is not clearly below the constant
#: predictor's: error >= UNLEARNED_RATIO x constant error
UNLEARNED_RATIO = 0.8
#: train_config fields that do not change the results: left out of the ``settings`` fingerprint
SETTINGS_IGNORED = ("seed", "num_workers", "log_every", "progress", "device", "ddp_find_unused_parameters")
SCENARIO_ORDER = ("baseline", "pretrain", "auxiliary", "combined")
#: columns that identify a comparable setting (a baseline is looked up within it)
SETTING_KEYS = ("test_set", "backbone", "label_fraction")
#: columns that identify one row of the error table (seeds are averaged over)
ROW_KEYS = SETTING_KEYS + ("scenario", "method", "init")
_ANGLES = ("yaw", "pitch", "roll")
_ERR_COLS = ("yaw_err", "pitch_err", "roll_err", "geodesic_err")


# --------------------------------------------------------------------------- collect
def _is_hidden(path: Path, root: Path) -> bool:
    return any(p.startswith(".") for p in path.relative_to(root).parts)


def _run_dirs(root: Path) -> list[Path]:
    dirs = {p.parent for p in root.rglob("config.json")} | {p.parent for p in root.rglob("metrics.json")}
    return sorted(d for d in dirs if not _is_hidden(d, root))


def _metric_blocks(metrics: dict, default_test_set) -> list[tuple[object, dict]]:
    """Turn a metrics.json object into ``[(test_set, flat_metrics), ...]``."""
    if not isinstance(metrics, dict):
        raise ValueError("metrics.json must hold a JSON object")
    if isinstance(metrics.get("per_test_set"), dict):
        shared = {k: v for k, v in metrics.items() if k != "per_test_set" and not isinstance(v, dict)}
        return [(ts, {**shared, **m}) for ts, m in metrics["per_test_set"].items()]
    if metrics and "mae" not in metrics and all(isinstance(v, dict) for v in metrics.values()):
        return list(metrics.items())
    return [(default_test_set, metrics)]


def _method_name(cfg: dict) -> str:
    if cfg.get("method") not in (None, ""):
        return str(cfg["method"])
    parts = []
    if cfg.get("pretrain_method"):
        parts.append(str(cfg["pretrain_method"]))
    aux = cfg.get("aux_methods")
    if aux:
        parts.extend([aux] if isinstance(aux, str) else [str(a) for a in aux])
    return "+".join(parts) if parts else "none"


def training_settings(cfg: dict) -> dict:
    """The settings of ``config.json`` that runs of one error-table row must share, flattened.

    ``image_size``, ``model_config.<key>`` (all but ``init``) and
    ``train_config.<key>`` (all but :data:`SETTINGS_IGNORED`); missing parts
    are simply absent.
    """
    out = {"image_size": cfg.get("image_size")}
    for part, skip in (("model_config", ("init",)), ("train_config", SETTINGS_IGNORED)):
        sub = cfg.get(part)
        if isinstance(sub, dict):
            out.update({f"{part}.{k}": v for k, v in sub.items() if k not in skip})
    return out


def _fingerprint(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _config_row(cfg: dict, run_dir: Path, root: Path) -> dict:
    aux = cfg.get("aux_methods")
    lf = cfg.get("label_fraction")
    return {
        "run": str(cfg.get("run") or run_dir.relative_to(root).as_posix() or run_dir.name),
        "scenario": str(cfg.get("scenario", "unknown")),
        "method": _method_name(cfg),
        "pretrain_method": cfg.get("pretrain_method"),
        "aux_methods": "+".join(aux) if isinstance(aux, (list, tuple)) else aux,
        "init": cfg.get("init"),
        "label_fraction": 1.0 if lf is None else float(lf),
        "seed": cfg.get("seed"),
        "test_set": cfg.get("test_set"),
        "backbone": cfg.get("backbone"),
        "image_size": cfg.get("image_size"),
        "pretrain_epochs": cfg.get("pretrain_epochs"),
        "settings": _fingerprint(training_settings(cfg)),
    }


def collect(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One tidy row per complete run and test set, columns :data:`RESULT_COLUMNS`.

    Besides the config and metric keys: the constant predictor's errors
    (:data:`CONSTANT_KEYS`, NaN when ``metrics.json`` lacks them),
    ``unlearned`` (see :data:`UNLEARNED_RATIO`) and ``settings`` (8-hex
    fingerprint of :func:`training_settings`). Runs without ``config.json``,
    or without a readable ``metrics.json`` holding all of :data:`METRIC_KEYS`,
    are skipped; one ``UserWarning`` lists them with the reason. Raises
    ``ValueError`` if ``results_dir`` does not exist.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ValueError(f"results folder {root} does not exist: pass the folder the study wrote its runs into")
    rows, skipped = [], []
    for d in _run_dirs(root):
        rel = d.relative_to(root).as_posix() or "."
        cfg_path, met_path = d / "config.json", d / "metrics.json"
        if not cfg_path.exists():
            skipped.append(f"{rel} (no config.json)")
            continue
        if not met_path.exists():
            skipped.append(f"{rel} (no metrics.json)")
            continue
        try:
            cfg = read_json(cfg_path)
            if cfg.get("kind") == "pretrain":  # SSL pre-training: no pose metrics by design
                continue
            blocks = _metric_blocks(read_json(met_path), cfg.get("test_set"))
        except (ValueError, OSError) as e:  # JSONDecodeError is a ValueError
            skipped.append(f"{rel} (unreadable: {e})")
            continue
        base = _config_row(cfg, d, root)
        for test_set, m in blocks:
            missing = [k for k in METRIC_KEYS if m.get(k) is None]
            if missing:
                skipped.append(f"{rel} [{test_set}] (metrics.json lacks {', '.join(missing)})")
                continue
            row = dict(base, test_set=test_set, path=str(d))
            row.update({k: float(m[k]) for k in METRIC_KEYS})
            row.update({k: np.nan if m.get(k) is None else float(m[k]) for k in CONSTANT_KEYS})
            rows.append(row)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} incomplete run(s) under {root}: " + "; ".join(skipped),
                      UserWarning, stacklevel=2)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df["n"] = df["n"].astype("Int64") if len(df) else df["n"]
    df["unlearned"] = _unlearned_mask(df)
    dup = df.duplicated(["run", "test_set"], keep=False)
    if dup.any():
        warnings.warn(f"run ids appear more than once (copied folders?): {sorted(set(df.loc[dup, 'run']))}",
                      UserWarning, stacklevel=2)
    return _sort(df).reset_index(drop=True)


def _scenario_rank(s: pd.Series) -> pd.Series:
    order = {name: i for i, name in enumerate(SCENARIO_ORDER)}
    return s.map(lambda v: order.get(v, len(order)))


def _natural(s: pd.Series) -> pd.Series:
    """Sort key that orders numbers inside labels by value (``rotation-4ep`` before ``rotation-16ep``)."""
    return s.astype(str).str.replace(r"\d+", lambda m: m.group(0).zfill(8), regex=True)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    keys = [k for k in ("test_set", "backbone", "label_fraction") if k in df]
    tmp = df.assign(_rank=_scenario_rank(df["scenario"]))
    if "method" in tmp:
        tmp["_method"] = _natural(tmp["method"])
    by = keys + ["_rank"] + [k for k in ("_method", "init", "seed") if k in tmp]
    return tmp.sort_values(by, kind="stable", na_position="last").drop(columns=["_rank", "_method"], errors="ignore")


def write_results_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the :func:`collect` table as CSV, atomically."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


# --------------------------------------------------------------------------- checks
def _not_below(err, const):
    """True where ``err`` is not clearly below the constant predictor's error ``const`` (NaN: False)."""
    err, const = np.asarray(err, float), np.asarray(const, float)
    with np.errstate(invalid="ignore"):
        return (const > 0) & (err >= UNLEARNED_RATIO * const)


def _unlearned_mask(df: pd.DataFrame) -> pd.Series:
    hit = np.zeros(len(df), bool)
    for m in ("yaw", "pitch", "roll", "mae"):
        if m in df and f"constant_{m}" in df:
            hit |= _not_below(df[m], df[f"constant_{m}"])
    return pd.Series(hit, index=df.index)


def _differing_keys(paths: Iterable) -> str:
    """The :func:`training_settings` keys that differ between the runs in ``paths``, with their values."""
    try:
        runs = [training_settings(read_json(Path(p) / "config.json")) for p in dict.fromkeys(paths)]
    except (OSError, ValueError, TypeError):
        return "unknown (config.json not readable)"
    diff = []
    for key in sorted(set().union(*runs)):
        values = {json.dumps(r.get(key, "<missing>"), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            diff.append(f"{key} ({' vs '.join(sorted(values))})")
    return "; ".join(diff) or "unknown"


def _group_name(keys: dict) -> str:
    method = "" if keys["method"] in ("none", "-") else f": {keys['method']}"
    return (f"{keys['scenario']}{method} [init {keys['init']}], test set {keys['test_set']}, "
            f"backbone {keys['backbone']}, label fraction {keys['label_fraction']:g}")


def study_warnings(df: pd.DataFrame) -> dict[str, list[str]]:
    """What a reader of the tables must know about the runs of a :func:`collect` table, one line per item.

    ``unlearned``: rows not clearly below the constant predictor, with the
    failing metrics (``yaw 27.00 >= 0.8 x 25.00``); ``unchecked``: rows whose
    ``metrics.json`` has no constant-predictor errors; ``mixed_settings``:
    error-table groups (:data:`ROW_KEYS`) whose runs have different
    ``settings`` fingerprints, with every run's fingerprint and the keys that
    differ (read back from the runs' ``config.json``).
    """
    out: dict[str, list[str]] = {"unlearned": [], "unchecked": [], "mixed_settings": []}
    for _, r in df.iterrows():
        name = f"{r['run']} [{_fmt_key(r['test_set'])}]"
        have = [m for m in ("yaw", "pitch", "roll", "mae") if np.isfinite(float(r.get(f"constant_{m}", np.nan)))]
        fails = [f"{m} {r[m]:.2f} >= {UNLEARNED_RATIO:g} x {r[f'constant_{m}']:.2f}"
                 for m in have if _not_below(r[m], r[f"constant_{m}"])]
        if fails:
            out["unlearned"].append(f"{name}: {', '.join(fails)}")
        elif not have:
            out["unchecked"].append(name)
    if "settings" in df and len(df):
        k = _key_frame(df)
        for keys, g in k.groupby(list(ROW_KEYS), sort=False):
            if g["settings"].nunique() > 1:
                runs = ", ".join(f"{run} ({fp})" for run, fp in zip(g["run"], g["settings"]))
                differ = _differing_keys(g["path"]) if "path" in g else "unknown"
                out["mixed_settings"].append(f"{_group_name(dict(zip(ROW_KEYS, keys)))}: runs {runs}; "
                                             f"differing: {differ}")
    return out


def _first(lines: list[str], k: int = 3) -> str:
    """The first ``k`` lines joined, and how many more ``warnings.md`` lists."""
    more = f"; ... and {len(lines) - k} more" if len(lines) > k else ""
    return "; ".join(lines[:k]) + more


def _warnings_markdown(notes: dict[str, list[str]]) -> str:
    items = lambda lines: [f"- {line}" for line in lines] or ["- none"]  # noqa: E731
    lines = ["# Report warnings", "", "## Runs that did not learn (marked † in the error tables)", "",
             f"Rows whose yaw, pitch, roll or mean error is >= {UNLEARNED_RATIO:g} x the error of always "
             "predicting the mean training pose (`constant_*` in metrics.json): not clearly better than no model.",
             "", *items(notes["unlearned"])]
    if notes["unchecked"]:
        lines += ["", f"Not checked ({len(notes['unchecked'])} rows without constant-predictor errors in "
                      "metrics.json): " + ", ".join(notes["unchecked"])]
    lines += ["", "## Rows that mix training settings (marked ‡ in the error tables)", "",
              "The runs averaged into one error-table row (same test set, backbone, label fraction, scenario, "
              "method, init) should share image_size, model_config (but init) and train_config (but seed, "
              + ", ".join(SETTINGS_IGNORED[1:]) + "); the fingerprint is the `settings` column of results.csv.",
              "", *items(notes["mixed_settings"])]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- predictions
def _read_predictions(path: Path) -> pd.DataFrame:
    p = pd.read_csv(path)
    if not set(_ERR_COLS[:3]) <= set(p.columns):
        need = [f"{a}_{s}" for s in ("true", "pred") for a in _ANGLES]
        if not set(need) <= set(p.columns):
            raise ValueError(f"{path} has neither {list(_ERR_COLS[:3])} nor {need} columns")
        from .metrics import angle_errors, geodesic_errors

        t = p[[f"{a}_true" for a in _ANGLES]].to_numpy(float)
        q = p[[f"{a}_pred" for a in _ANGLES]].to_numpy(float)
        err = angle_errors(q, t)
        for i, a in enumerate(_ANGLES):
            p[f"{a}_err"] = err[:, i]
        p["geodesic_err"] = geodesic_errors(q, t)
    p["mae_err"] = p[["yaw_err", "pitch_err", "roll_err"]].mean(axis=1)
    return p


def collect_predictions(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All per-sample predictions of the complete runs, tagged with the run's config.

    Reads ``predictions.csv`` and ``predictions_<test_set>.csv`` of every run
    that :func:`collect` keeps. Adds ``mae_err`` (mean of the three angle
    errors) and the columns run, scenario, method, init, label_fraction, seed,
    test_set, backbone. Empty frame if no run saved predictions.
    """
    root = Path(results_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # collect() already warns when called directly
        runs = collect(root)
    tags = ["run", "scenario", "method", "init", "label_fraction", "seed", "backbone"]
    frames = []
    for path, group in runs.groupby("path", sort=False):
        first = group.iloc[0]
        for f in sorted(Path(path).glob("predictions*.csv")):
            p = _read_predictions(f)
            if f.stem.startswith("predictions_"):
                p["test_set"] = f.stem[len("predictions_"):]
            elif "test_set" not in p:
                p["test_set"] = first["test_set"]
            for t in tags:
                p[t] = first[t]
            frames.append(p)
    if not frames:
        return pd.DataFrame(columns=["name", *tags, "test_set", *_ERR_COLS, "mae_err"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- baseline lookup
def _key_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Copy with NaN-free, float-rounded key columns so that equal settings merge."""
    out = df.copy()
    for k in ("test_set", "backbone", "init", "scenario", "method"):
        out[k] = out[k].astype(object).where(out[k].notna(), "-").astype(str)
    out["label_fraction"] = out["label_fraction"].astype(float).round(9)
    return out


def _choose_baseline_init(row_init: str, available: Sequence[str], baseline_init: str | None):
    if baseline_init is not None:
        return baseline_init if baseline_init in available else None
    if row_init in available:
        return row_init
    if len(available) == 1:
        return available[0]
    if "random" in available:
        return "random"
    return None


def _attach_baseline_init(rows: pd.DataFrame, base: pd.DataFrame, baseline_init) -> pd.Series:
    avail = base.groupby(list(SETTING_KEYS))["init"].agg(lambda s: sorted(set(s))).to_dict()
    out = []
    for _, r in rows.iterrows():
        inits = avail.get(tuple(r[k] for k in SETTING_KEYS), [])
        out.append(_choose_baseline_init(r["init"], inits, baseline_init))
    return pd.Series(out, index=rows.index, dtype=object)


def _check_df(df: pd.DataFrame, what: str) -> None:
    missing = [c for c in ROW_KEYS + ("seed", "mae") if c not in df]
    if missing:
        raise ValueError(f"{what}: the results table lacks columns {missing}; build it with hpelib.report.collect()")


# --------------------------------------------------------------------------- error table
def error_table(df: pd.DataFrame, baseline: str = "baseline", baseline_init: str | None = None) -> pd.DataFrame:
    """The paper's error table: one row per setting x (scenario, method, init).

    Key columns: test_set, backbone, label_fraction, scenario, method, init.
    Numbers: ``n_seeds``; ``<m>_mean`` / ``<m>_std`` for yaw, pitch, roll, mae,
    geodesic (std over seeds, ``ddof=1``, NaN with one seed); ``delta_pct`` =
    100 * (MAE mean - baseline MAE mean) / baseline MAE mean (negative =
    better); ``baseline_init``. Display strings: ``Yaw``, ``Pitch``, ``Roll``,
    ``MAE`` ("mean ± std", or "mean" with one seed) and ``Δ vs baseline (%)``
    ("—" for the baseline rows and where no baseline exists). Checks:
    ``unlearned`` (some run of the row is not clearly below the constant
    predictor, see :data:`UNLEARNED_RATIO`), ``mixed_settings`` (its runs have
    different ``settings`` fingerprints) and ``flag`` ("†", "‡", "†‡" or ""),
    the mark :func:`to_markdown` and :func:`to_latex` put after the MAE.
    """
    _check_df(df, "error_table")
    if df.empty:
        raise ValueError("error_table: the results table is empty (no complete runs)")
    k = _key_frame(df).assign(_unlearned=_unlearned_mask(df))
    metrics = [m for m in ("yaw", "pitch", "roll", "mae", "geodesic") if m in k]
    g = k.groupby(list(ROW_KEYS), sort=False)
    agg = g[metrics].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg.insert(0, "n_seeds", g.size())
    agg["unlearned"] = g["_unlearned"].any()
    agg["mixed_settings"] = g["settings"].nunique() > 1 if "settings" in k else False
    agg["flag"] = [("†" if u else "") + ("‡" if m else "") for u, m in zip(agg["unlearned"], agg["mixed_settings"])]
    agg = agg.reset_index()

    base = agg[agg["scenario"] == baseline]
    if base.empty:
        warnings.warn(f"no '{baseline}' runs: the Δ vs baseline column is left empty", UserWarning, stacklevel=2)
        agg["baseline_init"] = None
        agg["delta_pct"] = np.nan
    else:
        agg["baseline_init"] = _attach_baseline_init(agg, base, baseline_init)
        ref = base[list(SETTING_KEYS) + ["init", "mae_mean"]].rename(
            columns={"init": "baseline_init", "mae_mean": "_base_mae"})
        agg = agg.merge(ref, on=list(SETTING_KEYS) + ["baseline_init"], how="left")
        agg["delta_pct"] = 100.0 * (agg["mae_mean"] - agg["_base_mae"]) / agg["_base_mae"]
        agg = agg.drop(columns="_base_mae")
    agg.loc[agg["scenario"] == baseline, "delta_pct"] = np.nan

    for m, col in zip(("yaw", "pitch", "roll", "mae"), ("Yaw", "Pitch", "Roll", "MAE")):
        agg[col] = [_pm(a, b) for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_std"])]
    agg["Δ vs baseline (%)"] = [_signed(v) for v in agg["delta_pct"]]
    agg = agg.replace({"init": {"-": None}, "test_set": {"-": None}, "backbone": {"-": None}})
    return _sort(agg).reset_index(drop=True)


def _pm(mean: float, std: float, digits: int = 2, pm: str = "±") -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {pm} {std:.{digits}f}"


def _signed(v: float, digits: int = 1) -> str:
    if v is None or not np.isfinite(v):
        return "—"
    return f"{v:+.{digits}f}"


_DISPLAY_KEYS = (("test_set", "Test set"), ("backbone", "Backbone"), ("label_fraction", "Labels"),
                 ("scenario", "Scenario"), ("method", "Method"), ("init", "Init"))
_DISPLAY_VALUES = ("Yaw", "Pitch", "Roll", "MAE", "Δ vs baseline (%)")


def _layout(table: pd.DataFrame, pm: str):
    """Header, body rows (list of lists of str), constant settings, best-MAE flags and marks."""
    if "MAE" not in table or "mae_mean" not in table:
        raise ValueError("to_markdown/to_latex expect the output of hpelib.report.error_table()")
    shown, constant = [], []
    for key, title in _DISPLAY_KEYS:
        values = table[key].astype(object).where(table[key].notna(), "—")
        if key in ("scenario", "method") or values.nunique() > 1:
            shown.append((key, title))
        else:
            constant.append(f"{title.lower()}: {_fmt_key(values.iloc[0])}")
    header = [t for _, t in shown] + ["n"] + list(_DISPLAY_VALUES)
    # best (lowest mean MAE) per setting
    k = _key_frame(table)
    best = k.groupby(list(SETTING_KEYS))["mae_mean"].transform("min")
    is_best = np.isclose(table["mae_mean"].to_numpy(float), best.to_numpy(float))
    body = []
    for _, r in table.iterrows():
        cells = [_fmt_key(r[key]) for key, _ in shown] + [str(int(r["n_seeds"]))]
        for m in ("yaw", "pitch", "roll", "mae"):
            cells.append(_pm(r[f"{m}_mean"], r[f"{m}_std"], pm=pm))
        cells.append(_signed(r["delta_pct"]))
        body.append(cells)
    marks = list(table["flag"]) if "flag" in table else [""] * len(table)
    return header, body, constant, is_best, marks


def _mark_notes(marks: Sequence[str]) -> list[str]:
    """Caption sentences for the marks used in a table."""
    notes = []
    if any("†" in m for m in marks):
        notes.append(f"†: a run of this row is not clearly below the constant predictor (always the mean "
                     f"training pose): its yaw, pitch, roll or mean error is ≥ {UNLEARNED_RATIO:g} × the "
                     f"constant predictor's (warnings.md lists them).")
    if any("‡" in m for m in marks):
        notes.append("‡: the runs of this row used different training settings (warnings.md lists the keys).")
    return notes


def _fmt_key(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def to_markdown(table: pd.DataFrame, bold_best: bool = True) -> str:
    """GitHub Markdown of an :func:`error_table` (errors in degrees).

    Key columns that hold one value for the whole table (e.g. the backbone)
    move into a caption line. With ``bold_best`` the lowest mean MAE of each
    setting (test set, backbone, label fraction) is bold.
    """
    header, body, constant, is_best, marks = _layout(table, "±")
    mae_col = header.index("MAE")
    lines = []
    caption = "Mean absolute error in degrees (mean ± std over seeds); Δ: relative change of MAE vs baseline."
    if constant:
        caption += " " + "; ".join(constant) + "."
    lines.append(caption)
    lines += _mark_notes(marks)
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    align = ["---" if i < len(header) - 6 else "---:" for i in range(len(header))]
    lines.append("| " + " | ".join(align) + " |")
    for cells, best, mark in zip(body, is_best, marks):
        cells = list(cells)
        if bold_best and best:
            cells[mae_col] = f"**{cells[mae_col]}**"
        if mark:
            cells[mae_col] += f" {mark}"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


_LATEX_SYMBOLS = {"≥": r"$\geq$", "×": r"$\times$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "—": "--"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, _LATEX_SYMBOLS.get(ch, ch)) for ch in s)


def to_latex(table: pd.DataFrame, bold_best: bool = True, label: str = "tab:hpe-errors") -> str:
    """A LaTeX ``table`` (booktabs) of an :func:`error_table`; needs ``\\usepackage{booktabs}``."""
    header, body, constant, is_best, marks = _layout(table, "PM")
    mae_col = header.index("MAE")
    n_keys = len(header) - 6
    head = [_tex(h) for h in header]
    head[-1] = r"$\Delta$ vs baseline (\%)"
    caption = ("Mean absolute error in degrees (mean $\\pm$ std over seeds); $\\Delta$: relative change "
               "of MAE against the baseline (negative is better).")
    if constant:
        caption += " " + _tex("; ".join(constant)) + "."
    caption = " ".join([caption] + [_tex(n) for n in _mark_notes(marks)])
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
           r"\begin{tabular}{" + "l" * n_keys + "r" * 6 + "}", r"\toprule", " & ".join(head) + r" \\",
           r"\midrule"]
    for cells, best, mark in zip(body, is_best, marks):
        cells = [_tex(c).replace(" PM ", r" $\pm$ ") for c in cells]
        if bold_best and best:
            cells[mae_col] = rf"\textbf{{{cells[mae_col]}}}"
        cells[mae_col] += _tex(mark)
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- paired tests
def paired_tests(df: pd.DataFrame, baseline: str = "baseline", alpha: float = 0.05,
                 baseline_init: str | None = None, metric: str = "mae") -> pd.DataFrame:
    """Paired comparison of every (scenario, method, init) with the baseline, across seeds.

    Runs are paired by seed within a setting (test set, backbone, label
    fraction). Differences are ``d = metric - baseline metric`` (degrees,
    negative = better). Columns: the row keys, ``baseline_init``, ``n_pairs``,
    ``mean_diff``, ``ci_low`` / ``ci_high`` (95% Student-t interval of the
    mean difference, NaN with fewer than 2 pairs: its half-width is about the
    smallest effect these seeds can detect), ``std_diff``, ``t_p``
    (two-sided paired t-test, ``scipy.stats.ttest_rel``), ``t_p_less`` (one-sided, H1: mean d < 0),
    ``wilcoxon_p_less`` (one-sided Wilcoxon signed-rank, only with
    ``n_pairs >= 6``, else NaN), ``beats_baseline`` (``t_p_less < alpha``)
    and ``note``. With fewer than 2 pairs, or differences of zero variance,
    the p-values are NaN, ``beats_baseline`` is False and ``note`` says why.
    """
    _check_df(df, "paired_tests")
    cols = list(ROW_KEYS) + ["baseline_init", "n_pairs", "mean_diff", "ci_low", "ci_high", "std_diff", "t_p",
                             "t_p_less", "wilcoxon_p_less", "beats_baseline", "note"]
    k = _key_frame(df)
    base = k[k["scenario"] == baseline]
    if base.empty:
        warnings.warn(f"no '{baseline}' runs: no paired tests", UserWarning, stacklevel=2)
        return pd.DataFrame(columns=cols)
    others = k[k["scenario"] != baseline].copy()
    others["baseline_init"] = _attach_baseline_init(others, base, baseline_init)
    ref = base[list(SETTING_KEYS) + ["init", "seed", metric]].rename(
        columns={"init": "baseline_init", metric: "_base"})
    ref = ref.drop_duplicates(list(SETTING_KEYS) + ["baseline_init", "seed"])
    merged = others.merge(ref, on=list(SETTING_KEYS) + ["baseline_init", "seed"], how="left")
    rows = []
    for keys, g in merged.groupby(list(ROW_KEYS), sort=False):
        g = g.dropna(subset=["_base", metric])
        d = (g[metric] - g["_base"]).to_numpy(float)
        n = len(d)
        r = dict(zip(ROW_KEYS, keys), baseline_init=g["baseline_init"].iloc[0] if n else None, n_pairs=n,
                 mean_diff=float(d.mean()) if n else np.nan, ci_low=np.nan, ci_high=np.nan,
                 std_diff=float(d.std(ddof=1)) if n > 1 else np.nan,
                 t_p=np.nan, t_p_less=np.nan, wilcoxon_p_less=np.nan, note="")
        notes = []
        if n >= 2:
            _, half = _mean_ci(d)
            r["ci_low"], r["ci_high"] = r["mean_diff"] - half, r["mean_diff"] + half
        if n < 2:
            notes.append("no baseline run with the same seed" if n == 0 else "1 pair: no test possible")
        elif np.allclose(d, d[0]):
            notes.append("differences of zero variance: t-test undefined")
        else:
            r["t_p"] = float(stats.ttest_rel(g[metric], g["_base"]).pvalue)
            r["t_p_less"] = float(stats.ttest_rel(g[metric], g["_base"], alternative="less").pvalue)
        if n >= 6 and np.any(d != 0):
            r["wilcoxon_p_less"] = float(stats.wilcoxon(d, alternative="less").pvalue)
        elif 2 <= n < 6:
            notes.append("n < 6: no Wilcoxon test")
        r["beats_baseline"] = bool(np.isfinite(r["t_p_less"]) and r["t_p_less"] < alpha)
        r["note"] = "; ".join(notes)
        rows.append(r)
    out = pd.DataFrame(rows, columns=cols)
    out = out.replace({"init": {"-": None}, "test_set": {"-": None}, "backbone": {"-": None}})
    return _sort(out).reset_index(drop=True)


def paired_tests_markdown(tests: pd.DataFrame) -> str:
    """Markdown of :func:`paired_tests`: a caption line, then the table.

    Differences in degrees: mean with its 95% interval (``-0.42 [-0.80, -0.05]``)
    and the interval's half-width (``± detectable``); p-values to 3
    significant digits.
    """
    header = ["Test set", "Labels", "Scenario", "Method", "Init", "pairs", "mean Δ MAE (°)", "± detectable",
              "t-test p (one-sided)", "Wilcoxon p", "beats baseline", "note"]
    lines = ["Δ: MAE of the method minus MAE of the baseline with the same seed, averaged over seeds (degrees, "
             "negative = better), with its 95% t-interval; ± detectable: the interval's half-width, about the "
             "smallest difference these seeds can tell apart from zero.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for _, r in tests.iterrows():
        mean, lo, hi = r["mean_diff"], r["ci_low"], r["ci_high"]
        has_ci = np.isfinite(lo) and np.isfinite(hi)
        delta = _signed(mean, 2) + (f" [{_signed(lo, 2)}, {_signed(hi, 2)}]" if has_ci else "")
        cells = [_fmt_key(r["test_set"]), _fmt_key(r["label_fraction"]), str(r["scenario"]), str(r["method"]),
                 _fmt_key(r["init"]), str(r["n_pairs"]), delta, f"±{(hi - lo) / 2:.2f}" if has_ci else "—",
                 _p(r["t_p_less"]), _p(r["wilcoxon_p_less"]), "yes" if r["beats_baseline"] else "no",
                 r["note"] or ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _p(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.3g}"


# --------------------------------------------------------------------------- figures
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


def _variant_labels(df: pd.DataFrame) -> pd.Series:
    """``scenario: method`` (``baseline`` alone), with ``[init]`` where a pair has several inits."""
    method = df["method"].astype(str)
    lab = np.where(method.isin(["none", "", "-"]), df["scenario"].astype(str), df["scenario"].astype(str) + ": " + method)
    lab = pd.Series(lab, index=df.index)
    n_init = df.groupby(["scenario", "method"])["init"].transform(lambda s: s.astype(str).nunique())
    return lab.where(n_init <= 1, lab + " [" + df["init"].astype(str) + "]")


def _mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (0 with one value)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


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
    _check_df(df, "plot_error_by_method")
    if df.empty:
        raise ValueError("plot_error_by_method: the results table is empty")
    lf = _main_label_fraction(df) if label_fraction is None else float(label_fraction)
    sub = df[np.isclose(df["label_fraction"].astype(float), lf)]
    if sub.empty:
        raise ValueError(f"no runs with label_fraction={lf}; available: {sorted(df['label_fraction'].unique())}")
    sets, sub = _by_test_set(sub, test_set)
    sub = sub.assign(_label=_variant_labels(sub))
    if sub["backbone"].astype(str).nunique() > 1:
        sub["_label"] = sub["_label"] + " (" + sub["backbone"].astype(str) + ")"
    order = list(dict.fromkeys(_sort(sub)["_label"]))
    scen = list(dict.fromkeys(_sort(sub)["scenario"]))
    colors = dict(zip(scen, _palette(len(scen))))
    fig, axes = _new_figure(len(sets), width=max(4.5, 0.55 * len(order) + 2), height=4.2)
    for ax, ts in zip(axes, sets):
        s = sub[sub["test_set"] == ts]
        labels, means, halves, cols = [], [], [], []
        for lab in order:
            g = s[s["_label"] == lab]
            if g.empty:
                continue
            m, h = _mean_ci(g[metric].to_numpy(float))
            labels.append(f"{lab}\n(n={len(g)})")
            means.append(m)
            halves.append(h)
            cols.append(colors[g["scenario"].iloc[0]])
        x = np.arange(len(labels))
        ax.bar(x, means, yerr=halves, color=cols, capsize=4, edgecolor="black", linewidth=0.5)
        base = s[s["scenario"] == "baseline"]
        if not base.empty:
            ax.axhline(base[metric].mean(), color="grey", linestyle="--", linewidth=1, label="baseline mean")
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(f"{_metric_title(metric)} (degrees)")
        ax.set_title(f"{ts} — label fraction {lf:g}")
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    from matplotlib.lines import Line2D

    handles = [Patch(facecolor=colors[s_], edgecolor="black", label=s_) for s_ in scen]
    if (sub["scenario"] == "baseline").any():
        handles.append(Line2D([], [], color="grey", linestyle="--", label="baseline mean"))
    fig.legend(handles=handles, title="scenario\n(bar: mean,\nwhisker: 95% CI\nover seeds)", fontsize=8,
               title_fontsize=8, loc="outside right upper")
    if save is not None:
        save_figure(fig, save)
    return fig


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
    _check_df(df, "plot_label_efficiency")
    if df.empty:
        raise ValueError("plot_label_efficiency: the results table is empty")
    sets, sub = _by_test_set(df, test_set)
    sub = sub.assign(_label=_variant_labels(sub))
    if sub["backbone"].astype(str).nunique() > 1:
        sub["_label"] = sub["_label"] + " (" + sub["backbone"].astype(str) + ")"
    order = list(dict.fromkeys(_sort(sub)["_label"]))
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
                m, h = _mean_ci(g[metric].to_numpy(float))
                handles[lab] = ax.errorbar([i], [m], yerr=[h], linestyle="none", capsize=4, **style)
                continue
            pts = [(f, *_mean_ci(gg[metric].to_numpy(float))) for f, gg in g.groupby("label_fraction")]
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
    if save is not None:
        save_figure(fig, save)
    return fig


def _budget_series(df: pd.DataFrame) -> dict:
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
    _check_df(df, "plot_pretrain_budget")
    series = _budget_series(df)
    if not series:
        raise ValueError("plot_pretrain_budget: no pre-training method was run with two or more budgets "
                         "(pretrain_train: {epochs: ...} variants)")
    sets, sub = _by_test_set(df, test_set)
    colors = dict(zip(series, _palette(len(series))))
    fig, axes = _new_figure(len(sets), width=6.0, height=4.2)
    for ax, ts in zip(axes, sets):
        s = sub[sub["test_set"] == ts]
        for (method, lf), rows in series.items():
            base = s[(s["scenario"] == "baseline") & (s["label_fraction"] == lf)].assign(pretrain_epochs=0)
            g = pd.concat([base, rows[rows["test_set"].astype(str) == ts]])
            pts = [(e, *_mean_ci(gg[metric].to_numpy(float))) for e, gg in g.groupby("pretrain_epochs")]
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
    if save is not None:
        save_figure(fig, save)
    return fig


def plot_error_vs_angle(predictions: pd.DataFrame, angle: str = "yaw", bins: int | Sequence[float] = 12,
                        error: str = "mae", by: str = "variant", test_set: str | None = None,
                        min_count: int = 5, save: str | os.PathLike | None = None):
    """Mean error against the ground-truth ``angle`` (binned), one line per group.

    ``predictions`` comes from :func:`collect_predictions`. ``error``: ``mae``
    (mean of the yaw/pitch/roll errors of a sample), ``yaw``, ``pitch``,
    ``roll`` or ``geodesic``. ``by``: ``variant`` (scenario: method, seeds
    pooled) or ``run`` (one line per run). ``bins``: a number of equal-width
    bins over the observed range, or the bin edges in degrees. Bins with fewer
    than ``min_count`` samples of a group are not drawn. One panel per test set.
    """
    if angle not in _ANGLES:
        raise ValueError(f"angle must be one of {_ANGLES}, got {angle!r}")
    err_col = {"mae": "mae_err", "geodesic": "geodesic_err", **{a: f"{a}_err" for a in _ANGLES}}.get(error)
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
    order = list(dict.fromkeys(_sort(p.drop_duplicates("_label"))["_label"]))
    colors = dict(zip(order, _palette(len(order))))
    fig, axes = _new_figure(len(sets), width=6.0, height=4.2)
    for ax, ts in zip(axes, sets):
        s = p[(p["test_set"] == ts) & p["_bin"].notna()]
        for lab in order:
            g = s[s["_label"] == lab]
            if g.empty:
                continue
            stat = g.groupby("_bin")[err_col].agg(["mean", "count"])
            stat = stat[stat["count"] >= min_count]
            ax.plot(centers[stat.index.astype(int)], stat["mean"], marker="o", markersize=3,
                    color=colors[lab], label=lab)
        counts = np.bincount(s["_bin"].astype(int), minlength=len(centers)) if len(s) else np.zeros(len(centers))
        ax2 = ax.twinx()
        ax2.bar(centers, counts, width=np.diff(edges) * 0.9, color="grey", alpha=0.12, zorder=0)
        ax2.set_ylabel("samples per bin (all lines)", color="grey", fontsize=8)
        ax2.tick_params(axis="y", colors="grey", labelsize=7)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_xlabel(f"ground-truth {angle} (degrees)")
        ax.set_ylabel(f"{_metric_title(error)} (degrees)")
        ax.set_title(f"{ts}: error vs ground-truth {angle}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if save is not None:
        save_figure(fig, save)
    return fig


# --------------------------------------------------------------------------- report
def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike, baseline: str = "baseline",
                 baseline_init: str | None = None, angles: Sequence[str] = ("yaw", "pitch")) -> dict[str, Path]:
    """Write every table and figure of a study into ``out_dir``; returns ``{name: path}``.

    Files: ``results.csv``, ``warnings.md`` (always: the :func:`study_warnings`,
    "none" when clean), ``error_table.md``, ``error_table.tex``,
    ``paired_tests.csv``, ``paired_tests.md``, ``error_by_method.png/.pdf``,
    ``label_efficiency.png/.pdf``, ``pretrain_budget.png/.pdf`` when a
    pre-training method was run with several budgets and, when runs saved
    predictions, ``error_vs_<angle>.png/.pdf``. Unlearned runs and error-table rows that mix
    training settings also raise a ``UserWarning`` each. Raises ``ValueError``
    when ``results_dir`` holds no complete run.
    """
    out = Path(out_dir)
    df = collect(results_dir)
    if df.empty:
        raise ValueError(f"no complete runs (config.json + metrics.json) under {results_dir}")
    paths: dict[str, Path] = {"results_csv": write_results_table(df, out / "results.csv")}
    notes = study_warnings(df)
    paths["warnings_md"] = write_text(out / "warnings.md", _warnings_markdown(notes))
    if notes["unlearned"]:
        warnings.warn(f"{len(notes['unlearned'])} result row(s) not clearly below the constant predictor "
                      f"(error >= {UNLEARNED_RATIO:g} x its error; marked † in the error tables, listed in "
                      f"{paths['warnings_md']}): " + _first(notes["unlearned"]), UserWarning, stacklevel=2)
    if notes["mixed_settings"]:
        warnings.warn(f"{len(notes['mixed_settings'])} error-table row(s) average runs with different training "
                      f"settings (marked ‡, listed in {paths['warnings_md']}): " + _first(notes["mixed_settings"]),
                      UserWarning, stacklevel=2)
    table = error_table(df, baseline=baseline, baseline_init=baseline_init)
    paths["error_table_md"] = write_text(out / "error_table.md", to_markdown(table))
    paths["error_table_tex"] = write_text(out / "error_table.tex", to_latex(table))
    tests = paired_tests(df, baseline=baseline, baseline_init=baseline_init)
    paths["paired_tests_csv"] = atomic_write(out / "paired_tests.csv", lambda tmp: tests.to_csv(tmp, index=False))
    paths["paired_tests_md"] = write_text(out / "paired_tests.md", paired_tests_markdown(tests))
    figures = [("error_by_method", lambda: plot_error_by_method(df)),
               ("label_efficiency", lambda: plot_label_efficiency(df))]
    if _budget_series(df):
        figures.append(("pretrain_budget", lambda: plot_pretrain_budget(df)))
    preds = collect_predictions(results_dir)
    if not preds.empty:
        figures += [(f"error_vs_{a}", lambda a=a: plot_error_vs_angle(preds, angle=a)) for a in angles]
    for name, make in figures:
        png, pdf = save_figure(make(), out / name)
        paths[f"{name}_png"], paths[f"{name}_pdf"] = png, pdf
    return paths
