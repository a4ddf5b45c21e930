"""Reading hpelib checkpoint files (``model.pt``, ``checkpoint.pt``): the one loader.

Files are read with ``torch.load(..., weights_only=True)``: hpelib writes only
tensors and plain values, so no code from a file runs when it is read. A file
that cannot be used raises :class:`UnreadableCheckpoint` (a ``ValueError``)
with one message: what the file is, what was expected and what to do.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..io import format_bytes

__all__ = ["read_checkpoint", "plain_state_dict", "UnreadableCheckpoint"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
EXPECTED = "an hpelib model.pt or checkpoint.pt written by hpelib (torch.save of a dict with model_config and model)"
_REDO = "copy it again or train again to re-create it"


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that is missing its content or is not hpelib's; ``problem`` says what it is.

    ``problem`` reads after the file name: ``"(0 bytes) is empty"``.
    """

    def __init__(self, message: str, path: Path, problem: str):
        super().__init__(message)
        self.path, self.problem = path, problem

    def __reduce__(self):  # picklable (DDP ranks, worker processes) despite the extra arguments
        return type(self), (str(self), self.path, self.problem)


def read_checkpoint(path, map_location="cpu", what: str = "checkpoint", mmap: bool = False) -> dict:
    """The dict stored in an hpelib checkpoint (keys ``model_config`` and ``model`` at least).

    ``mmap=True`` maps the tensors instead of reading them: quick when only
    the plain values (``epoch``, ``train_config``) are wanted. Raises
    ``FileNotFoundError`` when there is no file and
    :class:`UnreadableCheckpoint` when it cannot be used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds; PyTorch's long text is not shown
        problem, fix = _load_problem(path, err)
        raise _unreadable(path, what, problem, fix) from None
    if not isinstance(obj, dict) or "model" not in obj or "model_config" not in obj:
        found = f"a dict with keys {list(obj)[:8]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise _unreadable(path, what, f"is {found}, without 'model_config' and 'model'",
                          "a plain state_dict can be wrapped as torch.save({'model_config': "
                          "ModelConfig(...).to_dict(), 'model': state_dict}, path)")
    return obj


def _unreadable(path: Path, what: str, problem: str, fix: str) -> UnreadableCheckpoint:
    """The error for ``path``: ``<what> <path> (<size>) <problem>; expected ...; <fix>.``"""
    problem = f"({format_bytes(path.stat().st_size)}) {problem}"
    return UnreadableCheckpoint(f"{what} {path} {problem}; expected {EXPECTED}; {fix}.", path, problem)


def _load_problem(path: Path, err: Exception) -> tuple[str, str]:
    """What is wrong with a file ``torch.load`` failed on (``err``), and the fix."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "is empty", _REDO
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "is truncated (a zip file whose end is missing)", _REDO
    if head != b"PK\x03\x04":
        return "is not a PyTorch zip file", "check that the path names the right file, else " + _REDO
    refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
    if isinstance(err, pickle.UnpicklingError) and refused:
        return (f"holds a pickled Python object ({refused.group(1)}) that torch.load(weights_only=True) "
                "refuses, so that no code from a file runs",
                "save only tensors and plain values (e.g. the state_dict), as hpelib does")
    first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return f"is damaged (torch.load: {first_line})", _REDO


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
