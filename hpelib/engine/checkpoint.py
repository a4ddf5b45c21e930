"""Checkpoint files: written atomically, loadable with ``torch.load(weights_only=True)``.

Two kinds live in a run folder:

* ``checkpoint.pt`` (resumable, rewritten after every epoch): ``model_config``
  (dict), ``model`` (state_dict), ``epoch`` (number of finished epochs),
  ``optimizer``, ``scheduler``, ``train_config``, ``history``, ``rng``
  (torch/cuda/numpy/python generator states), ``kind`` (``train`` or
  ``pretrain``) and, once the run is complete, ``result``.
* ``model.pt`` (final weights only): ``model_config``, ``model``, ``epoch``.

Everything inside is a tensor or a plain Python value, so the files load with
``weights_only=True`` (no code runs when reading someone else's file).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write
from ..models.files import read_checkpoint  # noqa: F401  (the reader of these files)
from ..runs import CHECKPOINT, MODEL  # the run folder's file names


def save(obj: dict, path: str | Path) -> Path:
    """``torch.save`` through :func:`hpelib.io.atomic_write` (never a half-written file)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def model_config_dict(model_cfg) -> dict:
    if isinstance(model_cfg, dict):
        return dict(model_cfg)
    return model_cfg.to_dict()


def as_model_config(model_cfg):
    """A ``hpelib.models.ModelConfig`` from a ModelConfig or a plain dict."""
    from ..models import ModelConfig

    if isinstance(model_cfg, ModelConfig):
        return model_cfg
    if isinstance(model_cfg, dict):
        return ModelConfig.from_dict(model_cfg)
    raise TypeError(f"model config must be a ModelConfig or a dict, got {type(model_cfg).__name__}")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model stored in an hpelib ``model.pt`` / ``checkpoint.pt``, or in a run folder.

    A folder means its ``model.pt`` (final weights), else its ``checkpoint.pt``
    (latest epoch). Returns the model in eval mode on ``device`` (``auto`` ->
    cuda if available); ``model.config`` is the checkpoint's ``ModelConfig``.
    Building uses ``hpelib.models.load_model`` (weights loaded strictly, the
    config's ``init`` ignored since the checkpoint holds all weights).
    """
    from ..models import load_model
    from .config import resolve_device

    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / MODEL, path / CHECKPOINT) if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds neither {MODEL} nor {CHECKPOINT}; train a model there first")
        path = found[0]
    model = load_model(path, map_location="cpu")
    return model.to(resolve_device(device)).eval()
