"""Head pose data sets: real formats, crops, transforms, caches, subsets.

Every data set is a ``torch.utils.data.Dataset`` whose item is ``(image,
pose)``: ``FloatTensor[3, S, S]`` (RGB, ImageNet-normalized) and
``FloatTensor[3]`` (yaw, pitch, roll) degrees, all NaN for unlabeled samples.
It also has ``poses`` (float32 ``[N, 3]``), ``names`` and ``set_epoch(epoch)``;
augmentation is a pure function of ``(seed, epoch, index)``.

>>> ds = build_dataset("aflw2000", root="data/AFLW2000", train=False, image_size=64)

Names and their options (besides the common ``crop_fraction``, ``flip``,
``color_jitter``, ``cache_resolution``; :func:`dataset_options` lists them all):

========== ================================================== ===========================================
name       root (default under ``<repo>/data``)                options
========== ================================================== ===========================================
300w_lp    ``300W_LP/`` with AFW, AFW_Flip, HELEN, ... folders ``k_range``, ``eval_k``, ``max_angle``,
                                                               ``drop_invisible_landmarks``, ``subsets``
aflw2000   ``AFLW2000/`` imageNNNNN.jpg + .mat                 ``k``, ``max_angle``, ``drop_invisible_landmarks``
biwi       ``BIWI/`` raw hpdb folders or BIWI_*.npz            ``format``, ``box_mm``, ``train_fraction``,
                                                               ``split_seed``
folder     any folder of .jpg/.png (required)                  ``extensions``
synthetic  ``synthetic/`` (generated on first use)             ``n``, ``data_seed``
========== ================================================== ===========================================

See ``data/README.md`` for downloads and layouts, :mod:`hpelib.data.base` for
how crops are made and :mod:`hpelib.data.cache` for the decoded-crop cache.

Each name is a loader registered in :data:`DATASETS` (a
:class:`hpelib.registry.Registry`; the loaders of the real formats by
``"module:function"`` reference, so their modules are imported on first use).
A loader is called as ``loader(root, preset, *, split, seed, cache_dir,
**options)`` and returns a :class:`PoseDataset`; its other keyword
parameters are its options. ``build_dataset`` makes ``preset`` from
``image_size``, ``train`` and the :data:`PRESET_OPTIONS`; a loader may set an
attribute ``preset_defaults`` (a dict) to change their defaults, and
``creates_root = True`` when it makes its data itself (a study then does not
require its root to exist beforehand).
"""
from __future__ import annotations

from pathlib import Path

from hpelib.registry import Registry, signature_options

from .base import ArraySource, FixedRegions, PoseDataset, make_rng
from .errors import DataError
from .subsets import IndexSubset, kfold_subsets, label_subset, validation_subsets
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalPreset, TrainPreset, denormalize, make_preset

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DEFAULT_ROOTS",
    "DEFAULT_IMAGE_SIZE",
    "PRESET_OPTIONS",
    "DataError",
    "PoseDataset",
    "IndexSubset",
    "build_dataset",
    "dataset_options",
    "label_subset",
    "kfold_subsets",
    "validation_subsets",
    "make_rng",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "denormalize",
    "EvalPreset",
    "TrainPreset",
]

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DEFAULT_ROOTS = {
    "300w_lp": DATA_DIR / "300W_LP",
    "aflw2000": DATA_DIR / "AFLW2000",
    "biwi": DATA_DIR / "BIWI",
    "folder": None,
    "synthetic": DATA_DIR / "synthetic",
}
DATASETS = Registry("data set", supplied=("root", "preset", "split", "seed", "cache_dir"))
"""The data set loaders by name; add one with ``@DATASETS.register(name)`` (see the module doc)."""
DATASETS.add("300w_lp", "hpelib.data.mat_sets:load_300w_lp")
DATASETS.add("aflw2000", "hpelib.data.mat_sets:load_aflw2000")
DATASETS.add("biwi", "hpelib.data.biwi:load_biwi")
DATASETS.add("folder", "hpelib.data.folder:load_folder")
DATASET_NAMES = DATASETS  # the registered names (``in``, ``list()``), kept under its old name
PRESET_OPTIONS = tuple(signature_options(make_preset, ("size", "train")))  # crop_fraction, flip, color_jitter
_SPLITS = ("train", "test", "all")
#: side of the square network input in pixels when a run does not say (the CPU studies' recipe; the paper: 224)
DEFAULT_IMAGE_SIZE = 64
SYNTHETIC_DEFAULT_N = {"train": 2000, "test": 500}


def dataset_options(name: str) -> list[str]:
    """The option names ``build_dataset(name, ...)`` accepts besides its own parameters, sorted."""
    return sorted([*PRESET_OPTIONS, *DATASETS.options(name)])


def build_dataset(name: str, root=None, split: str = "train", image_size: int = DEFAULT_IMAGE_SIZE,
                  train: bool = True, seed: int = 0, cache_dir=None, label_fraction=None, **options):
    """Build a data set by name (see the module docstring for names and options).

    Parameters
    ----------
    name: ``300w_lp``, ``aflw2000``, ``biwi``, ``folder`` or ``synthetic``.
    root: data location; None takes ``DEFAULT_ROOTS[name]`` (``folder`` needs one).
    split: ``train``/``test``/``all``. It selects BIWI's sequence split (or
        ``.npz`` file) and the synthetic set (train and test are generated
        with different seeds); 300W-LP, AFLW2000 and folders are single sets
        and ignore it.
    image_size: side ``S`` of the output images (224 for the paper's ResNet50).
    train: training augmentation (random crop, flip with label flip, jitter)
        or the fixed evaluation crop.
    seed: augmentation seed, and the seed of ``label_fraction``'s subset.
    cache_dir: folder for the decoded-crop cache (None: decode every time).
    label_fraction: None, or a fraction in (0, 1] / count of labelled samples
        to keep (:func:`label_subset`).
    """
    loader = DATASETS.get(name)
    DATASETS.check_options(name, options, extra=PRESET_OPTIONS)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    if root is None:
        root = DEFAULT_ROOTS.get(name)
        if root is None:
            raise ValueError(f"data set {name!r} needs root= (it has no default location)")
    preset_kw = {**getattr(loader, "preset_defaults", {}),
                 **{k: options.pop(k) for k in PRESET_OPTIONS if k in options}}
    preset = make_preset(image_size, train, **preset_kw)
    ds = DATASETS.build(name, root, preset, split=split, seed=seed, cache_dir=cache_dir, **options)
    if label_fraction is not None:
        ds = label_subset(ds, label_fraction, seed)
    return ds


@DATASETS.register("synthetic")
def load_synthetic(root, preset, *, split="train", seed=0, cache_dir=None, cache_resolution=None, n=None,
                   data_seed=0) -> PoseDataset:
    """Wrap ``hpelib.data.synthetic.generate_synthetic``: train uses seed ``2*data_seed``, test ``2*data_seed+1``.

    ``split="all"`` is treated as ``"train"``; ``n`` defaults to
    :data:`SYNTHETIC_DEFAULT_N`. Images are generated at the preset's size and
    cached by the generator under ``root``.
    """
    from .synthetic import generate_synthetic  # written separately; imported lazily

    split = "test" if split == "test" else "train"
    n = SYNTHETIC_DEFAULT_N[split] if n is None else int(n)
    gen_seed = 2 * int(data_seed) + (1 if split == "test" else 0)
    images, poses = generate_synthetic(Path(root), n, preset.size, gen_seed)
    names = [f"synthetic-{split}-s{gen_seed}:{i:06d}" for i in range(len(poses))]
    return PoseDataset(load=ArraySource(images), names=names, poses=poses, regions=FixedRegions(None),
                       preset=preset, dataset_id=f"synthetic:{Path(root).resolve()}:{gen_seed}:{preset.size}",
                       seed=seed, cache_dir=cache_dir, cache_resolution=cache_resolution)


load_synthetic.preset_defaults = {"crop_fraction": 1.0}  # rendered images are already face crops
load_synthetic.creates_root = True  # generated on first use: its root need not exist beforehand
