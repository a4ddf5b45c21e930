"""A folder of unlabeled face images (for self-supervised pre-training).

Every ``.jpg``/``.jpeg``/``.png`` file under ``root`` (recursively, sorted by
relative path) is one sample; names are the relative paths and poses are NaN.
Images are taken whole (treated as already-cropped faces, e.g. the 120x120
AFLW crops of 3DDFA); the train/eval presets then cut their square.
Listing does not decode anything: a corrupt file raises :class:`DataError`
when its item is read (or when the cache is built).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import FileSource, FixedRegions, PoseDataset
from .errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(root, extensions=IMAGE_EXTENSIONS) -> list[str]:
    """Sorted relative paths (posix) of the image files under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; point root at a folder of face images (see data/README.md)")
    exts = tuple(e.lower() for e in extensions)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        out.extend((rel / f).as_posix() for f in filenames if f.lower().endswith(exts) and not f.startswith("."))
    out.sort()
    if not out:
        raise DataError(f"{root}: no image files ({', '.join(exts)}) in this folder or below; "
                        "put the face images there (see data/README.md)")
    return out


def load_folder(root, preset, *, split="all", seed=0, cache_dir=None, cache_resolution=None,
                extensions=IMAGE_EXTENSIONS) -> PoseDataset:
    """Every image under ``root`` with one of ``extensions``, unlabelled (a single set: ``split`` is ignored)."""
    root = Path(root)
    names = list_images(root, extensions)
    poses = np.full((len(names), 3), np.nan, dtype=np.float32)
    return PoseDataset(load=FileSource([root / n for n in names]), names=names, poses=poses,
                       regions=FixedRegions(None), preset=preset, seed=seed, cache_dir=cache_dir,
                       cache_resolution=cache_resolution, dataset_id=f"folder:{root.resolve()}")
