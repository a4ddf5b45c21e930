"""``build_report``: every table and figure of a study, written into one folder."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from ..io import atomic_write, write_text
from ..runs import CONFIG, METRICS
from .checks import UNLEARNED_RATIO, pretraining_warnings, study_warnings, warnings_markdown
from .collect import collect_predictions, collect_with_left_out, write_results_table
from .figures import (budget_series, plot_error_by_method, plot_error_vs_angle, plot_label_efficiency,
                      plot_pretrain_budget, save_figure)
from .stats import paired_tests, paired_tests_markdown
from .tables import error_table, paper_table, paper_table_latex, paper_table_markdown, to_latex, to_markdown


def _first(lines: list[str], k: int = 3) -> str:
    """The first ``k`` lines joined, and how many more ``warnings.md`` lists."""
    more = f"; ... and {len(lines) - k} more" if len(lines) > k else ""
    return "; ".join(lines[:k]) + more


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike, baseline: str = "baseline",
                 baseline_init: str | None = None, angles: Sequence[str] = ("yaw", "pitch"),
                 runs: Iterable | None = None, why_not: dict | None = None,
                 reference: str | None = None) -> dict[str, Path]:
    """Write every table and figure of a study into ``out_dir``; returns ``{name: path}``.

    ``runs``: the run ids (folders relative to ``results_dir``) to report, e.g.
    those of one study; None: every run folder under ``results_dir``.
    ``why_not``: ``{run id: reason}`` of the study's runs that are not
    reported (failed, unfinished), listed in ``warnings.md`` with the reason.
    ``reference``: the method of the ``baseline`` scenario that every Δ is
    against (default: ``none``, its plain variant).

    Files: ``results.csv``, ``warnings.md`` (always: the runs left out with
    the reason, see :func:`collect`, and the :func:`study_warnings`; "none"
    when clean), ``error_table.md``, ``error_table.tex``,
    ``paired_tests.csv``, ``paired_tests.md``, ``paper_table.md/.tex`` (when
    an SSL variant was run: :func:`~hpelib.report.tables.paper_table`),
    ``error_by_method.png/.pdf``,
    ``label_efficiency.png/.pdf``, ``pretrain_budget.png/.pdf`` when a
    pre-training method was run with several budgets and, when runs saved
    predictions, ``error_vs_<angle>.png/.pdf``. The runs left out, unlearned
    runs and error-table rows that mix training settings also raise a
    ``UserWarning`` each. Raises ``ValueError`` when ``results_dir`` holds no
    complete run (of ``runs``).

    The report is written into a fresh folder beside ``out_dir`` and swapped in
    when complete: a report that fails leaves no mix of old and new files, and
    the former report, whose numbers may no longer hold, is moved to
    ``<out_dir>.previous`` (the error names it).
    """
    out = Path(out_dir)
    fresh = out.with_name(f".{out.name}.new-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        paths = _write_report(results_dir, fresh, out, baseline, baseline_init, angles, runs, why_not, reference)
    except Exception as e:
        shutil.rmtree(fresh, ignore_errors=True)
        if out.is_dir():
            previous = out.with_name(out.name + ".previous")
            shutil.rmtree(previous, ignore_errors=True)
            out.rename(previous)
            try:
                moved = type(e)(f"{e} (the former report was moved to {previous})")
            except Exception:
                moved = RuntimeError(f"{type(e).__name__}: {e} (the former report was moved to {previous})")
            raise moved from e
        raise
    if out.is_dir():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh.rename(out)
    return {name: out / path.relative_to(fresh) for name, path in paths.items()}


def _write_report(results_dir, out: Path, final: Path, baseline, baseline_init, angles, runs, why_not,
                  reference) -> dict:
    """:func:`build_report`'s files, written into ``out`` (``final``: where they will be, for the messages)."""
    runs = None if runs is None else list(runs)  # read twice: by the tables and by the predictions
    df, left_out = collect_with_left_out(results_dir, runs, stacklevel=4, why_not=why_not)
    if df.empty:
        raise ValueError(f"no complete runs ({CONFIG} + {METRICS}) under {results_dir}")
    paths: dict[str, Path] = {"results_csv": write_results_table(df, out / "results.csv")}
    notes = dict(study_warnings(df), left_out=left_out, diverged=pretraining_warnings(results_dir, runs))
    paths["warnings_md"] = write_text(out / "warnings.md", warnings_markdown(notes))
    listed = final / "warnings.md"
    if notes["unlearned"]:
        warnings.warn(f"{len(notes['unlearned'])} result row(s) not clearly below the constant predictor "
                      f"(error >= {UNLEARNED_RATIO:g} x its error; marked † in the error tables, listed in "
                      f"{listed}): " + _first(notes["unlearned"]), UserWarning, stacklevel=3)
    if notes["mixed_settings"]:
        warnings.warn(f"{len(notes['mixed_settings'])} error-table row(s) average runs with different training "
                      f"settings (marked ‡, listed in {listed}): " + _first(notes["mixed_settings"]),
                      UserWarning, stacklevel=3)
    table = error_table(df, baseline=baseline, baseline_init=baseline_init, reference=reference)
    paths["error_table_md"] = write_text(out / "error_table.md", to_markdown(table))
    paths["error_table_tex"] = write_text(out / "error_table.tex", to_latex(table))
    tests = paired_tests(df, baseline=baseline, baseline_init=baseline_init, reference=reference)
    paths["paired_tests_csv"] = atomic_write(out / "paired_tests.csv", lambda tmp: tests.to_csv(tmp, index=False))
    paths["paired_tests_md"] = write_text(out / "paired_tests.md", paired_tests_markdown(tests))
    ways = paper_table(df, baseline=baseline, baseline_init=baseline_init, reference=reference)
    if not ways.empty:  # some SSL variant was run: the paper's table of methods x ways of using SSL
        paths["paper_table_md"] = write_text(out / "paper_table.md", paper_table_markdown(ways))
        paths["paper_table_tex"] = write_text(out / "paper_table.tex", paper_table_latex(ways))
    figures = [("error_by_method", lambda: plot_error_by_method(df)),
               ("label_efficiency", lambda: plot_label_efficiency(df))]
    if budget_series(df):
        figures.append(("pretrain_budget", lambda: plot_pretrain_budget(df)))
    preds = collect_predictions(results_dir, runs)
    if not preds.empty:
        figures += [(f"error_vs_{a}", lambda a=a: plot_error_vs_angle(preds, angle=a)) for a in angles]
    for name, make in figures:
        png, pdf = save_figure(make(), out / name)
        paths[f"{name}_png"], paths[f"{name}_pdf"] = png, pdf
    return paths
