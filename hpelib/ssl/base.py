"""The base class of the self-supervised tasks and small shared helpers.

A task is an ``nn.Module`` that owns its head (built from the backbone's
feature dimension) and knows

* ``make_views(images, generator) -> (views, targets)``: the inputs the
  backbone must see (``[V, 3, H, W]``, normalized like the batch) and what the
  head must predict about them; it works on the batch's device and is a pure
  function of the batch and the ``torch.Generator`` state;
* ``loss(features, targets) -> 0-d tensor``: the task loss from the backbone
  features of the views (``[V, feat_dim]``, same order as ``views``).

The same object serves as a pre-training objective (model without a pose
head) and as an auxiliary loss of the HMTL model.

Randomness: every random draw happens on the generator's own device (the CPU
for ``torch.Generator()``) and is then moved to the batch's device, so the
views for a given generator state are the same on CPU and GPU.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SSLTask", "make_head", "rand", "randperm_rows", "check_images"]


class SSLTask(nn.Module):
    """Base class: subclasses set ``name`` and implement ``make_views`` and ``loss``.

    The constructor takes ``feat_dim`` first (supplied by the model); its
    other keyword parameters are the task's options. A subclass becomes
    available to ``build_task`` and ``ModelConfig.ssl_tasks`` once
    registered: ``@hpelib.ssl.TASKS.register(name)``.
    """

    name: str = "ssl"

    def __init__(self, feat_dim: int):
        super().__init__()
        if int(feat_dim) <= 0:
            raise ValueError(f"feat_dim must be a positive integer, got {feat_dim!r}")
        self.feat_dim = int(feat_dim)

    @classmethod
    def image_size_problem(cls, image_size: int, **options) -> str | None:
        """Why the task cannot work on ``image_size`` px inputs with these options, or None (checked before a run)."""
        return None

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        raise NotImplementedError

    def loss(self, features: torch.Tensor, targets) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, targets) -> torch.Tensor:  # so hooks/DDP see a call
        return self.loss(features, targets)

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}"


def make_head(feat_dim: int, out_dim: int, kind: str = "linear", hidden: int | None = None) -> nn.Module:
    """A classifier head: ``"linear"`` or ``"mlp"`` (Linear-BN-ReLU-Linear, hidden = feat_dim by default)."""
    if kind == "linear":
        return nn.Linear(feat_dim, out_dim)
    if kind == "mlp":
        h = int(hidden or feat_dim)
        return nn.Sequential(nn.Linear(feat_dim, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, out_dim))
    raise ValueError(f"head must be 'linear' or 'mlp', got {kind!r}")


def check_images(images: torch.Tensor, task: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{task}: images must be a tensor [B, C, H, W], got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{task}: the batch is empty")


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform [0, 1) float32 drawn on the generator's device, returned on ``device``."""
    return torch.rand(shape, generator=generator, device=_gen_device(generator)).to(device)


def randperm_rows(rows: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """``[rows, n]`` int64, each row an independent uniformly random permutation of ``0..n-1``."""
    keys = torch.rand((rows, n), generator=generator, device=_gen_device(generator))
    return keys.argsort(dim=1).to(device)


def randint(high: int, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=generator, device=_gen_device(generator)).to(device)


def match_memory_format(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Give ``t`` the channels_last layout when ``like`` has it (and is not also plain contiguous)."""
    if like.dim() == 4 and t.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t
