"""Execute one notebook with papermill, as a child process of the study runner.

Run as a script (``python notebook_process.py REQUEST.json``), not imported:
it needs only the standard library, papermill and nbformat, so it starts fast,
and the runner's own process keeps its environment and file descriptors (the
child gets the kernel's environment variables, its stderr is the run's
``kernel.log``). The request is ``{"notebook", "output", "parameters", "cwd",
"timeout_s", "result"}``; the child writes ``{"ok", "seconds", "error"}`` to
the ``result`` path. The error names the failing cell: its index in the
executed notebook, execution count, exception name and message, and the first
line of its source.

Stopping: on SIGTERM or SIGHUP (the runner stopping its runs, or a cluster
stopping the runner's job) this process passes SIGTERM on to the notebook's
kernel, whose training loop saves a mid-epoch checkpoint and stops
(:class:`hpelib.engine.TrainingStopped`); the result then says
``"interrupted"``. A thread watches the parent: when the runner is gone (it
was killed, its node's shell closed) the process stops the same way, within
about a second, so no run goes on writing unobserved. While it runs, the
process holds an ``flock`` on the run folder's :data:`RUN_LOCK` (its PID
inside): the runner refuses to start a run whose folder a living process holds.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

#: the lock file a running notebook process holds in its run folder
RUN_LOCK = ".run.lock"
#: seconds between two looks at the parent process
PARENT_POLL_S = 0.5
_STOPPED: dict = {}  # the signal that stopped this process, once one did


def execute(notebook: str, output: str, parameters: dict, cwd: str, timeout_s: float | None = None) -> dict:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    t0 = time.time()
    try:
        kwargs = {"execution_timeout": timeout_s} if timeout_s else {}
        pm.execute_notebook(notebook, output, parameters=parameters, kernel_name="python3", cwd=cwd,
                            progress_bar=False, log_output=False, shutdown_kernel="immediate", **kwargs)
        err = None
    except PapermillExecutionError as e:
        source = (e.source or "").strip()
        err = {"cell_index": _error_cell_index(output, e.cell_index), "exec_count": e.exec_count,
               "ename": e.ename, "evalue": str(e.evalue), "cell": source.splitlines()[0] if source else None}
    except Exception as e:  # kernel died, notebook missing, timeout ...
        err = {"cell_index": None, "exec_count": None, "ename": type(e).__name__, "evalue": str(e), "cell": None}
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:  # papermill could not save the executed notebook
            err.update(ename="DiskFullError", evalue=_disk_full_line(output, e))
    return {"ok": err is None, "seconds": time.time() - t0, "error": err}


def _disk_full_line(output: str, e: OSError) -> str:
    """What a full disk stopped: the file, the free space, what is kept."""
    import shutil  # this file also runs as a script: no hpelib imports

    try:
        free = f"{shutil.disk_usage(Path(output).parent).free / 2**20:.1f} MiB"
    except OSError:
        free = "unknown"
    return (f"cannot write {getattr(e, 'filename', None) or output}: the disk is full ({free} free on "
            f"{Path(output).parent}); the run's checkpoint and finished files are kept: free space and run the "
            "study again")


def _error_cell_index(output: str, fallback: int) -> int:
    """Index of the failing cell in the saved notebook (papermill puts an error banner cell on top)."""
    try:
        import nbformat

        nb = nbformat.read(output, as_version=4)
        for i, cell in enumerate(nb.cells):
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                return i
    except Exception:
        pass
    return fallback


def hold_run_folder(folder: str):
    """Take the run folder's lock (an open file: held until this process ends); None if another process has it."""
    import fcntl

    f = open(Path(folder) / RUN_LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def held_by(folder) -> int | None:
    """The PID of the living process that holds ``folder``'s run lock, or None."""
    import fcntl

    path = Path(folder) / RUN_LOCK
    if not path.is_file():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


class StopRequested(Exception):
    """Stopped before the notebook's kernel was there to pass the signal on to."""


def tell_children(signum: int = signal.SIGTERM) -> list:
    """Send ``signum`` to every process this one started (the notebook's kernel); returns those it reached."""
    import psutil

    told = []
    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(signum)
            told.append(child)
        except psutil.Error:
            pass
    return told


def _stop_kernel(signum, frame) -> None:
    """Pass the stop on to the kernel (and anything else this process started) as SIGTERM."""
    _STOPPED.setdefault("signal", signal.Signals(signum).name)
    if not tell_children(signal.SIGTERM):
        raise StopRequested(f"stopped by {_STOPPED['signal']} before the notebook's kernel started")


def _watch_parent(parent: int) -> None:
    """Stop like on SIGTERM once the process that started this one is gone."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            _STOPPED.setdefault("signal", "parent gone")
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    lock = hold_run_folder(request["cwd"])
    if lock is None:
        result = {"ok": False, "seconds": 0.0, "error": {
            "cell_index": None, "exec_count": None, "ename": "RunFolderHeld", "cell": None,
            "evalue": f"{request['cwd']} is held by process {held_by(request['cwd'])}, still running"}}
    else:
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, _stop_kernel)
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
        result = execute(request["notebook"], request["output"], request["parameters"], request["cwd"],
                         request.get("timeout_s"))
        if _STOPPED:
            result["interrupted"] = _STOPPED["signal"]
    tmp = request["result"] + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, request["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
