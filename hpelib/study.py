"""Study runner: a study YAML -> a grid of papermill runs -> a report.

Usage (from the repository root)::

    python -m hpelib.study studies/default.yaml [--out results/default] [--jobs N]
                                                [--dry-run] [--only PATTERN] [--force]
                                                [--no-report] [--gpus 0,1]

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

A run folder holds the executed notebook, ``config.json``, ``metrics.json``,
the checkpoints and ``study_run.json`` (the parameters the runner gave it,
their fingerprint, and whether the notebook ran to its end). A run is
*complete* when the notebook finished, ``metrics.json`` exists and the
fingerprint is unchanged; complete runs are skipped, so an interrupted study
is continued by running the same command again. A run whose parameters
changed (or whose pre-training changed) is started afresh in an emptied
folder; an incomplete run with unchanged parameters keeps its folder so that
the engine resumes from its checkpoint.

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
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .io import read_json, write_json, write_text

__all__ = [
    "StudyError",
    "Run",
    "REPO_ROOT",
    "load_study",
    "expand",
    "run_study",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

SSL_METHODS = ("rotation", "jigsaw", "jigsaw_perm", "simclr", "barlow")

TOP_KEYS = {
    "name": "short name of the study (used for the default output folder results/<name>)",
    "description": "free text",
    "notebooks": "folder with pretrain.ipynb and train.ipynb (default: <repo>/notebooks)",
    "image_size": "side of the square network input in pixels",
    "model": "ModelConfig fields shared by all runs (backbone, init, pose_head, ...)",
    "data": "data specs: pretrain (images for SSL), train (labelled), test ({name: spec})",
    "pretrain": "training settings of SSL pre-training runs (epochs, batch_size, lr, other TrainConfig keys)",
    "train": "training settings of head pose runs (epochs, batch_size, lr, other TrainConfig keys)",
    "methods": "options of each SSL method ({name: {weight: w, **task options}})",
    "scenarios": "{scenario: [variants]} or {scenario: {variants: [...], label_fractions, seeds, model, train}}",
    "label_fractions": "list of fractions (or {fraction: f, seeds: [...], train: {...}} entries)",
    "seeds": "default seeds of every label fraction",
    "pretrain_seed": "seed of the one SSL pre-training per method shared by all fine-tune seeds "
                     "(default: none, i.e. one pre-training per fine-tune seed)",
    "kfold": "{k: K, seed: S}: train on K-1 folds of data.train, test on the held-out fold (every image tested once)",
    "report": "false to skip the report at the end",
    "timeout_s": "per-cell execution timeout of the notebooks (default: none)",
}
DATA_KEYS = {"pretrain", "train", "test"}
SCENARIO_KEYS = {"variants", "label_fractions", "seeds", "model", "train", "description"}
VARIANT_KEYS = {"pretrain", "pretrain_train", "aux", "method", "model", "train"}
KFOLD_KEYS = {"k", "seed"}
BLOCKING = ("failed", "skipped (dependency failed)")  # states of a dependency that block its dependants
TRAIN_SHORT = ("epochs", "batch_size", "lr")
PRETRAIN_MODEL_KEYS = ("stem",)  # model settings that shape the backbone of an SSL pre-training run
FOLDS_DIR = ".folds"


class StudyError(ValueError):
    """A study file is invalid; the message names the file and the offending key."""


# ----------------------------------------------------------------------------- loading
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _default_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HPELIB_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))
    env.setdefault("REPO", str(REPO_ROOT))
    return env


def _substitute(obj, env: dict[str, str], where: str):
    if isinstance(obj, str):
        def repl(m):
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise StudyError(f"{where}: environment variable ${{{name}}} is not set; set it or write ${{{name}:-default}}")
        return _VAR.sub(repl, obj)
    if isinstance(obj, dict):
        return {k: _substitute(v, env, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, env, where) for v in obj]
    return obj


def _abs_path(p: str) -> str:
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (REPO_ROOT / path).resolve())


def _resolve_spec(spec, where: str) -> dict:
    if not isinstance(spec, dict) or "name" not in spec:
        raise StudyError(f"{where}: a data spec must be a mapping with at least 'name' (e.g. {{name: synthetic}}), got {spec!r}")
    spec = dict(spec)
    for key in ("root", "cache_dir"):
        if spec.get(key) is not None:
            spec[key] = _abs_path(str(spec[key]))
    return spec


def _check_keys(d: dict, allowed, where: str):
    if not isinstance(d, dict):
        raise StudyError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(allowed)}")


def load_study(path: str | os.PathLike, env: dict[str, str] | None = None) -> dict:
    """Read and validate a study YAML; returns the resolved study dict.

    Raises :class:`StudyError` (a ``ValueError``) naming the file and the key
    at fault: unknown keys at any level, unknown SSL methods, a variant that
    names a method missing from ``methods``, missing data specs.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML: {e}") from e
    where = str(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: a study file must be a mapping with keys {sorted(TOP_KEYS)}")
    _check_keys(raw, TOP_KEYS, where)
    study = _substitute(raw, env if env is not None else _default_env(), where)
    study.setdefault("name", path.stem)
    study["_file"] = str(path.resolve())

    study["notebooks"] = _abs_path(study.get("notebooks") or "notebooks")
    study.setdefault("image_size", 64)
    study["model"] = dict(study.get("model") or {})
    _check_model(study["model"], f"{where}: model")
    for key in ("pretrain", "train"):
        study[key] = dict(study.get(key) or {})

    data = study.get("data")
    _check_keys(data or {}, DATA_KEYS, f"{where}: data")
    if not data or "train" not in data or "test" not in data:
        raise StudyError(f"{where}: data needs 'train' (a spec) and 'test' ({{name: spec}}); see docs/STUDY.md")
    data = dict(data)
    data["train"] = _resolve_spec(data["train"], f"{where}: data.train")
    if not isinstance(data["test"], dict) or not data["test"] or "name" in data["test"]:
        raise StudyError(f"{where}: data.test must map a test-set name to a spec, e.g. {{aflw2000: {{name: aflw2000, root: ...}}}}")
    data["test"] = {str(k): _resolve_spec(v, f"{where}: data.test.{k}") for k, v in data["test"].items()}
    if data.get("pretrain") is not None:
        data["pretrain"] = _resolve_spec(data["pretrain"], f"{where}: data.pretrain")
    study["data"] = data

    methods = study.get("methods") or {}
    _check_keys(methods, SSL_METHODS, f"{where}: methods")
    study["methods"] = {m: dict(o or {}) for m, o in methods.items()}

    if study.get("kfold") is not None:
        kf = study["kfold"]
        _check_keys(kf, KFOLD_KEYS, f"{where}: kfold")
        if not isinstance(kf.get("k"), int) or kf["k"] < 2:
            raise StudyError(f"{where}: kfold.k must be an integer >= 2, got {kf.get('k')!r}")
        study["kfold"] = {"k": kf["k"], "seed": int(kf.get("seed", 0))}

    default_seeds = _seed_list(study.get("seeds", [0]), f"{where}: seeds")
    if study.get("pretrain_seed") is not None and not isinstance(study["pretrain_seed"], int):
        raise StudyError(f"{where}: pretrain_seed must be an integer or null, got {study['pretrain_seed']!r}")
    study["label_fractions"] = _fraction_list(study.get("label_fractions", [1.0]), default_seeds, f"{where}: label_fractions")

    _check_against_package(study, where)

    scenarios = study.get("scenarios")
    if not isinstance(scenarios, dict) or not scenarios:
        raise StudyError(f"{where}: 'scenarios' must be a non-empty mapping {{scenario: [variants]}}")
    study["scenarios"] = {
        str(name): _check_scenario(name, sc, study, default_seeds, f"{where}: scenarios.{name}")
        for name, sc in scenarios.items()
    }
    return study


def _train_keys() -> set[str]:
    import dataclasses

    from .engine.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _model_keys() -> set[str]:
    import dataclasses

    from .models.config import ModelConfig

    return {f.name for f in dataclasses.fields(ModelConfig)} - {"ssl_tasks"}


def _check_against_package(study: dict, where: str) -> None:
    """Early errors for option names that the package would only reject at run time."""
    from .ssl import task_options

    for key in ("pretrain", "train"):
        _check_keys(study[key], _train_keys(), f"{where}: {key}")
    _check_keys(study["model"], _model_keys(), f"{where}: model")
    for m, opts in study["methods"].items():
        _check_keys(opts, ["weight"] + task_options(m), f"{where}: methods.{m}")


def _check_model(model: dict, where: str):
    if "ssl_tasks" in model:
        raise StudyError(f"{where}: do not set ssl_tasks here; use scenarios (aux) and methods (options)")


def _seed_list(seeds, where) -> list[int]:
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"{where}: expected a non-empty list of integers, got {seeds!r}")
    return list(seeds)


def _fraction_list(fracs, default_seeds, where) -> list[dict]:
    if isinstance(fracs, (int, float)):
        fracs = [fracs]
    if not isinstance(fracs, list) or not fracs:
        raise StudyError(f"{where}: expected a non-empty list, got {fracs!r}")
    out = []
    for f in fracs:
        train = {}
        if isinstance(f, dict):
            _check_keys(f, {"fraction", "seeds", "train"}, where)
            frac, seeds = f.get("fraction"), _seed_list(f.get("seeds", default_seeds), where)
            train = dict(f.get("train") or {})
            _check_keys(train, _train_keys(), where + ".train")
        else:
            frac, seeds = f, default_seeds
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 < frac <= 1:
            raise StudyError(f"{where}: a label fraction must be a number in (0, 1], got {frac!r}")
        out.append({"fraction": float(frac), "seeds": seeds, "train": train})
    return out


def _method_label(pre, aux: dict, pre_train: dict | None = None) -> str:
    """``pre+aux1+aux2``; a variant with its own pre-training epochs adds ``-<epochs>ep`` to the method."""
    if pre and (pre_train or {}).get("epochs") is not None:
        pre = f"{pre}-{pre_train['epochs']}ep"
    parts = ([pre] if pre else []) + sorted(aux)
    return "+".join(parts) if parts else "none"


def _check_scenario(name, sc, study, default_seeds, where) -> dict:
    if isinstance(sc, list):
        sc = {"variants": sc}
    if sc is None:
        sc = {"variants": [{}]}
    _check_keys(sc, SCENARIO_KEYS, where)
    variants = sc.get("variants")
    if not isinstance(variants, list) or not variants:
        raise StudyError(f"{where}: 'variants' must be a non-empty list (use [{{}}] for a plain baseline)")
    out_variants, labels = [], set()
    for i, v in enumerate(variants):
        vw = f"{where}.variants[{i}]"
        v = dict(v or {})
        _check_keys(v, VARIANT_KEYS, vw)
        pre = v.get("pretrain")
        if pre is not None and pre not in SSL_METHODS:
            raise StudyError(f"{vw}: unknown SSL method {pre!r} for pretrain; valid: {list(SSL_METHODS)}")
        aux = v.get("aux") or {}
        if isinstance(aux, str):
            aux = [aux]
        if isinstance(aux, list):
            aux = {a: None for a in aux}
        if not isinstance(aux, dict):
            raise StudyError(f"{vw}: aux must be a method name, a list of names or {{name: weight}}, got {aux!r}")
        for a, w in aux.items():
            if a not in SSL_METHODS:
                raise StudyError(f"{vw}: unknown SSL method {a!r} in aux; valid: {list(SSL_METHODS)}")
            if w is not None and (not isinstance(w, (int, float)) or isinstance(w, bool)):
                raise StudyError(f"{vw}: the weight of aux method {a!r} must be a number, got {w!r}")
        for m in ([pre] if pre else []) + list(aux):
            if m not in study["methods"]:
                raise StudyError(f"{vw}: method {m!r} is not configured under 'methods' (add '{m}: {{weight: 1.0}}')")
        _check_model(v.get("model") or {}, vw + ".model")
        _check_keys(v.get("model") or {}, _model_keys(), vw + ".model")
        _check_keys(v.get("train") or {}, _train_keys(), vw + ".train")
        pre_train = dict(v.get("pretrain_train") or {})
        if pre_train and not pre:
            raise StudyError(f"{vw}: pretrain_train is set but the variant has no 'pretrain' method")
        _check_keys(pre_train, _train_keys(), vw + ".pretrain_train")
        label = str(v.get("method") or _method_label(pre, aux, pre_train))
        if not re.fullmatch(r"[A-Za-z0-9_.+\-]+", label):
            raise StudyError(f"{vw}: method label {label!r} may only use letters, digits and _ . + -")
        if label in labels:
            raise StudyError(f"{vw}: two variants of scenario {name!r} are both called {label!r}; give one a 'method' label")
        labels.add(label)
        out_variants.append({"pretrain": pre, "pretrain_train": pre_train, "aux": aux, "method": label,
                             "model": dict(v.get("model") or {}), "train": dict(v.get("train") or {})})
    _check_keys(sc.get("model") or {}, _model_keys(), where + ".model")
    _check_keys(sc.get("train") or {}, _train_keys(), where + ".train")
    seeds = _seed_list(sc["seeds"], where + ".seeds") if "seeds" in sc else None
    fracs = (_fraction_list(sc["label_fractions"], seeds or default_seeds, where + ".label_fractions")
             if "label_fractions" in sc else
             [dict(f, seeds=seeds) if seeds else f for f in study["label_fractions"]])
    if any(v["pretrain"] for v in out_variants) and not study["data"].get("pretrain"):
        raise StudyError(f"{where}: uses SSL pre-training but data.pretrain (the images to pre-train on) is not set")
    return {"variants": out_variants, "label_fractions": fracs,
            "model": dict(sc.get("model") or {}), "train": dict(sc.get("train") or {})}


# ----------------------------------------------------------------------------- expansion
@dataclass
class Run:
    """One notebook execution: ``run_id`` is also its folder under the output folder."""

    run_id: str
    kind: str  # "pretrain" or "train"
    notebook: Path
    params: dict
    deps: list[str] = field(default_factory=list)
    fingerprint: str = ""
    group: str | None = None  # k-fold: the run id of the pooled result this fold belongs to

    def folder(self, out: Path) -> Path:
        return Path(out) / self.run_id


def _fp(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _split_train(cfg: dict) -> tuple[dict, dict]:
    """Split training settings into the notebooks' epochs/batch_size/lr and the other TrainConfig keys."""
    cfg = dict(cfg)
    short = {k: cfg.pop(k) for k in TRAIN_SHORT if k in cfg}
    return short, cfg


def _frac_tag(f: float) -> str:
    return f"lf{f:g}"


def expand(study: dict, out: str | os.PathLike) -> list[Run]:
    """Expand a loaded study into runs, in execution order (pre-training before its fine-tunes).

    Pre-training runs are keyed by (method, seed, model settings): all fine-tunes
    that pre-train with the same method and seed share one checkpoint.
    """
    out = Path(out).resolve()
    nb_dir = Path(study["notebooks"])
    pre_runs: dict[str, Run] = {}
    train_runs: list[Run] = []
    image_size = study["image_size"]
    kfold = study.get("kfold")

    for scen_name, sc in study["scenarios"].items():
        for v in sc["variants"]:
            model = {**study["model"], **sc["model"], **v["model"]}
            for fr in sc["label_fractions"]:
                # training settings: study < label fraction < scenario < variant
                tcfg = {**study["train"], **fr["train"], **sc["train"], **v["train"]}
                for seed in fr["seeds"]:
                    deps, init = [], model.get("init", "random")
                    if v["pretrain"]:
                        pre_seed = seed if study.get("pretrain_seed") is None else study["pretrain_seed"]
                        pre = _pretrain_run(study, v["pretrain"], v["pretrain_train"], pre_seed, model, out,
                                            nb_dir, pre_runs)
                        deps = [pre.run_id]
                        init = str(pre.folder(out) / "model.pt")
                    elif init not in ("random", "imagenet"):
                        init = _abs_path(init)
                    ssl_tasks = {}
                    for a, w in v["aux"].items():
                        opts = dict(study["methods"][a])
                        if w is not None:
                            opts["weight"] = float(w)
                        opts.setdefault("weight", 1.0)
                        ssl_tasks[a] = opts
                    short, extra = _split_train(tcfg)
                    folds = range(kfold["k"]) if kfold else [None]
                    for fold in folds:
                        run_id = f"{scen_name}/{v['method']}/{_frac_tag(fr['fraction'])}_s{seed}"
                        group = None
                        if fold is not None:  # hidden sub-folders: the report reads the pooled folder only
                            group, run_id = run_id, f"{run_id}/{FOLDS_DIR}/f{fold}"
                        params = {
                            "run_name": run_id,
                            "scenario": scen_name,
                            "method": v["method"],
                            "pretrain_method": v["pretrain"],
                            "aux_methods": sorted(v["aux"]),
                            "init": init,
                            "ssl_tasks": ssl_tasks,
                            "model_options": {k: val for k, val in model.items()
                                              if k not in ("init", "backbone", "pose_head")},
                            "backbone": model.get("backbone", "resnet18-narrow"),
                            "pose_head": model.get("pose_head", "binned"),
                            "image_size": image_size,
                            "label_fraction": fr["fraction"],
                            "seed": seed,
                            "train_data": study["data"]["train"],
                            "test_data": study["data"]["test"],
                            "kfold": ({"k": kfold["k"], "fold": fold, "seed": kfold["seed"]} if kfold else None),
                            **short,
                            "train_options": extra,
                        }
                        run = Run(run_id, "train", nb_dir / "train.ipynb", params, deps, group=group)
                        if any(r.run_id == run_id for r in train_runs):
                            raise StudyError(f"{study['_file']}: two runs are both called {run_id!r}")
                        train_runs.append(run)
    # longest pre-training first: it is the critical path of a study with a pre-training-budget axis
    runs = sorted(pre_runs.values(), key=lambda r: -int(r.params.get("epochs") or 0)) + train_runs
    # fingerprints: a run's own parameters + those of what it depends on
    fps = {}
    for r in runs:
        r.fingerprint = _fp({"kind": r.kind, "notebook": r.notebook.name, "params": r.params,
                             "deps": [fps[d] for d in r.deps]})
        fps[r.run_id] = r.fingerprint
    return runs


def _pretrain_run(study, method, settings, seed, model, out, nb_dir, pre_runs) -> Run:
    """The pre-training run of ``method`` (training settings: the study's ``pretrain`` < the variant's ``settings``)."""
    short, extra = _split_train({**study["pretrain"], **settings})
    opts = dict(study["methods"][method])
    opts.pop("weight", None)  # a single pre-training task: its weight is irrelevant
    params = {
        "method": method,
        "method_options": opts,
        "data": study["data"]["pretrain"],
        "backbone": model.get("backbone", "resnet18-narrow"),
        "model_options": {k: model[k] for k in PRETRAIN_MODEL_KEYS if k in model},
        "init": model.get("init", "random") if model.get("init", "random") in ("random", "imagenet")
        else _abs_path(model["init"]),
        "image_size": study["image_size"],
        "seed": seed,
        **short,
        "train_options": extra,
    }
    key = _fp(params)
    if key in pre_runs:
        return pre_runs[key]
    run_id = f"pretrain/{method}_s{seed}"
    if settings.get("epochs") is not None:
        run_id = f"pretrain/{method}_e{settings['epochs']}_s{seed}"
    if any(r.run_id == run_id for r in pre_runs.values()):
        run_id += f"_{key[:6]}"  # same method/seed but another backbone/init
    params["run_name"] = run_id
    run = Run(run_id, "pretrain", nb_dir / "pretrain.ipynb", params)
    pre_runs[key] = run
    return run


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


# ----------------------------------------------------------------------------- execution
def is_complete(run: Run, out: Path) -> bool:
    """The notebook ran to its end (``study_run.json`` says so), ``metrics.json`` is there,
    and the stored fingerprint equals the run's (same parameters, same pre-training)."""
    d = run.folder(out)
    if not (d / "metrics.json").is_file() or not (d / "study_run.json").is_file():
        return False
    try:
        meta = read_json(d / "study_run.json")
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("fingerprint") == run.fingerprint and meta.get("complete") is True


def _prepare_folder(run: Run, out: Path, force: bool = False) -> Path:
    d = run.folder(out)
    meta = d / "study_run.json"
    if force and d.is_dir():
        shutil.rmtree(d)  # --force: start over, never return a stored result or resume a checkpoint
    elif meta.is_file():
        try:
            old = read_json(meta).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            old = None
        if old != run.fingerprint:
            shutil.rmtree(d)  # parameters changed: never resume from a stale checkpoint
    d.mkdir(parents=True, exist_ok=True)
    for stale in ("FAILED", "metrics.json"):
        (d / stale).unlink(missing_ok=True)
    _write_meta(run, out, complete=False)
    return d


def _write_meta(run: Run, out: Path, complete: bool, seconds: float | None = None) -> None:
    write_json(run.folder(out) / "study_run.json",
               {"run_id": run.run_id, "kind": run.kind, "notebook": str(run.notebook), "complete": complete,
                "seconds": seconds, "fingerprint": run.fingerprint, "deps": run.deps, "params": run.params})


def pool_folds(out: Path, group: str, folds: list[Run]) -> Path:
    """Pool the k fold runs of one setting into ``<out>/<group>`` (every image tested once).

    Writes ``predictions*.csv`` (the folds' rows concatenated), ``config.json``
    (the folds' config without the fold number, plus ``kfold`` and ``folds``)
    and, last, ``metrics.json``: the errors recomputed over all predictions
    with :mod:`hpelib.metrics`, ``train_time_s`` summed over the folds, and the
    constant predictor's errors (``constant_*``, each fold predicting its own
    training mean) averaged over the folds weighted by their test images, which
    is their mean over all images.
    """
    import numpy as np
    import pandas as pd

    from .metrics import summarize
    from .report import CONSTANT_KEYS

    out = Path(out)
    dest = out / group
    folds = sorted(folds, key=lambda r: r.params["kfold"]["fold"])
    dirs = [r.folder(out) for r in folds]
    cfg = read_json(dirs[0] / "config.json")
    cfg = {k: v for k, v in cfg.items() if k not in ("fold", "kfold")}
    cfg.update(run=group, kfold={k: v for k, v in folds[0].params["kfold"].items() if k != "fold"},
               folds=[r.run_id for r in folds])
    fold_metrics = [read_json(d / "metrics.json") for d in dirs]
    files = sorted(p.name for p in dirs[0].glob("predictions*.csv"))
    if not files:
        raise FileNotFoundError(f"{dirs[0]} has no predictions*.csv to pool")
    per_set = {}
    for name in files:
        frame = pd.concat([pd.read_csv(d / name) for d in dirs], ignore_index=True)
        write_text(dest / name, frame.to_csv(index=False))
        true = frame[["yaw_true", "pitch_true", "roll_true"]].to_numpy(float)
        pred = frame[["yaw_pred", "pitch_pred", "roll_pred"]].to_numpy(float)
        ok = ~np.isnan(true).any(1)
        test_set = name[len("predictions_"):-4] if name.startswith("predictions_") else cfg.get("test_set")
        per_set[test_set] = summarize(pred[ok], true[ok])
        blocks = [m.get("per_test_set", {}).get(test_set, m) for m in fold_metrics]
        weights = np.array([b.get("n", 0) for b in blocks], float)
        for key in CONSTANT_KEYS:
            if all(key in b for b in blocks) and weights.sum() > 0:
                per_set[test_set][key] = float(np.dot(weights, [b[key] for b in blocks]) / weights.sum())
    train_time = float(sum(m.get("train_time_s", 0.0) for m in fold_metrics))
    if len(per_set) == 1 and files == ["predictions.csv"]:
        metrics = dict(next(iter(per_set.values())), train_time_s=train_time)
    else:
        metrics = {"per_test_set": per_set, "train_time_s": train_time}
    metrics["folds"] = len(folds)
    write_json(dest / "config.json", cfg)
    write_json(dest / "metrics.json", metrics)
    return dest


def execute_run(notebook: str, output: str, params: dict, cwd: str, env: dict[str, str],
                timeout_s: float | None = None) -> dict:
    """Execute one notebook with papermill (in this process; the kernel is a child process).

    Returns ``{"ok": bool, "seconds": float, "error": {...} | None}``; the error
    names the failing cell (index in the executed notebook, execution count,
    exception name and message, first line of the cell source).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # the kernel's own stderr (and papermill's log) go to <run>/kernel.log, not to the console
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with open(Path(cwd) / "kernel.log", "ab") as log:
        os.dup2(log.fileno(), 2)
    t0 = time.time()
    try:
        kwargs = {"execution_timeout": timeout_s} if timeout_s else {}
        pm.execute_notebook(notebook, output, parameters=params, kernel_name="python3", cwd=cwd,
                            progress_bar=False, log_output=False, shutdown_kernel="immediate", **kwargs)
        err = None
        if not (Path(cwd) / "metrics.json").is_file():
            err = {"cell_index": None, "exec_count": None, "ename": "MissingMetrics",
                   "evalue": f"the notebook finished but wrote no metrics.json in {cwd}", "cell": None}
    except PapermillExecutionError as e:
        err = {"cell_index": _error_cell_index(output, e.cell_index), "exec_count": e.exec_count,
               "ename": e.ename, "evalue": str(e.evalue),
               "cell": (e.source or "").strip().splitlines()[0] if (e.source or "").strip() else None}
    except Exception as e:  # kernel died, notebook missing, timeout ...
        err = {"cell_index": None, "exec_count": None, "ename": type(e).__name__, "evalue": str(e), "cell": None}
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"ok": err is None, "seconds": time.time() - t0, "error": err}


def _error_cell_index(output: str, fallback: int) -> int:
    """Index of the failing cell in the saved notebook (papermill puts an error banner cell on top)."""
    try:
        import nbformat

        nb = nbformat.read(output, as_version=4)
        for i, cell in enumerate(nb.cells):
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                return i
    except Exception:
        pass
    return fallback


def _gpu_ids(spec: str | None) -> list[str]:
    if spec:
        return [g.strip() for g in spec.split(",") if g.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    # ask nvidia-smi rather than importing torch here (slow, and CUDA must not start in the parent)
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    import subprocess

    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def _kernel_env(jobs: int, gpu: str | None) -> dict[str, str]:
    env = {}
    pp = os.environ.get("PYTHONPATH", "")
    if str(REPO_ROOT) not in pp.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([pp] if pp else []))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    elif jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _where(err: dict) -> str:
    if err.get("cell_index") is None:
        return "notebook"
    ec = f" In [{err['exec_count']}]" if err.get("exec_count") else ""
    return f"cell {err['cell_index']}{ec}"


def run_study(study_path: str | os.PathLike, out: str | os.PathLike | None = None, jobs: int = 1,
              dry_run: bool = False, only: list[str] | None = None, force: bool = False,
              report: bool = True, gpus: str | None = None, echo=print) -> int:
    """Run (or continue) a study; returns the exit status (0: every selected run complete)."""
    from tqdm.auto import tqdm

    study = load_study(study_path)
    out = Path(out if out is not None else REPO_ROOT / "results" / study["name"]).resolve()
    runs = select(expand(study, out), only)
    if only and not runs:
        raise StudyError(f"{study['_file']}: no run id matches --only {only} (see --dry-run for the ids)")
    for nb in sorted({r.notebook for r in runs}):
        if not nb.is_file():
            raise StudyError(f"{study['_file']}: notebook {nb} does not exist (set 'notebooks' in the study file)")
    done = {r.run_id for r in runs if not force and is_complete(r, out)}
    todo = [r for r in runs if r.run_id not in done]

    if dry_run:
        echo(f"study {study['name']}: {len(runs)} runs ({len(done)} complete, {len(todo)} to run) -> {out}")
        for r in runs:
            state = "complete" if r.run_id in done else "run"
            dep = f"  <- {', '.join(r.deps)}" if r.deps else ""
            echo(f"  [{state:8s}] {r.run_id}{dep}")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "study.yaml", yaml.safe_dump({k: v for k, v in study.items() if not k.startswith("_")},
                                                  sort_keys=False))
    gpu_list = _gpu_ids(gpus) if jobs > 1 or gpus else []
    status: dict[str, dict] = {rid: {"status": "complete (skipped)"} for rid in done}
    failures: list[dict] = []
    pending = list(todo)
    running: dict = {}
    gpu_load = {g: 0 for g in gpu_list}  # runs per GPU: each run gets the least loaded one
    bar = tqdm(total=len(todo), desc=f"study {study['name']}", unit="run", dynamic_ncols=True)

    def ready(r: Run):
        states = [status.get(d, {}).get("status") for d in r.deps]
        if any(s in BLOCKING for s in states):
            return "blocked"
        return all(s in ("done", "complete (skipped)") for s in states)

    def launch(r: Run, submit):
        d = _prepare_folder(r, out, force)
        gpu = min(gpu_load, key=gpu_load.get) if gpu_load else None
        if gpu is not None:
            gpu_load[gpu] += 1
        params = dict(r.params, out_dir=str(d))
        args = (str(r.notebook), str(d / r.notebook.name), params, str(d), _kernel_env(jobs, gpu),
                study.get("timeout_s"))
        return submit(args), gpu

    def finish(r: Run, res: dict, gpu):
        if gpu is not None:
            gpu_load[gpu] -= 1
        d = r.folder(out)
        if res["ok"]:
            _write_meta(r, out, complete=True, seconds=round(res["seconds"], 1))
            status[r.run_id] = {"status": "done", "seconds": round(res["seconds"], 1)}
        else:
            err = dict(res["error"], run=r.run_id, notebook=str(d / r.notebook.name))
            failures.append(err)
            status[r.run_id] = {"status": "failed", "seconds": round(res["seconds"], 1), "error": err}
            write_json(d / "FAILED", err)
            where = _where(err)
            bar.write(f"FAILED {r.run_id}: {where}: {err['ename']}: {err['evalue'][:300]}")
        bar.update(1)

    def skip_blocked():
        for r in list(pending):
            if ready(r) == "blocked":
                pending.remove(r)
                bad = [d for d in r.deps if status.get(d, {}).get("status") in BLOCKING]
                status[r.run_id] = {"status": "skipped (dependency failed)", "deps": bad}
                bar.write(f"SKIPPED {r.run_id}: depends on failed {', '.join(bad)}")
                bar.update(1)

    try:
        if jobs <= 1:
            while pending:
                skip_blocked()
                nxt = next((r for r in pending if ready(r) is True), None)
                if nxt is None:
                    break
                pending.remove(nxt)
                bar.set_postfix_str(nxt.run_id)
                fut, gpu = launch(nxt, lambda a: a)
                finish(nxt, execute_run(*fut), gpu)
        else:
            import multiprocessing as mp
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                while pending or running:
                    skip_blocked()
                    for r in [r for r in pending if ready(r) is True]:
                        if len(running) >= jobs:
                            break
                        pending.remove(r)
                        fut, gpu = launch(r, lambda a: pool.submit(execute_run, *a))
                        running[fut] = (r, gpu)
                    if not running:
                        break
                    bar.set_postfix_str(", ".join(r.run_id for r, _ in running.values())[:80])
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        r, gpu = running.pop(fut)
                        try:
                            res = fut.result()
                        except Exception as e:  # worker crashed
                            res = {"ok": False, "seconds": 0.0, "error": {
                                "cell_index": None, "exec_count": None, "ename": type(e).__name__,
                                "evalue": str(e), "cell": None}}
                        finish(r, res, gpu)
    finally:
        bar.close()
        for r in runs:
            status.setdefault(r.run_id, {"status": "not run (interrupted)"})
        write_json(out / "study_summary.json", {"study": study["_file"], "out": str(out), "runs": status})
        write_json(out / "failures.json", failures)

    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.group:
            groups.setdefault(r.group, []).append(r)
    for group, folds in groups.items():
        ok_states = ("done", "complete (skipped)")
        if all(status[r.run_id]["status"] in ok_states for r in folds):
            try:
                pool_folds(out, group, folds)
            except Exception as e:
                err = {"run": group, "cell_index": None, "exec_count": None, "ename": type(e).__name__,
                       "evalue": f"pooling the folds failed: {e}", "notebook": None, "cell": None}
                failures.append(err)
                status[group] = {"status": "failed", "error": err}
                write_json(out / "failures.json", failures)
        else:  # a pooled result of folds that are not all complete would be stale
            (out / group / "metrics.json").unlink(missing_ok=True)

    counts: dict[str, int] = {}
    for s in status.values():
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    echo(f"study {study['name']}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" -> {out}")
    bad = [rid for rid, s in status.items() if s["status"] != "done" and not s["status"].startswith("complete")]
    for rid in bad:
        s = status[rid]
        if s["status"] == "failed":
            e = s["error"]
            where = _where(e)
            echo(f"  FAILED  {rid}: {where}: {e['ename']}: {e['evalue'][:200]}"
                 + (f"  ({e['notebook']})" if e.get("notebook") else ""))
        else:
            echo(f"  {s['status'].upper()}  {rid}")

    rc = 1 if bad else 0
    if report and study.get("report", True):
        if any(status[r.run_id]["status"] in ("done", "complete (skipped)") for r in runs if r.kind == "train"):
            try:
                from .report import build_report

                build_report(out, out / "report")
                echo(f"report: {out / 'report'}")
            except Exception as e:
                echo(f"report failed: {type(e).__name__}: {e}")
                rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpelib.study", description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="study YAML file (see docs/STUDY.md)")
    p.add_argument("--out", help="output folder (default: results/<study name>)")
    p.add_argument("--jobs", type=int, default=1, help="runs executed in parallel (one GPU each when GPUs are present)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are complete; run nothing")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="run only ids matching this glob or substring (repeatable); their pre-training runs are added")
    p.add_argument("--force", action="store_true", help="re-run selected runs even when complete")
    p.add_argument("--no-report", action="store_true", help="do not build <out>/report at the end")
    p.add_argument("--gpus", help="comma-separated GPU ids to share among --jobs workers (default: all visible)")
    a = p.parse_args(argv)
    try:
        return run_study(a.study, a.out, jobs=a.jobs, dry_run=a.dry_run, only=a.only, force=a.force,
                         report=not a.no_report, gpus=a.gpus)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
