"""One experiment run, from plain parameters to a run folder: what the notebooks call.

The notebooks in ``notebooks/`` (run by papermill and the study runner) hold
parameters and displays only; the steps live here so that they are tested:

* :func:`run_pretraining` -- SSL pre-training of a backbone (``pretrain.ipynb``);
* :func:`run_hpe` -- head pose training with optional SSL init and auxiliary
  SSL losses, then the test on one or more sets (``train.ipynb``);
* :func:`evaluate_on_sets` -- the test part alone (``evaluate.ipynb``).

Run folder contents (read by :mod:`hpelib.report`): ``config.json`` (the
run's parameters and labels: run, scenario, method, pretrain_method,
aux_methods, init, label_fraction, seed, test_set, backbone, image_size, ...),
``metrics.json`` (yaw, pitch, roll, mae, geodesic, n, train_time_s; with
several test sets one block per set under ``per_test_set``), predictions, and
the engine's ``model.pt`` / ``history.json`` (``checkpoint.pt`` too while a run
is unfinished, so that running it again resumes).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .data import build_dataset, kfold_subsets, label_subset
from .engine import TrainConfig, evaluate, pretrain, train
from .io import read_json, write_json
from .metrics import summarize
from .models import ModelConfig

__all__ = ["dataset_from_spec", "hpe_datasets", "run_pretraining", "run_hpe", "evaluate_on_sets",
           "loss_history", "constant_prediction_metrics", "init_label", "demo_results", "demo_model",
           "training_image_size", "constant_columns"]


def dataset_from_spec(spec: dict, *, train: bool, **defaults):
    """A data set from a spec ``{"name": ..., **build_dataset options}``; the spec's keys win over ``defaults``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a data spec must be a dict with a 'name' key (e.g. {{'name': 'synthetic'}}), got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    return build_dataset(name, **{**defaults, "train": train, **spec})


def hpe_datasets(train_data: dict, test_data: dict, *, image_size: int, seed: int,
                 label_fraction: float | None = None, kfold: dict | None = None):
    """Training set and named test sets of a head pose run.

    ``kfold={"k": K, "fold": f, "seed": s}`` trains on the other folds of
    ``train_data`` and tests on fold ``f``: every test spec must then describe
    the same images as ``train_data`` (evaluated without augmentation).
    ``label_fraction`` < 1 keeps a seeded part of the training labels.
    Returns ``(train_set, {name: test_set})``.
    """
    common = {"image_size": image_size, "seed": seed}
    train_set = dataset_from_spec(train_data, train=True, **common)
    test_sets = {name: dataset_from_spec(spec, train=False, **common) for name, spec in test_data.items()}
    if kfold:
        k, fold, split_seed = kfold["k"], kfold["fold"], kfold.get("seed", 0)
        for name, ds in test_sets.items():
            if list(ds.names) != list(train_set.names):
                raise ValueError(f"kfold: test set {name!r} is not the same images as train_data; "
                                 "in k-fold mode every test spec must describe the training data")
        train_set = kfold_subsets(train_set, k, fold, split_seed)[0]
        test_sets = {name: kfold_subsets(ds, k, fold, split_seed)[1] for name, ds in test_sets.items()}
    if label_fraction is not None and label_fraction < 1:
        train_set = label_subset(train_set, label_fraction, seed)
    return train_set, test_sets


def init_label(init: str, pretrain_method: str | None) -> str:
    """The ``init`` column of the report: random, imagenet, ssl (a pre-training run) or checkpoint."""
    if init in ("random", "imagenet"):
        return init
    return "ssl" if pretrain_method else "checkpoint"


def constant_prediction_metrics(train_poses: np.ndarray, test_poses: np.ndarray) -> dict:
    """Errors of always predicting the mean training pose: the floor a model must beat."""
    labelled = np.isfinite(train_poses).all(1)
    if not labelled.any():
        raise ValueError("no labelled training pose to take the mean of")
    mean = train_poses[labelled].mean(0)
    test = test_poses[np.isfinite(test_poses).all(1)]
    return summarize(np.repeat(mean[None], len(test), 0), test)


def constant_columns(constant: dict) -> dict:
    """``constant_yaw/pitch/roll/mae``: the constant predictor's errors as stored in ``metrics.json``.

    The names are :data:`hpelib.report.CONSTANT_KEYS` (the report reads them; not imported here so that
    a run's kernel does not load the report's plotting and statistics stack).
    """
    return {f"constant_{k}": float(constant[k]) for k in ("yaw", "pitch", "roll", "mae")}


def pretrain_epochs(init) -> int | None:
    """Epochs of the SSL pre-training run whose ``model.pt`` is ``init`` (from its ``config.json``), else None."""
    cfg_path = Path(init).parent / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = read_json(cfg_path)
    return cfg.get("train_config", {}).get("epochs") if cfg.get("kind") == "pretrain" else None


def _train_config(epochs, batch_size, lr, seed, train_options) -> TrainConfig:
    return TrainConfig.from_dict({"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                                  "progress": False, **(train_options or {})})


def _finish(out: Path, keep_checkpoint: bool) -> None:
    if not keep_checkpoint:  # model.pt has the final weights; checkpoint.pt only serves to resume
        (out / "checkpoint.pt").unlink(missing_ok=True)


def loss_history(out_dir) -> pd.DataFrame:
    """Per-epoch mean losses of a run (``history.json``), indexed by epoch."""
    history = read_json(Path(out_dir) / "history.json")["epochs"]
    return pd.DataFrame([{"epoch": h["epoch"], **h["loss"]} for h in history]).set_index("epoch")


def run_pretraining(out_dir, *, method: str, method_options: dict | None = None, data: dict,
                    epochs: int, batch_size: int, lr: float, train_options: dict | None = None,
                    backbone: str = "resnet18-narrow", init: str = "random", image_size: int = 32,
                    model_options: dict | None = None, seed: int = 0, run_name: str | None = None,
                    keep_checkpoint: bool = False) -> dict:
    """SSL pre-training with one task on the images of ``data`` (labels ignored).

    ``model_options``: other :class:`ModelConfig` fields of the backbone (``stem``).

    Writes ``config.json`` (``kind: pretrain``), ``model.pt`` (initializes a
    later :func:`run_hpe` through ``init``), ``history.json`` and
    ``metrics.json`` (training time, first/last epoch loss). Returns
    ``{"config", "metrics", "losses" (DataFrame)}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = dataset_from_spec(data, train=True, image_size=image_size, seed=seed)
    model_cfg = ModelConfig.from_dict({"backbone": backbone, "init": init, "pose_head": None,
                                       "ssl_tasks": {method: {"weight": 1.0, **(method_options or {})}},
                                       **(model_options or {})})
    train_cfg = _train_config(epochs, batch_size, lr, seed, train_options)
    config = {"kind": "pretrain", "run": run_name or out.name, "method": method,
              "method_options": method_options or {}, "data": data, "backbone": backbone, "init": init,
              "image_size": image_size, "seed": seed, "n_images": len(images),
              "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict()}
    write_json(out / "config.json", config)
    pretrain(model_cfg, images, train_cfg, out)
    losses = loss_history(out)
    metrics = {**read_json(out / "metrics.json"), "loss_first_epoch": float(losses["total"].iloc[0]),
               "loss_last_epoch": float(losses["total"].iloc[-1]), "n_images": len(images)}
    if not math.isfinite(metrics["loss_last_epoch"]):
        raise FloatingPointError(f"pre-training in {out} ended with a non-finite loss: {metrics['loss_last_epoch']}")
    write_json(out / "metrics.json", metrics)
    _finish(out, keep_checkpoint)
    return {"config": config, "metrics": metrics, "losses": losses}


def evaluate_on_sets(model, test_sets: dict, out_dir, batch_size: int = 64) -> dict:
    """Evaluate ``model`` (a model, ``model.pt`` or run folder) on each named set.

    Writes ``predictions.csv`` (one set) or ``predictions_<name>.csv`` per set
    into ``out_dir``; returns ``{name: metrics}``.
    """
    out = Path(out_dir)
    per_set = {}
    for name, ds in test_sets.items():
        with tempfile.TemporaryDirectory() as tmp:  # evaluate() writes predictions.csv + metrics.json there
            per_set[name] = evaluate(model, ds, out_dir=tmp, batch_size=batch_size, progress=False)
            target = "predictions.csv" if len(test_sets) == 1 else f"predictions_{name}.csv"
            shutil.move(str(Path(tmp) / "predictions.csv"), str(out / target))
    return per_set


def run_hpe(out_dir, *, train_data: dict, test_data: dict, scenario: str = "baseline",
            method: str | None = None, pretrain_method: str | None = None, aux_methods=None,
            init: str = "random", ssl_tasks: dict | None = None, pose_head: str = "binned",
            model_options: dict | None = None, backbone: str = "resnet18-narrow", image_size: int = 32,
            label_fraction: float | None = None, seed: int = 0, kfold: dict | None = None,
            epochs: int = 1, batch_size: int = 32, lr: float = 1e-3, train_options: dict | None = None,
            eval_batch_size: int = 64, run_name: str | None = None, keep_checkpoint: bool = False) -> dict:
    """Train a head pose model (optionally SSL-initialized, optionally with auxiliary SSL losses) and test it.

    ``scenario``, ``method``, ``pretrain_method`` and ``aux_methods`` are labels
    for the report (``method`` defaults to the pre-training method and the
    auxiliary tasks joined with ``+``, ``none`` for a plain baseline).
    Returns ``{"config", "result" (engine), "per_set" ({name: metrics}),
    "metrics" (what metrics.json holds), "constant" ({name: errors of
    predicting the mean training pose})}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ssl_tasks = ssl_tasks or {}
    train_set, test_sets = hpe_datasets(train_data, test_data, image_size=image_size, seed=seed,
                                        label_fraction=label_fraction, kfold=kfold)
    model_cfg = ModelConfig.from_dict({"backbone": backbone, "init": init, "pose_head": pose_head,
                                       "ssl_tasks": ssl_tasks, **(model_options or {})})
    train_cfg = _train_config(epochs, batch_size, lr, seed, train_options)
    aux = sorted(ssl_tasks) if aux_methods is None else list(aux_methods)
    label = method or "+".join(([pretrain_method] if pretrain_method else []) + aux) or "none"
    config = {"run": run_name or out.name, "scenario": scenario, "method": label,
              "pretrain_method": pretrain_method, "aux_methods": aux, "init": init_label(init, pretrain_method),
              "init_path": init, "label_fraction": 1.0 if label_fraction is None else float(label_fraction),
              "seed": seed, "test_set": next(iter(test_sets)) if len(test_sets) == 1 else sorted(test_sets),
              "backbone": backbone, "image_size": image_size, "pose_head": pose_head, "kfold": kfold,
              "pretrain_epochs": pretrain_epochs(init) if pretrain_method else None,
              "n_train": len(train_set), "train_data": train_data, "test_data": test_data,
              "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict()}
    write_json(out / "config.json", config)
    result = train(model_cfg, train_set, None, train_cfg, out)
    per_set = evaluate_on_sets(out / "model.pt", test_sets, out, eval_batch_size)
    constant = {name: constant_prediction_metrics(train_set.poses, ds.poses) for name, ds in test_sets.items()}
    train_time = float(result["train_time_s"])
    if len(per_set) == 1:
        (name, m), = per_set.items()
        metrics = {**m, **constant_columns(constant[name]), "train_time_s": train_time}
    else:
        metrics = {"per_test_set": {n: {**m, **constant_columns(constant[n])} for n, m in per_set.items()},
                   "train_time_s": train_time}
    for name, m in per_set.items():
        if not all(math.isfinite(m[k]) for k in ("yaw", "pitch", "roll", "mae", "geodesic")):
            raise FloatingPointError(f"test set {name!r}: non-finite errors {m} (run folder {out})")
    write_json(out / "metrics.json", metrics)
    _finish(out, keep_checkpoint)
    return {"config": config, "result": result, "per_set": per_set, "metrics": metrics, "constant": constant}


def demo_results(root, image_size: int = 16, steps: int = 3) -> Path:
    """A minuscule but real results tree (baseline vs auxiliary rotation, 2 label fractions x 2 seeds).

    For showing the report when no study has run yet: every run trains for
    ``steps`` optimizer steps on synthetic heads, so its numbers mean nothing.
    """
    root = Path(root)
    cache = root / ".synthetic"
    train_data = {"name": "synthetic", "root": str(cache), "split": "train", "n": 96}
    test_data = {"synthetic (DEMO)": {"name": "synthetic", "root": str(cache), "split": "test", "n": 48}}
    for label_fraction in (0.5, 1.0):
        for seed in (0, 1):
            for scenario, aux in (("baseline", {}), ("auxiliary", {"rotation": {"weight": 0.5}})):
                run_id = f"{scenario}/{'+'.join(aux) or 'none'}/lf{label_fraction:g}_s{seed}"
                run_hpe(root / run_id, train_data=train_data, test_data=test_data, scenario=scenario,
                        ssl_tasks=aux, image_size=image_size, label_fraction=label_fraction, seed=seed,
                        batch_size=32, train_options={"max_steps_per_epoch": steps}, run_name=run_id)
    return root


def demo_model(out_dir, image_size: int = 32, steps: int = 4) -> Path:
    """A tiny model trained for ``steps`` optimizer steps on synthetic heads; returns its ``model.pt``.

    For notebooks run without a checkpoint (e.g. by nbval): it shows the
    mechanics, its errors mean nothing.
    """
    out = Path(out_dir)
    cache = str(out / ".synthetic")
    run_hpe(out, train_data={"name": "synthetic", "root": cache, "split": "train", "n": 128},
            test_data={"synthetic": {"name": "synthetic", "root": cache, "split": "test", "n": 16}},
            image_size=image_size, batch_size=32, train_options={"max_steps_per_epoch": steps})
    return out / "model.pt"


def training_image_size(checkpoint) -> int:
    """The input size a model was trained at, from the ``config.json`` of its run folder."""
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json to read the training image size from; "
                         "pass the image size explicitly")
    return int(read_json(folder / "config.json")["image_size"])
