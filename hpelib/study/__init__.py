"""Study runner: a study YAML -> a grid of papermill runs -> a report.

Usage (from the repository root)::

    python -m hpelib.study studies/default.yaml [--out results/default] [--jobs N]
                                                [--dry-run] [--only PATTERN] [--force]
                                                [--no-report] [--gpus 0,1]
                                                [--executor slurm --slurm-partition P ...]

A study file describes the paper's design as a grid: **scenarios** (each a list
of *variants*: which SSL method is used as pre-training, which as auxiliary
losses) x **label fractions** x **seeds** (x **folds** for a k-fold study),
plus shared settings (data sets, backbone, image size, epochs ...). The format
is documented in ``docs/STUDY.md``; ``studies/default.yaml`` is a commented
example. Every run is one executed notebook in its own folder:

* ``<out>/pretrain/<method>_s<seed>/`` -- SSL pre-training (``notebooks/pretrain.ipynb``);
  its ``model.pt`` initialises every fine-tune that uses this method and seed
  (``<method>_e<epochs>_s<seed>`` for a variant with its own budget,
  ``pretrain_train: {epochs: E}``: a pre-training-budget axis);
* ``<out>/<scenario>/<method>/lf<fraction>_s<seed>/`` -- head pose training +
  test (``notebooks/train.ipynb``); in a k-fold study the folds run in
  ``.../lf<fraction>_s<seed>/.folds/f<fold>/`` and are pooled into the
  setting's folder when all are complete (:func:`pool_folds`).

Each run gets one papermill parameter, ``spec`` (a :class:`hpelib.spec.RunSpec`
as a dict), and ``out_dir``. A run folder holds the executed notebook, what
the run writes (:mod:`hpelib.runs`) and ``study_run.json``; complete runs are
skipped, so an interrupted study is continued by running the same command
again (:mod:`hpelib.study.execute`).

A failing run keeps its executed notebook (the failing cell shows the error),
gets a ``FAILED`` marker file and an entry in ``<out>/failures.json`` (cell
index, exception name and message); runs that depend on it are skipped; the
others go on. The exit status is non-zero when any run failed or was skipped
for that reason. At the end ``hpelib.report.build_report(out, out/"report")``
writes the results table, error tables and figures.

Relative paths in a study file (data ``root``/``cache_dir``, ``notebooks``,
a checkpoint ``init``) are relative to the repository root (the folder that
holds ``hpelib/``). Strings may use ``${VAR}`` / ``${VAR:-default}``
environment substitution; ``${HPELIB_SHARED_DATA}`` defaults to
``<repo>/../shared/data`` and ``${REPO}`` is the repository root.

The package by layer: :mod:`.schema` (reading and checking the file),
:mod:`.plan` (runs and their specs), :mod:`.execute` (one run's folder and
child process), :mod:`.executors` (where runs execute: local child processes,
or SLURM jobs through submitit with ``--executor slurm``), :mod:`.scheduler`
(dependencies and slots), :mod:`.lock` (one runner per results folder),
:mod:`.pool` (k-fold pooling), :mod:`.runner` (the whole study and the
command line).
"""
from __future__ import annotations

from .execute import is_complete
from .plan import Run, expand, select
from .pool import pool_folds
from .runner import main, run_study
from .schema import REPO_ROOT, StudyError, load_study

__all__ = ["StudyError", "Run", "REPO_ROOT", "load_study", "expand", "select", "is_complete", "pool_folds",
           "run_study", "main"]
