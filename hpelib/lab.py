"""``python -m hpelib.lab [jupyter options]``: JupyterLab over the whole repository, opening on ``notebooks/``.

``make lab`` runs this. The server's root is the repository, so ``results/``
(executed run notebooks, reports), ``studies/`` and ``docs/`` are one click
away from the notebooks; extra arguments go to ``jupyter lab`` (e.g.
``--no-browser --port 8890``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def lab_command(extra=()) -> list[str]:
    """The ``jupyter lab`` command line: root at the repository, default page ``notebooks/``.

    As root (a container, a cluster node's shell) it adds ``--allow-root``,
    which JupyterLab otherwise asks for and refuses to start without.
    """
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={REPO_ROOT}",
            "--LabApp.default_url=/lab/tree/notebooks", *root, *extra]


def main(argv=None) -> None:
    cmd = lab_command(sys.argv[1:] if argv is None else argv)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
