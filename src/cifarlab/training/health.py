"""Is training still healthy: finiteness of gradients and weights, and what to do when a step runs
out of memory. Used by :class:`cifarlab.training.Trainer` at every step.
"""
from __future__ import annotations

import contextlib
import os
import re

import torch
from torch.nn.utils import get_total_norm

from ..files import StorageError, storage_error
from .state import TrainingOutOfMemory

MAX_SKIPS_IN_A_ROW = 10
"""``on_nan=skip-batch`` stops the run anyway after this many non-finite batches in a row."""

_UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True when every element of every tensor is finite. One fused max-abs reduction
    (:func:`torch.nn.utils.get_total_norm` with the inf-norm, which propagates NaN and cannot
    overflow) and one device sync."""
    tensors = [t.detach() for t in tensors if t.is_floating_point()]
    return not tensors or bool(torch.isfinite(get_total_norm(tensors, norm_type=float("inf"))))


def weights_of(model: torch.nn.Module) -> list[torch.Tensor]:
    """A model's parameters and floating-point buffers (BatchNorm statistics)."""
    return list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]


def outputs_finite(model: torch.nn.Module, x: torch.Tensor, ctx) -> bool:
    """Whether ``model`` in evaluation mode gives finite logits on (up to 64 images of) batch ``x``:
    weights can stay finite yet so large that BatchNorm's running statistics make every output
    overflow, which only evaluation shows. Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), ctx():
        out = model(x[:64])
    model.train(was_training)
    return all_finite([out.float()])


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError`` or the CPU allocator's "can't allocate memory"."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def requested_bytes(e: BaseException) -> int | None:
    """The size of the allocation that failed, as the allocator's message states it (or None)."""
    m = re.search(r"tried to allocate ([\d.]+) ?(bytes|[KMGT]iB)", str(e), re.IGNORECASE)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()]) if m else None


def _host_memory() -> tuple[int | None, int | None]:
    """(resident bytes of this process, that plus the memory still available), from /proc."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return rss, rss + avail
    except (OSError, StopIteration, ValueError, IndexError):
        return None, None


def suggest_batch_size(e: BaseException, batch_size: int, device: torch.device) -> tuple[int, int | None, int | None]:
    """A batch size that should fit after an out-of-memory error at ``batch_size``.

    Memory grows about linearly with the batch (activations dominate), so the estimate is
    ``batch_size * 0.9 * limit / (in use + requested)``, where in use is the measured peak (CUDA:
    ``max_memory_allocated``; host: this process's resident memory) and requested is the failed
    allocation from the error's text. It is then rounded down to a multiple of 8 (from 16 up), and
    kept below ``batch_size``; half of ``batch_size`` when nothing could be measured.

    Returns:
        (suggested batch size, bytes in use, byte limit); the last two None when not measured.
    """
    if device.type == "cuda":
        used = torch.cuda.max_memory_allocated(device)
        limit = torch.cuda.get_device_properties(device).total_memory
    else:
        used, limit = _host_memory()
    need = (used or 0) + (requested_bytes(e) or 0)
    fit = int(batch_size * 0.9 * limit / need) if used and limit and need > 0 else batch_size // 2
    if fit >= batch_size:  # the measurement says it fits, yet it did not: halve
        fit = batch_size // 2
    if fit >= 16:
        fit -= fit % 8
    return max(fit, 1), used, limit


def last_good(run_path, done: int) -> str:
    """The sentence naming what a failed run kept, after ``done`` finished epochs."""
    return (f"The checkpoints of the last good epoch ({done}) are kept in {run_path}." if done else
            "No epoch had finished, so no checkpoint was written.")


def out_of_memory_error(e: BaseException, batch_size: int, device: torch.device, where: str,
                        kept: str) -> TrainingOutOfMemory:
    """The :class:`TrainingOutOfMemory` for allocator error ``e`` at ``where`` (e.g. "epoch 2 (step 9)"),
    with the batch size :func:`suggest_batch_size` gives and what was kept."""
    fit, used, limit = suggest_batch_size(e, batch_size, device)
    measured = (f" (in use {used / 2**30:.2f} GiB of {limit / 2**30:.1f} GiB, plus the "
                f"{(requested_bytes(e) or 0) / 2**30:.2f} GiB it asked for)" if used and limit else "")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return TrainingOutOfMemory(
        f"Out of {'GPU' if device.type == 'cuda' else 'host'} memory at batch size {batch_size}, {where}"
        f"{measured}. Batch size {fit} should fit: start a new run with --batch-size {fit} (a smaller "
        f"--img-size also helps). {kept}", fit)


def write_failed(e: Exception, run, done: int) -> Exception:
    """What to raise when saving a run (a :class:`~cifarlab.runs.RunDir`) after ``done`` epochs failed
    with ``e``: a :class:`StorageError` naming the last good checkpoint and the resume command (status
    ``failed`` written when it still can be), or ``e`` itself when it is not about space or permission."""
    err = e if isinstance(e, StorageError) else storage_error(e, run.path)
    if not isinstance(err, StorageError):
        return e
    with contextlib.suppress(OSError, StorageError):
        run.set_status("failed", epoch=done, reason=str(err))
    return StorageError(f"{err} {last_good(run.path, done)} Then continue with: cifarlab train --resume {run.path}",
                        err.path, err.needed, err.free)
