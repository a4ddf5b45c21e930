"""Reading a results folder: one tidy row per complete run and test set, and the runs' predictions.

Run folders are read only through :mod:`hpelib.runs` (:class:`~hpelib.runs.RunFolder`),
which owns their file names and formats.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write
from ..runs import CONFIG, CONSTANT_KEYS, ERROR_COLUMNS, METRIC_KEYS, METRICS, RunFolder, RunRecord
from .checks import settings_fingerprint, training_settings, unlearned_mask
from .columns import RESULT_COLUMNS, sort_rows

#: the columns of :func:`collect` that :func:`collect_predictions` copies onto each sample
_PREDICTION_TAGS = ("run", "scenario", "method", "init", "label_fraction", "seed", "backbone")


def _run_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding a ``config.json`` or a ``metrics.json``, hidden ones (``.folds``) left out."""
    dirs = {p.parent for name in (CONFIG, METRICS) for p in root.rglob(name)}
    return sorted(d for d in dirs if not any(part.startswith(".") for part in d.relative_to(root).parts))


def _config_row(rec: RunRecord, run_dir: Path, root: Path) -> dict:
    """The :data:`~hpelib.report.columns.CONFIG_KEYS` of a run, and its ``settings`` fingerprint."""
    return {
        "run": str(rec.run or run_dir.relative_to(root).as_posix() or run_dir.name),
        "scenario": str(rec.scenario),
        "method": rec.label,
        "pretrain_method": rec.pretrain_method,
        "aux_methods": "+".join(map(str, rec.aux_methods)) if rec.aux_methods else None,
        "init": rec.init,
        "label_fraction": rec.label_fraction,
        "seed": rec.seed,
        "test_set": rec.test_set,
        "backbone": rec.backbone,
        "image_size": rec.image_size,
        "pretrain_epochs": rec.pretrain_epochs,
        "settings": settings_fingerprint(training_settings(rec)),
    }


def _run_rows(folder: RunFolder, root: Path, skipped: list[str]) -> list[dict]:
    """The rows of one run folder (one per test set); why it has none goes into ``skipped``."""
    rel = folder.path.relative_to(root).as_posix() or "."
    for name in (CONFIG, METRICS):
        if not folder.has(name):
            skipped.append(f"{rel} (no {name})")
            return []
    try:
        rec = folder.read_config()
        if rec.kind == "pretrain":  # SSL pre-training: no pose metrics by design
            return []
        blocks = folder.metric_blocks(rec.test_set)
    except (ValueError, OSError, TypeError) as e:  # JSONDecodeError is a ValueError
        skipped.append(f"{rel} (unreadable: {e})")
        return []
    base = _config_row(rec, folder.path, root)
    rows = []
    for test_set, m in blocks:
        missing = [k for k in METRIC_KEYS if m.get(k) is None]
        if missing:
            skipped.append(f"{rel} [{test_set}] ({METRICS} lacks {', '.join(missing)})")
            continue
        row = dict(base, test_set=test_set, path=str(folder.path))
        row.update({k: float(m[k]) for k in METRIC_KEYS})
        row.update({k: np.nan if m.get(k) is None else float(m[k]) for k in CONSTANT_KEYS})
        rows.append(row)
    return rows


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
        rows += _run_rows(RunFolder(d), root, skipped)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} incomplete run(s) under {root}: " + "; ".join(skipped),
                      UserWarning, stacklevel=2)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df["n"] = df["n"].astype("Int64") if len(df) else df["n"]
    df["unlearned"] = unlearned_mask(df)
    dup = df.duplicated(["run", "test_set"], keep=False)
    if dup.any():
        warnings.warn(f"run ids appear more than once (copied folders?): {sorted(set(df.loc[dup, 'run']))}",
                      UserWarning, stacklevel=2)
    return sort_rows(df).reset_index(drop=True)


def write_results_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the :func:`collect` table as CSV, atomically."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def collect_predictions(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All per-sample predictions of the complete runs, tagged with the run's config.

    Reads the predictions files of every run that :func:`collect` keeps
    (:meth:`hpelib.runs.RunFolder.read_predictions`: error columns computed
    when absent, and ``mae_err``, the mean of the three angle errors). Adds
    the columns run, scenario, method, init, label_fraction, seed, test_set,
    backbone. Empty frame if no run saved predictions.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # collect() already warns when called directly
        runs = collect(results_dir)
    frames = []
    for path, group in runs.groupby("path", sort=False):
        first = group.iloc[0]
        for test_set, p in RunFolder(path).read_predictions(first["test_set"]).items():
            if "test_set" not in p:  # else one file holds several test sets
                p["test_set"] = test_set
            frames.append(p.assign(**{t: first[t] for t in _PREDICTION_TAGS}))
    if not frames:
        return pd.DataFrame(columns=["name", *_PREDICTION_TAGS, "test_set", *ERROR_COLUMNS, "mae_err"])
    return pd.concat(frames, ignore_index=True)
