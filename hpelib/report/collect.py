"""Reading a results folder: one tidy row per complete run and test set, and the runs' predictions.

Run folders are read only through :mod:`hpelib.runs` (:class:`~hpelib.runs.RunFolder`),
which owns their file names and formats.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..io import atomic_write, read_json
from ..runs import (CONFIG, CONSTANT_KEYS, ERROR_COLUMNS, FAILED, METRIC_KEYS, METRICS, STUDY_RUN, RunFolder,
                    RunRecord)
from .checks import settings_fingerprint, training_settings, unlearned_mask
from .columns import RESULT_COLUMNS, sort_rows

#: the columns of :func:`collect` that :func:`collect_predictions` copies onto each sample
_PREDICTION_TAGS = ("run", "scenario", "method", "init", "label_fraction", "seed", "backbone")
#: the files that make a folder a run folder (the study runner's too: a run that failed early is listed)
_RUN_FILES = (CONFIG, METRICS, STUDY_RUN, FAILED)


def _run_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding a file of a run (:data:`_RUN_FILES`), hidden ones (``.folds``) left out."""
    dirs = {p.parent for name in _RUN_FILES for p in root.rglob(name)}
    return sorted(d for d in dirs if not any(part.startswith(".") for part in d.relative_to(root).parts))


def _wanted(root: Path, runs: Iterable | None):
    """``rel -> bool``: whether a folder (posix path relative to ``root``) is one of ``runs`` (None: all are)."""
    if runs is None:
        return lambda rel: True
    ids = {(root / r).resolve().relative_to(root.resolve()).as_posix() for r in runs}
    return lambda rel: rel in ids


def _unfinished(folder: RunFolder) -> str | None:
    """Why the study runner's files say the run did not finish (None when they do not say so)."""
    if folder.has(FAILED):
        return f"{FAILED}: the run failed"
    if folder.has(STUDY_RUN):
        try:
            complete = read_json(folder.file(STUDY_RUN)).get("complete")
        except (ValueError, OSError, AttributeError) as e:
            return f"unreadable {STUDY_RUN}: {e}"
        if complete is not True:
            return f"{STUDY_RUN} says not complete: started again and not finished"
    return None


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


def _run_rows(folder: RunFolder, rel: str, root: Path, left_out: list[str]) -> list[dict]:
    """The rows of one run folder ``rel`` (one per test set); why it has none goes into ``left_out``."""
    unfinished = _unfinished(folder)
    if unfinished:
        left_out.append(f"{rel} ({unfinished})")
        return []
    for name in (CONFIG, METRICS):
        if not folder.has(name):
            left_out.append(f"{rel} (no {name})")
            return []
    try:
        rec = folder.read_config()
        if rec.kind == "pretrain":  # SSL pre-training: no pose metrics by design
            return []
        blocks = folder.metric_blocks(rec.test_set)
    except (ValueError, OSError, TypeError) as e:  # JSONDecodeError is a ValueError
        left_out.append(f"{rel} (unreadable: {e})")
        return []
    base = _config_row(rec, folder.path, root)
    rows = []
    for test_set, m in blocks:
        missing = [k for k in METRIC_KEYS if m.get(k) is None]
        if missing:
            left_out.append(f"{rel} [{test_set}] ({METRICS} lacks {', '.join(missing)})")
            continue
        row = dict(base, test_set=test_set, path=str(folder.path))
        row.update({k: float(m[k]) for k in METRIC_KEYS})
        row.update({k: np.nan if m.get(k) is None else float(m[k]) for k in CONSTANT_KEYS})
        rows.append(row)
    return rows


def collect_with_left_out(results_dir: str | os.PathLike, runs: Iterable | None = None,
                          stacklevel: int = 2, why_not: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """:func:`collect`, and the runs it left out: ``"<folder> (<reason>)"`` each (``stacklevel``: of its warnings).

    ``why_not``: ``{run id: reason}`` for runs of the study that are not in
    ``runs`` (failed, not finished, made with other settings); they are listed
    with that reason, whether or not their folder exists, instead of as "not
    part of this study".
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ValueError(f"results folder {root} does not exist: pass the folder the study wrote its runs into")
    wanted = _wanted(root, runs)
    why_not = dict(why_not or {})
    rows, left_out = [], []
    for d in _run_dirs(root):
        rel = d.relative_to(root).as_posix() or "."
        if wanted(rel):
            rows += _run_rows(RunFolder(d), rel, root, left_out)
        else:
            left_out.append(f"{rel} ({why_not.pop(rel, 'not part of this study')})")
    left_out += [f"{rel} ({reason})" for rel, reason in sorted(why_not.items())]
    if left_out:
        warnings.warn(f"left out {len(left_out)} run(s) under {root}, in no table or figure: " + "; ".join(left_out),
                      UserWarning, stacklevel=stacklevel)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df["n"] = df["n"].astype("Int64") if len(df) else df["n"]
    df["unlearned"] = unlearned_mask(df)
    dup = df.duplicated(["run", "test_set"], keep=False)
    if dup.any():
        warnings.warn(f"run ids appear more than once (copied folders?): {sorted(set(df.loc[dup, 'run']))}",
                      UserWarning, stacklevel=stacklevel)
    return sort_rows(df).reset_index(drop=True), left_out


def collect(results_dir: str | os.PathLike, runs: Iterable | None = None) -> pd.DataFrame:
    """One tidy row per complete run and test set, columns :data:`RESULT_COLUMNS`.

    Besides the config and metric keys (``n``: the number of test images): the
    constant predictor's errors (:data:`CONSTANT_KEYS`, NaN when
    ``metrics.json`` lacks them), ``unlearned`` (see :data:`UNLEARNED_RATIO`)
    and ``settings`` (8-hex fingerprint of :func:`training_settings`).

    Left out, and listed with the reason in one ``UserWarning``: folders not
    in ``runs`` (run ids, i.e. folders relative to ``results_dir``; None: every
    folder), runs with a ``FAILED`` marker or whose ``study_run.json`` does not
    say ``"complete": true`` (the study runner's files; a folder without them
    is judged by its own files), runs without ``config.json``, or without a
    readable ``metrics.json`` holding all of :data:`METRIC_KEYS`. Raises
    ``ValueError`` if ``results_dir`` does not exist.
    """
    return collect_with_left_out(results_dir, runs, stacklevel=3)[0]


def write_results_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the :func:`collect` table as CSV, atomically."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def collect_predictions(results_dir: str | os.PathLike, runs: Iterable | None = None) -> pd.DataFrame:
    """All per-sample predictions of the complete runs, tagged with the run's config.

    Reads the predictions files of every run that :func:`collect` keeps (of ``runs``)
    (:meth:`hpelib.runs.RunFolder.read_predictions`: error columns computed
    when absent, and ``mae_err``, the mean of the three angle errors). Adds
    the columns run, scenario, method, init, label_fraction, seed, test_set,
    backbone. Empty frame if no run saved predictions.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # collect() already warns when called directly
        table = collect(results_dir, runs)
    frames = []
    for path, group in table.groupby("path", sort=False):
        first = group.iloc[0]
        for test_set, p in RunFolder(path).read_predictions(first["test_set"]).items():
            if "test_set" not in p:  # else one file holds several test sets
                p["test_set"] = test_set
            frames.append(p.assign(**{t: first[t] for t in _PREDICTION_TAGS}))
    if not frames:
        return pd.DataFrame(columns=["name", *_PREDICTION_TAGS, "test_set", *ERROR_COLUMNS, "mae_err"])
    return pd.concat(frames, ignore_index=True)
