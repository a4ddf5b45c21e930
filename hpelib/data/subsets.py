"""Subsets that keep the data set interface: label fractions and k-fold splits.

Both pick indices with ``numpy.random.default_rng(seed)``, so the same seed
gives the same subset on every machine. A subset item ``j`` is the parent's
item ``indices[j]``, with the augmentation of the parent index (so a sample
is augmented identically whichever subset it is seen through).
"""
from __future__ import annotations

import numbers

import numpy as np
from torch.utils.data import Dataset

from .base import raw_item

__all__ = ["IndexSubset", "label_subset", "kfold_subsets", "validation_subsets", "labelled_indices"]


class IndexSubset(Dataset):
    """The items ``indices`` of ``dataset``, with ``poses``, ``names`` and ``set_epoch``."""

    def __init__(self, dataset, indices):
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(dataset)):
            raise IndexError(f"subset indices must lie in [0, {len(dataset)}), got {idx.min()}..{idx.max()}")
        self.dataset = dataset
        self.indices = idx
        self.poses = np.asarray(dataset.poses)[idx]
        self.names = [dataset.names[i] for i in idx]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        return self.dataset[int(self.indices[j])]

    def raw_item(self, j):
        return raw_item(self.dataset, int(self.indices[j]))

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    @property
    def epoch(self):
        return self.dataset.epoch

    @property
    def image_size(self):
        return self.dataset.image_size

    def __repr__(self):
        return f"IndexSubset(n={len(self)} of {self.dataset!r})"


def labelled_indices(dataset) -> np.ndarray:
    """Indices whose pose has no NaN."""
    return np.flatnonzero(~np.isnan(np.asarray(dataset.poses)).any(axis=1))


def label_subset(dataset, fraction_or_count, seed: int = 0) -> IndexSubset:
    """A seeded random subset of the *labelled* samples.

    ``fraction_or_count``: a float in (0, 1] (that fraction of the labelled
    samples, rounded, at least 1) or an int >= 1 (that many). ``1.0`` is all
    of them, ``1`` is one sample. Indices are returned in ascending order.
    """
    labelled = labelled_indices(dataset)
    n = len(labelled)
    if n == 0:
        raise ValueError("label_subset: the data set has no labelled sample")
    x = fraction_or_count
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"label_subset: fraction_or_count must be a float in (0, 1] or an int >= 1, got {x!r}")
    if isinstance(x, numbers.Integral):
        count = int(x)
        if not 1 <= count <= n:
            raise ValueError(f"label_subset: count must be in [1, {n}] (the labelled samples), got {count}")
    else:
        if not 0.0 < float(x) <= 1.0:
            raise ValueError(f"label_subset: fraction must be in (0, 1], got {x}")
        count = max(1, int(round(float(x) * n)))
    chosen = np.random.default_rng(seed).permutation(labelled)[:count]
    return IndexSubset(dataset, np.sort(chosen))


def kfold_subsets(dataset, k: int, fold: int, seed: int = 0) -> tuple[IndexSubset, IndexSubset]:
    """``(train, test)`` of fold ``fold`` of a seeded ``k``-fold split over all indices.

    The indices are shuffled once with the seed and cut into ``k`` near-equal
    parts (``numpy.array_split``); fold ``f`` tests part ``f`` and trains on
    the others, so over ``fold = 0..k-1`` every index is tested exactly once.
    """
    n = len(dataset)
    if not isinstance(k, numbers.Integral) or not 2 <= k <= n:
        raise ValueError(f"kfold_subsets: k must be an int in [2, {n}], got {k!r}")
    if not isinstance(fold, numbers.Integral) or not 0 <= fold < k:
        raise ValueError(f"kfold_subsets: fold must be in [0, {k}), got {fold!r}")
    train, test = _split_indices(np.arange(n), k, fold, seed)
    return IndexSubset(dataset, train), IndexSubset(dataset, test)


def _split_indices(indices: np.ndarray, k: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    parts = np.array_split(np.random.default_rng(seed).permutation(np.asarray(indices)), k)
    test = np.sort(parts[fold])
    train = np.sort(np.concatenate([p for i, p in enumerate(parts) if i != fold]))
    return train, test


def validation_subsets(train_set, test_sets: dict, k: int, fold: int, seed: int, validation: int):
    """``(train, {name: validation})`` inside the training folds of fold ``fold`` (for choosing a recipe).

    The ``k - 1`` training folds of :func:`kfold_subsets` are shuffled again
    (same ``seed``) into ``validation`` parts: the run trains on all but the
    first and tests on the first. No index of the outer test fold ``fold`` is
    in either. ``test_sets`` hold the same images as ``train_set`` (evaluated
    without augmentation).
    """
    n = len(train_set)
    outer_train, _ = _split_indices(np.arange(n), k, fold, seed)
    if not isinstance(validation, numbers.Integral) or not 2 <= validation <= len(outer_train):
        raise ValueError(f"validation must be an int in [2, {len(outer_train)}], got {validation!r}")
    inner_train, inner_val = _split_indices(outer_train, validation, 0, seed)
    return (IndexSubset(train_set, inner_train),
            {name: IndexSubset(ds, inner_val) for name, ds in test_sets.items()})
