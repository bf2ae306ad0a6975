"""Training across processes with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc-per-node N -m cifarlab train ...`` (multi-node: torchrun's ``--nnodes``,
``--node-rank``, ``--rdzv-endpoint`` flags) starts N processes with ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` set; `init` joins them into one process group (gloo on CPU, nccl on CUDA).
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

import copy
import os
import time
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import ConfigError


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
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return _all_reduce(torch.tensor(values, dtype=torch.float64, device=device)).cpu().tolist()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    """Wait until every rank gets here. On gloo an all-reduce of one number that waits for the
    backend to let go of it (see `_all_reduce`); on nccl ``dist.barrier()``, which also waits
    for the device (an nccl all-reduce returns to the host before it runs)."""
    if not env.enabled:
        return
    if dist.get_backend() == "gloo":
        _all_reduce(torch.zeros(1))
    else:
        dist.barrier()


class ReplicatedForward:
    """``model``'s forward pass through DistributedDataParallel, built again whenever the set of
    parameters that require a gradient changes.

    DDP hooks every parameter that requires a gradient when it is built and, unless told to search
    for unused ones, expects each of them to get one every step. Two things here break that: the
    airbench stem bias, whose ``requires_grad`` its step hook turns off after ``whiten_bias_epochs`` (a
    new wrapper over the parameters that still train is built then, once per run), and parameters
    a model's forward pass never uses (some timm models). For those, `unused_parameters` runs
    one forward and backward pass on two images of the first batch before DDP is built; only when
    a rank finds one does DDP search the autograd graph for them every step
    (``find_unused_parameters=True``, which costs a graph traversal per step and makes torch warn
    on every rank when it finds nothing).

    The probe sees the first step only, as torchvision's reference scripts build DDP without the
    search: a forward pass that skips parameters on later steps alone (a layer dropped at random for
    a whole batch) stops the run at the step after with `ConfigError`,
    which says so, instead of torch's reducer error. Call it inside the step's precision context, in
    the step's train/eval mode, like the model.
    """

    def __init__(self, model: torch.nn.Module, env: DistEnv):
        self.model, self.env = model, env
        self.ddp = None
        self.trains: tuple = ()
        self.find_unused: bool | None = None  # decided on the first call, the same on every rank
        self.unused: list[str] = []            # this rank's unused parameter names

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        trains = tuple(id(p) for p in self.model.parameters() if p.requires_grad)
        if self.ddp is None or trains != self.trains:
            if self.find_unused is None:
                self.unused = unused_parameters(self.model, x[:2])
                self.find_unused = sum_across([float(len(self.unused))], self.env)[0] > 0
                if self.unused and self.env.is_main:
                    shown = ", ".join(self.unused[:4]) + (", ..." if len(self.unused) > 4 else "")
                    warnings.warn(f"{len(self.unused)} parameters of the model get no gradient from its forward pass "
                                  f"({shown}): DDP will search the autograd graph for unused parameters every step. "
                                  "Remove them from the model to train without that search.", stacklevel=2)
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = None  # the old wrapper's gradient hooks go with it
            self.ddp = DistributedDataParallel(self.model, find_unused_parameters=self.find_unused)
            self.trains = trains
        try:
            return self.ddp(x)
        except RuntimeError as e:
            if "finished reduction in the prior iteration" not in str(e):
                raise
            raise ConfigError(
                "Distributed training stopped: on the last step the model left parameters without a gradient, though "
                "every parameter got one on the first step (its forward pass skips layers on some steps). DDP runs "
                "without the per-step search for unused parameters unless the first step finds some, and that step's "
                "gradients were not all averaged across processes. Train this model in one process (resume the run "
                "without torchrun: cifarlab train --resume RUN_DIR), or make its forward pass use every parameter on "
                "every step.") from None


def unused_parameters(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Names of ``model``'s parameters that require a gradient but get none from a forward and
    backward pass over ``x`` (float (B, C, H, W), B >= 2 for BatchNorm in train mode), in the mode
    and precision context the caller is in. The pass runs on a copy (as the default-input-size probe
    of `cifarlab.workflow.setup.check_default_input_size` does), under a forked random number
    generator: ``model``, its BatchNorm statistics and the random stream are left as they were."""
    probe = copy.deepcopy(model)
    for p in probe.parameters():
        p.grad = None
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        out = probe(x)
        if out.requires_grad:
            with torch.autocast(x.device.type, enabled=False):
                out.float().sum().backward()
    return [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def shutdown(env: DistEnv) -> None:
    """Wait for every rank, then leave the process group: the last collective of a run."""
    if env.enabled and dist.is_initialized():
        barrier(env)
        dist.destroy_process_group()


def _all_reduce(t: torch.Tensor, timeout: float = 60.0) -> torch.Tensor:
    """``dist.all_reduce(t)`` (sum, in place) that returns only once the backend has let go of ``t``.

    A collective returns on the calling thread while the backend's worker thread still holds the
    finished work, and its tensors, for a moment. If the interpreter shuts down in that moment, the
    worker's release of a Python-visible tensor needs the GIL and aborts the process ("terminate
    called without an active exception", gloo, torch 2.15; the failure pytorch/pytorch#179291
    describes). ``destroy_process_group`` does not close the window: once DDP has been used, the
    process group and its worker threads outlive it. So every collective of ours waits (at most
    ``timeout`` seconds, about a millisecond in practice) until ``t``'s reference count is back to
    what it was; ``benchmarks/ddp_exit.py`` measures the aborts with and without this. On nccl,
    where this abort has not been observed (nor looked for: no GPU here), it is a plain all-reduce.
    """
    uses = getattr(t, "_use_count", None)  # a private Tensor method (torch 2.x); without it, no wait
    alone = uses() if uses else 0
    dist.all_reduce(t)
    if dist.get_backend() != "gloo" or uses is None:
        return t
    deadline = time.monotonic() + timeout
    while uses() > alone and time.monotonic() < deadline:
        time.sleep(0.001)  # releases the GIL, which the worker needs to free the work
    return t
