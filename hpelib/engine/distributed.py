"""DistributedDataParallel plumbing for runs launched with ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous
address); when they are present the engine joins the process group (NCCL on
CUDA, Gloo on CPU), gives each process the GPU ``cuda:LOCAL_RANK``, wraps the
model in DDP and shards the data with a ``DistributedSampler``. Only rank 0
writes files and shows progress bars.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .slurm_env import torch_distributed_env_from_slurm


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False  # we initialized the group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun or by ``srun`` with several tasks.

    Returns the info and this process's device. SLURM's task variables are
    mapped to torch.distributed's (:mod:`hpelib.engine.slurm_env`) when there
    is more than one task; a single SLURM task (a study's run) trains alone.
    If a group is already initialized (e.g. by the caller) it is used as is and
    left for the caller to destroy.
    """
    slurm = torch_distributed_env_from_slurm(os.environ)
    if int(slurm.get("WORLD_SIZE", "1")) > 1:
        os.environ.update(slurm)
    if dist.is_available() and dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    elif launched_by_torchrun() and dist.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, created_group=True)
    else:
        return DistInfo(), device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return info, device


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        if info.created_group:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop together)."""
    if not (info.enabled and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj, info: DistInfo) -> list:
    if not (info.enabled and dist.is_initialized()):
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step
    of an epoch every rank holds statistics updated with its own shard; this
    makes the ranks agree (and equal the checkpoint rank 0 writes).
    """
    if not (info.enabled and dist.is_initialized()):
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def wrap(model: nn.Module, info: DistInfo, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model``, inside DDP when distributed.

    The training loop calls ``net(images, poses, generator)``: ``HMTLModel.forward``
    routes that call to ``losses``, so DDP sees the whole loss computation.
    ``find_unused_parameters`` comes from ``TrainConfig.ddp_find_unused_parameters``
    (off: the HMTL model uses every parameter in every step).
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        return DDP(model, device_ids=[device.index], output_device=device.index,
                   find_unused_parameters=find_unused_parameters)
    return DDP(model, find_unused_parameters=find_unused_parameters)
