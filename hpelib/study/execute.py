"""Executing one run: the state of its folder, and its notebook in a child process.

A run folder holds, besides what the notebook writes (:mod:`hpelib.runs`),
``study_run.json``: the parameters the runner gave it, their fingerprint, and
whether the notebook ran to its end. A run is *complete* when the notebook
finished, ``metrics.json`` exists and the fingerprint is unchanged. A run whose
parameters changed (or whose pre-training changed) is started afresh in an
emptied folder; an incomplete run with unchanged parameters keeps its folder
so that the engine resumes from its checkpoint.

Each notebook runs in its own child process (:mod:`.notebook_process`) with
the kernel's environment (``PYTHONPATH``, one GPU in ``CUDA_VISIBLE_DEVICES``,
``OMP_NUM_THREADS``) and its stderr in the run's ``kernel.log``: the runner's
own environment and file descriptors are never changed. The child runs in a
session of its own, so a terminal's Ctrl-C reaches the runner alone, which
then stops its runs: :meth:`Execution.stop` sends SIGTERM (the kernel saves
a mid-epoch checkpoint) and :meth:`Execution.wait_stopped` kills what is
still alive after :data:`STOP_GRACE_S` seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..io import read_json, write_json
from ..runs import FAILED, KERNEL_LOG, METRICS, STUDY_RUN, RunFolder, broken_seal, seal
from . import notebook_process
from .plan import Run
from .schema import REPO_ROOT

__all__ = ["is_complete", "finished_unobserved", "prepare_folder", "write_meta", "Execution", "kernel_env", "gpu_ids",
           "notebook_request", "checked_result", "error_record", "RunFolderHeld", "STOP_GRACE_S"]

#: seconds a stopped run gets to save its state before it is killed (below SLURM's default KillWait of 30 s)
STOP_GRACE_S = 20.0


class RunFolderHeld(RuntimeError):
    """A run's folder is held by a living process (a run started by an earlier runner, still going)."""

_REQUEST = ".execution_request.json"
_RESULT = ".execution_result.json"


def _meta(folder: Path) -> dict | None:
    try:
        return read_json(folder / STUDY_RUN)
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(run: Run, out) -> bool:
    """The run folder holds this run's result: ``metrics.json`` under the run's fingerprint, no ``FAILED``.

    Decided from the folder itself, not from the runner's record alone: a run
    that a process finished while no runner watched (the runner was killed) is
    complete too (:func:`finished_unobserved`), never trained again. A folder
    that a living process still holds is not complete yet.
    """
    d = run.folder(out)
    meta = _meta(d) if (d / METRICS).is_file() else None
    if not meta or meta.get("fingerprint") != run.fingerprint or damage(run, out) is not None:
        return False
    if meta.get("complete") is True:
        return True
    return not (d / FAILED).is_file() and notebook_process.held_by(d) is None


def damage(run: Run, out) -> str | None:
    """What is wrong with the result of a run that finished under this fingerprint, or None.

    A finished run's record lists its result files (:func:`hpelib.runs.seal`); a
    file missing, truncated or changed since, or a ``metrics.json`` that is not
    valid (JSON, finite) makes the result untrusted: the runner trains the run
    again. None also for a run that has not finished.
    """
    d = run.folder(out)
    meta = _meta(d)
    if not meta or meta.get("fingerprint") != run.fingerprint or not (d / METRICS).is_file():
        return None
    if isinstance(meta.get("files"), dict):
        return broken_seal(d, meta["files"])
    try:
        RunFolder(d).read_metrics()
    except (OSError, ValueError) as e:
        return str(e)
    return None


def finished_unobserved(run: Run, out) -> bool:
    """Complete, but the runner never recorded it (it finished after its runner was gone)."""
    meta = _meta(run.folder(out)) or {}
    return is_complete(run, out) and meta.get("complete") is not True


def prepare_folder(run: Run, out, force: bool = False) -> Path:
    """The run's folder, emptied when ``force`` or when its parameters changed; marked incomplete.

    :class:`RunFolderHeld` when a living process holds the folder's run lock.
    """
    d = run.folder(out)
    holder = notebook_process.held_by(d) if d.is_dir() else None
    if holder is not None:
        raise RunFolderHeld(f"{d} is held by process {holder}, still running this run (started by an earlier "
                            f"runner); wait for it to end or stop it (kill {holder}), then run the study again")
    if force and d.is_dir():
        shutil.rmtree(d)  # --force: start over, never return a stored result or resume a checkpoint
    elif (d / STUDY_RUN).is_file() and (_meta(d) or {}).get("fingerprint") != run.fingerprint:
        shutil.rmtree(d)  # parameters changed: never resume from a stale checkpoint
    elif damage(run, out) is not None:
        shutil.rmtree(d)  # a damaged result: its checkpoint would hand back the same result
    d.mkdir(parents=True, exist_ok=True)
    for stale in (FAILED, METRICS, _REQUEST, _RESULT):
        (d / stale).unlink(missing_ok=True)
    for left in d.glob(".*.tmp"):  # a write that a kill interrupted (hpelib.io.atomic_write's temporary file)
        left.unlink(missing_ok=True)
    write_meta(run, out, complete=False)
    return d


def write_meta(run: Run, out, complete: bool, seconds: float | None = None) -> None:
    """The run's record, ``study_run.json``; once complete it lists the result files it vouches for (``files``)."""
    record = {"run_id": run.run_id, "kind": run.kind, "notebook": str(run.notebook), "complete": complete,
              "seconds": seconds, "fingerprint": run.fingerprint, "deps": run.deps, "params": run.params}
    if complete:
        record["files"] = seal(run.folder(out))
    write_json(run.folder(out) / STUDY_RUN, record)


def gpu_ids(spec: str | None) -> list[str]:
    """GPUs to share among jobs: ``spec`` ("0,1"), else ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``."""
    if spec:
        return [g.strip() for g in spec.split(",") if g.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    exe = shutil.which("nvidia-smi")  # not torch: slow to import, and CUDA must not start in the runner
    if not exe:
        return []
    try:
        listing = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(l for l in listing.splitlines() if l.startswith("GPU "))]


def kernel_env(jobs: int, gpu: str | None) -> dict[str, str]:
    """Environment variables a run's kernel gets on top of the runner's."""
    env = {}
    pp = os.environ.get("PYTHONPATH", "")
    if str(REPO_ROOT) not in pp.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([pp] if pp else []))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    elif jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


class Execution:
    """A run's notebook executing in a child process; :meth:`poll` gives its outcome once it ended."""

    def __init__(self, run: Run, folder: Path, env: dict[str, str], timeout_s: float | None = None):
        self.run, self.folder = run, Path(folder)
        request = dict(notebook_request(run, self.folder, timeout_s), result=str(self.folder / _RESULT))
        (self.folder / _RESULT).unlink(missing_ok=True)
        write_json(self.folder / _REQUEST, request)
        with open(self.folder / KERNEL_LOG, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, notebook_process.__file__, str(self.folder / _REQUEST)],
                env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.folder,
                start_new_session=True)

    def poll(self) -> dict | None:
        """``None`` while running, then ``{"ok", "seconds", "error"}``."""
        code = self.process.poll()
        if code is None:
            return None
        try:
            result = read_json(self.folder / _RESULT)
        except (OSError, json.JSONDecodeError):
            free = _free_bytes(self.folder)
            if free is not None and free < _NEARLY_FULL:  # it could not write its result: the disk is full
                result = failed_outside_notebook(
                    "DiskFullError", f"the notebook process could not write its result into {self.folder}: the disk "
                                     f"is full ({free / 2**20:.1f} MiB free); free space and run the study again")
            else:
                result = failed_outside_notebook(
                    "ProcessDied", f"the notebook process exited with status {code} without a result (killed? see "
                                   f"{self.folder / KERNEL_LOG})")
        for name in (_REQUEST, _RESULT):
            (self.folder / name).unlink(missing_ok=True)
        return checked_result(result, self.folder)

    def stop(self) -> None:
        """Ask the run to stop (SIGTERM: its kernel saves its state); returns at once, see :meth:`wait_stopped`."""
        if self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self, deadline: float) -> bool:
        """Wait until ``deadline`` (``time.monotonic()``) for the stopped run; then kill its process group.

        True when it ended by itself. Its kernel, in a session of its own,
        ends within a second of its parent (ipykernel's parent poller).
        """
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            ended = True
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                self.process.kill()
            self.process.wait()
            ended = False
        for name in (_REQUEST, _RESULT):
            (self.folder / name).unlink(missing_ok=True)
        return ended


_NEARLY_FULL = 1 << 20  # bytes free below which a missing result is put down to a full disk


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def notebook_request(run: Run, folder: Path, timeout_s: float | None = None) -> dict:
    """The arguments of :func:`.notebook_process.execute` that run ``run``'s notebook into ``folder``."""
    return {"notebook": str(run.notebook), "output": str(folder / run.notebook.name),
            "parameters": dict(run.params, out_dir=str(folder)), "cwd": str(folder), "timeout_s": timeout_s}


def checked_result(result: dict, folder: Path) -> dict:
    """A finished notebook's ``{"ok", "seconds", "error"}``, failed when it wrote no ``metrics.json``."""
    if result["ok"] and not (Path(folder) / METRICS).is_file():
        result = dict(result, ok=False, error=error_record(
            "MissingMetrics", f"the notebook finished but wrote no {METRICS} in {folder}"))
    return result


def error_record(ename: str, evalue: str) -> dict:
    """The ``error`` of a run that failed outside any notebook cell."""
    return {"cell_index": None, "exec_count": None, "ename": ename, "evalue": evalue, "cell": None}


def failed_outside_notebook(ename: str, evalue: str) -> dict:
    """The ``{"ok", "seconds", "error"}`` outcome of a run that failed before or after its notebook."""
    return {"ok": False, "seconds": 0.0, "error": error_record(ename, evalue)}
