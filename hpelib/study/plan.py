"""Planning: a loaded study -> the list of runs (:class:`Run`), each with its :class:`~hpelib.spec.RunSpec`.

Settings are merged from the general to the particular: the study's
``model`` < the scenario's < the variant's, and the study's ``train`` < the
label fraction's < the scenario's < the variant's. What is not set anywhere
takes the default of :class:`~hpelib.models.ModelConfig` /
:class:`~hpelib.engine.TrainConfig` / :class:`~hpelib.spec.RunSpec`.

Pre-training runs are keyed by their whole spec: all fine-tunes that
pre-train with the same method, seed and backbone share one checkpoint.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..models.backbones import is_checkpoint_init
from ..runs import RunFolder, pretrain_run_id, run_id
from ..spec import RunSpec
from .schema import StudyError, abs_path

__all__ = ["Run", "expand", "select", "BACKBONE_KEYS", "SELECT_PREFIX"]

#: model settings that shape the backbone of an SSL pre-training run (the rest concern the pose head)
BACKBONE_KEYS = ("backbone", "stem")


@dataclass
class Run:
    """One notebook execution: ``run_id`` is also its folder under the output folder."""

    run_id: str
    spec: RunSpec
    notebook: Path
    deps: list[str] = field(default_factory=list)
    fingerprint: str = ""
    group: str | None = None  # k-fold: the run id of the pooled result this fold belongs to

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def params(self) -> dict:
        """The papermill parameters of the notebook (besides ``out_dir``)."""
        return {"spec": self.spec.to_dict()}

    def folder(self, out) -> Path:
        return Path(out) / self.run_id


def _fp(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _spec(d: dict, study: dict, what: str, problems: dict) -> RunSpec | None:
    """A RunSpec from its dict form; what the engine rejects goes into ``problems`` ({problem: [run ids]})."""
    if d.get("image_size") is None:  # a variant's own image_size, else the study's
        d = {k: v for k, v in d.items() if k != "image_size"}
        if "image_size" in study:
            d["image_size"] = study["image_size"]
    if study.get("imports"):
        d = {**d, "imports": study["imports"], "import_paths": study["import_paths"]}
    try:
        return RunSpec.from_dict(d)
    except (TypeError, ValueError) as e:
        problems.setdefault(str(e), []).append(what)
        return None


def _raise_problems(study: dict, problems: dict) -> None:
    """One StudyError listing each distinct problem once, with the runs it concerns."""
    if not problems:
        return
    lines = []
    for problem, ids in problems.items():
        more = f" and {len(ids) - 1} more" if len(ids) > 1 else ""
        lines.append(f"{problem} (run {ids[0]}{more})")
    if len(lines) == 1:
        raise StudyError(f"{study['_file']}: {lines[0]}")
    raise StudyError(f"{study['_file']}: {len(lines)} problems when planning the runs:\n"
                     + "\n".join(f"  - {line}" for line in lines))


def _init(model: dict) -> str:
    init = model.get("init", "random")
    return abs_path(init) if is_checkpoint_init(init) else init


#: prefix of the run ids of the validation runs that choose a ``select:`` variant (``select/<scenario>/...``)
SELECT_PREFIX = "select/"


def expand(study: dict, out, chosen: dict | None = None) -> list[Run]:
    """Expand a loaded study into runs, in execution order (pre-training before its fine-tunes).

    A study with ``select:`` also gets the validation runs of each candidate
    (``select/<source scenario>/<method>/...``: trained on part of the training
    folds of each outer fold, tested on the rest: ``kfold.validation``);
    ``chosen`` (``{target scenario: variant}``, from
    :func:`hpelib.study.selection.choose`) adds the chosen variants, once known.
    """
    out = Path(out).resolve()
    pre_runs: dict[str, Run] = {}
    train_runs: list[Run] = []
    problems: dict[str, list[str]] = {}
    study["_skipped"] = {}  # optional variants that cannot run here: {scenario/method: why}
    plan = [(scenario, sc, v, study.get("kfold")) for scenario, sc in study["scenarios"].items()
            for v in sc["variants"]]
    for target, cfg in (study.get("select") or {}).items():
        for role in ("pretrain", "aux"):
            if role in cfg:
                source = study["scenarios"][cfg[role]]
                fractions = [dict(fr, seeds=cfg["seeds"]) for fr in source["label_fractions"]]
                plan += [(SELECT_PREFIX + cfg[role], dict(source, label_fractions=fractions), v,
                          {**study["kfold"], "validation": cfg["validation"]}) for v in source["variants"]]
        if chosen and target in chosen:
            sc = study["scenarios"].get(target) or {"label_fractions": study["label_fractions"], "model": {},
                                                    "train": {}}
            plan.append((target, sc, chosen[target], study.get("kfold")))
    for scenario, sc, v, kfold in plan:
        model = {**study["model"], **sc["model"], **v["model"]}
        missing = _unavailable(model)
        if v["optional"] and missing:
            study["_skipped"][f"{scenario}/{v['method']}"] = missing
            continue
        for run in _variant_runs(study, scenario, sc, v, model, kfold, out, pre_runs, problems):
            if any(r.run_id == run.run_id for r in train_runs):
                raise StudyError(f"{study['_file']}: two runs are both called {run.run_id!r}")
            train_runs.append(run)
    _raise_problems(study, problems)
    # longest pre-training first: it is the critical path of a study with a pre-training-budget axis
    runs = sorted(pre_runs.values(), key=lambda r: -r.spec.train.epochs) + train_runs
    fingerprints = {}  # a run's own spec + the fingerprints of what it depends on
    for r in runs:
        parts = {"notebook": r.notebook.name, "spec": _inside(r.spec.to_dict(), out),
                 "deps": [fingerprints[d] for d in r.deps]}
        if study.get("import_digests"):  # the source of each imported module: editing it re-runs the study
            parts["imports"] = study["import_digests"]
        r.fingerprint = _fp(parts)
        fingerprints[r.run_id] = r.fingerprint
    return runs


def _variant_runs(study, scenario, sc, v, model, kfold, out, pre_runs, problems) -> list[Run]:
    """The fine-tunes of one variant (every label fraction, seed and fold), their pre-training added to
    ``pre_runs``."""
    nb_dir = Path(study["notebooks"])
    runs = []
    for fr in sc["label_fractions"]:
        tcfg = {**study["train"], **fr["train"], **sc["train"], **v["train"]}
        for seed in fr["seeds"]:
            deps, init = [], _init(model)
            if v["pretrain"]:
                pre_seed = seed if study.get("pretrain_seed") is None else study["pretrain_seed"]
                pre = _pretrain_run(study, v["pretrain"], v["pretrain_train"], pre_seed, model, nb_dir,
                                    pre_runs, problems)
                deps, init = [pre.run_id], str(RunFolder(pre.folder(out)).model)
            ssl_tasks = {a: {**study["methods"][a], **({} if w is None else {"weight": float(w)})}
                         for a, w in v["aux"].items()}
            for task in ssl_tasks.values():
                task.setdefault("weight", 1.0)
            for fold in range(kfold["k"]) if kfold else [None]:
                rid = run_id(scenario, v["method"], fr["fraction"], seed, fold)
                spec = _spec({
                    "kind": "train",
                    "model": {**model, "init": init, "ssl_tasks": ssl_tasks},
                    "train": {"progress": False, **tcfg, "seed": seed},
                    "train_data": {**study["data"]["train"], **v["train_data"]},
                    "test_data": study["data"]["test"], "label_fraction": fr["fraction"],
                    "image_size": v["image_size"],
                    "kfold": {"fold": fold, **kfold} if kfold else None,
                    "labels": {"run": rid, "scenario": scenario, "method": v["method"],
                               "pretrain_method": v["pretrain"], "aux_methods": sorted(v["aux"])},
                }, study, rid, problems)
                group = None if fold is None else run_id(scenario, v["method"], fr["fraction"], seed)
                runs.append(Run(rid, spec, nb_dir / "train.ipynb", deps, group=group))
    return runs


def _unavailable(model: dict) -> str | None:
    """What a run with these model settings needs and this machine lacks (ImageNet weights not in the torch
    cache: nothing is downloaded to find out), or None."""
    from ..models.backbones import IMAGENET_WEIGHTS, imagenet_weights_file

    backbone = model.get("backbone", "resnet50")
    if model.get("init") == "imagenet" and backbone in IMAGENET_WEIGHTS:
        path = imagenet_weights_file(backbone)
        if not path.is_file():
            return (f"the ImageNet weights of {backbone} are not in the torch cache ({path}); put them there "
                    f"(download {IMAGENET_WEIGHTS[backbone].url} on a machine with internet access) to run it")
    return None


def _inside(obj, out: Path):
    """``obj`` with every path under the results folder ``out`` written relative to it (``<out>/...``): a
    fingerprint that stays the same when the results folder is copied, moved or mounted elsewhere."""
    if isinstance(obj, dict):
        return {k: _inside(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_inside(v, out) for v in obj]
    if isinstance(obj, str) and obj.startswith(str(out) + os.sep):
        return "<out>/" + Path(obj).relative_to(out).as_posix()
    return obj


def _pretrain_run(study, method, settings, seed, model, nb_dir, pre_runs, problems) -> Run:
    """The pre-training run of ``method`` (training settings: the study's ``pretrain`` < the variant's ``settings``)."""
    options = {k: v for k, v in study["methods"][method].items() if k != "weight"}  # one task: weight irrelevant
    d = {"kind": "pretrain",
         "model": {**{k: model[k] for k in BACKBONE_KEYS if k in model}, "init": _init(model), "pose_head": None,
                   "ssl_tasks": {method: {"weight": 1.0, **options}}},
         "train": {"progress": False, **study["pretrain"], **settings, "seed": seed},
         "train_data": study["data"]["pretrain"]}
    rid = pretrain_run_id(method, seed, settings.get("epochs"))
    spec = _spec(d, study, rid, problems)
    key = _fp(spec.to_dict() if spec else d)
    if key in pre_runs:
        return pre_runs[key]
    if any(r.run_id == rid for r in pre_runs.values()):
        rid += f"_{key[:6]}"  # same method/seed but another backbone/init
    if spec:
        spec.labels.run = rid
    pre_runs[key] = Run(rid, spec, nb_dir / "pretrain.ipynb")
    return pre_runs[key]


def select(runs: list[Run], patterns: list[str] | None) -> list[Run]:
    """Runs whose id matches one of the glob ``patterns`` (``*`` spans ``/``), plus what they depend on."""
    if not patterns:
        return runs
    wanted = {r.run_id for r in runs if any(fnmatch.fnmatch(r.run_id, p) or p in r.run_id for p in patterns)}
    by_id = {r.run_id: r for r in runs}
    stack = list(wanted)
    while stack:
        for d in by_id[stack.pop()].deps:
            if d not in wanted:
                wanted.add(d)
                stack.append(d)
    return [r for r in runs if r.run_id in wanted]
