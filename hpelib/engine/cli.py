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
from pathlib import Path

_KEYS = ("out_dir", "model", "train", "train_data", "val_data", "test_data", "eval_batch_size")
# Keys of metrics.json that describe the training (kept when ``evaluate`` rewrites the file).
_TRAINING_KEYS = ("train_", "val_", "epochs", "kind")


def load_run_config(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        cfg = yaml.safe_load(text)
    else:
        cfg = json.loads(text)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the config must be a mapping with keys {list(_KEYS)}")
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys are {list(_KEYS)}")
    return cfg


def _dataset(spec: dict | None, what: str, required: bool):
    if spec is None:
        if required:
            raise ValueError(f"the config needs '{what}' (keyword arguments of hpelib.data.build_dataset)")
        return None
    from hpelib.data import build_dataset

    return build_dataset(**spec)


def main(argv=None) -> int:
    """Run the command; bad input (config, data, checkpoint) exits with status 2 and a one-line error."""
    try:
        return _main(argv)
    except (ValueError, FileNotFoundError) as err:  # DataError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpelib.engine.cli", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["train", "pretrain", "evaluate"])
    parser.add_argument("--config", required=True, help="run config (.json or .yaml)")
    parser.add_argument("--out-dir", help="overrides the config's out_dir")
    parser.add_argument("--checkpoint", help="evaluate: model.pt / checkpoint.pt / run folder (default out_dir)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint (resume=False)")
    args = parser.parse_args(argv)

    from hpelib.engine import evaluate, pretrain, train
    from hpelib.runs import RunFolder

    cfg = load_run_config(args.config)
    out_dir = args.out_dir or cfg.get("out_dir")
    if not out_dir:
        parser.error("set out_dir in the config or pass --out-dir")
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

    train_set = _dataset(cfg.get("train_data"), "train_data", True)
    if args.command == "pretrain":
        result = pretrain(cfg.get("model") or {}, train_set, cfg.get("train") or {}, out_dir, resume=not args.restart)
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
    _write_results(folder, _training_summary(result), test_spec, evaluation)
    print(json.dumps(result, indent=2))
    return 0


def _training_summary(result: dict) -> dict:
    """The training entries of ``metrics.json`` from the result of ``train()`` / ``pretrain()``."""
    out = {"kind": result["kind"], "epochs": result["epochs"], "train_time_s": result["train_time_s"]}
    out.update({f"train_loss_{k}": v for k, v in result["train_loss"].items()})
    if result["val"]:
        out.update({f"val_{k}": v for k, v in result["val"].items()})
    return out


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
