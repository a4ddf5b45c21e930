"""Results of a study: the tidy table, the paper's error tables, paired tests, figures.

A study writes one folder per run (anywhere under a results folder, nested or
not; hidden folders such as a k-fold setting's ``.folds`` are not read). The
files of a run folder, their names and formats belong to :mod:`hpelib.runs`,
through which the report reads them: ``config.json`` is a
:class:`~hpelib.runs.RunRecord` (missing keys are tolerated), ``metrics.json``
gives one block of errors per test set (:func:`~hpelib.runs.metric_blocks`),
``predictions.csv`` / ``predictions_<test_set>.csv`` the per-sample errors
(:meth:`~hpelib.runs.RunFolder.read_predictions`).

A folder is a *run* when it holds ``config.json``; it is *complete* when it
also holds a ``metrics.json`` whose blocks have the keys :data:`METRIC_KEYS`
and, where the study runner wrote its files, no ``FAILED`` marker and a
``study_run.json`` that says ``"complete": true``. Incomplete runs (crashed,
failed, started again and still running) and, when the caller names the runs
of its study (``runs=``), every other folder are left out: one warning and the
"Runs left out" section of ``warnings.md`` list them with the reason. SSL
pre-training runs (``kind`` ``pretrain``) are skipped silently: they have no
pose metrics. Each complete run gives one row per test
set of :func:`collect`, with the labels of ``config.json`` (``method`` is
:attr:`RunRecord.label <hpelib.runs.RunRecord.label>`; ``label_fraction``
absent = all labels = 1.0), its errors and the constant predictor's
(:data:`CONSTANT_KEYS`: always predicting the median training pose; NaN columns
when ``metrics.json`` lacks them).

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
      ``settings`` is a short hash of them (:func:`settings_fingerprint`).
      Rows are never dropped.

All errors are in degrees. Figures are built on :class:`matplotlib.figure.Figure`
objects (no pyplot state, so no backend or display is needed and nothing
leaks); they render inline in Jupyter and are saved as PNG + PDF atomically.

Modules, from the bottom layer up: :mod:`~hpelib.report.columns` (the results
table's columns and keys), :mod:`~hpelib.report.checks`,
:mod:`~hpelib.report.collect`, :mod:`~hpelib.report.tables`,
:mod:`~hpelib.report.stats`, :mod:`~hpelib.report.figures`,
:mod:`~hpelib.report.build`.
"""
from __future__ import annotations

from ..runs import CONSTANT_KEYS, METRIC_KEYS
from .build import build_report
from .checks import UNLEARNED_RATIO, settings_fingerprint, study_warnings, training_settings
from .collect import collect, collect_predictions, write_results_table
from .columns import RESULT_COLUMNS
from .figures import (plot_error_by_method, plot_error_vs_angle, plot_label_efficiency, plot_pretrain_budget,
                      save_figure)
from .stats import paired_tests, paired_tests_markdown
from .tables import error_table, paper_table, paper_table_latex, paper_table_markdown, to_latex, to_markdown

__all__ = [
    "METRIC_KEYS",
    "CONSTANT_KEYS",
    "RESULT_COLUMNS",
    "UNLEARNED_RATIO",
    "collect",
    "training_settings",
    "settings_fingerprint",
    "study_warnings",
    "write_results_table",
    "collect_predictions",
    "error_table",
    "to_markdown",
    "to_latex",
    "paper_table",
    "paper_table_markdown",
    "paper_table_latex",
    "paired_tests",
    "paired_tests_markdown",
    "plot_error_by_method",
    "plot_label_efficiency",
    "plot_pretrain_budget",
    "plot_error_vs_angle",
    "save_figure",
    "build_report",
]
