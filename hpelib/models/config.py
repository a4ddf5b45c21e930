"""``ModelConfig``: what :func:`hpelib.models.build_model` builds, as a plain, saveable dataclass."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

from hpelib.registry import check_keys
from hpelib.ssl import TASKS
from hpelib.validation import check_fields, field_types, problems_message

from .backbones import BACKBONES, BUILTIN_INITS, STEMS, check_backbone, is_checkpoint_init
from .heads import POSE_HEADS

__all__ = ["ModelConfig", "BUILTIN_INITS", "is_checkpoint_init", "check_task_options"]

_NONE_NAMES = (None, "none", "None", "null", "")


@dataclass
class ModelConfig:
    """The model of a run.

    * ``backbone``: ``resnet50`` (paper), ``resnet18``, ``resnet18-narrow`` (CPU);
    * ``stem``: ``imagenet`` (7x7 stride-2 conv + max-pool, the paper's) or
      ``cifar`` (3x3 stride-1 conv, no max-pool: for 32-64 px inputs), see
      :mod:`hpelib.models.backbones`;
    * ``init``: ``random``, ``imagenet`` (:data:`BUILTIN_INITS`), or the path of an
      hpelib checkpoint whose backbone weights initialise this backbone (SSL
      pre-training -> fine-tuning; :func:`is_checkpoint_init`);
    * ``pose_head``: ``binned`` (Hopenet), ``regression``, ``6d`` (6DRepNet) or
      ``None`` (no pose head: SSL pre-training); ``pose_options`` are the head's
      keyword options (``binned``: ``alpha``, ``num_bins``, ``bin_width``, ``low``;
      ``regression``: ``loss`` ``"l1"|"mse"``, ``scale``; ``6d``: none);
    * ``pose_weight``: weight of the pose loss in the total;
    * ``ssl_tasks``: ``{name: {"weight": w, **task options}}`` (weight defaults to 1),
      names ``rotation``, ``jigsaw``, ``jigsaw_perm``, ``simclr``, ``barlow``; a list
      of names means weight 1 and default options each.
    """

    backbone: str = "resnet50"
    stem: str = "imagenet"
    init: str = "random"
    pose_head: str | None = "binned"
    pose_options: dict = field(default_factory=dict)
    pose_weight: float = 1.0
    ssl_tasks: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.ssl_tasks, (list, tuple)):
            self.ssl_tasks = {name: {"weight": 1.0} for name in self.ssl_tasks}
        if self.ssl_tasks is None:
            self.ssl_tasks = {}
        self.ssl_tasks = {name: ({} if opts is None else dict(opts)) for name, opts in dict(self.ssl_tasks).items()}
        self.pose_options = dict(self.pose_options or {})
        self.validate()

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the valid ones."""
        check_keys(d, [f.name for f in fields(cls)], "model config")
        return cls(**copy.deepcopy(dict(d)))

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def task_weights(self) -> dict:
        return {name: float(opts.get("weight", 1.0)) for name, opts in self.ssl_tasks.items()}

    def task_kwargs(self, name: str) -> dict:
        return {k: v for k, v in self.ssl_tasks[name].items() if k != "weight"}

    @classmethod
    def check_values(cls, values: dict) -> tuple[dict, list[str]]:
        """Coerce the given settings to their types and check each alone: ``(values, problems)``.

        Names (backbone, stem, pose head, SSL tasks) must be registered, and
        the options of the heads and tasks named in ``values`` must be theirs,
        with values of their declared types. Serves a partial block too (a
        study's ``model`` settings); combinations are checked by :meth:`validate`.
        """
        values = dict(values)
        if values.get("pose_head", "binned") in _NONE_NAMES:
            values["pose_head"] = None
        values, problems = check_fields(field_types(cls), values, _field_checks())
        for key, registry in (("backbone", BACKBONES), ("pose_head", POSE_HEADS)):
            if values.get(key) is not None and values[key] not in registry:
                problems.append(f"unknown {registry.kind} {values[key]!r}; valid names: {registry.names()}")
        head = values.get("pose_head")
        if head in POSE_HEADS and isinstance(values.get("pose_options"), dict):
            values["pose_options"], bad = POSE_HEADS.coerce_options(head, values["pose_options"])
            problems += [f"pose_options: {p}" for p in bad]
        tasks = values.get("ssl_tasks")
        if isinstance(tasks, dict):
            for name, opts in tasks.items():
                tasks[name], bad = check_task_options(name, {} if opts is None else dict(opts))
                problems += [f"ssl_tasks.{name}: {p}" for p in bad]
        return values, problems

    def validate(self) -> None:
        """``ValueError`` naming every unknown name or option, bad value, or settings that do not go together."""
        values, problems = self.check_values(self.to_dict())
        for name, value in values.items():
            setattr(self, name, value)
        if not problems:
            for check in (lambda: check_backbone(self.backbone, self.init, self.stem),
                          lambda: POSE_HEADS.check_options(self.pose_head, self.pose_options, where="pose_options")
                          if self.pose_head is not None else None):
                try:
                    check()
                except ValueError as e:
                    problems.append(str(e))
            if self.pose_head is None and self.pose_options:
                problems.append(f"pose_options {self.pose_options} given but pose_head is None")
            if self.pose_head is None and not self.ssl_tasks:
                problems.append("the model has neither a pose head nor SSL tasks: nothing to train")
        if problems:
            raise ValueError(problems_message("model config", problems))


def _field_checks() -> dict:
    """Each field's own check (the names of backbones and pose heads are checked against their registries)."""
    return {
        "stem": (lambda v: v in STEMS, f"one of {list(STEMS)}"),
        "init": (lambda v: bool(v), f"one of {list(BUILTIN_INITS)} or a checkpoint path"),
        "pose_options": (lambda v: isinstance(v, dict), "a mapping of the head's options"),
        "pose_weight": (lambda v: v >= 0, "a number >= 0"),
        "ssl_tasks": (lambda v: isinstance(v, dict), "a mapping {task: {weight: w, **options}}"),
    }


def check_task_options(name: str, options: dict) -> tuple[dict, list[str]]:
    """One SSL task's options (``weight`` included) coerced and checked: ``(options, problems)``."""
    if name not in TASKS:
        return options, [f"unknown SSL task {name!r}; valid names: {TASKS.names()}"]
    try:
        TASKS.check_options(name, options, extra=["weight"])
    except ValueError as e:
        return options, [str(e)]
    weight, problems = check_fields({"weight": float}, {k: v for k, v in options.items() if k == "weight"},
                                    {"weight": (lambda v: v >= 0, "a number >= 0")})
    rest, bad = TASKS.coerce_options(name, {k: v for k, v in options.items() if k != "weight"})
    return {**weight, **rest}, problems + bad
