"""torch.distributed's environment from SLURM's, for processes started by ``srun`` (one task per GPU).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` (:mod:`hpelib.engine.distributed` reads them); ``srun`` sets its
own variables instead, which map one to one:

=====================  ===================================================
torch.distributed      SLURM
=====================  ===================================================
``RANK``               ``SLURM_PROCID`` (the task's rank in the step)
``WORLD_SIZE``         ``SLURM_NTASKS`` (tasks in the job)
``LOCAL_RANK``         ``SLURM_LOCALID`` (the task's rank on its node)
``MASTER_ADDR``        the first host of ``SLURM_JOB_NODELIST`` (where rank 0 runs)
``MASTER_PORT``        kept when set, else 10000 + job id mod 50000
=====================  ===================================================

The port is derived from the job id so that all tasks of a job agree on it
and two jobs sharing a node do not collide.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

__all__ = ["torch_distributed_env_from_slurm", "first_host"]


def torch_distributed_env_from_slurm(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables torch.distributed needs, read from SLURM's in ``environ``.

    Empty when ``environ`` is not a task started by ``srun`` (no
    ``SLURM_PROCID``) or when a launcher already set ``RANK`` (``torchrun``
    inside ``srun``): nothing to map then. A caller adds the result to
    ``os.environ`` before joining the process group.
    """
    if "SLURM_PROCID" not in environ or "RANK" in environ:
        return {}
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or "127.0.0.1"
    port = environ.get("MASTER_PORT") or str(10000 + int(environ.get("SLURM_JOB_ID", "0")) % 50000)
    return {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": environ.get("SLURM_NTASKS", "1"),
            "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(nodelist), "MASTER_PORT": port}


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list, as ``scontrol show hostnames`` lists it first.

    ``gpu[07-09,12],cpu1`` -> ``gpu07``; ``rack[2-3]-n[01-04]`` -> ``rack2-n01``.
    """
    group = re.split(r",(?![^\[]*\])", nodelist.strip())[0]  # up to the first comma outside brackets
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], group)
