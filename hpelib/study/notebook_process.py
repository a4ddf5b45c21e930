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
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


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
    return {"ok": err is None, "seconds": time.time() - t0, "error": err}


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


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    result = execute(request["notebook"], request["output"], request["parameters"], request["cwd"],
                     request.get("timeout_s"))
    tmp = request["result"] + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, request["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
