"""Head pose data sets: real formats, crops, transforms, caches, subsets.

Every data set is a ``torch.utils.data.Dataset`` whose item is ``(image,
pose)``: ``FloatTensor[3, S, S]`` (RGB, ImageNet-normalized) and
``FloatTensor[3]`` (yaw, pitch, roll) degrees, all NaN for unlabeled samples.
It also has ``poses`` (float32 ``[N, 3]``), ``names`` and ``set_epoch(epoch)``;
augmentation is a pure function of ``(seed, epoch, index)``.

>>> ds = build_dataset("aflw2000", root="data/AFLW2000", train=False, image_size=64)

Names and their options (besides the common ``crop_fraction``, ``flip``,
``color_jitter``, ``cache_resolution``):

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
"""
from __future__ import annotations

from pathlib import Path

from .base import ArraySource, FixedRegions, PoseDataset, make_rng
from .errors import DataError
from .subsets import IndexSubset, kfold_subsets, label_subset
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalPreset, TrainPreset, denormalize, make_preset

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_ROOTS",
    "DataError",
    "PoseDataset",
    "IndexSubset",
    "build_dataset",
    "label_subset",
    "kfold_subsets",
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
DATASET_NAMES = tuple(DEFAULT_ROOTS)

_COMMON = ("crop_fraction", "flip", "color_jitter", "cache_resolution")
_OPTIONS = {
    "300w_lp": ("k_range", "eval_k", "max_angle", "drop_invisible_landmarks", "subsets"),
    "aflw2000": ("k", "max_angle", "drop_invisible_landmarks"),
    "biwi": ("format", "box_mm", "train_fraction", "split_seed"),
    "folder": ("extensions",),
    "synthetic": ("n", "data_seed"),
}
_SPLITS = ("train", "test", "all")
SYNTHETIC_DEFAULT_N = {"train": 2000, "test": 500}


def build_dataset(name: str, root=None, split: str = "train", image_size: int = 64, train: bool = True,
                  seed: int = 0, cache_dir=None, label_fraction=None, **options):
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
    if name not in _OPTIONS:
        raise ValueError(f"unknown data set {name!r}; valid names: {list(DATASET_NAMES)}")
    valid = _COMMON + _OPTIONS[name]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for data set {name!r}; valid options: {sorted(valid)}")
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    if root is None:
        root = DEFAULT_ROOTS[name]
        if root is None:
            raise ValueError(f"data set {name!r} needs root= (a folder of face images)")
    preset_kw = {k: options.pop(k) for k in ("crop_fraction", "flip", "color_jitter") if k in options}
    if name == "synthetic" and "crop_fraction" not in preset_kw:
        preset_kw["crop_fraction"] = 1.0  # rendered images are already face crops
    preset = make_preset(image_size, train, **preset_kw)
    common = dict(seed=seed, cache_dir=cache_dir, cache_resolution=options.pop("cache_resolution", None))

    if name == "300w_lp":
        from .mat_sets import load_300w_lp

        ds = load_300w_lp(root, preset, **common, **options)
    elif name == "aflw2000":
        from .mat_sets import load_aflw2000

        ds = load_aflw2000(root, preset, **common, **options)
    elif name == "biwi":
        from .biwi import load_biwi

        ds = load_biwi(root, preset, split=split, **common, **options)
    elif name == "folder":
        from .folder import load_folder

        ds = load_folder(root, preset, **common, **options)
    else:
        ds = _build_synthetic(root, split, preset, common, **options)

    if label_fraction is not None:
        ds = label_subset(ds, label_fraction, seed)
    return ds


def _build_synthetic(root, split, preset, common, n=None, data_seed=0):
    """Wrap ``hpelib.data.synthetic.generate_synthetic``: train uses seed ``2*data_seed``, test ``2*data_seed+1``.

    ``split="all"`` is treated as ``"train"``. Images are generated at the
    requested ``image_size`` and cached by the generator under ``root``.
    """
    from .synthetic import generate_synthetic  # written separately; imported lazily

    split = "test" if split == "test" else "train"
    n = SYNTHETIC_DEFAULT_N[split] if n is None else int(n)
    gen_seed = 2 * int(data_seed) + (1 if split == "test" else 0)
    images, poses = generate_synthetic(Path(root), n, preset.size, gen_seed)
    names = [f"synthetic-{split}-s{gen_seed}:{i:06d}" for i in range(len(poses))]
    return PoseDataset(load=ArraySource(images), names=names, poses=poses, regions=FixedRegions(None),
                       preset=preset, dataset_id=f"synthetic:{Path(root).resolve()}:{gen_seed}:{preset.size}",
                       **common)
