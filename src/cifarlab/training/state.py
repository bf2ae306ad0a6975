"""What a training run hands back and what it saves to resume: `FitResult`,
`TrainState` (the position and running sums), and the errors that end a run early."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch


class TrainingDiverged(RuntimeError):
    """A loss, gradient, weight or validation loss became NaN/inf. Nothing non-finite is saved;
    the last good checkpoint is kept and the message names the step and that checkpoint."""


class TrainingOutOfMemory(RuntimeError):
    """A step ran out of (GPU or host) memory; the message gives the batch size that should fit.
    ``suggested_batch_size`` is an attribute."""

    def __init__(self, message: str, suggested_batch_size: int):
        super().__init__(message)
        self.suggested_batch_size = suggested_batch_size


class TrainingInterrupted(RuntimeError):
    """Ctrl-C (or a callback) stopped training; the position was saved for ``--resume``."""


@dataclass
class FitResult:
    """What `fit` hands back: the weights to score and the history."""
    eval_state: dict                 # state dict of the selected weights (best on val, else last)
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0       # seconds inside training steps, all sessions of the run
    images_seen: int = 0
    stopped_early: bool = False
    skipped_batches: int = 0         # on_nan=skip-batch: steps skipped for a non-finite loss/gradient


@dataclass
class TrainState:
    """Where training is and what it has summed so far; saved as ``position`` in the train state.

    ``acc_*`` are the current epoch's running sums (loss x images, correct, images, seconds);
    ``best_val`` is the best validation top-1 (%), ``best_epoch`` 0-based (-1: none yet).
    """
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    images_seen: int = 0
    acc_loss: float = 0.0
    acc_correct: int = 0
    acc_seen: int = 0
    acc_seconds: float = 0.0
    skipped_batches: int = 0
    skipped_in_a_row: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def next_epoch(self, epoch: int) -> None:
        """Move to the start of ``epoch``, clearing the running sums."""
        self.epoch, self.step_in_epoch = epoch, 0
        self.acc_loss, self.acc_correct, self.acc_seen, self.acc_seconds = 0.0, 0, 0, 0.0


def rng_state() -> dict:
    """The CPU (and CUDA) random generator states, to restore on resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
