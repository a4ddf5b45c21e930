"""Atomic writes: a result or checkpoint file is either complete or absent; a lock for shared caches.

Files are created with the mode ``open()`` would give them (``0o666`` less the
umask), so results and the shared caches are as readable as the user's other
files. A write that fails because the disk is full raises :class:`DiskFullError`,
which says what was being written, how much space is free and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

#: errno values that mean "no room": a full file system or an exhausted quota
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: a writer that fails with a RuntimeError (torch.save) while less than this is free ran out of space
_ALMOST_FULL = 1 << 20
_UMASK_LOCK = threading.Lock()


class DiskFullError(OSError):
    """A write failed, or would fail, for lack of space (``errno`` ENOSPC, ``filename`` the target).

    ``str()`` is the message alone: the target, the bytes being written, the
    free space and the fix.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def format_bytes(n: int) -> str:
    """``"512 bytes"`` below 1 KiB, else one decimal in the largest binary unit: ``"2.9 KiB"``, ``"1.2 GiB"``."""
    if n < 1024:
        return f"{int(n)} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def current_umask() -> int:
    """The process's umask: read from ``/proc/self/status`` (Linux), else set and restored under a lock."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:  # another thread creating a file in between would briefly see this umask
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _free_bytes(folder: Path) -> Optional[int]:
    """Free bytes on the file system of ``folder`` for this user, ``None`` when it cannot be asked."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(path: Path, size: int, exact: bool, free: Optional[int]) -> DiskFullError:
    """The :class:`DiskFullError` for writing ``size`` bytes (``exact`` or a lower bound) to ``path``."""
    writing = format_bytes(size) if exact else f"at least {format_bytes(size)}"
    room = "free space unknown" if free is None else f"{format_bytes(free)} free"
    need = f"writing {writing}, {room}" if size > 0 else room  # "at least 0 bytes" says nothing
    return DiskFullError(
        errno.ENOSPC,
        f"cannot write {path}: not enough free space ({need} on {path.parent}). "
        f"Free space or write elsewhere; the previous {path.name}, if any, is unchanged.",
        str(path))


def _out_of_space(err: BaseException, free: Optional[int]) -> bool:
    """Whether ``err``, raised by a writer while ``free`` bytes are free, means the disk is full.

    An ``OSError`` says so by its errno; ``torch.save`` raises a ``RuntimeError``
    ("basic_ios::clear: iostream error", "PytorchStreamWriter failed writing
    file"), taken as a full disk when almost nothing is free.
    """
    if isinstance(err, OSError):
        return err.errno in _NO_SPACE
    return isinstance(err, RuntimeError) and free is not None and free < _ALMOST_FULL


def ensure_free_space(path: str | os.PathLike, size: int) -> None:
    """Raise :class:`DiskFullError` unless ``size`` bytes are free where ``path`` will be written.

    For files filled through a memory map (the data caches): there a full disk
    would kill the process (SIGBUS) instead of raising an error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = _free_bytes(path.parent)
    if free is not None and free < size:
        raise _disk_full(path, size, True, free)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], size: Optional[int] = None) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file lies in the same folder, so the rename is atomic; an
    interrupted write leaves the old file (or none) in place. The file gets
    the mode ``open()`` would give it (``0o666`` less the umask), not the
    ``0o600`` of a temporary file. A write that fails for lack of space raises
    :class:`DiskFullError`; ``size``, when known, is the number of bytes
    being written, for its message (else the temporary file's size then).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except Exception as err:
            free = _free_bytes(path.parent)
            if not _out_of_space(err, free):
                raise
            exact = size is not None
            raise _disk_full(path, size if exact else os.path.getsize(tmp), exact, free) from err
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, fix: str = "point it at a folder you can write to"):
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    For caches that several processes of a study may fill at once: the first
    one builds the entry, the others wait and then find it. Where ``fcntl`` is
    missing (Windows) it does not lock, which only costs duplicated work. A
    folder this process may not write into is a ``PermissionError`` naming it
    and ``fix`` (the variable or option that moves the cache).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
    except PermissionError:
        raise PermissionError(f"cannot write into {path.parent} (permission denied, or read-only): {fix}") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys (numpy numbers and arrays, paths allowed)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode("utf-8")

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, _write, size=len(data))


def output_folder_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be made and written into as a folder (``"lies under the file F"``, ...), or None."""
    path = Path(path).absolute()
    existing = path
    while not _stat_ok(existing):
        existing = existing.parent
    if existing != path and not existing.is_dir():
        return f"lies under the file {existing}"
    if existing == path and not path.is_dir():
        return "is a file, not a folder"
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    long = [part for part in path.relative_to(existing).parts if len(part.encode()) > limit]
    if long:
        return f"has a name longer than this file system allows ({limit} bytes): {long[0][:40]}..."
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written: {existing} is read-only or not yours"
    return None


def _stat_ok(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:  # missing, or a name too long to exist
        return False
    return True


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


# ----------------------------------------------------------------------------- scratch folders
_SCRATCH: list[Path] = []


def scratch_dir(what: str) -> Path:
    """A new temporary folder ``hpelib-<what>-*`` for a notebook run without ``out_dir``.

    :func:`remove_scratch` (the notebooks' last cell) and the end of the
    process remove it, so notebook runs and tests leave nothing behind in the
    temporary directory; give ``out_dir`` to keep the files.
    """
    path = Path(tempfile.mkdtemp(prefix=f"hpelib-{what}-"))
    if not _SCRATCH:
        import atexit

        atexit.register(remove_scratch)
    _SCRATCH.append(path)
    return path


def remove_scratch() -> list[Path]:
    """Remove the folders :func:`scratch_dir` made in this process; returns them."""
    removed = []
    while _SCRATCH:
        path = _SCRATCH.pop()
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
