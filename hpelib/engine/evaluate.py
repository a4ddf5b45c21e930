"""Evaluation: predictions for a data set and their mean errors; it writes no file.

Errors come from :mod:`hpelib.metrics` (wrap-aware MAE on the closer Euler
triplet, and geodesic error). Samples whose label is NaN (unlabeled) get a
prediction but do not count in the metrics. Evaluation runs in float32
(no autocast): a bf16 forward moves the expected angle of the binned head by
a noticeable fraction of a degree, which matters at 3-5 degree errors.

The run folder's ``metrics.json`` and ``predictions.csv`` are written by the
caller, through :class:`hpelib.runs.RunFolder` (:meth:`Evaluation.frame` gives
the predictions table).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import metrics as M
from ..runs import predictions_frame
from .config import resolve_device
from .data import batch_inputs, make_loader


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What :func:`evaluate` found: one prediction per sample, in data set order, and the mean errors.

    ``names``: the data set's sample names (``"0"``, ``"1"``, ... when it has
    none); ``pred`` / ``true``: float64 ``[N, 3]`` (yaw, pitch, roll) in
    degrees, ``true`` rows of NaN for unlabeled samples; ``metrics``: the
    errors on the labeled samples (:func:`summarize_predictions`).
    """

    names: list[str]
    pred: np.ndarray
    true: np.ndarray
    metrics: dict

    def frame(self):
        """The predictions table (:func:`hpelib.runs.predictions_frame`): names, poses and per-sample errors."""
        return predictions_frame(self.names, self.pred, self.true)


@torch.inference_mode()
def predict_dataset(model: nn.Module, dataset, batch_size: int = 64, device="auto", num_workers: int = 0,
                    channels_last: bool | None = None, progress: bool = False, desc: str = "evaluate"):
    """Run ``model.predict`` over ``dataset`` in order; returns ``(pred, true)`` float64 arrays ``[N, 3]``.

    The model is put in eval mode and restored to its previous mode afterwards.
    Convolutions run in true float32: cuDNN's TF32 (on by default, a 10-bit
    mantissa) is switched off meanwhile, as it moves the binned head's
    expected angle by a fraction of a degree.
    """
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    if channels_last is None:
        channels_last = device.type == "cuda"
    was_training, tf32 = model.training, torch.backends.cudnn.allow_tf32
    model.eval()
    torch.backends.cudnn.allow_tf32 = False
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers, device=device,
                         drop_last=False)
    preds, trues = [], []
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images, poses = batch_inputs(batch, device, channels_last)
            out = model.predict(images)
            preds.append(out.detach().float().cpu().numpy().astype(np.float64).reshape(-1, 3))
            trues.append(torch.as_tensor(poses).float().cpu().numpy().astype(np.float64).reshape(-1, 3))
    finally:
        model.train(was_training)
        torch.backends.cudnn.allow_tf32 = tf32
    if not preds:
        raise ValueError("cannot evaluate on an empty data set")
    return np.concatenate(preds), np.concatenate(trues)


def summarize_predictions(pred: np.ndarray, true: np.ndarray) -> dict:
    """Mean errors (:func:`hpelib.metrics.summarize`) over the labeled rows of ``true``."""
    labeled = M.labelled_rows(true)
    if not labeled.any():
        raise ValueError("the evaluation set has no labeled sample (all poses are NaN); use a labeled test set")
    return M.summarize(pred[labeled], true[labeled])


def evaluate(model_or_checkpoint, dataset, batch_size: int = 64, device="auto", num_workers: int = 0,
             progress: bool = True) -> Evaluation:
    """Predict every sample of ``dataset`` with a model (or an hpelib checkpoint file / run folder).

    Returns an :class:`Evaluation`: the predictions and, in ``.metrics``, the
    errors of :func:`hpelib.metrics.summarize_errors` (``yaw``, ``pitch``,
    ``roll``, ``mae``, ``geodesic``, ``n``) on the labeled samples. A set
    without any label (a folder of face crops) gets its predictions, empty
    error columns in ``.frame()``, and ``.metrics == {"n": 0}``. Nothing is
    written: store the result with :meth:`hpelib.runs.RunFolder.write_metrics`
    and :meth:`~hpelib.runs.RunFolder.write_predictions` (``{test_set: evaluation.frame()}``).
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
    metrics = summarize_predictions(pred, true) if M.labelled_rows(true).any() else {"n": 0}
    return Evaluation(_names(dataset, len(pred)), pred, true, metrics)


def _names(dataset, n: int) -> list[str]:
    """``dataset.names`` as strings when it has one per sample, else ``"0"``, ``"1"``, ..."""
    names = getattr(dataset, "names", None)
    if names is None or len(names) != n:
        return [str(i) for i in range(n)]
    return [str(x) for x in names]
