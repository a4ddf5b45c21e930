"""Command line: ``python -m hpelib.engine.cli {train,pretrain,evaluate} --config run.json``.

Works as is under ``torchrun`` (DDP), which a notebook cannot be::

    torchrun --nproc_per_node 4 -m hpelib.engine.cli train --config run.json

The config file (JSON, or YAML when it ends in .yaml/.yml) holds::

    {"out_dir": "results/hmtl_rotation",
     "model": {...ModelConfig...},
     "train": {...TrainConfig...},
     "train_data": {"name": "300w_lp", "image_size": 224, ...},   # build_dataset(**...)
     "val_data": {...} or null,                                    # train only
     "test_data": {...}}                                           # evaluated after train, and by evaluate

``evaluate`` reads the model from ``--checkpoint`` (default: ``out_dir``).

Errors: bad input (a malformed config file, with its line and column; bad
data; an unreadable checkpoint) prints one ``error:`` line and exits with
status 2, a full disk likewise with status 1. Ctrl-C during ``train`` /
``pretrain`` prints one line saying which epoch's checkpoint is kept and exits
with status 130; the same command resumes from it.

Files: the engine writes ``checkpoint.pt``, ``history.json`` and ``model.pt``;
this command adds, through :class:`hpelib.runs.RunFolder`, ``metrics.json``
(the training summary -- ``kind``, ``epochs``, ``train_time_s``,
``train_loss_<name>``, ``val_<metric>`` -- and the test metrics) and, when
there is a test set, ``predictions.csv``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hpelib.io import output_folder_problem
from hpelib.signals import exit_status, signal_name, stop_on_signals

_KEYS = ("out_dir", "model", "train", "train_data", "val_data", "test_data", "eval_batch_size")
# Keys of metrics.json that describe the training (kept when ``evaluate`` rewrites the file).
_TRAINING_KEYS = ("train_", "val_", "epochs", "kind")


def load_run_config(path) -> dict:
    """The run config in ``path`` (JSON, or YAML for .yaml/.yml), its keys checked; ``ValueError`` when malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise _syntax_error(path, "YAML", mark and (mark.line + 1, mark.column + 1), problem) from None
    else:
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as err:
            raise _syntax_error(path, "JSON", (err.lineno, err.colno), err.msg) from None
    from hpelib.models import ModelConfig
    from hpelib.registry import check_keys

    from .config import TrainConfig

    check_keys(cfg, _KEYS, str(path))
    try:  # the checks of notebooks and studies, before anything is built
        cfg["model"] = ModelConfig.from_dict(cfg.get("model") or {}).to_dict()
        cfg["train"] = TrainConfig.from_dict(cfg.get("train") or {}).to_dict()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return cfg


def _syntax_error(path: Path, language: str, where, problem: str) -> ValueError:
    """``config file <path> is not valid <language>: line L, column C: <problem> (...)``; ``where`` may be None."""
    at = f"line {where[0]}, column {where[1]}: " if where else ""
    return ValueError(f"config file {path} is not valid {language}: {at}{problem} (correct the file there)")


def _dataset(spec: dict | None, what: str, required: bool):
    if spec is None:
        if required:
            raise ValueError(f"the config needs '{what}' (keyword arguments of hpelib.data.build_dataset)")
        return None
    from hpelib.data import build_dataset

    return build_dataset(**spec)


def main(argv=None) -> int:
    """Run the command; bad input (config, data, checkpoint) exits with status 2 and a one-line error.

    A full disk exits with status 1 and a one-line error, Ctrl-C during
    training with status 130 (see :func:`_interrupted`).
    """
    from hpelib.io import DiskFullError

    try:
        return _main(argv)
    except (ValueError, FileNotFoundError) as err:  # DataError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DiskFullError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpelib.engine.cli", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["train", "pretrain", "evaluate"])
    parser.add_argument("--config", required=True, help="run config (.json or .yaml)")
    parser.add_argument("--out-dir", help="overrides the config's out_dir")
    parser.add_argument("--checkpoint", help="evaluate: model.pt / checkpoint.pt / run folder (default out_dir)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint (resume=False)")
    args = parser.parse_args(argv)

    from hpelib.engine import TrainingStopped, evaluate, pretrain, train
    from hpelib.runs import RunFolder, training_summary

    cfg = load_run_config(args.config)
    out_dir = args.out_dir or cfg.get("out_dir")
    if not out_dir:
        parser.error("set out_dir in the config or pass --out-dir")
    problem = output_folder_problem(out_dir)
    if problem:
        parser.error(f"out_dir {out_dir} {problem}: set another out_dir (or --out-dir)")
    folder = RunFolder(out_dir)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    eval_bs = int(cfg.get("eval_batch_size", 64))
    test_spec = cfg.get("test_data")

    if args.command == "evaluate":
        if rank0:  # evaluation is single-process
            evaluation = evaluate(args.checkpoint or out_dir, _dataset(test_spec, "test_data", True),
                                  batch_size=eval_bs)
            _write_results(folder, _stored_training_summary(folder), test_spec, evaluation)
            print(json.dumps(evaluation.metrics, indent=2))
        return 0

    started = time.time()
    try:
        with stop_on_signals():
            train_set = _dataset(cfg.get("train_data"), "train_data", True)
            if args.command == "pretrain":
                result = pretrain(cfg.get("model") or {}, train_set, cfg.get("train") or {}, out_dir,
                                  resume=not args.restart)
            else:
                val_set = _dataset(cfg.get("val_data"), "val_data", False)
                result = train(cfg.get("model") or {}, train_set, val_set, cfg.get("train") or {}, out_dir,
                               resume=not args.restart)
            if not rank0:
                return 0
            evaluation = None
            if args.command == "train" and test_spec is not None:
                evaluation = evaluate(out_dir, _dataset(test_spec, "test_data", True), batch_size=eval_bs)
                result["test"] = evaluation.metrics
    except TrainingStopped as e:  # SIGTERM/SIGHUP while training: a mid-epoch checkpoint is saved
        if rank0:
            print(f"interrupted: {e}", file=sys.stderr)
        return exit_status(e)
    except KeyboardInterrupt as e:
        if rank0:
            print(_interrupted(folder, started if args.restart else None, signal_name(e)), file=sys.stderr)
        return exit_status(e)
    _write_results(folder, training_summary(result), test_spec, evaluation)
    print(json.dumps(result, indent=2))
    return 0


def _interrupted(folder, restarted_at, by: str = "SIGINT") -> str:
    """The line printed on Ctrl-C (or SIGTERM/SIGHUP): which checkpoint the run folder keeps and how to go on.

    ``restarted_at``: the time a ``--restart`` command started (an older
    checkpoint is not this run's), else ``None``.
    """
    from hpelib.runs import CHECKPOINT

    path = folder.file(CHECKPOINT)
    epochs = _checkpoint_epochs(path)
    what = "interrupted" if by == "SIGINT" else f"interrupted by {by}"
    if epochs is None or (restarted_at is not None and path.stat().st_mtime < restarted_at):
        return (f"{what} before the first epoch finished: nothing is saved in {folder.path}; "
                "run the same command again to start the run")
    again = "run the command again without --restart" if restarted_at is not None else "run the same command again"
    return f"{what}: the checkpoint after epoch {epochs[0]}/{epochs[1]} is kept in {folder.path}; " \
           f"{again} to resume from it"


def _checkpoint_epochs(path) -> tuple[int, int] | None:
    """``(finished, planned)`` epochs of the resumable checkpoint at ``path``; ``None`` when there is none."""
    from hpelib.models.files import read_checkpoint

    try:
        saved = read_checkpoint(path, mmap=True)  # maps the tensors: quick for any model size
        return int(saved["epoch"]), int(saved["train_config"]["epochs"])
    except (ValueError, KeyError, TypeError, OSError):  # absent, unreadable, or not a resumable one
        return None


def _stored_training_summary(folder) -> dict:
    """The training entries of the folder's ``metrics.json`` (none when there is no such file)."""
    from hpelib.runs import METRICS

    if not folder.has(METRICS):
        return {}
    return {k: v for k, v in folder.read_metrics().items() if k.startswith(_TRAINING_KEYS)}


def _write_results(folder, summary: dict, test_spec: dict | None, evaluation) -> None:
    """``predictions.csv`` of an evaluation, then ``metrics.json``: the training ``summary`` and its test metrics."""
    per_set = {}
    if evaluation is not None:
        test_set = str(test_spec.get("name", "test"))
        folder.write_predictions({test_set: evaluation.frame()})
        per_set[test_set] = evaluation.metrics
    folder.write_metrics(per_set, **summary)


if __name__ == "__main__":
    sys.exit(main())
