"""``RunSpec``: everything one run needs, in one typed, saveable object.

A run (an SSL pre-training or a head pose training + test) is described once:
the study runner plans ``RunSpec`` objects, hands each to a notebook as one
papermill parameter ``spec`` (its :meth:`RunSpec.to_dict`), and the notebook
calls :func:`hpelib.experiment.run_hpe` / :func:`~hpelib.experiment.run_pretraining`
with ``RunSpec.from_dict(spec)``. Every setting has its default here (model
settings in :class:`~hpelib.models.ModelConfig`, training settings in
:class:`~hpelib.engine.TrainConfig`), nowhere else.

As a dict (YAML/JSON)::

    {"kind": "train",                       # or "pretrain" (SSL on the images of train_data)
     "model": {...ModelConfig...},          # backbone, stem, init, pose_head, ssl_tasks ...
     "train": {...TrainConfig...},          # epochs, batch_size, lr, seed ...
     "train_data": {"name": "synthetic", "split": "train", "n": 2000},   # build_dataset options
     "test_data": {"synthetic": {"name": "synthetic", "split": "test"}}, # {test set name: spec}
     "image_size": 64, "label_fraction": 1.0,
     "kfold": {"k": 3, "fold": 0, "seed": 0} | null,
     "labels": {"run": ..., "scenario": "baseline", "method": ..., "pretrain_method": ..., "aux_methods": [...]},
     "eval_batch_size": 64, "keep_checkpoint": false,
     "imports": ["my_tasks"], "import_paths": ["/path/to/study/folder"]}   # only when set

``imports`` are Python modules (your registered SSL tasks, backbones, heads,
data sets) that :meth:`RunSpec.from_dict` imports, with ``import_paths`` first
on ``sys.path``, before it checks the names they register (:mod:`hpelib.plugins`).

The run's seed is ``train.seed``: it seeds the weights, the augmentation, and
the subset that ``label_fraction`` keeps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import DEFAULT_IMAGE_SIZE
from .engine.config import TrainConfig
from .models.config import ModelConfig
from .plugins import import_modules
from .registry import check_keys
from .ssl import TASKS
from .validation import check_fields, problems_message

__all__ = ["RunSpec", "KFold", "Labels", "KINDS"]

KINDS = ("train", "pretrain")


@dataclass
class KFold:
    """Train on the other ``k - 1`` folds of ``train_data``, test on fold ``fold`` (split seeded by ``seed``).

    ``validation=V`` (choosing a recipe): split those ``k - 1`` training folds
    again into ``V`` parts (same seed), train on ``V - 1`` of them and test on
    the first; the outer test fold is never read (:func:`hpelib.data.validation_subsets`).
    """

    k: int
    fold: int
    seed: int = 0
    validation: int | None = None

    def __post_init__(self):
        if not (isinstance(self.k, int) and self.k >= 2):
            raise ValueError(f"kfold.k must be an integer >= 2, got {self.k!r}")
        if not (isinstance(self.fold, int) and 0 <= self.fold < self.k):
            raise ValueError(f"kfold.fold must be an integer in [0, {self.k}), got {self.fold!r}")
        if self.validation is not None and not (isinstance(self.validation, int) and self.validation >= 2):
            raise ValueError(f"kfold.validation must be null or an integer >= 2, got {self.validation!r}")

    def to_dict(self) -> dict:
        """The fields; ``validation`` only when set, so that the specs of plain k-fold runs keep their shape."""
        d = dataclasses.asdict(self)
        if d["validation"] is None:
            del d["validation"]
        return d


@dataclass
class Labels:
    """How the report names a run; none of it changes what is trained.

    ``method`` defaults to :func:`hpelib.runs.method_label` of ``pretrain_method``
    and ``aux_methods``; ``aux_methods`` to the model's SSL tasks; ``run`` to
    the folder name.
    """

    run: str | None = None
    scenario: str = "baseline"
    method: str | None = None
    pretrain_method: str | None = None
    aux_methods: list | None = None


@dataclass
class RunSpec:
    """One run. Build it with :meth:`from_dict` (checks every key) or directly."""

    kind: str = "train"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_data: dict | None = None
    test_data: dict = field(default_factory=dict)
    image_size: int = DEFAULT_IMAGE_SIZE
    label_fraction: float = 1.0
    kfold: KFold | None = None
    labels: Labels = field(default_factory=Labels)
    eval_batch_size: int = 64
    keep_checkpoint: bool = False
    imports: list = field(default_factory=list)
    import_paths: list = field(default_factory=list)

    def __post_init__(self):
        self.label_fraction = 1.0 if self.label_fraction is None else self.label_fraction
        self.validate()

    @property
    def seed(self) -> int:
        return self.train.seed

    # ------------------------------------------------------------------ dict form
    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """Build from the dict form; an unknown key at any level raises ``ValueError`` naming it."""
        check_keys(d, [f.name for f in dataclasses.fields(cls)], "run spec")
        d = dict(d)
        d["imports"], d["import_paths"] = list(d.get("imports") or []), list(d.get("import_paths") or [])
        import_modules(d["imports"], d["import_paths"], where="run spec: imports")  # before names are checked
        d["model"] = ModelConfig.from_dict(dict(d.get("model") or {}))
        d["train"] = TrainConfig.from_dict(dict(d.get("train") or {}))
        d["test_data"] = dict(d.get("test_data") or {})
        if d.get("kfold") is not None:
            check_keys(d["kfold"], [f.name for f in dataclasses.fields(KFold)], "run spec: kfold")
            d["kfold"] = KFold(**d["kfold"])
        labels = dict(d.get("labels") or {})
        check_keys(labels, [f.name for f in dataclasses.fields(Labels)], "run spec: labels")
        d["labels"] = Labels(**labels)
        return cls(**d)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model.to_dict()
        out["train"] = self.train.to_dict()
        out["kfold"] = self.kfold.to_dict() if self.kfold else None
        out["labels"] = dataclasses.asdict(self.labels)
        out["train_data"] = None if self.train_data is None else dict(self.train_data)
        out["test_data"] = {name: dict(s) for name, s in self.test_data.items()}
        for key in ("imports", "import_paths"):  # only when set: specs without user code keep their shape
            if out[key]:
                out[key] = list(out[key])
            else:
                del out[key]
        return out

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming every setting that cannot describe a run."""
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        problems += _data_spec_problems(self.train_data, "train_data")
        if not isinstance(self.test_data, dict):
            problems.append(f"test_data must map a test-set name to a data spec, got {self.test_data!r}")
        else:
            for name, spec in self.test_data.items():
                problems += _data_spec_problems(spec, f"test_data.{name}")
        values, bad = self.check_values({"image_size": self.image_size, "label_fraction": self.label_fraction,
                                         "eval_batch_size": self.eval_batch_size,
                                         "keep_checkpoint": self.keep_checkpoint})
        problems += bad
        for name, value in values.items():
            setattr(self, name, value)
        if "image_size" in values:
            for task, opts in self.model.ssl_tasks.items():
                problem = TASKS.get(task).image_size_problem(self.image_size, **self.model.task_kwargs(task))
                if problem:
                    problems.append(problem)
        if self.kind == "pretrain":
            if self.model.pose_head is not None or len(self.model.ssl_tasks) != 1:
                problems.append("a pretrain run needs model.pose_head = null and exactly one SSL task in "
                                f"model.ssl_tasks, got pose_head={self.model.pose_head!r}, "
                                f"ssl_tasks={sorted(self.model.ssl_tasks)}")
            if self.test_data or self.kfold or self.label_fraction != 1:
                problems.append("a pretrain run uses the images of train_data only (no test_data, kfold or "
                                "label_fraction)")
        elif self.kind == "train" and not self.test_data:
            problems.append("a train run needs test_data ({test set name: data spec})")
        if problems:
            raise ValueError(problems_message("run spec", problems))

    @classmethod
    def check_values(cls, values: dict) -> tuple[dict, list[str]]:
        """Coerce and check the given top-level settings alone (``image_size``, ``label_fraction`` ...)."""
        return check_fields(_FIELD_TYPES, values, _FIELD_CHECKS)

    @property
    def method(self) -> str | None:
        """The SSL task of a pretrain run."""
        return next(iter(self.model.ssl_tasks)) if self.kind == "pretrain" else None


_FIELD_TYPES = {"image_size": int, "label_fraction": float, "eval_batch_size": int, "keep_checkpoint": bool}
_FIELD_CHECKS = {
    "image_size": (lambda v: v >= 8, "an integer >= 8"),
    "label_fraction": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
}


def _data_spec_problems(spec, where: str) -> list[str]:
    if not isinstance(spec, dict) or "name" not in spec:
        return [f"{where} must be a data spec with a 'name' key (e.g. {{'name': 'synthetic'}}), got {spec!r}"]
    return []
