"""The paper's error table: baseline lookup, relative change, and its Markdown and LaTeX forms."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from .checks import UNLEARNED_RATIO, unlearned_mask
from .columns import (ROW_KEYS, SETTING_KEYS, fmt_key, is_reference, key_frame, reference_method, require_columns,
                      signed, sort_rows, unkey)


# --------------------------------------------------------------------------- baseline lookup
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


def attach_baseline_init(rows: pd.DataFrame, base: pd.DataFrame, baseline_init: str | None) -> pd.Series:
    """The init of the baseline each row (of a :func:`~hpelib.report.columns.key_frame`) is compared with.

    Within the row's setting: ``baseline_init`` if given, the row's own init,
    the only baseline init, else ``random``; None when there is none.
    """
    avail = base.groupby(list(SETTING_KEYS))["init"].agg(lambda s: sorted(set(s))).to_dict()
    out = []
    for _, r in rows.iterrows():
        inits = avail.get(tuple(r[k] for k in SETTING_KEYS), [])
        out.append(_choose_baseline_init(r["init"], inits, baseline_init))
    return pd.Series(out, index=rows.index, dtype=object)


# --------------------------------------------------------------------------- error table
def error_table(df: pd.DataFrame, baseline: str = "baseline", baseline_init: str | None = None,
                reference: str | None = None) -> pd.DataFrame:
    """The paper's error table: one row per setting x (scenario, method, init).

    Key columns: test_set, backbone, label_fraction, scenario, method, init.
    Numbers: ``seeds`` (the number of runs averaged into the row, one per
    seed; not ``n`` of ``metrics.json``, the number of test images);
    ``<m>_mean`` / ``<m>_std`` for yaw, pitch, roll, mae, geodesic (std over
    seeds, ``ddof=1``, NaN with one seed); ``delta_pct`` = 100 * (MAE mean -
    baseline MAE mean) / baseline MAE mean (negative = better);
    ``baseline_init``. Display strings: ``Yaw``, ``Pitch``, ``Roll``,
    ``MAE`` ("mean ± std", or "mean" with one seed) and ``Δ vs baseline (%)``
    ("—" for the baseline rows and where no baseline exists). Checks:
    ``unlearned`` (some run of the row is not clearly below the constant
    predictor, see :data:`UNLEARNED_RATIO`), ``mixed_settings`` (its runs have
    different ``settings`` fingerprints) and ``flag`` ("†", "‡", "†‡" or ""),
    the mark :func:`to_markdown` and :func:`to_latex` put after the MAE.
    Δ is against one variant of the ``baseline`` scenario
    (:func:`~hpelib.report.columns.reference_method`: ``reference``, else the
    plain one); its other variants are rows with their own Δ. Column
    ``reference`` names it (``baseline/none``), and so do the Δ headers.
    """
    require_columns(df, "error_table")
    if df.empty:
        raise ValueError("error_table: the results table is empty (no complete runs)")
    k = key_frame(df).assign(_unlearned=unlearned_mask(df))
    metrics = [m for m in ("yaw", "pitch", "roll", "mae", "geodesic") if m in k]
    g = k.groupby(list(ROW_KEYS), sort=False)
    agg = g[metrics].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg.insert(0, "seeds", g.size())
    agg["unlearned"] = g["_unlearned"].any()
    agg["mixed_settings"] = g["settings"].nunique() > 1 if "settings" in k else False
    agg["flag"] = [("†" if u else "") + ("‡" if m else "") for u, m in zip(agg["unlearned"], agg["mixed_settings"])]
    agg = agg.reset_index()

    ref = reference_method(agg, baseline, reference)
    base = agg[is_reference(agg, baseline, ref)]
    agg["reference"] = None if ref is None else f"{baseline}/{ref}"
    if base.empty:
        warnings.warn(f"no '{baseline}' runs: the Δ vs baseline column is left empty", UserWarning, stacklevel=2)
        agg["baseline_init"] = None
        agg["delta_pct"] = np.nan
    else:
        agg["baseline_init"] = attach_baseline_init(agg, base, baseline_init)
        ref_rows = base[list(SETTING_KEYS) + ["init", "mae_mean"]].rename(
            columns={"init": "baseline_init", "mae_mean": "_base_mae"})
        agg = agg.merge(ref_rows, on=list(SETTING_KEYS) + ["baseline_init"], how="left")
        agg["delta_pct"] = 100.0 * (agg["mae_mean"] - agg["_base_mae"]) / agg["_base_mae"]
        agg = agg.drop(columns="_base_mae")
    agg.loc[is_reference(agg, baseline, ref), "delta_pct"] = np.nan

    for m, col in zip(("yaw", "pitch", "roll", "mae"), ("Yaw", "Pitch", "Roll", "MAE")):
        agg[col] = [_pm(a, b) for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_std"])]
    agg["Δ vs baseline (%)"] = [signed(v) for v in agg["delta_pct"]]
    return sort_rows(unkey(agg)).reset_index(drop=True)


def _pm(mean: float, std: float, digits: int = 2, pm: str = "±") -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {pm} {std:.{digits}f}"


# --------------------------------------------------------------------------- Markdown and LaTeX
_DISPLAY_KEYS = (("test_set", "Test set"), ("backbone", "Backbone"), ("label_fraction", "Labels"),
                 ("scenario", "Scenario"), ("method", "Method"), ("init", "Init"))
_DISPLAY_VALUES = ("Yaw", "Pitch", "Roll", "MAE", "Δ vs baseline (%)")
#: what the ``seeds`` column counts, for the captions
_SEEDS = "seeds: number of runs (one per seed) averaged into the row."


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
            constant.append(f"{title.lower()}: {fmt_key(values.iloc[0])}")
    header = [t for _, t in shown] + ["seeds"] + list(_DISPLAY_VALUES[:-1]) + [f"Δ vs {_reference(table)} (%)"]
    # best (lowest mean MAE) per setting
    best = key_frame(table).groupby(list(SETTING_KEYS))["mae_mean"].transform("min")
    is_best = np.isclose(table["mae_mean"].to_numpy(float), best.to_numpy(float))
    body = []
    for _, r in table.iterrows():
        cells = [fmt_key(r[key]) for key, _ in shown] + [str(int(r["seeds"]))]
        for m in ("yaw", "pitch", "roll", "mae"):
            cells.append(_pm(r[f"{m}_mean"], r[f"{m}_std"], pm=pm))
        cells.append(signed(r["delta_pct"]))
        body.append(cells)
    marks = list(table["flag"]) if "flag" in table else [""] * len(table)
    return header, body, constant, is_best, marks


def _reference(table: pd.DataFrame) -> str:
    """What the Δ of a table is against: ``baseline/none`` (``baseline`` for a table without the column)."""
    names = table["reference"].dropna().unique() if "reference" in table else []
    return str(names[0]) if len(names) else "baseline"


def _mark_notes(marks: Sequence[str]) -> list[str]:
    """Caption sentences for the marks used in a table."""
    notes = []
    if any("†" in m for m in marks):
        notes.append(f"†: a run of this row is not clearly below the constant predictor (always the median "
                     f"training pose): its yaw, pitch, roll or mean error is ≥ {UNLEARNED_RATIO:g} × the "
                     f"constant predictor's (warnings.md lists them).")
    if any("‡" in m for m in marks):
        notes.append("‡: the runs of this row used different training settings (warnings.md lists the keys).")
    return notes


def to_markdown(table: pd.DataFrame, bold_best: bool = True) -> str:
    """GitHub Markdown of an :func:`error_table` (errors in degrees).

    Key columns that hold one value for the whole table (e.g. the backbone)
    move into a caption line. With ``bold_best`` the lowest mean MAE of each
    setting (test set, backbone, label fraction) is bold.
    """
    header, body, constant, is_best, marks = _layout(table, "±")
    mae_col = header.index("MAE")
    caption = (f"Mean absolute error in degrees (mean ± std over seeds); Δ: relative change of MAE vs "
               f"{_reference(table)}; " + _SEEDS)
    if constant:
        caption += " " + "; ".join(constant) + "."
    lines = [caption, *_mark_notes(marks), ""]
    lines.append("| " + " | ".join(header) + " |")
    align = ["---" if i < len(header) - 6 else "---:" for i in range(len(header))]
    lines.append("| " + " | ".join(align) + " |")
    for cells, best, mark in zip(body, is_best, marks):
        cells = list(cells)
        if bold_best and best:
            cells[mae_col] = f"**{cells[mae_col]}**"
        if mark:
            cells[mae_col] += f" {mark}"
        lines.append(markdown_row(cells))
    return "\n".join(lines) + "\n"


def markdown_row(cells: Sequence[str]) -> str:
    """``| a | b |`` with the cells' own ``|`` escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


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
    head[-1] = rf"$\Delta$ vs {_tex(_reference(table))} (\%)"
    caption = ("Mean absolute error in degrees (mean $\\pm$ std over seeds); $\\Delta$: relative change "
               f"of MAE against {_tex(_reference(table))} (negative is better); {_tex(_SEEDS)}")
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


# --------------------------------------------------------------------------- the paper's table
PAPER_COLUMNS = (("pretrain", "pre-training"), ("auxiliary", "auxiliary"), ("combined", "both"))


def paper_table(df: pd.DataFrame, baseline: str = "baseline", baseline_init: str | None = None,
                reference: str | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """The paper's table: rows = SSL methods, columns = the way SSL is used (pre-training, auxiliary, both).

    One row per setting (test set, backbone, label fraction) and method label
    (a combined variant's label, ``rotation+jigsaw``, is a row of its own in
    the ``both`` column). Each cell: the MAE mean over seeds, its relative
    change against the reference baseline (:func:`error_table`'s Δ) and the
    95% interval of that change (the paired interval of
    :func:`~hpelib.report.stats.paired_tests` divided by the baseline's MAE),
    then ``*`` when the variant beats the baseline (Holm-corrected one-sided
    paired t-test, p < ``alpha``); "—" where the variant was not run. Numeric
    columns ``<scenario>_mae``, ``<scenario>_delta_pct``,
    ``<scenario>_ci_low_pct``, ``<scenario>_ci_high_pct``,
    ``<scenario>_beats`` back each cell; ``reference`` names the baseline.
    """
    from .stats import paired_tests

    errors = error_table(df, baseline=baseline, baseline_init=baseline_init, reference=reference)
    tests = paired_tests(df, baseline=baseline, baseline_init=baseline_init, reference=reference, alpha=alpha)
    base = errors[is_reference(errors, baseline, reference_method(errors, baseline, reference))]
    base_mae = {tuple(r[k] for k in SETTING_KEYS): r["mae_mean"] for _, r in base.iterrows()}
    keys = list(SETTING_KEYS) + ["scenario", "method"]
    tested = {tuple(r[k] for k in keys): r for _, r in tests.iterrows()}
    rows: dict[tuple, dict] = {}
    for _, r in errors[errors["scenario"].isin([s for s, _ in PAPER_COLUMNS])].iterrows():
        setting = tuple(r[k] for k in SETTING_KEYS)
        row = rows.setdefault(setting + (r["method"],), dict(zip(SETTING_KEYS, setting), method=r["method"]))
        t = tested.get(setting + (r["scenario"], r["method"]))
        ref = base_mae.get(setting, np.nan)
        s = r["scenario"]
        row[f"{s}_mae"], row[f"{s}_delta_pct"] = r["mae_mean"], r["delta_pct"]
        row[f"{s}_ci_low_pct"] = 100 * t["ci_low"] / ref if t is not None else np.nan
        row[f"{s}_ci_high_pct"] = 100 * t["ci_high"] / ref if t is not None else np.nan
        row[f"{s}_beats"] = bool(t["beats_baseline"]) if t is not None else False
    out = pd.DataFrame(list(rows.values()))
    if out.empty:
        return out
    for s, title in PAPER_COLUMNS:
        for col in ("mae", "delta_pct", "ci_low_pct", "ci_high_pct"):
            out[f"{s}_{col}"] = out.get(f"{s}_{col}", np.nan)
        out[f"{s}_beats"] = out.get(f"{s}_beats", False)
        out[s] = [_paper_cell(*(r[f"{s}_{c}"] for c in ("mae", "delta_pct", "ci_low_pct", "ci_high_pct", "beats")))
                  for _, r in out.iterrows()]
    out["reference"] = errors["reference"].iloc[0] if len(errors) else None
    return out


def _paper_cell(mae, delta, low, high, beats) -> str:
    if mae is None or not np.isfinite(mae):
        return "—"
    ci = f" [{signed(low)}, {signed(high)}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{mae:.2f} ({signed(delta)}%{ci}){' *' if beats is True else ''}"


def _paper_layout(table: pd.DataFrame):
    settings = _DISPLAY_KEYS[:3]  # test set, backbone, labels: a column when they vary, else the caption
    keys = [(k, t) for k, t in settings if table[k].nunique() > 1]
    header = [t for _, t in keys] + ["SSL method"] + [title for _, title in PAPER_COLUMNS]
    body = [[fmt_key(r[k]) for k, _ in keys] + [str(r["method"])] + [r[s] for s, _ in PAPER_COLUMNS]
            for _, r in table.iterrows()]
    constant = [f"{t.lower()}: {fmt_key(table[k].iloc[0])}" for k, t in settings if table[k].nunique() == 1]
    return header, body, constant


def _paper_caption(table: pd.DataFrame) -> str:
    return (f"MAE in degrees (mean over seeds) of each SSL method used as pre-training, as an auxiliary loss, "
            f"and both; in brackets its change against {_reference(table)} with the 95% interval of the paired "
            f"difference; *: better than {_reference(table)} (one-sided paired t-test, Holm-corrected, p < 0.05); "
            f"—: not run.")


def paper_table_markdown(table: pd.DataFrame) -> str:
    """Markdown of :func:`paper_table`: a caption line, then the table."""
    header, body, constant = _paper_layout(table)
    caption = _paper_caption(table) + (" " + "; ".join(constant) + "." if constant else "")
    lines = [caption, "", "| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    lines += [markdown_row(cells) for cells in body]
    return "\n".join(lines) + "\n"


def paper_table_latex(table: pd.DataFrame, label: str = "tab:ssl-ways") -> str:
    """LaTeX (booktabs) of :func:`paper_table`."""
    header, body, constant = _paper_layout(table)
    caption = _tex(_paper_caption(table) + (" " + "; ".join(constant) + "." if constant else ""))
    n_keys = len(header) - len(PAPER_COLUMNS)
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
           r"\begin{tabular}{" + "l" * n_keys + "r" * len(PAPER_COLUMNS) + "}", r"\toprule",
           " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(_tex(c).replace(" *", r"$^{*}$") for c in cells) + r" \\" for cells in body]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
