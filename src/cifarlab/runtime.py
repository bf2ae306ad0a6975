"""The process and the device: which device, which precision context, the machine's description,
and the allocator tuning. Each is decided here once and passed down (nanoGPT's ``ctx``, timm's
``amp_autocast``); nothing below the workflow layer chooses a device or an autocast mode itself.

Allocator tuning (:func:`tune_malloc`): keep freed activation memory inside the process (glibc)
instead of returning it every step.

Why: a training step allocates and frees activation buffers of hundreds of MB. glibc serves
these with mmap and unmaps them on free, so every step page-faults and zero-fills them again
(seen as high system time). Disabling mmap'd chunks and heap trimming keeps the pages mapped.
Measured on the 2-core CI machine for airbench94 at batch 2000 (bf16): 669 -> 1002 training
images/s, 2153 -> 3869 inference images/s (BENCHMARKS.md). The same effect as the environment
variables MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>, applied from inside the process.
Peak memory is unchanged; memory freed by the process is reused rather than returned.

Set CIFARLAB_NO_MALLOC_TUNING=1 to skip. A no-op off glibc.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Raises :class:`ConfigError` for an absent GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but no CUDA GPU is available; use --device cpu.")
    return dev


def autocast(device: torch.device, precision: str):
    """A fresh context manager for ``precision`` on ``device``: bf16 autocast (fp32 master weights
    stay fp32) or, for ``fp32``, no autocast at all. Call it once per ``with`` block."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def environment(device: torch.device) -> dict:
    """Versions and hardware recorded next to every number (airbench habit): torch, python, numpy,
    device, torch threads, CPU model, core count, platform, and the GPU name on CUDA."""
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
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
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
