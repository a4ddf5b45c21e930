"""Evaluation: predictions for a data set, per-sample errors, mean metrics, files.

Errors come from :mod:`hpelib.metrics` (wrap-aware MAE on the closer Euler
triplet, and geodesic error). Samples whose label is NaN (unlabeled) get a
prediction row but do not count in the metrics. Evaluation runs in float32
(no autocast): a bf16 forward moves the expected angle of the binned head by
a noticeable fraction of a degree, which matters at 3-5 degree errors.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import metrics as M
from ..io import read_json, write_json, write_text
from .config import resolve_device
from .data import make_loader

PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"
# Keys of a training run's metrics.json that evaluate() keeps when it writes
# the test metrics into the same folder.
_TRAINING_KEYS = ("train_", "val_", "epochs", "kind")


@torch.inference_mode()
def predict_dataset(model: nn.Module, dataset, batch_size: int = 64, device="auto", num_workers: int = 0,
                    channels_last: bool | None = None, progress: bool = False, desc: str = "evaluate"):
    """Run ``model.predict`` over ``dataset`` in order; returns ``(pred, true)`` float64 arrays ``[N, 3]``.

    The model is put in eval mode and restored to its previous mode afterwards.
    """
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    if channels_last is None:
        channels_last = device.type == "cuda"
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers, device=device,
                         drop_last=False)
    preds, trues = [], []
    try:
        for images, poses in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out = model.predict(images)
            preds.append(out.detach().float().cpu().numpy().astype(np.float64).reshape(-1, 3))
            trues.append(torch.as_tensor(poses).float().cpu().numpy().astype(np.float64).reshape(-1, 3))
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("cannot evaluate on an empty data set")
    return np.concatenate(preds), np.concatenate(trues)


def per_sample_errors(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labeled_mask [N], angle_err [N, 3], geodesic_err [N])``; errors are NaN for unlabeled rows."""
    labeled = np.isfinite(true).all(1)
    angle_err = np.full_like(true, np.nan)
    geo_err = np.full(len(true), np.nan)
    if labeled.any():
        angle_err[labeled] = M.angle_errors(pred[labeled], true[labeled])
        geo_err[labeled] = M.geodesic_errors(pred[labeled], true[labeled])
    return labeled, angle_err, geo_err


def summarize_predictions(pred: np.ndarray, true: np.ndarray) -> dict:
    labeled, angle_err, geo_err = per_sample_errors(pred, true)
    if not labeled.any():
        raise ValueError("the evaluation set has no labeled sample (all poses are NaN); use a labeled test set")
    return M.summarize_errors(angle_err[labeled], geo_err[labeled])


def evaluate(model_or_checkpoint, dataset, out_dir=None, batch_size: int = 64, device="auto",
             num_workers: int = 0, progress: bool = True) -> dict:
    """Evaluate a model (or an hpelib checkpoint file / run folder) on ``dataset``.

    Returns the metrics of :func:`hpelib.metrics.summarize_errors` (``yaw``,
    ``pitch``, ``roll``, ``mae``, ``geodesic``, ``n``) computed on the labeled
    samples. With ``out_dir`` it also writes, atomically:

    * ``predictions.csv``: ``name``, ``yaw_true``, ``pitch_true``, ``roll_true``,
      ``yaw_pred``, ``pitch_pred``, ``roll_pred``, ``yaw_err``, ``pitch_err``,
      ``roll_err``, ``geodesic_err`` (one row per sample, in data set order);
    * ``metrics.json``: the metrics; if the folder already holds a training
      run's ``metrics.json``, its ``train_*``/``val_*``/``epochs``/``kind``
      entries are kept, so one file describes the run and its test result.
    """
    from .checkpoint import load_checkpoint

    dev = resolve_device(device)
    if isinstance(model_or_checkpoint, (str, Path)):
        model = load_checkpoint(model_or_checkpoint, device=dev)
    elif isinstance(model_or_checkpoint, nn.Module):
        model = model_or_checkpoint.to(dev)
    else:
        raise TypeError(f"evaluate() needs an nn.Module or a checkpoint path, got {type(model_or_checkpoint).__name__}")
    pred, true = predict_dataset(model, dataset, batch_size, dev, num_workers, progress=progress)
    result = summarize_predictions(pred, true)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_predictions(out_dir / PREDICTIONS, _names(dataset, len(pred)), pred, true)
        merged = {}
        if (out_dir / METRICS).is_file():
            old = read_json(out_dir / METRICS)
            merged = {k: v for k, v in old.items() if k.startswith(_TRAINING_KEYS)}
        merged.update(result)
        write_json(out_dir / METRICS, merged)
    return result


def write_predictions(path: Path, names, pred: np.ndarray, true: np.ndarray) -> Path:
    _, angle_err, geo_err = per_sample_errors(pred, true)
    header = ["name"] + [f"{a}_true" for a in M.ANGLE_NAMES] + [f"{a}_pred" for a in M.ANGLE_NAMES] \
        + [f"{a}_err" for a in M.ANGLE_NAMES] + ["geodesic_err"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i, name in enumerate(names):
        row = [name] + [_fmt(v) for v in (*true[i], *pred[i], *angle_err[i], geo_err[i])]
        w.writerow(row)
    return write_text(path, buf.getvalue())


def _fmt(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.6g}"


def _names(dataset, n: int) -> list[str]:
    names = getattr(dataset, "names", None)
    if names is None or len(names) != n:
        return [str(i) for i in range(n)]
    return [str(x) for x in names]
