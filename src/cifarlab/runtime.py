"""The process and the device: which device, which precision context, the machine's description,
and the allocator tuning. Each is decided here once and passed down (nanoGPT's ``ctx``, timm's
``amp_autocast``); nothing below the workflow layer chooses a device or an autocast mode itself.

Allocator tuning (`tune_malloc`): keep freed activation memory inside the process (glibc)
instead of returning it every step.

Why: a training step allocates and frees activation buffers of hundreds of MB. glibc serves
these with mmap and unmaps them on free, so every step page-faults and zero-fills them again
(seen as high system time). Disabling mmap'd chunks and heap trimming keeps the pages mapped.
Measured on a 2-core Xeon with native bf16 for airbench94 at batch 2000: 772 -> 1242 training
images/s, 1957 -> 4199 inference images/s (BENCHMARKS.md, table "malloc"). The same effect as the environment
variables MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>, applied from inside the process.
Peak memory is unchanged; memory freed by the process is reused rather than returned.

Set CIFARLAB_NO_MALLOC_TUNING=1 to skip. A no-op off glibc.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import ctypes.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import PRECISIONS, ConfigError

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_done = False


def tune_malloc() -> bool:
    """Apply the glibc settings once; returns True when they were applied."""
    global _done
    if _done or os.environ.get("CIFARLAB_NO_MALLOC_TUNING") or platform.system() != "Linux":
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    _done = ok
    return ok


@contextlib.contextmanager
def num_threads(n: int | None):
    """Use ``n`` intra-op CPU threads inside the block (None: leave the setting alone), then put the
    caller's setting back, so a ``threads`` key of one run does not leak into the next call of a
    notebook or test session (thread count changes the order of CPU reductions, hence the bits)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def physical_cores() -> int:
    """The physical cores this process may run on: hyper-thread siblings (Linux's
    ``topology/thread_siblings_list``) counted once, within ``os.sched_getaffinity``; the logical
    CPU count where the topology cannot be read."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def default_threads(requested: int | None) -> int | None:
    """The intra-op thread count a run sets: ``requested`` when given; else None (torch's setting
    kept) or, where fewer physical cores are open to this process than torch's setting (a container
    cpuset, ``taskset``), `physical_cores`. Torch's own default is already one thread per
    physical core of the machine (c10's ``TaskThreadPoolBase::defaultNumThreads``), but it counts the
    whole machine, not the CPUs this process may run on."""
    if requested:
        return requested
    cores = physical_cores()
    return cores if cores < torch.get_num_threads() else None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Raises `ConfigError` for an absent GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but no CUDA GPU is available; use --device cpu.")
    return dev


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 arithmetic (Cooper Lake / Zen 4, Sapphire Rapids)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (Linux; lscpu's ``Flags``), else empty."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16() -> str | None:
    """The flag by which this CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16``), or None.

    Torch has no public check of this for CPUs (``torch.cuda.is_bf16_supported`` is CUDA's), and
    oneDNN's own (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is also true on AVX-512 CPUs that
    emulate bf16, so the flags decide. Without them bf16 is emulated: measured on a 2-vCPU AMD EPYC
    with AVX2 only, a 2048x2048 matmul ran at 136 GFLOP/s in fp32 and 0.3 in bf16 (BENCHMARKS.md,
    table "precision-epyc-avx2").
    """
    flags = cpu_flags()
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


@dataclass(frozen=True)
class Precision:
    """The numeric format a run computes in, resolved for its device by `resolve_precision`.
    Calling it gives a fresh precision context for one ``with`` block (the ``ctx`` factory that the
    training and evaluation code take).

    Attributes:
        name: ``bf16`` or ``fp16`` (autocast, fp32 master weights) or ``fp32`` (no autocast).
        reason: one line saying what was chosen and why, e.g. "precision fp32: this CPU has no native bf16".
        device_type: ``cpu`` or ``cuda``: where the autocast applies.
        matmul_dtype: the dtype of Muon's Newton-Schulz products: bf16 where the device computes it
            natively (as airbench94_muon does), else fp32 (emulated bf16 there costs ~0.7 s a step).
    """
    name: str
    reason: str = ""
    device_type: str = "cpu"
    matmul_dtype: torch.dtype = torch.float32

    @property
    def grad_scaler(self) -> bool:
        """True for fp16, whose gradients need loss scaling (``torch.amp.GradScaler``)."""
        return self.name == "fp16"

    def __call__(self):
        return autocast(torch.device(self.device_type), self.name)


def matmul_dtype_of(ctx) -> torch.dtype:
    """Muon's orthogonalisation dtype under a precision-context factory: a `Precision`'s
    ``matmul_dtype``; bf16 (airbench94_muon's) for any other factory."""
    return ctx.matmul_dtype if isinstance(ctx, Precision) else torch.bfloat16


def grad_scaler_for(ctx, summed_batch: int = 1):
    """A ``torch.amp.GradScaler`` for a `Precision` that needs one (fp16), else None.

    ``summed_batch``: the images whose losses are summed, not averaged, into one step's loss (1 for a
    mean). torch's initial scale, 2**16, suits a mean; a sum's gradients are that many times larger,
    so the scale starts that many times lower (a power of two): otherwise the first ~log2(batch) steps
    overflow and are skipped (5 of 12 steps for a summed batch of 50, none at 2**10).
    """
    if isinstance(ctx, Precision) and ctx.grad_scaler:
        init = 2.0 ** max(0, 16 - math.ceil(math.log2(max(1, summed_batch))))
        return torch.amp.GradScaler(ctx.device_type, init_scale=init)
    return None


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """What ``requested`` (``auto``, ``bf16``, ``fp16``, ``fp32``) means on ``device``.

    auto: on CUDA, bf16 where the GPU has it natively (``torch.cuda.is_bf16_supported(including_emulation=
    False)``: Ampere and newer), else fp16 with a gradient scaler (T4, V100: the usual mixed precision
    there); on a CPU, bf16 where `cpu_native_bf16` finds the flag, else fp32; elsewhere fp32.

    Raises:
        ConfigError: an unknown name, or fp16 off CUDA (it needs CUDA's fp16 kernels and scaler).
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (got {requested!r}).")
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        mm = torch.bfloat16 if native else torch.float32
        if requested == "auto":
            if native:
                return Precision("bf16", f"precision bf16: the {gpu} computes bf16 natively", "cuda", mm)
            return Precision("fp16", f"precision fp16 with a gradient scaler: the {gpu} has no native bf16", "cuda", mm)
        why = "" if requested != "bf16" or native else f"; the {gpu} has no native bf16, so it is emulated (slow)"
        return Precision(requested, f"precision {requested} (as set){why}", "cuda", mm)
    if requested == "fp16":
        raise ConfigError(f"precision fp16 needs a CUDA GPU (its fp16 kernels and gradient scaler), and this run is "
                          f"on {device.type}: use precision auto, bf16 or fp32.")
    flag = cpu_native_bf16() if device.type == "cpu" else None
    mm = torch.bfloat16 if flag else torch.float32
    if requested == "auto":
        if flag:
            return Precision("bf16", f"precision bf16: this CPU computes bf16 natively ({flag})", device.type, mm)
        where = "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)" if device.type == "cpu" else \
            f"auto uses fp32 on {device.type}"
        return Precision("fp32", f"precision fp32: {where}", device.type, mm)
    why = "" if requested != "bf16" or flag else "; this CPU has no native bf16, so it is emulated (many times slower)"
    return Precision(requested, f"precision {requested} (as set){why}", device.type, mm)


def autocast(device: torch.device, precision: str):
    """A fresh context manager for a resolved ``precision`` on ``device``: bf16 or fp16 autocast
    (fp32 master weights stay fp32) or, for ``fp32``, no autocast at all. Call it once per ``with`` block."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


class DeviceError(RuntimeError):
    """The accelerator could not run the work: no kernel image for this GPU in the installed torch
    build, cuDNN or cuBLAS missing or failing. Names the device and what to do."""


CUDA_FAILURES = ("no kernel image", "CUDA error", "cuDNN", "CUDNN_STATUS", "CUBLAS_STATUS", "libcudnn", "libcublas",
                 "not compiled with CUDA", "CUDA driver")


def device_failure(e: BaseException, device: torch.device) -> DeviceError | None:
    """The `DeviceError` that ``e`` (raised by a step on ``device``) stands for, or None when it
    is not a CUDA/cuDNN failure (out-of-memory errors are not: they have their own message)."""
    text = str(e)
    if device.type != "cuda" or "out of memory" in text or not any(m in text for m in CUDA_FAILURES):
        return None
    try:
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        built = ", ".join(torch.cuda.get_arch_list()) or "none listed"
        what = f"the {name} (sm_{major}{minor}; this torch {torch.__version__} was built for {built})"
    except Exception:  # noqa: BLE001 -- the device may be past asking; the message still names it
        what = f"device {device}"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return DeviceError(f"{what} could not run a training step: {first}. An installed torch without kernels for "
                       f"this GPU, or a missing or mismatched cuDNN/cuBLAS, gives this: install a torch build for this "
                       f"GPU and CUDA driver, or use --device cpu.")


def environment(device: torch.device) -> dict:
    """Versions and hardware recorded next to every number (airbench habit): torch, python, numpy,
    device, torch threads, CPU model, logical and physical core counts, the CPU's native-bf16 flag
    (None without), platform, and the GPU name on CUDA."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "device": str(device), "threads": torch.get_num_threads(), "cpu": cpu,
           "cpu_count": os.cpu_count(), "physical_cores": physical_cores(), "cpu_native_bf16": cpu_native_bf16(),
           "platform": platform.platform()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def progress_bar(iterable, desc: str | None, total: int | None = None):
    """``iterable`` wrapped in a tqdm bar on stderr labelled ``desc`` (cleared when done), or as is
    when ``desc`` is None: how the slow loops (scoring, feature caching) show they are alive."""
    if desc is None:
        return iterable
    import sys

    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)
