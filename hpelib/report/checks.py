"""The checks behind the marks of the error tables: runs that did not learn (†), rows that mix settings (‡).

A run is *unlearned* when its yaw, pitch, roll or mean error is not clearly
below the constant predictor's (:data:`UNLEARNED_RATIO`). The runs averaged
into one error-table row must share the settings of :func:`training_settings`;
their :func:`settings_fingerprint` is the ``settings`` column of the results.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..runs import (CONFIG, FAILED, METRICS, STUDY_RUN, UNLEARNED_CHECKED, UNLEARNED_RATIO, RunFolder, RunRecord,
                    not_below)
from .columns import ROW_KEYS, fmt_key, key_frame

#: train_config fields that do not change the results: left out of the ``settings`` fingerprint
SETTINGS_IGNORED = ("seed", "num_workers", "log_every", "progress", "device", "ddp_find_unused_parameters")


# --------------------------------------------------------------------------- mixed settings
def training_settings(config: RunRecord | dict) -> dict:
    """The settings of a run's ``config.json`` that runs of one error-table row must share, flattened.

    ``image_size``, ``model_config.<key>`` (all but ``init``) and
    ``train_config.<key>`` (all but :data:`SETTINGS_IGNORED`); missing parts
    are simply absent. ``config``: a :class:`~hpelib.runs.RunRecord` or the
    ``config.json`` object.
    """
    rec = config if isinstance(config, RunRecord) else RunRecord.from_dict(config)
    out = {"image_size": rec.image_size}
    for part, skip in (("model_config", ("init",)), ("train_config", SETTINGS_IGNORED)):
        sub = getattr(rec, part)
        if isinstance(sub, dict):
            out.update({f"{part}.{k}": v for k, v in sub.items() if k not in skip})
    return out


def settings_fingerprint(settings: dict) -> str:
    """8-hex hash of :func:`training_settings`: equal for runs that may be averaged together."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _differing_keys(paths: Iterable) -> str:
    """The :func:`training_settings` keys that differ between the runs in ``paths``, with their values."""
    try:
        runs = [training_settings(RunFolder(p).read_config()) for p in dict.fromkeys(paths)]
    except (OSError, ValueError, TypeError):
        return f"unknown ({CONFIG} not readable)"
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


# --------------------------------------------------------------------------- unlearned runs
def unlearned_mask(df: pd.DataFrame) -> pd.Series:
    """Rows of a results table with some error not clearly below the constant predictor's."""
    hit = np.zeros(len(df), bool)
    for m in UNLEARNED_CHECKED:
        if m in df and f"constant_{m}" in df:
            hit |= not_below(df[m], df[f"constant_{m}"])
    return pd.Series(hit, index=df.index)


# --------------------------------------------------------------------------- warnings
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
        name = f"{r['run']} [{fmt_key(r['test_set'])}]"
        have = [m for m in UNLEARNED_CHECKED if np.isfinite(float(r.get(f"constant_{m}", np.nan)))]
        fails = [f"{m} {r[m]:.2f} >= {UNLEARNED_RATIO:g} x {r[f'constant_{m}']:.2f}"
                 for m in have if not_below(r[m], r[f"constant_{m}"])]
        if fails:
            out["unlearned"].append(f"{name}: {', '.join(fails)}")
        elif not have:
            out["unchecked"].append(name)
    if "settings" in df and len(df):
        for keys, g in key_frame(df).groupby(list(ROW_KEYS), sort=False):
            if g["settings"].nunique() > 1:
                runs = ", ".join(f"{run} ({fp})" for run, fp in zip(g["run"], g["settings"]))
                differ = _differing_keys(g["path"]) if "path" in g else "unknown"
                out["mixed_settings"].append(f"{_group_name(dict(zip(ROW_KEYS, keys)))}: runs {runs}; "
                                             f"differing: {differ}")
    return out


def pretraining_warnings(results_dir, runs=None) -> list[str]:
    """``"<run>: <why>"`` for each SSL pre-training (of ``runs``) whose loss looks diverged
    (:func:`hpelib.runs.divergence`): its fine-tunes started from weights that may have learned nothing."""
    from .collect import _run_dirs, _wanted

    root = Path(results_dir)
    wanted, found = _wanted(root, runs), []
    for d in _run_dirs(root):
        rel = d.relative_to(root).as_posix()
        folder = RunFolder(d)
        try:
            pretrain = wanted(rel) and folder.read_config().kind == "pretrain"
        except (OSError, ValueError, TypeError):
            continue
        why = folder.divergence() if pretrain else None
        if why:
            found.append(f"{rel}: {why}")
    return found


def warnings_markdown(notes: dict[str, list[str]]) -> str:
    """``warnings.md``: the runs left out (``notes["left_out"]``) and the :func:`study_warnings`.

    ``- none`` under a heading with nothing to report.
    """
    items = lambda lines: [f"- {line}" for line in lines] or ["- none"]  # noqa: E731
    lines = ["# Report warnings", "", "## Runs left out", "",
             f"Run folders in no table or figure: not part of this study, failed (a `{FAILED}` file), started "
             f"again and not finished (`{STUDY_RUN}` without `\"complete\": true`), or without a complete "
             f"{CONFIG} + {METRICS}.", "", *items(notes.get("left_out", [])),
             "", "## Runs that did not learn (marked † in the error tables)", "",
             f"Rows whose yaw, pitch, roll or mean error is >= {UNLEARNED_RATIO:g} x the error of always "
             f"predicting the median training pose (`constant_*` in {METRICS}): not clearly better than no model.",
             "", *items(notes["unlearned"])]
    if notes["unchecked"]:
        lines += ["", f"Not checked ({len(notes['unchecked'])} rows without constant-predictor errors in "
                      f"{METRICS}): " + ", ".join(notes["unchecked"])]
    lines += ["", "## Rows that mix training settings (marked ‡ in the error tables)", "",
              "The runs averaged into one error-table row (same test set, backbone, label fraction, scenario, "
              "method, init) should share image_size, model_config (but init) and train_config (but seed, "
              + ", ".join(SETTINGS_IGNORED[1:]) + "); the fingerprint is the `settings` column of results.csv.",
              "", *items(notes["mixed_settings"])]
    if "diverged" in notes:
        lines += ["", "## SSL pre-trainings whose loss did not fall", "",
                  "Their last epoch's loss is above 10 x their first's, or no epoch after the first is below it: "
                  "the fine-tunes that start from them may start from weights that learned nothing.", "",
                  *items(notes["diverged"])]
    return "\n".join(lines) + "\n"
