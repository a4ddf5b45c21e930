"""Pooling the k fold runs of one k-fold setting into one result (every image tested once)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import labelled_rows, summarize
from ..runs import CONSTANT_KEYS, PRED_COLUMNS, TRUE_COLUMNS, RunFolder, unlearned_keys
from .plan import Run

__all__ = ["pool_folds"]


def pool_folds(out, group: str, folds: list[Run]) -> Path:
    """Pool the fold runs of one setting into ``<out>/<group>``.

    Writes the predictions (the folds' rows concatenated), ``config.json``
    (the folds' record without the fold number, plus ``kfold`` and ``folds``)
    and, last, ``metrics.json``: the errors recomputed over all predictions,
    ``train_time_s`` summed over the folds, and the constant predictor's errors
    (each fold predicting its own training median) averaged over the folds
    weighted by their test images, which is their mean over all images, and
    the pooled ``unlearned`` list.
    """
    folds = sorted(folds, key=lambda r: r.spec.kfold.fold)
    sources = [RunFolder(r.folder(out)) for r in folds]
    dest = RunFolder(Path(out) / group)
    record = sources[0].read_config()
    kfold = {k: v for k, v in (record.extra.get("kfold") or {}).items() if k != "fold"}
    record.run = group
    record.extra = {k: v for k, v in record.extra.items() if k not in ("fold", "kfold")}
    record.extra.update(kfold=kfold, folds=[r.run_id for r in folds])
    fold_blocks = [dict(s.metric_blocks(record.test_set)) for s in sources]
    fold_frames = [s.read_predictions(record.test_set) for s in sources]
    if not fold_frames[0]:
        raise FileNotFoundError(f"{sources[0].path} has no predictions*.csv to pool")
    frames, per_set = {}, {}
    for name in fold_frames[0]:
        frame = pd.concat([f[name] for f in fold_frames], ignore_index=True)
        true, pred = frame[list(TRUE_COLUMNS)].to_numpy(float), frame[list(PRED_COLUMNS)].to_numpy(float)
        ok = labelled_rows(true)
        per_set[name] = summarize(pred[ok], true[ok])
        blocks = [b[name] for b in fold_blocks]
        weights = np.array([b.get("n", 0) for b in blocks], float)
        for key in CONSTANT_KEYS:
            if all(key in b for b in blocks) and weights.sum() > 0:
                per_set[name][key] = float(np.dot(weights, [b[key] for b in blocks]) / weights.sum())
        per_set[name]["unlearned"] = unlearned_keys(per_set[name])
        frames[name] = frame
    dest.write_predictions(frames)
    dest.write_config(record)
    train_time = float(sum(s.read_metrics().get("train_time_s", 0.0) for s in sources))
    dest.write_metrics(per_set, train_time_s=train_time, folds=len(folds))
    return dest.path
