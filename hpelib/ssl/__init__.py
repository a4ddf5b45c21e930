"""Self-supervised tasks: ``rotation``, ``jigsaw`` (per-tile), ``jigsaw_perm`` (permutation set), ``simclr``, ``barlow``.

Each is an :class:`SSLTask` (``make_views(images, generator) -> (views,
targets)``, ``loss(features, targets) -> 0-d tensor``) built by
``build_task(name, feat_dim, **options)``; the options of each task are its
constructor's keyword arguments (see :func:`task_options`).
"""
from __future__ import annotations

import inspect

from .base import SSLTask
from .barlow import BarlowTwinsTask, barlow_twins_loss
from .jigsaw import JigsawTask
from .jigsaw_perm import JigsawPermTask
from .rotation import RotationTask
from .simclr import SimCLRTask, nt_xent

__all__ = ["SSLTask", "TASKS", "build_task", "task_options", "RotationTask", "JigsawTask", "JigsawPermTask",
           "SimCLRTask", "BarlowTwinsTask", "nt_xent", "barlow_twins_loss"]

TASKS = {cls.name: cls for cls in (RotationTask, JigsawTask, JigsawPermTask, SimCLRTask, BarlowTwinsTask)}


def task_options(name: str) -> list[str]:
    """The option names ``build_task(name, feat_dim, **options)`` accepts."""
    cls = _task_class(name)
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", "feat_dim")]


def _task_class(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown SSL task {name!r}; choices: {sorted(TASKS)}")
    return TASKS[name]


def build_task(name: str, feat_dim: int, **options) -> SSLTask:
    """Build the task ``name`` with a head for backbone features of size ``feat_dim``."""
    cls = _task_class(name)
    valid = task_options(name)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for SSL task {name!r}; valid options: {valid}")
    return cls(feat_dim, **options)
