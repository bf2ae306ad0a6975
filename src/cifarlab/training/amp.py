"""fp16's loss scaling around one optimizer step (``torch.amp.GradScaler``), and a pass-through
for every other precision, so the training step reads the same either way."""
from __future__ import annotations

import warnings

import torch

# the scaler halves its scale per overflow: 24 in a row take it 2**24 below its start
MAX_SCALER_SKIPS_IN_A_ROW = 24


class LossScaling:
    """The step's backward and optimizer calls, through ``scaler`` (a ``GradScaler``) or directly.

    With a scaler the gradients are unscaled right after backward, so the finiteness check and the
    optimizers see true-scale values; a non-finite one then means the scaled loss overflowed, which
    `step` then handles as the scaler's normal working (step skipped, scale halved).
    """

    def __init__(self, scaler: torch.amp.GradScaler | None):
        self.scaler = scaler

    @property
    def active(self) -> bool:
        return self.scaler is not None

    def backward(self, loss: torch.Tensor, optimizers) -> None:
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.unscale_(opt)

    def step(self, optimizers) -> None:
        """Every optimizer's step (a scaler skips the ones whose gradients it found not finite)."""
        for opt in optimizers:
            if self.scaler is None:
                opt.step()
            else:
                self.scaler.step(opt)
        if self.scaler is not None:
            self.scaler.update()

    def scale(self) -> float:
        return self.scaler.get_scale() if self.scaler is not None else 1.0

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def warn_if_precision_changed(before: str | None, now: str | None, run_path) -> None:
    """Warn when a resumed run goes on in another precision than it trained in (``auto`` on another
    machine): it continues, but cannot end exactly where an uninterrupted run would."""
    if before and now and before != now:
        warnings.warn(f"{run_path} trained in {before} until now and goes on in {now} (auto on this machine): "
                      "the result will differ a little from an uninterrupted run's.", stacklevel=3)
