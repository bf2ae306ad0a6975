"""Training as the config's strategy says: `fit_strategy` runs `fit` on the images,
or on cached trunk outputs for a linear probe or a partial fine-tune (`fit_cached`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..runs import RunDir
from .cached import fit_cached
from .fit import fit
from .state import FitResult
from .strategy import caches_trunk


@dataclass
class Fitted:
    """What `fit_strategy` gives: the fit result (full-model weights in ``eval_state``), the
    feature cache's facts (None without a cache) and logits of the selected weights already computed
    from cached trunk outputs (``{"test": (logits, labels), "val": ...}``, or None)."""
    result: FitResult
    cache: dict | None = None
    logits: dict | None = None


def fit_strategy(model: torch.nn.Module, pipes: dict, cfg: TrainConfig, run: RunDir, device: torch.device, ctx,
                 location: str, score_fn, val_fn=None, resume: dict | None = None, resume_weights: dict | None = None,
                 callbacks: tuple = (), dist_env=None) -> Fitted:
    """Train as ``cfg.strategy`` says: on cached trunk outputs (a linear probe with ``feature_cache``, a
    partial fine-tune; `caches_trunk`) or on the images with `fit`.

    Args:
        pipes: ``{"train", "val", "test"}`` `Batches` (val may be None).
        ctx: the `Precision`; location: the data's folder (part of a cache's key).
        score_fn: ``(logits, labels) -> {"loss", "top1"}`` for cached validation outputs.
        val_fn: model -> ``{"loss", "top1"}`` on the validation images (training on images), or None.
        resume, resume_weights, callbacks, dist_env: as `fit`.

    Raises:
        TrainingDiverged: as `fit`; likewise TrainingOutOfMemory, TrainingInterrupted, StorageError.
        ConfigError: the model cannot be cut for a cached linear probe or a partial fine-tune.
    """
    kw = dict(resume=resume, resume_weights=resume_weights, callbacks=callbacks)
    if not caches_trunk(cfg):
        return Fitted(fit(model, pipes["train"], cfg, run, device, val_fn=val_fn, dist_env=dist_env, ctx=ctx, **kw))
    return Fitted(*fit_cached(model, pipes, cfg, run, device, location, ctx, score_fn, **kw))
