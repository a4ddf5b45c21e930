"""Training hyper-parameters (:class:`TrainConfig`) and the learning-rate schedule.

Defaults follow the head pose literature where the paper is silent: Adam
(Hopenet and 6DRepNet both use Adam) with a cosine decay to zero over the run.
The schedule is evaluated per optimizer step (so warm-up is smooth), with the
``step`` schedule dropping the rate by ``gamma`` every ``step_size`` whole
epochs (6DRepNet's ``MultiStepLR`` style).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from hpelib.registry import check_keys
from hpelib.validation import check_fields, field_types, problems_message

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
AMP_MODES = ("auto", "bf16", "off")


_AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
_FIELD_CHECKS = {
    "epochs": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "lr": (lambda v: v > 0, "a number > 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {list(SCHEDULES)}"),
    "step_size": _AT_LEAST_1,
    "gamma": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "num_workers": (lambda v: v >= 0, "an integer >= 0"),
    "amp": (lambda v: isinstance(v, bool) or v in AMP_MODES, f"one of {list(AMP_MODES)} (or true/false)"),
    "channels_last": (lambda v: v in ("auto", True, False), "'auto', true or false"),
    "log_every": _AT_LEAST_1,
    "max_steps_per_epoch": _AT_LEAST_1,
    "grad_clip": (lambda v: v > 0, "null or a number > 0"),
    "val_every": _AT_LEAST_1,
}


@dataclass
class TrainConfig:
    """Everything that controls a training or pre-training run (not the model).

    * ``epochs``, ``batch_size`` (per process under DDP), ``lr``, ``weight_decay``.
    * ``optimizer``: ``adam`` | ``adamw`` | ``sgd`` (with ``momentum``, Nesterov off).
    * ``schedule``: ``cosine`` (to 0 at the end) | ``step`` (x ``gamma`` every
      ``step_size`` epochs) | ``none``; ``warmup_epochs`` (may be fractional) of
      linear warm-up from ``lr / warmup_steps`` to ``lr`` come first.
    * ``device``: ``auto`` (cuda if available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ...
    * ``amp``: ``auto`` (bf16 autocast on CUDA, off on CPU) | ``bf16`` | ``off``
      (``True``/``False`` are accepted for ``auto``/``off``).
    * ``channels_last``: ``auto`` (on for CUDA) | ``True`` | ``False``.
    * ``log_every``: refresh the progress-bar loss every this many steps.
    * ``max_steps_per_epoch``: cap on optimizer steps per epoch (quick runs).
    * ``grad_clip``: max global gradient norm, ``None`` for no clipping.
    * ``val_every``: validate every this many epochs (and always after the last).
    * ``progress``: show tqdm progress bars (rank 0 only).
    * ``ddp_find_unused_parameters``: passed to DistributedDataParallel. The
      HMTL model keeps every parameter in the graph (an unlabeled batch gives
      the pose head a zero loss), so it is off; turn it on for a model whose
      batches may leave parameters unused.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: Any = "auto"
    channels_last: Any = "auto"
    log_every: int = 10
    max_steps_per_epoch: Optional[int] = None
    grad_clip: Optional[float] = None
    val_every: int = 1
    progress: bool = True
    ddp_find_unused_parameters: bool = False

    # Fields that may change between an interrupted run and its resumption
    # without changing the result.
    RESUME_FREE = ("num_workers", "log_every", "progress", "device", "ddp_find_unused_parameters")

    def __post_init__(self):
        values, problems = self.check_values(dataclasses.asdict(self))
        for name, value in values.items():
            setattr(self, name, value)
        if self.amp is True:
            self.amp = "auto"
        elif self.amp is False:
            self.amp = "off"
        if not problems and not (0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0):
            problems.append(f"warmup_epochs must be smaller than epochs ({self.epochs}), got {self.warmup_epochs!r}")
        if problems:
            raise ValueError(problems_message("TrainConfig", problems))

    @classmethod
    def check_values(cls, values: dict) -> tuple[dict, list[str]]:
        """Coerce the given settings to their types and check each alone: ``(values, problems)``.

        Serves a partial block too (one variant's ``train`` settings in a study
        file); the check across fields (warm-up shorter than the run) needs the
        whole config and is made when it is built.
        """
        values = dict(values)
        if isinstance(values.get("channels_last"), str) and values["channels_last"].lower() in ("true", "false"):
            values["channels_last"] = values["channels_last"].lower() == "true"
        return check_fields(field_types(cls), values, _FIELD_CHECKS)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the valid ones."""
        d = {} if d is None else d
        check_keys(d, [f.name for f in dataclasses.fields(cls)], "TrainConfig")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # --- resolved settings -------------------------------------------------
    def resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    def use_amp(self, device: torch.device) -> bool:
        return self.amp == "bf16" or (self.amp == "auto" and device.type == "cuda")

    def use_channels_last(self, device: torch.device) -> bool:
        return self.channels_last is True or (self.channels_last == "auto" and device.type == "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use device='auto' or 'cpu'")
    return dev


class LRSchedule:
    """Learning-rate multiplier as a function of the global optimizer step.

    A callable object (not a lambda) so that ``LambdaLR.state_dict()`` stores
    its parameters and a resumed run continues the same curve.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.kind = cfg.schedule
        self.steps_per_epoch = int(steps_per_epoch)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.step_size = cfg.step_size
        self.gamma = cfg.gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** ((step // self.steps_per_epoch) // self.step_size)
        return 1.0


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(cfg, steps_per_epoch))
