"""The entry point of the training loop: `fit` builds a `Trainer`, restores
a saved position when given one, and runs it to the end."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..config import TrainConfig
from ..runs import RunDir
from .loop import Trainer
from .state import FitResult


def fit(model: torch.nn.Module, loader, cfg: TrainConfig, run: RunDir, device: torch.device,
        val_fn: Callable[[torch.nn.Module], dict] | None = None, resume: dict | None = None,
        resume_weights: dict | None = None, callbacks: tuple = (), dist_env=None, ctx=None) -> FitResult:
    """Train ``model`` on ``loader`` (a `DeviceLoader` or anything with its
    interface) as ``cfg`` says.

    Args:
        val_fn: model -> ``{"loss": float, "top1": float (%)}`` on the validation split, or None.
        resume / resume_weights: a saved training state (`load_resume_point`) and its weights.
        callbacks: callables ``cb(event, info, model)``, event ``"step"`` (info: the step's numbers) or
            ``"epoch"`` (the metrics row; model: the weights evaluated); a `KeyboardInterrupt`
            raised in one behaves like Ctrl-C (used by tests).
        dist_env: a `DistEnv` under torchrun: DDP-wrapped model,
            epoch metrics summed across ranks, only rank 0 writes the run directory.
        ctx: zero-argument callable giving the forward pass's precision context (a
            `cifarlab.runtime.Precision`: fp16 adds a gradient scaler); None: no autocast.

    Raises:
        TrainingDiverged: a non-finite loss, gradient, weight or validation loss (`Trainer.step`,
            `Trainer.end_epoch`); the last good epoch's checkpoints kept.
        TrainingOutOfMemory: a step ran out of memory; the message names a batch size that fits.
        StorageError: a write failed (disk full, read-only); the previous checkpoints kept.
        TrainingInterrupted: Ctrl-C (status ``interrupted``; position saved).
    """
    trainer = Trainer(model, loader, cfg, run, device, ctx or contextlib.nullcontext, val_fn, callbacks, dist_env)
    if resume is not None:
        trainer.restore(resume, resume_weights)
    return trainer.run_epochs()

