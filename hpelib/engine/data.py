"""DataLoaders and seeds that make a run a pure function of its seed.

Every epoch gets its own seeds derived from ``(seed, epoch[, rank], purpose)``
with ``numpy.random.SeedSequence``: the shuffling order, the global torch RNG
(dropout, anything the model draws without an explicit generator) and the
generator handed to ``model.losses`` for the SSL views. An interrupted run
resumed at epoch ``e`` therefore sees exactly what an uninterrupted run saw,
whatever the number of DataLoader workers (data sets draw their augmentation
from ``(seed, epoch, index)`` after ``set_epoch``).
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.base import raw_item
from ..data.transforms import finish_batch

_PURPOSE = {"global": 0, "loader": 1, "views": 2}


def derive_seed(seed: int, epoch: int, purpose: str, rank: int = 0) -> int:
    """A 63-bit seed for ``purpose`` in ``('global', 'loader', 'views')``."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(rank), _PURPOSE[purpose]])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy/python in a DataLoader worker from the per-worker torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def view_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator passed to ``model.losses(..., generator=)`` for one epoch, on ``device``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, epoch, "views", rank))
    return g


class LoaderItems(Dataset):
    """The items the engine's loaders move: the raw uint8 items of ``dataset`` (:func:`hpelib.data.base.raw_item`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return raw_item(self.dataset, index)


def batch_inputs(batch, device: torch.device, channels_last: bool = False):
    """A loader batch -> ``(model input images on device, poses on device)``.

    Raw batches ``(uint8 images, poses, jitter factors)`` are finished on
    ``device`` after the copy (:func:`hpelib.data.transforms.finish_batch`);
    batches of finished float images (a data set without ``raw_item``) are
    only copied.
    """
    if len(batch) == 3:
        images, poses, factors = batch
        images = finish_batch(images, factors, device, channels_last)
    else:
        images, poses = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.as_tensor(poses).to(device, dtype=torch.float32, non_blocking=True)


def make_loader(dataset, batch_size: int, *, shuffle: bool, num_workers: int, device: torch.device,
                drop_last: bool, generator: torch.Generator | None = None, sampler=None) -> DataLoader:
    """A DataLoader of ``dataset``'s raw items (:class:`LoaderItems`); finish its batches with :func:`batch_inputs`."""
    return DataLoader(
        dataset if isinstance(dataset, LoaderItems) else LoaderItems(dataset),
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
        persistent_workers=False,
    )


def train_loader(dataset, cfg, epoch: int, device: torch.device, rank: int = 0, world_size: int = 1):
    """The shuffled training loader of ``epoch`` (after ``dataset.set_epoch(epoch)``).

    The incomplete last batch is dropped (BatchNorm and the contrastive SSL
    tasks want full batches) unless the data set is smaller than one batch.
    Under DDP a ``DistributedSampler`` (seeded with ``cfg.seed``, ``set_epoch``)
    gives each rank its shard.
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    n = len(dataset)
    if n == 0:
        raise ValueError("the training set is empty")
    per_rank = -(-n // world_size)
    drop_last = per_rank >= cfg.batch_size
    gen = torch.Generator()
    gen.manual_seed(derive_seed(cfg.seed, epoch, "loader"))
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    return make_loader(dataset, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, device=device,
                       drop_last=drop_last, generator=gen, sampler=sampler)


def epoch_batches(loader: DataLoader) -> list[list[int]]:
    """The index batches ``loader`` will yield in its next pass, computed without loading anything.

    Iterating a DataLoader first draws its workers' base seed from the loader's
    generator, then the shuffling permutation; this draws both in that order
    and restores the generator, so the loader's own pass is unchanged (a test
    checks the batches against a real pass).
    """
    g = loader.generator
    state = None if g is None else g.get_state()
    if g is not None:
        torch.empty((), dtype=torch.int64).random_(generator=g)
    batches = [list(b) for b in loader.batch_sampler]
    if g is not None:
        g.set_state(state)
    return batches


def remaining_loader(loader: DataLoader, done_steps: int) -> DataLoader:
    """``loader``'s pass without its first ``done_steps`` batches (a run resumed in the middle of an epoch)."""
    if done_steps <= 0:
        return loader
    return DataLoader(loader.dataset, batch_sampler=epoch_batches(loader)[done_steps:],
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator)


def steps_per_epoch(n: int, cfg, world_size: int = 1) -> int:
    per_rank = -(-n // world_size)
    steps = per_rank // cfg.batch_size if per_rank >= cfg.batch_size else 1
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    return steps
