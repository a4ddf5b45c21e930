"""One run, from a :class:`~hpelib.spec.RunSpec` to a run folder: what the notebooks call.

The notebooks in ``notebooks/`` (run by papermill and the study runner) hold a
``spec`` parameter and displays only; the steps live here so that they are tested:

* :func:`run_pretraining` -- SSL pre-training of a backbone (``pretrain.ipynb``);
* :func:`run_hpe` -- head pose training with optional SSL init and auxiliary
  SSL losses, then the test on one or more sets (``train.ipynb``).

What a run folder holds, and how it is read back, is :mod:`hpelib.runs`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .data import build_dataset, kfold_subsets, label_subset, validation_subsets
from .engine import evaluate, pretrain, train
from .metrics import labelled_rows, summarize
from .models.inputs import input_spec_of
from .runs import (CONFIG, RunFolder, RunRecord, constant_columns, init_label, method_label, run_id,
                   training_summary, unlearned_keys)
from .spec import RunSpec

__all__ = ["dataset_from_spec", "hpe_datasets", "run_pretraining", "run_hpe", "evaluate_on_sets",
           "constant_prediction_metrics", "demo_results", "demo_model", "training_image_size", "tested_pictures",
           "REAL_FACE_MODEL"]

#: the real-face model that predict.ipynb, docs/PREDICT.md and the README use: studies/aflw.yaml's 4-epoch
#: rotation pre-training + fine-tuning, seed 0, fold 0 (under its results folder)
REAL_FACE_MODEL = "pretrain/rotation-4ep/lf1_s0/.folds/f0/model.pt"


def dataset_from_spec(spec: dict, *, train: bool, **defaults):
    """A data set from a spec ``{"name": ..., **build_dataset options}``; the spec's keys win over ``defaults``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a data spec must be a dict with a 'name' key (e.g. {{'name': 'synthetic'}}), got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    return build_dataset(name, **{**defaults, "train": train, **spec})


def hpe_datasets(spec: RunSpec):
    """Training set and named test sets of a head pose run: ``(train_set, {name: test_set})``.

    With ``spec.kfold`` the run trains on the other folds of ``train_data`` and
    tests on fold ``fold``: every test spec must then describe the same images
    as ``train_data`` (evaluated without augmentation); with
    ``spec.kfold.validation`` it tests on a validation part of the training
    folds instead (:func:`hpelib.data.validation_subsets`). ``label_fraction`` < 1
    keeps a seeded part of the training labels.
    """
    common = {"image_size": spec.image_size, "seed": spec.seed}
    train_set = dataset_from_spec(spec.train_data, train=True, **common)
    test_sets = {name: dataset_from_spec(s, train=False, **common) for name, s in spec.test_data.items()}
    if spec.kfold:
        k, fold, split_seed = spec.kfold.k, spec.kfold.fold, spec.kfold.seed
        for name, ds in test_sets.items():
            if list(ds.names) != list(train_set.names):
                raise ValueError(f"kfold: test set {name!r} is not the same images as train_data; "
                                 "in k-fold mode every test spec must describe the training data")
        if spec.kfold.validation:
            train_set, test_sets = validation_subsets(train_set, test_sets, k, fold, split_seed,
                                                      spec.kfold.validation)
        else:
            train_set = kfold_subsets(train_set, k, fold, split_seed)[0]
            test_sets = {name: kfold_subsets(ds, k, fold, split_seed)[1] for name, ds in test_sets.items()}
    if spec.label_fraction < 1:
        train_set = label_subset(train_set, spec.label_fraction, spec.seed)
    return train_set, test_sets


def constant_prediction_metrics(train_poses: np.ndarray, test_poses: np.ndarray) -> dict:
    """Errors of always predicting the median training pose (per angle): the floor a model must beat.

    The median is the constant with the smallest mean absolute error on the
    training labels, so it is a stricter floor than the mean.
    """
    labelled = labelled_rows(train_poses)
    if not labelled.any():
        raise ValueError("no labelled training pose to take the median of")
    median = np.median(np.asarray(train_poses)[labelled], axis=0)
    test = np.asarray(test_poses)[labelled_rows(test_poses)]
    return summarize(np.repeat(median[None], len(test), 0), test)


def pretrain_epochs(init: str) -> int | None:
    """Epochs of the SSL pre-training run whose ``model.pt`` is ``init`` (from its config), else None."""
    folder = RunFolder(Path(init).parent)
    if not folder.has(CONFIG):
        return None
    record = folder.read_config()
    return record.train_config.get("epochs") if record.kind == "pretrain" else None


def run_pretraining(spec: RunSpec, out_dir) -> dict:
    """SSL pre-training with the one task of ``spec.model`` on the images of ``spec.train_data`` (labels ignored).

    Writes ``config.json`` (``kind: pretrain``), ``model.pt`` (initialises a
    later :func:`run_hpe` through ``model.init``), ``history.json`` and
    ``metrics.json`` (training time, first/last epoch loss). Returns
    ``{"config" (RunRecord), "metrics", "losses" (DataFrame)}``.
    """
    if spec.kind != "pretrain":
        raise ValueError(f"run_pretraining() needs a spec of kind 'pretrain', got {spec.kind!r}")
    folder = RunFolder(out_dir)
    images = dataset_from_spec(spec.train_data, train=True, image_size=spec.image_size, seed=spec.seed)
    record = RunRecord(kind="pretrain", run=spec.labels.run or folder.path.name, method=spec.method,
                       init=spec.model.init, seed=spec.seed, backbone=spec.model.backbone,
                       image_size=spec.image_size, model_config=spec.model.to_dict(),
                       train_config=spec.train.to_dict(),
                       extra={"method_options": spec.model.task_kwargs(spec.method), "data": spec.train_data,
                              "n_images": len(images), "spec": spec.to_dict()})
    folder.write_config(record)
    result = pretrain(spec.model, images, spec.train, folder.path)
    losses = folder.losses()
    metrics = {**training_summary(result), "loss_first_epoch": float(losses["total"].iloc[0]),
               "loss_last_epoch": float(losses["total"].iloc[-1]), "n_images": len(images)}
    if not math.isfinite(metrics["loss_last_epoch"]):
        raise FloatingPointError(f"pre-training in {folder.path} ended with a non-finite loss: "
                                 f"{metrics['loss_last_epoch']}")
    folder.write_metrics({}, **metrics)
    if not spec.keep_checkpoint:
        folder.drop_checkpoint()
    return {"config": record, "metrics": metrics, "losses": losses}


def evaluate_on_sets(model, test_sets: dict, batch_size: int = 64) -> dict:
    """Evaluate ``model`` (a model, ``model.pt`` or run folder) on each named set: ``{name: Evaluation}``."""
    return {name: evaluate(model, ds, batch_size=batch_size, progress=False) for name, ds in test_sets.items()}


def run_hpe(spec: RunSpec, out_dir) -> dict:
    """Train a head pose model (optionally SSL-initialised, optionally with auxiliary SSL losses) and test it.

    Writes the run folder (:mod:`hpelib.runs`): ``config.json``,
    ``metrics.json`` (per test set: the errors, the constant predictor's, and
    ``unlearned``: the errors not clearly below the constant predictor's, see
    :func:`hpelib.runs.unlearned_keys`; the training time), the predictions,
    ``model.pt`` and ``history.json``.
    Returns ``{"config" (RunRecord), "result" (engine), "per_set" ({name:
    metrics}), "metrics" (what metrics.json holds), "constant" ({name: errors
    of predicting the median training pose})}``.
    """
    if spec.kind != "train":
        raise ValueError(f"run_hpe() needs a spec of kind 'train', got {spec.kind!r}")
    folder = RunFolder(out_dir)
    train_set, test_sets = hpe_datasets(spec)
    labels = spec.labels
    aux = sorted(spec.model.ssl_tasks) if labels.aux_methods is None else list(labels.aux_methods)
    pre = labels.pretrain_method
    record = RunRecord(
        kind="train", run=labels.run or folder.path.name, scenario=labels.scenario,
        method=labels.method or method_label(pre, aux), pretrain_method=pre, aux_methods=aux,
        init=init_label(spec.model.init, pre), label_fraction=float(spec.label_fraction), seed=spec.seed,
        test_set=next(iter(test_sets)) if len(test_sets) == 1 else sorted(test_sets),
        backbone=spec.model.backbone, image_size=spec.image_size,
        pretrain_epochs=pretrain_epochs(spec.model.init) if pre else None,
        model_config=spec.model.to_dict(), train_config=spec.train.to_dict(),
        extra={"init_path": spec.model.init, "pose_head": spec.model.pose_head,
               "kfold": None if spec.kfold is None else spec.to_dict()["kfold"], "n_train": len(train_set),
               "train_data": spec.train_data, "test_data": spec.test_data, "spec": spec.to_dict()})
    folder.write_config(record)
    first_test = next(iter(test_sets.values()))  # the model records the test crop it was measured with
    result = train(spec.model, train_set, None, spec.train, folder.path, input_spec=input_spec_of(first_test))
    evaluations = evaluate_on_sets(folder.model, test_sets, spec.eval_batch_size)
    per_set = {name: ev.metrics for name, ev in evaluations.items()}
    for name, m in per_set.items():
        if m["n"] == 0:
            raise ValueError(f"test set {name!r} has no labelled image: a head pose run is tested on labels; "
                             "to predict unlabelled pictures use notebooks/evaluate.ipynb or python -m hpelib.predict")
        if not all(math.isfinite(m[k]) for k in ("yaw", "pitch", "roll", "mae", "geodesic")):
            raise FloatingPointError(f"test set {name!r}: non-finite errors {m} (run folder {folder.path})")
    constant = {name: constant_prediction_metrics(train_set.poses, ds.poses) for name, ds in test_sets.items()}
    folder.write_predictions({name: ev.frame() for name, ev in evaluations.items()})
    train_time = float(result["train_time_s"])
    blocks = {n: {**m, **constant_columns(constant[n])} for n, m in per_set.items()}
    for block in blocks.values():  # the divergence/unlearned guard, marked in the run's own metrics
        block["unlearned"] = unlearned_keys(block)
    folder.write_metrics(blocks, train_time_s=train_time)
    if not spec.keep_checkpoint:
        folder.drop_checkpoint()
    return {"config": record, "result": result, "per_set": per_set, "metrics": folder.read_metrics(),
            "constant": constant}


def _demo_spec(train_data: dict, test_data: dict, image_size: int, steps: int, **labels) -> RunSpec:
    """A few optimizer steps of the CPU backbone: shows the mechanics, its numbers mean nothing."""
    return RunSpec.from_dict({
        "model": {"backbone": "resnet18-narrow", "ssl_tasks": labels.pop("ssl_tasks", {})},
        "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "max_steps_per_epoch": steps, "progress": False,
                  "seed": labels.pop("seed", 0)},
        "train_data": train_data, "test_data": test_data, "image_size": image_size,
        "label_fraction": labels.pop("label_fraction", 1.0), "labels": labels})


def demo_results(root, image_size: int = 16, steps: int = 3) -> Path:
    """A minuscule but real results tree (baseline vs auxiliary rotation, 2 label fractions x 2 seeds).

    For showing the report when no study has run yet: every run trains for
    ``steps`` optimizer steps on synthetic heads, so its numbers mean nothing.
    """
    root = Path(root)
    cache = str(root / ".synthetic")
    train_data = {"name": "synthetic", "root": cache, "split": "train", "n": 96}
    test_data = {"synthetic (DEMO)": {"name": "synthetic", "root": cache, "split": "test", "n": 48}}
    for label_fraction in (0.5, 1.0):
        for seed in (0, 1):
            for scenario, aux in (("baseline", {}), ("auxiliary", {"rotation": {"weight": 0.5}})):
                rid = run_id(scenario, method_label(None, aux), label_fraction, seed)
                spec = _demo_spec(train_data, test_data, image_size, steps, ssl_tasks=aux, seed=seed,
                                  label_fraction=label_fraction, scenario=scenario, run=rid)
                run_hpe(spec, root / rid)
    return root


def demo_model(out_dir, image_size: int = 32, steps: int = 4) -> Path:
    """A tiny model trained for ``steps`` optimizer steps on synthetic heads; returns its ``model.pt``.

    For notebooks run without a checkpoint (e.g. by nbval): it shows the
    mechanics, its errors mean nothing.
    """
    out = Path(out_dir)
    cache = str(out / ".synthetic")
    spec = _demo_spec({"name": "synthetic", "root": cache, "split": "train", "n": 128},
                      {"synthetic": {"name": "synthetic", "root": cache, "split": "test", "n": 16}},
                      image_size, steps)
    run_hpe(spec, out)
    return RunFolder(out).model


def training_image_size(checkpoint) -> int:
    """The input size a model was trained at, from the ``config.json`` of its run folder."""
    path = Path(checkpoint)
    folder = RunFolder(path if path.is_dir() else path.parent)
    if not folder.has(CONFIG) or folder.read_config().image_size is None:
        raise ValueError(f"{folder.path} has no config.json with the training image size; "
                         "pass the image size explicitly")
    return int(folder.read_config().image_size)


def tested_pictures(run_dir, k: int | None = None) -> list[Path]:
    """The picture files a head pose run was tested on (its test fold, in its ``predictions.csv`` order).

    These are pictures the run's model never trained on. Only data sets whose
    sample names are paths under their ``root`` (AFLW2000, 300W-LP, folders,
    BIWI raw) can be given back as files; ``k`` keeps the first ``k``.
    """
    folder = RunFolder(run_dir)
    record = folder.read_config()
    frames = folder.read_predictions(record.test_set)
    if not frames:
        raise FileNotFoundError(f"{folder.path} has no predictions*.csv: it is not a finished head pose run")
    name, frame = next(iter(frames.items()))
    spec = (record.extra.get("test_data") or {}).get(name) or {}
    if not spec.get("root"):
        raise ValueError(f"{folder.path}: test set {name!r} has no root folder in {CONFIG}, so its pictures "
                         "cannot be found as files")
    names = list(frame["name"])[:k] if k else list(frame["name"])
    return [Path(spec["root"]) / n for n in names]
