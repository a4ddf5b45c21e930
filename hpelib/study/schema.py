"""Reading and checking a study file: ``load_study(path) -> dict`` (the study, resolved and validated).

The format is documented in ``docs/STUDY.md``. Every key is checked before
anything runs; an error (:class:`StudyError`) names the file and the key.
Relative paths are made absolute against the repository root and
``${VAR}`` / ``${VAR:-default}`` strings are substituted from the environment
(``${HPELIB_SHARED_DATA}`` defaults to ``<repo>/../shared/data``, ``${REPO}``
is the repository root).
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import yaml

from ..registry import check_keys
from ..validation import coerce
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
    "kfold": "{k: K, seed: S}: train on K-1 folds of data.train, test on the held-out fold (every image tested "
             "once); validation: V tests on a V-th of the training folds instead (choosing a recipe)",
    "report": "false to skip the report at the end",
    "reference_baseline": "the method of the baseline scenario that every Δ is against (default: its plain "
                          "variant, 'none'); the scenario's other variants are rows like any method",
    "timeout_s": "per-cell execution timeout of the notebooks (default: none)",
    "select": "{scenario: {pretrain: <scenario>, aux: <scenario>, seeds: [...]}}: a variant chosen on validation "
              "folds inside the training folds (needs kfold): the best pre-training of one scenario with the best "
              "auxiliary method of another, never chosen on test folds",
    "imports": "Python modules with your own registered SSL tasks, backbones, pose heads or data sets "
               "(the study file's folder is searched first); imported by the runner and by every run",
}
DATA_KEYS = {"pretrain", "train", "test"}
SCENARIO_KEYS = {"variants", "label_fractions", "seeds", "model", "train", "description"}
VARIANT_KEYS = {"pretrain", "pretrain_train", "aux", "method", "model", "train", "image_size", "train_data",
                "optional"}
KFOLD_KEYS = {"k", "seed", "validation"}
SELECT_KEYS = {"pretrain", "aux", "seeds", "validation"}


class StudyError(ValueError):
    """A study file is invalid; the message names the file and the offending key."""


# ----------------------------------------------------------------------------- loading
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _default_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HPELIB_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))
    env.setdefault("REPO", str(REPO_ROOT))
    return env


def _substitute(obj, env: dict[str, str]):
    if isinstance(obj, str):
        def repl(m):
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise StudyError(f"environment variable ${{{name}}} is not set; set it or write ${{{name}:-default}}")
        return _VAR.sub(repl, obj)
    if isinstance(obj, dict):
        return {k: _substitute(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, env) for v in obj]
    return obj


def abs_path(p: str) -> str:
    """``p`` made absolute against the repository root (``~`` expanded)."""
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (REPO_ROOT / path).resolve())


class _Problems:
    """Every problem of a study file, collected so that one run of ``--dry-run`` reports them all."""

    def __init__(self, file: str, check_roots: bool = True):
        self.file, self.items, self.check_roots = file, [], check_roots

    def add(self, where: str, problem: str) -> None:
        self.items.append(f"{where}: {problem}" if where else problem)

    @contextlib.contextmanager
    def section(self):
        """Check a part of the file; a ``StudyError`` inside becomes one problem and the part is skipped."""
        try:
            yield
        except StudyError as e:
            self.items.append(str(e))

    def check_keys(self, d, allowed, where: str) -> bool:
        try:
            check_keys(d, allowed, where, error=StudyError)
            return True
        except StudyError as e:
            self.items.append(str(e))
            return False

    def values(self, checker, block: dict, where: str) -> dict:
        """``block`` coerced by ``checker`` (a ``check_values`` classmethod); its problems recorded."""
        values, problems = checker(block)
        for p in problems:
            self.add(where, p)
        return {**block, **values}

    def raise_if_any(self) -> None:
        if len(self.items) == 1:
            raise StudyError(f"{self.file}: {self.items[0]}")
        if self.items:
            raise StudyError(f"{self.file}: {len(self.items)} problems:\n" + "\n".join(f"  - {p}" for p in self.items))


def _data_spec(spec, where: str, problems: _Problems) -> dict | None:
    """A data spec with absolute paths; its name, keys, split and (unless the set makes it) root checked."""
    from ..data import DATASETS, dataset_options

    if not isinstance(spec, dict) or "name" not in spec:
        problems.add(where, f"a data spec must be a mapping with at least 'name' (e.g. {{name: synthetic}}), got {spec!r}")
        return None
    spec = dict(spec)
    for key in ("root", "cache_dir"):
        if spec.get(key) is not None:
            spec[key] = abs_path(str(spec[key]))
    if spec["name"] not in DATASETS:
        problems.add(where, f"unknown data set {spec['name']!r}; valid names: {DATASETS.names()}")
        return spec
    problems.check_keys(spec, ["name", *DATA_SPEC_KEYS, *dataset_options(spec["name"])], where)
    if spec.get("split", "train") not in ("train", "test", "all"):
        problems.add(where, f"split must be train, test or all, got {spec['split']!r}")
    root = spec.get("root") or _default_root(spec["name"])
    makes_root = getattr(DATASETS.get(spec["name"]), "creates_root", False)
    if problems.check_roots and not makes_root and root and not Path(root).exists():
        problems.add(where, f"data folder {root} does not exist; put the data set there (see data/README.md) "
                            "or set 'root' to where it is")
    return spec


def _default_root(name: str):
    from ..data import DEFAULT_ROOTS

    return DEFAULT_ROOTS.get(name)


#: keys of a data spec besides its data set's own options (image size, augmentation and seed come from the run)
DATA_SPEC_KEYS = ("root", "split", "seed", "cache_dir")


def load_study(path: str | os.PathLike, env: dict[str, str] | None = None, check_roots: bool = True) -> dict:
    """Read and validate a study YAML; returns the resolved study dict.

    Every key and value is checked before anything runs: unknown keys at any
    level, values of the wrong type or out of range (YAML's ``1e-3`` string and
    quoted numbers are coerced to the declared type), unknown backbones, heads,
    SSL methods and data sets, data folders that do not exist, a variant that
    names a method missing from ``methods``. Raises one :class:`StudyError` (a
    ``ValueError``) listing every problem, each naming its key, the file first.
    ``check_roots=False`` skips the data folders (to plan a study for another machine).
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file must be a mapping with keys {sorted(TOP_KEYS)}")
    problems = _Problems(str(path), check_roots)
    problems.check_keys(raw, TOP_KEYS, "")
    with problems.section():
        study = _substitute(raw, env if env is not None else _default_env())
    problems.raise_if_any()
    study.setdefault("name", path.stem)
    study["_file"] = str(path.resolve())
    _imports(study, path, problems)  # before anything that checks registered names
    study["notebooks"] = abs_path(study.get("notebooks") or "notebooks")
    if "image_size" in study:
        study["image_size"] = problems.values(_spec_values, {"image_size": study["image_size"]}, "")["image_size"]
    if study.get("timeout_s") is not None:
        try:
            study["timeout_s"] = coerce(study["timeout_s"], float)
        except ValueError as e:
            problems.add("timeout_s", str(e))
    study["model"] = _model_block(study.get("model"), "model", problems)
    for key in ("pretrain", "train"):
        study[key] = _train_block(study.get(key), key, problems)
    study["data"] = _data(study.get("data"), problems)
    study["methods"] = _methods(study.get("methods"), problems)
    if study.get("kfold") is not None:
        kf = study["kfold"]
        if problems.check_keys(kf, KFOLD_KEYS, "kfold"):
            if not isinstance(kf.get("k"), int) or isinstance(kf.get("k"), bool) or kf["k"] < 2:
                problems.add("kfold", f"kfold.k must be an integer >= 2, got {kf.get('k')!r}")
            val = kf.get("validation")
            if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 2):
                problems.add("kfold", f"kfold.validation must be null or an integer >= 2, got {val!r}")
            study["kfold"] = {"k": kf.get("k"), "seed": kf.get("seed", 0),
                              **({"validation": val} if val is not None else {})}
    if study.get("pretrain_seed") is not None and not isinstance(study["pretrain_seed"], int):
        problems.add("pretrain_seed", f"must be an integer or null, got {study['pretrain_seed']!r}")
    default_seeds = _seed_list(study.get("seeds", [0]), "seeds", problems)
    study["label_fractions"] = _fraction_list(study.get("label_fractions", [1.0]), default_seeds,
                                              "label_fractions", problems)
    scenarios = study.get("scenarios")
    if not isinstance(scenarios, dict) or not scenarios:
        problems.add("scenarios", "must be a non-empty mapping {scenario: [variants]}")
        scenarios = {}
    study["scenarios"] = {str(name): _check_scenario(name, sc, study, default_seeds, f"scenarios.{name}", problems)
                          for name, sc in scenarios.items()}
    ref = study.get("reference_baseline")
    if ref is not None:
        methods = [v["method"] for v in study["scenarios"].get("baseline", {}).get("variants", [])]
        if str(ref) not in methods:
            problems.add("reference_baseline", f"{ref!r} is not a method of the baseline scenario: {methods}")
    study["select"] = _select(study.get("select"), study, default_seeds, problems)
    problems.raise_if_any()
    return study


def _select(select, study: dict, default_seeds: list[int], problems: _Problems) -> dict:
    """``select``: ``{target scenario: {pretrain: source scenario, aux: source scenario, seeds, validation}}``.

    Each source scenario's variants are the candidates (their pre-training, or their auxiliary methods); they are
    compared on validation folds inside the training folds (``kfold.validation``), never on the test folds, and
    the target scenario gets one more variant: the best pre-training with the best auxiliary method(s).
    """
    if not select:
        return {}
    if not isinstance(select, dict):
        problems.add("select", f"must be a mapping {{scenario: {{pretrain: <scenario>, aux: <scenario>}}}}, "
                               f"got {select!r}")
        return {}
    if not study.get("kfold") or study["kfold"].get("validation"):
        problems.add("select", "needs kfold: {k: K} (without validation): the candidates are compared on "
                               "validation folds inside its training folds")
    out = {}
    for target, cfg in select.items():
        where = f"select.{target}"
        if not isinstance(cfg, dict):
            problems.add(where, f"must be a mapping with keys {sorted(SELECT_KEYS)}, got {cfg!r}")
            continue
        if not problems.check_keys(cfg, SELECT_KEYS, where):
            continue
        sources = {role: str(cfg[role]) for role in ("pretrain", "aux") if cfg.get(role) is not None}
        if not sources:
            problems.add(where, "names no source scenario: set pretrain: <scenario> and/or aux: <scenario>")
        for role, source in sources.items():
            variants = study["scenarios"].get(source, {}).get("variants")
            if source == str(target) or not variants:
                problems.add(where, f"{role}: {source!r} is not another scenario of this study: "
                                    f"{sorted(study['scenarios'])}")
            elif role == "pretrain" and not all(v["pretrain"] for v in variants):
                problems.add(where, f"pretrain: every variant of scenario {source!r} must pre-train")
            elif role == "aux" and not all(v["aux"] for v in variants):
                problems.add(where, f"aux: every variant of scenario {source!r} must have an auxiliary method")
        validation = cfg.get("validation", 3)
        if not isinstance(validation, int) or isinstance(validation, bool) or validation < 2:
            problems.add(where, f"validation must be an integer >= 2, got {validation!r}")
        seeds = _seed_list(cfg["seeds"], where + ".seeds", problems) if "seeds" in cfg else default_seeds[:1]
        out[str(target)] = {**sources, "seeds": seeds, "validation": validation}
    return out


def _imports(study: dict, path: Path, problems: _Problems) -> None:
    """Import the study's ``imports`` (its folder first on ``sys.path``); record them and their source digests.

    ``study["imports"]`` (module names), ``study["import_paths"]`` (the study
    file's folder) and ``study["import_digests"]`` ({module: digest of its
    source file}, part of every run's fingerprint). A module that cannot be
    imported is one problem naming it; the rest of the file is not checked
    then, since its names may come from that module.
    """
    from ..plugins import PluginError, import_modules, module_digest

    modules = study.get("imports") or []
    if isinstance(modules, str):
        modules = [modules]
    if not isinstance(modules, list):
        problems.add("imports", f"must be a list of module names, got {modules!r}")
        problems.raise_if_any()
    paths = [str(path.resolve().parent)] if modules else []
    try:
        loaded = import_modules(modules, paths, where=f"{path}: imports")
    except PluginError as e:
        raise StudyError(str(e)) from None
    study["imports"], study["import_paths"] = list(modules), paths
    study["import_digests"] = {name: module_digest(m) for name, m in loaded.items()}


def _spec_values(block: dict):
    """A RunSpec's own settings (image_size, label_fraction) coerced and checked: ``(values, problems)``."""
    from ..spec import RunSpec

    return RunSpec.check_values(block)


def _train_block(block, where: str, problems: _Problems) -> dict:
    """A block of training settings (TrainConfig keys), its values coerced and checked alone."""
    from ..engine.config import TrainConfig

    block = dict(block or {})
    if problems.check_keys(block, _train_keys(), where):
        block = problems.values(TrainConfig.check_values, block, where)
    return block


def _model_block(block, where: str, problems: _Problems) -> dict:
    """A block of model settings (ModelConfig keys but ssl_tasks), its values coerced and checked alone."""
    from ..models.config import ModelConfig

    block = dict(block or {})
    if "ssl_tasks" in block:
        problems.add(where, "do not set ssl_tasks here; use scenarios (aux) and methods (options)")
        block.pop("ssl_tasks")
    if problems.check_keys(block, _model_keys(), where):
        block = problems.values(ModelConfig.check_values, block, where)
    return block


def _data(data, problems: _Problems) -> dict:
    if not problems.check_keys(data or {}, DATA_KEYS, "data"):
        return {"test": {}}
    if not data or "train" not in data or "test" not in data:
        problems.add("data", "needs 'train' (a spec) and 'test' ({name: spec}); see docs/STUDY.md")
        return {"test": {}}
    out = {"train": _data_spec(data["train"], "data.train", problems), "test": {}}
    if not isinstance(data["test"], dict) or not data["test"] or "name" in data["test"]:
        problems.add("data", "data.test must map a test-set name to a spec, e.g. {aflw2000: {name: aflw2000, root: ...}}")
    else:
        out["test"] = {str(k): _data_spec(v, f"data.test.{k}", problems) for k, v in data["test"].items()}
    if data.get("pretrain") is not None:
        out["pretrain"] = _data_spec(data["pretrain"], "data.pretrain", problems)
    return out


def _methods(methods, problems: _Problems) -> dict:
    """``{method: options}``: registered SSL tasks, their options (and weight) coerced and checked."""
    from ..models.config import check_task_options

    methods = methods or {}
    if not problems.check_keys(methods, _ssl_methods(), "methods"):
        return {m: dict(o or {}) for m, o in methods.items() if m in _ssl_methods()} if isinstance(methods, dict) else {}
    out = {}
    for m, opts in methods.items():
        out[m], bad = check_task_options(m, dict(opts or {}))
        for p in bad:
            problems.add(f"methods.{m}", p)
    return out


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


def _seed_list(seeds, where, problems: _Problems) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        problems.add(where, f"expected a non-empty list of integers, got {seeds!r}")
        return [0]
    return list(seeds)


def _fraction_list(fracs, default_seeds, where, problems: _Problems) -> list[dict]:
    if isinstance(fracs, (int, float, str)):
        fracs = [fracs]
    if not isinstance(fracs, list) or not fracs:
        problems.add(where, f"expected a non-empty list, got {fracs!r}")
        return []
    out = []
    for f in fracs:
        train, seeds, frac = {}, default_seeds, f
        if isinstance(f, dict):
            if not problems.check_keys(f, {"fraction", "seeds", "train"}, where):
                continue
            frac, seeds = f.get("fraction"), _seed_list(f.get("seeds", default_seeds), where, problems)
            train = _train_block(f.get("train"), where + ".train", problems)
        values, bad = _spec_values({"label_fraction": frac})
        if bad:
            problems.add(where, f"a label fraction must be a number in (0, 1], got {frac!r}")
            continue
        out.append({"fraction": values["label_fraction"], "seeds": seeds, "train": train})
    return out


def _aux(aux, vw: str, problems: _Problems) -> dict:
    """A variant's auxiliary methods as ``{name: weight or None}``."""
    if isinstance(aux, str):
        aux = [aux]
    if isinstance(aux, list):
        aux = {a: None for a in aux}
    if not isinstance(aux, dict):
        problems.add(vw, f"aux must be a method name, a list of names or {{name: weight}}, got {aux!r}")
        return {}
    out = {}
    for a, w in aux.items():
        if a not in _ssl_methods():
            problems.add(vw, f"unknown SSL method {a!r} in aux; valid: {_ssl_methods()}")
            continue
        try:
            out[a] = None if w is None else coerce(w, float)
        except ValueError as e:
            problems.add(vw, f"the weight of aux method {a!r}: {e}")
    return out


def _check_scenario(name, sc, study, default_seeds, where, problems: _Problems) -> dict:
    if isinstance(sc, list):
        sc = {"variants": sc}
    if sc is None:
        sc = {"variants": [{}]}
    empty = {"variants": [], "label_fractions": [], "model": {}, "train": {}}
    if not problems.check_keys(sc, SCENARIO_KEYS, where):
        return empty
    variants = sc.get("variants")
    if not isinstance(variants, list) or not variants:
        problems.add(where, "'variants' must be a non-empty list (use [{}] for a plain baseline)")
        return empty
    out_variants, labels = [], set()
    for i, v in enumerate(variants):
        vw = f"{where}.variants[{i}]"
        v = dict(v or {})
        if not problems.check_keys(v, VARIANT_KEYS, vw):
            continue
        pre = v.get("pretrain")
        if pre is not None and pre not in _ssl_methods():
            problems.add(vw, f"unknown SSL method {pre!r} for pretrain; valid: {_ssl_methods()}")
        aux = _aux(v.get("aux") or {}, vw, problems)
        for m in ([pre] if pre else []) + list(aux):
            if m in _ssl_methods() and m not in study["methods"]:
                problems.add(vw, f"method {m!r} is not configured under 'methods' (add '{m}: {{weight: 1.0}}')")
        pre_train = _train_block(v.get("pretrain_train"), vw + ".pretrain_train", problems)
        if pre_train and not pre:
            problems.add(vw, "pretrain_train is set but the variant has no 'pretrain' method")
        label = str(v.get("method") or method_label(pre, aux, pre_train.get("epochs")))
        if not re.fullmatch(r"[A-Za-z0-9_.+\-]+", label):
            problems.add(vw, f"method label {label!r} may only use letters, digits and _ . + -")
        if label in labels:
            problems.add(vw, f"two variants of scenario {name!r} are both called {label!r}; give one a 'method' label")
        labels.add(label)
        size = (problems.values(_spec_values, {"image_size": v["image_size"]}, vw)["image_size"]
                if "image_size" in v else None)
        train_data = v.get("train_data") or {}
        if not isinstance(train_data, dict):
            problems.add(vw, f"train_data must be a mapping of data.train options (e.g. {{k_range: [0.1, 0.4]}}), "
                             f"got {train_data!r}")
            train_data = {}
        out_variants.append({"pretrain": pre, "pretrain_train": pre_train, "aux": aux, "method": label,
                             "model": _model_block(v.get("model"), vw + ".model", problems),
                             "train": _train_block(v.get("train"), vw + ".train", problems),
                             "image_size": size, "train_data": train_data, "optional": bool(v.get("optional"))})
    seeds = _seed_list(sc["seeds"], where + ".seeds", problems) if "seeds" in sc else None
    fracs = (_fraction_list(sc["label_fractions"], seeds or default_seeds, where + ".label_fractions", problems)
             if "label_fractions" in sc else
             [dict(f, seeds=seeds) if seeds else f for f in study["label_fractions"]])
    if any(v["pretrain"] for v in out_variants) and not study["data"].get("pretrain"):
        problems.add(where, "uses SSL pre-training but data.pretrain (the images to pre-train on) is not set")
    return {"variants": out_variants, "label_fractions": fracs,
            "model": _model_block(sc.get("model"), where + ".model", problems),
            "train": _train_block(sc.get("train"), where + ".train", problems)}
