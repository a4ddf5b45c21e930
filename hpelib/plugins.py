"""Your own code in a run: the Python modules a study (or a run spec) imports before it is checked.

A module that registers an SSL task (``@TASKS.register``), a backbone, a pose
head or a data set must be imported wherever a run is planned or built: in the
study runner (so the study's names check out) and in every notebook kernel
and SLURM job (so the run finds them). A study says so with ``imports:``
(docs/STUDY.md); its run specs carry ``imports`` and ``import_paths``, and
:meth:`hpelib.spec.RunSpec.from_dict` calls :func:`import_modules` first.
"""
from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

__all__ = ["PluginError", "import_modules", "module_digest"]


class PluginError(ValueError):
    """A module named in ``imports`` cannot be imported; the message names it and why."""


def import_modules(modules, paths=(), where: str = "imports") -> dict:
    """Import ``modules`` (names), with ``paths`` put first on ``sys.path``: ``{name: module}``.

    A module that is missing or fails while importing raises one
    :class:`PluginError` naming it, ``where`` it was asked for, and the
    exception, without a traceback.
    """
    for p in reversed([str(Path(p)) for p in paths or ()]):
        if p not in sys.path:
            sys.path.insert(0, p)
    out = {}
    for name in modules or ():
        if not isinstance(name, str) or not name:
            raise PluginError(f"{where}: a module name must be a non-empty string, got {name!r}")
        try:
            out[name] = importlib.import_module(name)
        except ModuleNotFoundError as e:
            searched = ", ".join(str(p) for p in paths) or "PYTHONPATH"
            raise PluginError(f"{where}: cannot import module {name!r} ({e}); put {name}.py beside the study "
                              f"file, or its folder on PYTHONPATH (searched first: {searched})") from None
        except Exception as e:  # the module itself fails while importing
            raise PluginError(f"{where}: importing module {name!r} failed: {type(e).__name__}: {e}") from None
    return out


def module_digest(module) -> str:
    """SHA-256 (16 hex digits) of a module's own source file; ``""`` for a module without one."""
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return ""
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]
