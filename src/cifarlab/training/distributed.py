"""Training across processes with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc-per-node N -m cifarlab train ...`` (multi-node: torchrun's ``--nnodes``,
``--node-rank``, ``--rdzv-endpoint`` flags) starts N processes with ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` set; :func:`init` joins them into one process group (gloo on CPU, nccl on CUDA).
Each rank trains on a disjoint 1/N of every global batch (so ``batch_size`` stays the global
batch and the schedule is unchanged), DDP averages the gradients, per-epoch metrics are summed
across ranks, and only rank 0 writes the run directory. BatchNorm statistics are per rank (as in
torchvision's reference scripts without ``--sync-bn``), so the loss curve matches a one-process
run of the same global batch closely but not bit for bit.

Resume works with any number of processes: the weights, optimizer state and position are global.
The train loss/top-1 of an epoch interrupted mid-way under torchrun count the finished part of
that epoch from rank 0's slice alone (the interrupt is caught on each rank; no collective runs
then); an epoch interrupted in one process and resumed in several is counted exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init(device_name: str = "auto") -> DistEnv:
    """Join the torchrun process group when launched by torchrun; a one-process env otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if cuda:
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return env


def device_for(env: DistEnv, device: torch.device) -> torch.device:
    """One GPU per local rank on CUDA; the CPU is shared."""
    if env.enabled and device.type == "cuda":
        return torch.device("cuda", env.local_rank)
    return device


def sum_across(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity in one process)."""
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
