"""The results table that :func:`~hpelib.report.collect` builds: its columns, row keys and order.

Every other module of the report reads this table, so the names of its
columns and the keys that group its rows live here, with the few helpers that
all of them share.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..runs import CONSTANT_KEYS, METRIC_KEYS

#: the columns a run's ``config.json`` (:class:`hpelib.runs.RunRecord`) gives every row
CONFIG_KEYS = ("run", "scenario", "method", "pretrain_method", "aux_methods", "init",
               "label_fraction", "seed", "test_set", "backbone", "image_size", "pretrain_epochs")
RESULT_COLUMNS = list(CONFIG_KEYS) + list(METRIC_KEYS) + list(CONSTANT_KEYS) + ["unlearned", "settings", "path"]
SCENARIO_ORDER = ("baseline", "pretrain", "auxiliary", "combined")
#: columns that identify a comparable setting (a baseline is looked up within it)
SETTING_KEYS = ("test_set", "backbone", "label_fraction")
#: columns that identify one row of the error table (seeds are averaged over)
ROW_KEYS = SETTING_KEYS + ("scenario", "method", "init")


def reference_method(df: pd.DataFrame, baseline: str = "baseline", reference: str | None = None) -> str | None:
    """The method of the ``baseline`` scenario that every Δ is against: ``reference`` if given, else ``none``
    (the plain variant) when the scenario has it, else its first method; None without baseline runs.

    The scenario's other variants (a longer schedule, a same-steps control) are rows like any other method.
    """
    methods = sorted(set(df.loc[df["scenario"] == baseline, "method"].astype(str)))
    if not methods:
        return None
    if reference is not None:
        if reference not in methods:
            raise ValueError(f"reference baseline {reference!r} is not a method of scenario {baseline!r}: "
                             f"{methods}")
        return reference
    return "none" if "none" in methods else methods[0]


def is_reference(df: pd.DataFrame, baseline: str, method: str | None) -> pd.Series:
    """Rows of ``df`` that are the reference baseline (scenario ``baseline``, method ``method``)."""
    return (df["scenario"] == baseline) & (df["method"].astype(str) == str(method))


def require_columns(df: pd.DataFrame, what: str) -> None:
    """Raise ``ValueError`` unless ``df`` has the row keys, ``seed`` and ``mae`` of a results table."""
    missing = [c for c in ROW_KEYS + ("seed", "mae") if c not in df]
    if missing:
        raise ValueError(f"{what}: the results table lacks columns {missing}; build it with hpelib.report.collect()")


def _scenario_rank(s: pd.Series) -> pd.Series:
    order = {name: i for i, name in enumerate(SCENARIO_ORDER)}
    return s.map(lambda v: order.get(v, len(order)))


def _natural(s: pd.Series) -> pd.Series:
    """Sort key that orders numbers inside labels by value (``rotation-4ep`` before ``rotation-16ep``)."""
    return s.astype(str).str.replace(r"\d+", lambda m: m.group(0).zfill(8), regex=True)


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by setting, then in the paper's scenario order (:data:`SCENARIO_ORDER`), method, init, seed."""
    if df.empty:
        return df
    keys = [k for k in SETTING_KEYS if k in df]
    tmp = df.assign(_rank=_scenario_rank(df["scenario"]))
    if "method" in tmp:
        tmp["_method"] = _natural(tmp["method"])
    by = keys + ["_rank"] + [k for k in ("_method", "init", "seed") if k in tmp]
    return tmp.sort_values(by, kind="stable", na_position="last").drop(columns=["_rank", "_method"], errors="ignore")


def key_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Copy with NaN-free (``-``), float-rounded key columns so that equal settings group and merge."""
    out = df.copy()
    for k in ("test_set", "backbone", "init", "scenario", "method"):
        out[k] = out[k].astype(object).where(out[k].notna(), "-").astype(str)
    out["label_fraction"] = out["label_fraction"].astype(float).round(9)
    return out


def unkey(df: pd.DataFrame) -> pd.DataFrame:
    """Undo the ``-`` placeholders of :func:`key_frame` in the optional key columns."""
    return df.replace({"init": {"-": None}, "test_set": {"-": None}, "backbone": {"-": None}})


def fmt_key(v) -> str:
    """A key value for display: ``—`` when missing, floats without trailing zeros."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def signed(v: float, digits: int = 1) -> str:
    """``+1.5`` / ``-0.3``, or ``—`` when missing."""
    if v is None or not np.isfinite(v):
        return "—"
    return f"{v:+.{digits}f}"
