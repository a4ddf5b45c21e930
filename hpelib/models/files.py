"""Reading hpelib checkpoint files (``model.pt``, ``checkpoint.pt``): the one loader.

Files are read with ``torch.load(..., weights_only=True)``: hpelib writes only
tensors and plain values, so no code from a file runs when it is read.
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["read_checkpoint", "plain_state_dict"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def read_checkpoint(path, map_location="cpu", what: str = "checkpoint") -> dict:
    """The dict stored in an hpelib checkpoint (keys ``model_config`` and ``model`` at least)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds; re-raised with the file name
        raise ValueError(f"{what} {path} could not be read by torch.load (weights_only): {err}; "
                         "is it an hpelib model.pt / checkpoint.pt?") from err
    if not isinstance(obj, dict) or "model" not in obj or "model_config" not in obj:
        found = f"keys {list(obj)[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{what} {path} is not an hpelib checkpoint (a dict with 'model_config' and 'model'); "
                         f"found {found}")
    return obj


def plain_state_dict(state: dict) -> dict:
    """``state`` with the prefixes that DDP / torch.compile wrappers add removed from its keys."""
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out
