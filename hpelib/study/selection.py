"""``select:`` variants chosen on validation folds inside the training folds, never on the test folds.

A study with ``kfold: {k: K}`` may say

.. code-block:: yaml

    select:
      combined: {pretrain: pretrain, aux: auxiliary}

to add to scenario ``combined`` the variant that pairs the best pre-training of
scenario ``pretrain`` with the best auxiliary method(s) of scenario
``auxiliary``. "Best" is the lowest MAE (first test set, pooled over the folds,
mean over the seeds and label fractions) of each candidate's *validation runs*
(``select/<scenario>/<method>/...``): for each outer fold, they train on part
of its training folds and test on the rest (``kfold.validation``), so no image
of an outer test fold is read to choose. The test-fold runs of the chosen
variant are planned once every validation run is complete; the choice and its
numbers are written to ``<out>/selection.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import write_json
from ..runs import METRICS, RunFolder, method_label
from .execute import is_complete
from .plan import SELECT_PREFIX, Run, expand
from .pool import pool_folds

__all__ = ["plan_study", "choose", "describe", "write_selection", "SELECTION"]

SELECTION = "selection.json"


def plan_study(study: dict, out) -> tuple[list[Run], dict]:
    """The study's runs with the ``select:`` variants that can be chosen already; ``(runs, selection)`` where
    ``selection`` is :func:`choose`'s record (empty without ``select:``)."""
    runs = expand(study, out)
    if not study.get("select"):
        return runs, {}
    chosen, record = choose(study, out, runs)
    return (expand(study, out, chosen) if chosen else runs), record


def choose(study: dict, out, runs: list[Run]) -> tuple[dict, dict]:
    """``(chosen, record)``: ``chosen`` maps each target scenario whose validation runs are all complete to its
    variant; ``record`` has, for every target, each candidate's validation MAE (None while incomplete), the
    validation runs still missing and the chosen label."""
    out = Path(out)
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.group and r.group.startswith(SELECT_PREFIX):
            groups.setdefault(r.group, []).append(r)
    chosen, record = {}, {}
    for target, cfg in study["select"].items():
        best, rec = {}, {"candidates": {}, "missing": 0}
        for role in ("pretrain", "aux"):
            if role not in cfg:
                continue
            scores = {}
            for v in study["scenarios"][cfg[role]]["variants"]:
                prefix = f"{SELECT_PREFIX}{cfg[role]}/{v['method']}/"
                mine = {g: rs for g, rs in groups.items() if g.startswith(prefix)}
                missing = sum(not is_complete(r, out) for rs in mine.values() for r in rs)
                rec["missing"] += missing
                scores[v["method"]] = (None if missing or not mine else
                                       float(np.mean([_validation_mae(out, g, rs) for g, rs in mine.items()])))
            rec["candidates"][cfg[role]] = scores
            known = {m: s for m, s in scores.items() if s is not None}
            if len(known) == len(scores):
                method = min(known, key=lambda m: (known[m], m))
                best[role] = next(v for v in study["scenarios"][cfg[role]]["variants"] if v["method"] == method)
        if len(best) == sum(role in cfg for role in ("pretrain", "aux")):
            chosen[target] = _paired(best)
            rec["chosen"] = chosen[target]["method"]
        record[target] = rec
    return chosen, record


def _validation_mae(out: Path, group: str, folds: list[Run]) -> float:
    """The pooled MAE of one validation setting on the study's first test set (pooled here if the runner was
    stopped before it pooled)."""
    folder = RunFolder(out / group)
    if not (out / group / METRICS).is_file():
        pool_folds(out, group, folds)
    return float(folder.metric_blocks()[0][1]["mae"])


def _paired(best: dict) -> dict:
    """The variant of the best pre-training with the best auxiliary method(s); settings of the pre-training
    candidate first, the auxiliary candidate's on top."""
    pre, aux = best.get("pretrain"), best.get("aux")
    both = [v for v in (pre, aux) if v]
    label = method_label(pre["pretrain"] if pre else None, aux["aux"] if aux else (),
                         pre["pretrain_train"].get("epochs") if pre else None)
    return {"pretrain": pre["pretrain"] if pre else None, "pretrain_train": dict(pre["pretrain_train"]) if pre else {},
            "aux": dict(aux["aux"]) if aux else {}, "method": f"selected-{label}",
            "model": {k: v for b in both for k, v in b["model"].items()},
            "train": {k: v for b in both for k, v in b["train"].items()},
            "image_size": next((b["image_size"] for b in both if b["image_size"]), None),
            "train_data": {k: v for b in both for k, v in b["train_data"].items()}, "optional": False}


def write_selection(out, record: dict) -> None:
    """``<out>/selection.json``: what each ``select:`` target chose, on which validation numbers."""
    write_json(Path(out) / SELECTION, {
        "protocol": "candidates compared on validation folds inside the training folds of each outer fold "
                    "(kfold.validation); no outer test fold is read to choose",
        "targets": record})


def describe(record: dict) -> list[str]:
    """One line per ``select:`` target: the choice and the validation MAEs, or what it still waits for."""
    lines = []
    for target, rec in record.items():
        scores = "; ".join(f"{src}: " + ", ".join(f"{m} {'?' if s is None else f'{s:.2f}'}" for m, s in c.items())
                           for src, c in rec["candidates"].items())
        if rec.get("chosen"):
            lines.append(f"SELECTED {target}/{rec['chosen']} on validation folds (validation MAE: {scores})")
        else:
            lines.append(f"SELECT {target}: chosen once its {rec['missing']} validation run(s) are complete")
    return lines
