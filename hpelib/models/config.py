"""``ModelConfig``: what :func:`hpelib.models.build_model` builds, as a plain, saveable dataclass."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

from hpelib.registry import check_keys
from hpelib.ssl import TASKS

from .backbones import BUILTIN_INITS, check_backbone, is_checkpoint_init
from .heads import POSE_HEADS

__all__ = ["ModelConfig", "BUILTIN_INITS", "is_checkpoint_init"]

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
        if self.pose_head in _NONE_NAMES:
            self.pose_head = None
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

    def validate(self) -> None:
        """``ValueError`` for unknown names or options, or settings that do not go together."""
        if not isinstance(self.init, str) or not self.init:
            raise ValueError(f"init must be one of {list(BUILTIN_INITS)} or a checkpoint path, got {self.init!r}")
        check_backbone(self.backbone, self.init, self.stem)
        if self.pose_head is not None:
            POSE_HEADS.check_options(self.pose_head, self.pose_options, where="pose_options")
        if self.pose_head is None and self.pose_options:
            raise ValueError(f"pose_options {self.pose_options} given but pose_head is None")
        if not float(self.pose_weight) >= 0:
            raise ValueError(f"pose_weight must be >= 0, got {self.pose_weight!r}")
        for name, opts in self.ssl_tasks.items():
            TASKS.check_options(name, opts, where="ssl_tasks", extra=["weight"])
            if not float(opts.get("weight", 1.0)) >= 0:
                raise ValueError(f"ssl_tasks.{name}.weight must be >= 0, got {opts.get('weight')!r}")
        if self.pose_head is None and not self.ssl_tasks:
            raise ValueError("the model has neither a pose head nor SSL tasks: nothing to train")
