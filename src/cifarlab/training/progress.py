"""What a person watching a run sees on the console (fastai/Keras habit): one tqdm bar over the
current epoch, one summary line per finished epoch, and after the first steps an estimate of the
epoch's and the whole run's time, with the flags that shorten a run projected at over an hour.
Writes to stderr through ``tqdm.write`` so the bar and the lines do not tear each other; nothing
here when ``progress`` is off (``--no-progress``, ``-q``) or on a non-zero torchrun rank.
"""
from __future__ import annotations

import sys
import time

ESTIMATE_AFTER_STEPS = 4     # steps timed (after the first, which pays one-off costs) before estimating
LONG_RUN_SECONDS = 3600.0


def say(message: str) -> None:
    """One line on stderr through tqdm, so it does not tear a progress bar."""
    from tqdm.auto import tqdm
    tqdm.write(message, file=sys.stderr)


def format_seconds(s: float) -> str:
    """``"42 s"``, ``"7.5 min"`` or ``"2.3 h"``."""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def epoch_line(row: dict, n_epochs: int) -> str:
    """One metrics row as a line: epoch, train loss/top-1, val loss/top-1 (with a split), seconds, images/s."""
    line = (f"epoch {row['epoch'] + 1:>{len(str(n_epochs))}}/{n_epochs}  train loss {row['train_loss']:.4f}  "
            f"top-1 {row['train_top1']:5.2f}%")
    if "val_loss" in row:
        line += f"  val loss {row['val_loss']:.4f}  top-1 {row['val_top1']:5.2f}%"
    line += f"  {row['seconds']:.1f} s  {row['images_per_s']:.0f} images/s"
    if row.get("skipped_batches"):
        line += f"  ({row['skipped_batches']} batches skipped)"
    return line


def shorter_run_hint(cfg) -> str:
    """The flags that shorten a run of ``cfg``, the most effective for its kind first."""
    hints = []
    if cfg.img_size or cfg.img_sizes:
        hints.append("a smaller --img-size (time grows with its square)")
    if cfg.strategy in ("fine-tune", "full"):
        hints.append("--strategy linear-probe or partial-fine-tune (the frozen part computed once)")
    hints += ["fewer --epochs", "--train-size N (a class-balanced subset)"]
    return "; ".join(hints)


def projection(per_epoch: float, left: float, what: str, cfg) -> str:
    """``estimate: <per_epoch> per epoch, <left> <what>`` (seconds in, readable units out), plus the
    flags that shorten ``cfg``'s run when ``left`` is over `LONG_RUN_SECONDS`."""
    msg = f"estimate: {format_seconds(per_epoch)} per epoch, {format_seconds(left)} {what}"
    if left > LONG_RUN_SECONDS:
        msg += f". That is over an hour; to shorten it: {shorter_run_hint(cfg)}."
    return msg


class Console:
    """The bar, the epoch lines and the time estimate of one run (see the module docstring)."""

    def __init__(self, cfg, enabled: bool, total_steps: int, steps_per_epoch: int, n_epochs: int):
        self.cfg, self.enabled, self.total, self.spe, self.n_epochs = cfg, enabled, total_steps, steps_per_epoch, n_epochs
        self.bar = None
        self.timed_from = None   # (time, steps) when the timing for the estimate began
        self.estimated = False

    def write(self, message: str) -> None:
        if self.enabled:
            say(message)

    def start_epoch(self, epoch: int, done_in_epoch: int, steps_here: int) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm
        if self.bar is not None:
            self.bar.close()
        self.bar = tqdm(total=steps_here, initial=done_in_epoch, unit="step", dynamic_ncols=True, leave=False,
                        desc=f"epoch {epoch + 1}/{self.n_epochs}", file=sys.stderr)

    def step(self, loss: float, top1: float, images_per_s: float, global_step: int) -> None:
        """After each optimizer step: advance the bar; estimate once enough steps are timed."""
        if not self.enabled:
            return
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{top1:.1f}%", img_s=f"{images_per_s:.0f}")
        now = time.perf_counter()
        if self.timed_from is None:
            self.timed_from = (now, global_step)
        elif not self.estimated and global_step - self.timed_from[1] >= min(ESTIMATE_AFTER_STEPS, self.spe - 1):
            per_step = (now - self.timed_from[0]) / (global_step - self.timed_from[1])
            self.estimated = True
            self.write(self.estimate(per_step, self.total - global_step))

    def estimate(self, per_step: float, steps_left: int) -> str:
        """The projection line: seconds per epoch and for the rest of the run (+ hints when long)."""
        return projection(per_step * self.spe, per_step * steps_left, f"for the remaining {steps_left} steps "
                          "(training only; evaluation adds a little)", self.cfg)

    def end_epoch(self, row: dict) -> None:
        self.write(epoch_line(row, self.n_epochs))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
