"""Reading and checking a study file: ``load_study(path) -> dict`` (the study, resolved and validated).

The format is documented in ``docs/STUDY.md``. Every key is checked before
anything runs; an error (:class:`StudyError`) names the file and the key.
Relative paths are made absolute against the repository root and
``${VAR}`` / ``${VAR:-default}`` strings are substituted from the environment
(``${HPELIB_SHARED_DATA}`` defaults to ``<repo>/../shared/data``, ``${REPO}``
is the repository root).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from ..registry import check_keys
from ..runs import method_label

__all__ = ["StudyError", "REPO_ROOT", "load_study", "abs_path"]

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def abs_path(p: str) -> str:
    """``p`` made absolute against the repository root (``~`` expanded)."""
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (REPO_ROOT / path).resolve())


def _resolve_spec(spec, where: str) -> dict:
    if not isinstance(spec, dict) or "name" not in spec:
        raise StudyError(f"{where}: a data spec must be a mapping with at least 'name' (e.g. {{name: synthetic}}), got {spec!r}")
    spec = dict(spec)
    for key in ("root", "cache_dir"):
        if spec.get(key) is not None:
            spec[key] = abs_path(str(spec[key]))
    return spec


def _check_keys(d: dict, allowed, where: str):
    check_keys(d, allowed, where, error=StudyError)


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

    study["notebooks"] = abs_path(study.get("notebooks") or "notebooks")
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
    _check_keys(methods, _ssl_methods(), f"{where}: methods")
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


def _ssl_methods() -> list[str]:
    from ..ssl import TASKS

    return list(TASKS)


def _train_keys() -> set[str]:
    import dataclasses

    from ..engine.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _model_keys() -> set[str]:
    import dataclasses

    from ..models.config import ModelConfig

    return {f.name for f in dataclasses.fields(ModelConfig)} - {"ssl_tasks"}


def _check_against_package(study: dict, where: str) -> None:
    """Early errors for option names that the package would only reject at run time."""
    from ..ssl import task_options

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
        if pre is not None and pre not in _ssl_methods():
            raise StudyError(f"{vw}: unknown SSL method {pre!r} for pretrain; valid: {_ssl_methods()}")
        aux = v.get("aux") or {}
        if isinstance(aux, str):
            aux = [aux]
        if isinstance(aux, list):
            aux = {a: None for a in aux}
        if not isinstance(aux, dict):
            raise StudyError(f"{vw}: aux must be a method name, a list of names or {{name: weight}}, got {aux!r}")
        for a, w in aux.items():
            if a not in _ssl_methods():
                raise StudyError(f"{vw}: unknown SSL method {a!r} in aux; valid: {_ssl_methods()}")
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
        label = str(v.get("method") or method_label(pre, aux, pre_train.get("epochs")))
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
