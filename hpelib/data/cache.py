"""Decoded-crop cache: the base crops of a data set in one memory-mapped ``.npy`` file.

File ``<cache_dir>/<label>-<key[:20]>.npy`` holds uint8 ``[N, B, B, 3]``; a
``.json`` beside it records what it holds (for humans). The key is a SHA-256
of the data set kind and root, the list of sample names, the crop regions
(landmark boxes, k range, factors), train/eval mode, the eval crop fraction
and ``B``: change any of them and a new file is built. The key does not
include file contents or modification times: if you replace image files in
place, delete the cache folder.

Sizes: ``B`` is the image size for evaluation sets and ``cache_resolution``
(default ``round(1.25 * image_size)``) for training sets, so 300W-LP's
122,450 training crops take about 2.4 GB at ``image_size=64`` (``B=80``) and
29 GB at ``image_size=224`` (``B=280``).

The file is written once, completely, under a temporary name and renamed
into place (:func:`hpelib.io.atomic_write`, with the mode the umask gives,
so other users of a shared ``/tmp`` cache can read it): an interrupted build
leaves no cache, and too little free space is an error (``DiskFullError``)
before decoding starts; processes that need the same file at once (DDP
ranks, parallel runs of a study) take a file lock beside it, so one decodes
and the others wait.
It is then opened read-only with ``mmap_mode="r"``, lazily in each
DataLoader worker.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..io import atomic_write, ensure_free_space, file_lock, write_json

__all__ = ["CropCache"]


class _Decode(Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return i, self.ds.decode_base(i)


class CropCache:
    """Memory-mapped base crops of one data set; build with :meth:`ensure`, read with :meth:`array`."""

    def __init__(self, cache_dir, key: str, n: int, size: int, label: str = "data"):
        self.dir = Path(cache_dir)
        self.key = key
        self.shape = (int(n), int(size), int(size), 3)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        self.path = self.dir / f"{safe}-{key[:20]}.npy"
        self._mm = None

    def exists(self) -> bool:
        if not self.path.exists():
            return False
        try:
            mm = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        valid = mm.shape == self.shape and mm.dtype == np.uint8
        del mm  # release the mapping now, not at garbage collection
        return valid

    def ensure(self, dataset, num_workers: int | None = None) -> Path:
        """Build the cache file from ``dataset.decode_base`` unless a valid one exists.

        Processes that need the same file at once (parallel runs of a study)
        wait on a lock beside it: one decodes, the others then find it built.
        """
        if self.exists():
            return self.path
        with file_lock(self.path.with_suffix(".lock"), "set HPELIB_CACHE (studies) or the data spec's cache_dir "
                                                       "to a folder you can write to"):
            if not self.exists():
                self._build(dataset, num_workers)
        return self.path

    def _build(self, dataset, num_workers: int | None) -> None:
        n = self.shape[0]
        if num_workers is None:
            num_workers = 0 if n < 512 else min(4, os.cpu_count() or 1)

        def write(tmp: str) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=self.shape)
            loader = DataLoader(_Decode(dataset), batch_size=None, shuffle=False, num_workers=num_workers,
                                collate_fn=_identity)
            progress = _progress(loader, n, f"caching {self.path.name}")
            for i, arr in progress:
                out[int(i)] = arr
            out.flush()
            del out

        ensure_free_space(self.path, int(np.prod(self.shape)))  # checked first: a memory map cannot report it
        atomic_write(self.path, write)
        write_json(self.path.with_suffix(".json"), {"file": self.path.name, "shape": list(self.shape),
                                                   "key": self.key, "dataset": getattr(dataset, "dataset_id", "")})

    def array(self) -> np.ndarray:
        """The read-only memmap ``[N, B, B, 3]`` (opened on first use in each process)."""
        if self._mm is None:
            self._mm = np.load(self.path, mmap_mode="r")
        return self._mm

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mm"] = None
        return state


def _identity(x):
    return x


def _progress(it, total, desc):
    if total < 2000:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return it
    return tqdm(it, total=total, desc=desc, file=sys.stderr, mininterval=5.0)
