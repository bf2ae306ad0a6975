"""Is training still healthy: finiteness of gradients and weights, and what to do when a step runs
out of memory, as one `StepGuard` the training step calls.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass

import torch
from torch.nn.utils import get_total_norm

from ..files import StorageError, storage_error
from ..runtime import device_failure
from .amp import MAX_SCALER_SKIPS_IN_A_ROW
from .distributed import sum_across
from .state import TrainingDiverged, TrainingOutOfMemory

MAX_SKIPS_IN_A_ROW = 10
"""``on_nan=skip-batch`` stops the run anyway after this many non-finite batches in a row."""

_UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True when every element of every tensor is finite. One fused max-abs reduction
    (`torch.nn.utils.get_total_norm` with the inf-norm, which propagates NaN and cannot
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
    """The `TrainingOutOfMemory` for allocator error ``e`` at ``where`` (e.g. "epoch 2 (step 9)"),
    with the batch size `suggest_batch_size` gives and what was kept."""
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
    """What to raise when saving a run (a `RunDir`) after ``done`` epochs failed
    with ``e``: a `StorageError` naming the last good checkpoint and the resume command (status
    ``failed`` written when it still can be), or ``e`` itself when it is not about space or permission."""
    err = e if isinstance(e, StorageError) else storage_error(e, run.path)
    if not isinstance(err, StorageError):
        return e
    with contextlib.suppress(OSError, StorageError):
        run.set_status("failed", epoch=done, reason=str(err))
    return StorageError(f"{err} {last_good(run.path, done)} Then continue with: cifarlab train --resume {run.path}",
                        err.path, err.needed, err.free)


@dataclass
class Problem:
    """What went wrong in a step: ``what`` (for the message), ``overflow`` (fp16's scaled gradients
    overflowed: the scaler's normal working, not divergence) and ``skippable`` (``on_nan=skip-batch``
    may skip it: a non-finite loss or gradient)."""
    what: str
    overflow: bool = False
    skippable: bool = True


class StepGuard:
    """The training step's policies for what goes wrong, in one place: a non-finite loss or gradient
    (stop, or skip the batch under ``on_nan=skip-batch``, at most `MAX_SKIPS_IN_A_ROW` in a
    row; every rank of a DDP run takes the same branch), an fp16 overflow (skipped and counted; at
    most `MAX_SCALER_SKIPS_IN_A_ROW` in a row), non-finite weights (stop), out of memory
    and device failures (one-line errors). Each stop writes the run's status first.

    Args:
        run: the `RunDir`; env: the `DistEnv`;
        device: the training device; on_nan: ``stop`` or ``skip-batch``; scaling: the
        `LossScaling`; batch_size: for the out-of-memory advice.
    """

    def __init__(self, run, env, device: torch.device, on_nan: str, scaling, batch_size: int):
        self.run, self.env, self.device, self.on_nan = run, env, device, on_nan
        self.scaling, self.batch_size = scaling, batch_size

    def _status(self, status: str, st, epoch: int, reason: str) -> None:
        if self.env.is_main:
            self.run.set_status(status, epoch=epoch + 1, step=st.global_step, reason=reason)

    @contextlib.contextmanager
    def failures(self, model: torch.nn.Module, st, epoch: int):
        """Turn a device failure or out-of-memory error inside the block into a one-line
        `DeviceError` or `TrainingOutOfMemory` (status ``failed``)."""
        try:
            yield
        except RuntimeError as e:
            if (failure := device_failure(e, self.device)) is not None:
                self._status("failed", st, epoch, str(failure))
                raise failure from e
            if not is_out_of_memory(e):
                raise
            model.zero_grad(set_to_none=True)
            self._status("failed", st, epoch, "out of memory")
            raise out_of_memory_error(e, self.batch_size, self.device, f"epoch {epoch + 1} (step {st.global_step + 1})",
                                      last_good(self.run.path, st.epoch)) from None

    def loss_problem(self, value: float) -> Problem | None:
        """A non-finite loss ``value`` here or, under DDP, on another rank (voted, so backward runs on all or none)."""
        bad = None if math.isfinite(value) else f"the training loss became {value}"
        if self.env.enabled and sum_across([0.0 if bad is None else 1.0], self.env)[0]:
            bad = bad or "the training loss became non-finite on another process"
        return Problem(bad) if bad else None

    def gradient_problem(self, model: torch.nn.Module) -> Problem | None:
        """A non-finite gradient (with a gradient scaler: an overflow)."""
        if all_finite([p.grad for p in model.parameters() if p.grad is not None]):
            return None
        return Problem("a gradient became NaN/inf", overflow=self.scaling.active)

    def settle(self, problem: Problem, model: torch.nn.Module, optimizers, st, epoch: int) -> None:
        """After a step with ``problem``: drop its gradients (an overflow also steps the scaler, which
        skips the update and halves its scale), then return when the batch may be skipped, else raise
        `TrainingDiverged`."""
        if problem.overflow:
            self.scaling.step(optimizers)
            model.zero_grad(set_to_none=True)
            if st.skipped_in_a_row >= MAX_SCALER_SKIPS_IN_A_ROW:
                self.diverged(f"the fp16 gradients overflowed {st.skipped_in_a_row} steps in a row at epoch "
                              f"{epoch + 1} (step {st.global_step + 1}; loss scale {self.scaling.scale():g})",
                              st, epoch)
            return
        model.zero_grad(set_to_none=True)
        if self.on_nan != "skip-batch" or st.skipped_in_a_row >= MAX_SKIPS_IN_A_ROW:
            after = f" after {st.skipped_in_a_row} skipped batches in a row" if self.on_nan == "skip-batch" else ""
            self.diverged(f"{problem.what}{after} at epoch {epoch + 1} (step {st.global_step + 1})", st, epoch,
                          skippable=not after)

    def check_weights(self, model: torch.nn.Module, st, epoch: int) -> None:
        """Raise `TrainingDiverged` when a weight is not finite after the optimizer step."""
        if not all_finite(weights_of(model)):
            self.diverged(f"a weight became NaN/inf after the optimizer step at epoch {epoch + 1} "
                          f"(step {st.global_step + 1})", st, epoch)

    def diverged(self, what: str, st, epoch: int, skippable: bool = False):
        """Write status ``diverged`` and raise `TrainingDiverged` saying what was kept and what to try."""
        self._status("diverged", st, epoch, what)
        skip = (", or resume with --set on_nan=skip-batch to skip the batches whose loss or gradient is not finite"
                if skippable else "")
        raise TrainingDiverged(f"Training diverged: {what}; training stopped. {last_good(self.run.path, st.epoch)} "
                               f"Lower the learning rate (lr, bias_lr, head_lr) or use precision fp32 and start a "
                               f"new run{skip}.")
