"""Self-supervised tasks: ``rotation``, ``jigsaw`` (per-tile), ``jigsaw_perm`` (permutation set), ``simclr``, ``barlow``.

Each is an :class:`SSLTask` (``make_views(images, generator) -> (views,
targets)``, ``loss(features, targets) -> 0-d tensor``) built by
``build_task(name, feat_dim, **options)``; the options of each task are its
constructor's keyword arguments (see :func:`task_options`). The tasks are
registered by name in :data:`TASKS` (a :class:`hpelib.registry.Registry`)::

    @TASKS.register("mytask")
    class MyTask(SSLTask):
        name = "mytask"

        def __init__(self, feat_dim, scale=1.0):  # feat_dim supplied by the model, scale an option
            ...
"""
from __future__ import annotations

from hpelib.registry import Registry

from .base import SSLTask
from .barlow import BarlowTwinsTask, barlow_twins_loss
from .jigsaw import JigsawTask
from .jigsaw_perm import JigsawPermTask
from .rotation import RotationTask
from .simclr import SimCLRTask, nt_xent

__all__ = ["SSLTask", "TASKS", "build_task", "task_options", "RotationTask", "JigsawTask", "JigsawPermTask",
           "SimCLRTask", "BarlowTwinsTask", "nt_xent", "barlow_twins_loss"]

TASKS = Registry("SSL task", supplied=("feat_dim",))
"""The SSL tasks by name; add one with ``@TASKS.register(name)`` on an :class:`SSLTask` subclass."""
for _cls in (RotationTask, JigsawTask, JigsawPermTask, SimCLRTask, BarlowTwinsTask):
    TASKS.add(_cls.name, _cls)
del _cls


def task_options(name: str) -> list[str]:
    """The option names ``build_task(name, feat_dim, **options)`` accepts."""
    return TASKS.options(name)


def build_task(name: str, feat_dim: int, **options) -> SSLTask:
    """Build the task ``name`` with a head for backbone features of size ``feat_dim``."""
    return TASKS.build(name, feat_dim, **options)
