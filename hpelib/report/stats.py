"""Paired comparisons with the baseline across seeds: differences, intervals, tests."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .columns import (ROW_KEYS, SETTING_KEYS, fmt_key, is_reference, key_frame, reference_method, require_columns,
                      signed, sort_rows, unkey)
from .tables import attach_baseline_init, markdown_row

_COLUMNS = list(ROW_KEYS) + ["baseline_init", "n_pairs", "mean_diff", "ci_low", "ci_high", "std_diff", "t_p",
                             "t_p_less", "t_p_holm", "wilcoxon_p_less", "beats_baseline", "note", "reference"]


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (0 with one value, NaN with none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are not tests: they stay NaN and do not count).

    With ``m`` tests sorted by p, the ``i``-th smallest (0-based) becomes
    ``max_{j <= i} min(1, (m - j) p_(j))``; rejecting where the adjusted value
    is below alpha keeps the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def _compare(keys: tuple, g: pd.DataFrame, metric: str) -> dict:
    """One row of :func:`paired_tests` from the runs ``g`` of one variant, paired with ``_base``."""
    g = g.dropna(subset=["_base", metric])
    d = (g[metric] - g["_base"]).to_numpy(float)
    n = len(d)
    r = dict(zip(ROW_KEYS, keys), baseline_init=g["baseline_init"].iloc[0] if n else None, n_pairs=n,
             mean_diff=float(d.mean()) if n else np.nan, ci_low=np.nan, ci_high=np.nan,
             std_diff=float(d.std(ddof=1)) if n > 1 else np.nan,
             t_p=np.nan, t_p_less=np.nan, wilcoxon_p_less=np.nan, note="")
    notes = []
    if n >= 2:
        _, half = mean_ci(d)
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
    r["note"] = "; ".join(notes)
    return r


def paired_tests(df: pd.DataFrame, baseline: str = "baseline", alpha: float = 0.05,
                 baseline_init: str | None = None, metric: str = "mae", reference: str | None = None) -> pd.DataFrame:
    """Paired comparison of every (scenario, method, init) with the baseline, across seeds.

    Runs are paired by seed within a setting (test set, backbone, label
    fraction). Differences are ``d = metric - baseline metric`` (degrees,
    negative = better). Columns: the row keys, ``baseline_init``, ``n_pairs``,
    ``mean_diff``, ``ci_low`` / ``ci_high`` (95% Student-t interval of the
    mean difference, NaN with fewer than 2 pairs: its half-width is about the
    smallest effect these seeds can detect), ``std_diff``, ``t_p``
    (two-sided paired t-test, ``scipy.stats.ttest_rel``), ``t_p_less`` (one-sided, H1: mean d < 0),
    ``t_p_holm`` (``t_p_less`` after Holm's correction across the variants
    compared with the same baseline in one setting: test set, backbone and
    label fraction), ``wilcoxon_p_less`` (one-sided Wilcoxon signed-rank, only
    with ``n_pairs >= 6``, else NaN), ``beats_baseline`` (``t_p_holm < alpha``)
    and ``note``. With fewer than 2 pairs, or differences of zero variance,
    the p-values are NaN, ``beats_baseline`` is False and ``note`` says why.
    The baseline is one variant of the ``baseline`` scenario
    (:func:`~hpelib.report.columns.reference_method`, named in column
    ``reference``); the scenario's other variants are compared with it too.
    """
    require_columns(df, "paired_tests")
    k = key_frame(df)
    ref_method = reference_method(k, baseline, reference)
    reference_rows = is_reference(k, baseline, ref_method)
    base = k[reference_rows]
    if base.empty:
        warnings.warn(f"no '{baseline}' runs: no paired tests", UserWarning, stacklevel=2)
        return pd.DataFrame(columns=_COLUMNS)
    others = k[~reference_rows].copy()
    others["baseline_init"] = attach_baseline_init(others, base, baseline_init)
    on = list(SETTING_KEYS) + ["baseline_init", "seed"]
    ref = base[list(SETTING_KEYS) + ["init", "seed", metric]].rename(
        columns={"init": "baseline_init", metric: "_base"}).drop_duplicates(on)
    merged = others.merge(ref, on=on, how="left")
    rows = [_compare(keys, g, metric) for keys, g in merged.groupby(list(ROW_KEYS), sort=False)]
    tests = pd.DataFrame(rows, columns=_COLUMNS)
    for _, family in tests.groupby(list(SETTING_KEYS), sort=False, dropna=False):
        tests.loc[family.index, "t_p_holm"] = holm(family["t_p_less"])
    tests["beats_baseline"] = tests["t_p_holm"].lt(alpha)
    tests["reference"] = f"{baseline}/{ref_method}"
    return sort_rows(unkey(tests)).reset_index(drop=True)


def paired_tests_markdown(tests: pd.DataFrame) -> str:
    """Markdown of :func:`paired_tests`: a caption line, then the table.

    Differences in degrees: mean with its 95% interval (``-0.42 [-0.80, -0.05]``)
    and the interval's half-width (``± detectable``); p-values to 3
    significant digits.
    """
    header = ["Test set", "Labels", "Scenario", "Method", "Init", "pairs", "mean Δ MAE (°)", "± detectable",
              "t-test p (one-sided)", "Holm p", "Wilcoxon p", "beats baseline", "note"]
    against = str(tests["reference"].iloc[0]) if "reference" in tests and len(tests) else "the baseline"
    lines = [f"Δ: MAE of the method minus MAE of {against} with the same seed, averaged over seeds (degrees, "
             "negative = better), with its 95% t-interval; ± detectable: the interval's half-width, about the "
             "smallest difference these seeds can tell apart from zero. Holm p: the one-sided t-test p after "
             "Holm's correction across the variants compared with the baseline at the same test set and labels; "
             "beats baseline: Holm p < 0.05.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for _, r in tests.iterrows():
        mean, lo, hi = r["mean_diff"], r["ci_low"], r["ci_high"]
        has_ci = np.isfinite(lo) and np.isfinite(hi)
        delta = signed(mean, 2) + (f" [{signed(lo, 2)}, {signed(hi, 2)}]" if has_ci else "")
        cells = [fmt_key(r["test_set"]), fmt_key(r["label_fraction"]), str(r["scenario"]), str(r["method"]),
                 fmt_key(r["init"]), str(r["n_pairs"]), delta, f"±{(hi - lo) / 2:.2f}" if has_ci else "—",
                 _p(r["t_p_less"]), _p(r["t_p_holm"]), _p(r["wilcoxon_p_less"]),
                 "yes" if r["beats_baseline"] else "no",
                 r["note"] or ""]
        lines.append(markdown_row(cells))
    return "\n".join(lines) + "\n"


def _p(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.3g}"
