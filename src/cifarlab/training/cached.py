"""Training on cached trunk outputs: run the frozen part of a network once, train the rest many times.

One strategy, two cuts (`cifarlab.models.stages`):

* **partial fine-tune**: cut before the last ``cfg.trainable_stages`` stages. The trunk's outputs
  (e.g. EfficientNet-Lite0's third stage at 128 px: 40 x 16 x 16 values an image) are cached for
  ``cfg.cached_views`` views of every training image -- the image, its mirror, random resized crops --
  in ``cfg.cache_dtype``; each epoch shows every image once, in one of its views drawn at random.
  Validation and test outputs are float32 (the image, and the mirror for ``tta`` >= 1), so their
  logits equal the full network's and the test set is scored from the cache when ``tta`` <= 1.
* **linear probe**: the cut before the classifier, so the trunk gives pooled pre-logit features
  and only the classifier trains. Every epoch shows every cached view (the image and its mirror
  unless ``flip`` is none) of every image; features are float32; validation uses the image alone,
  and the test set is scored by the full network.

The trunk's forward pass -- most of a CNN's cost at its early, large resolutions -- is paid once
instead of every epoch. The cache itself: `.trunk_cache`.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..models.stages import split_at_head, split_at_stage
from ..runs import RunDir
from .checkpoint import save_checkpoint
from .fit import fit
from .state import FitResult
from .trunk_cache import (CROP_SCALE, TrunkLoader, build_trunk_cache, cache_root, feature_key, load_split,
                          rounded_normalization, view_names)


def spliced(model: nn.Module, trained: dict, key_of, run: RunDir) -> dict:
    """``model``'s full state dict with the ``trained`` tensors put in (``key_of``: a trained tensor's
    name -> its name in ``model``), saved as the run's ``checkpoint-best`` (evaluate and predict read
    full-model weights). Returns that state dict (copies)."""
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    full.update({key_of(k): v for k, v in trained.items()})
    save_checkpoint(run.path, "best", full)
    return full


@torch.no_grad()
def rest_logits(rest: nn.Module, cached, batch_size: int, device, ctx,
                channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the rest on a cached split, averaged over its views (the mirror TTA when two):
    float32 (N, classes) and int64 (N,) on the CPU."""
    x, y = cached
    loader = TrunkLoader(x, y, batch_size, train=False, seed=0, device=device, channels_last=channels_last)
    was = rest.training
    rest.eval()
    total = None
    for v in range(len(x)):
        with ctx():
            out = torch.cat([rest(h).float().cpu() for h, _ in loader.ordered(view=v)])
        total = out if total is None else total + out
    rest.train(was)
    return total / len(x), torch.from_numpy(y)


def fit_cached(model: nn.Module, pipes: dict, cfg: TrainConfig, run: RunDir, device: torch.device, location: str,
               ctx, score_fn, resume=None, resume_weights=None, callbacks=()) -> tuple[FitResult, dict, dict | None]:
    """Cut ``model`` as ``cfg.strategy`` says (``linear-probe`` or ``partial-fine-tune``), cache the
    trunk's outputs, train the rest on them with `fit`.

    Args:
        pipes: ``{"train", "val", "test"}`` `Batches` (val may be None).
        location: the data's folder (part of the cache key); ctx: the precision context factory;
        score_fn: ``(logits, labels) -> {"loss", "top1"}`` for the validation outputs.
        resume, resume_weights, callbacks: as `fit` (of the rest's parameters).

    Returns:
        ``(result, info, logits)``: the fit result with full-model weights in ``eval_state``; cache
        facts ``{"key", "path", "hit", "extract_seconds", "views", "trunk_shape", "bytes"}``; and
        ``{"test": (logits, labels), "val": ...}`` of the selected weights from the cached splits, or
        None where the full network scores the test set (a linear probe, or ``tta`` 2).

    Raises:
        ConfigError: the model cannot be cut there (`cifarlab.models.stages`).
    """
    probe = cfg.strategy == "linear-probe"
    side = pipes["test"].side() or int(pipes["test"].loader.size[-1])
    trunk, rest = split_at_head(model) if probe else split_at_stage(model, cfg.trainable_stages, side=min(side, 64))
    norm, precision = rounded_normalization(pipes["test"].loader), getattr(ctx, "name", None)
    if probe:
        train_views = ["center", "flip"] if cfg.flip != "none" else ["center"]
        eval_views, dtype, splits = ["center"], "fp32", ("train", "val")
        legacy = feature_key(cfg, location, side, norm, tuple(train_views), precision=precision)
        extra, single_file = {"kind": "features"}, cache_root(cfg) / f"{legacy}.safetensors"
    else:
        kept = {id(p) for p in rest.parameters()}
        for p in trunk.parameters():
            if id(p) not in kept:
                p.requires_grad_(False)
        train_views, eval_views = view_names(cfg), ["center", "flip"][:1 + (cfg.tta >= 1)]
        dtype, splits, single_file = cfg.cache_dtype, ("train", "val", "test"), None
        extra = {"trainable_stages": cfg.trainable_stages, "dtype": cfg.cache_dtype, "tta_views": min(cfg.tta, 1),
                 "crop_scale": cfg.random_resized_crop or CROP_SCALE, "kind": "trunk"}
    key = feature_key(cfg, location, side, norm, tuple(train_views), extra, precision=precision)
    t0 = time.perf_counter()
    folder, hit = build_trunk_cache(trunk, pipes, cfg, key, ctx, train_views, eval_views, dtype, splits, single_file)
    train_x, train_y = load_split(folder, "train")
    info = {"key": key, "path": str(folder), "hit": hit, "extract_seconds": time.perf_counter() - t0,
            "views": train_views, "trunk_shape": list(train_x.shape[2:]),
            "bytes": sum(f.stat().st_size for f in Path(folder).iterdir())}
    cl = cfg.channels_last
    loader = TrunkLoader(train_x, train_y, cfg.batch_size, train=True, seed=cfg.seed, device=device,
                         channels_last=cl, every_view=probe)
    val = load_split(folder, "val")
    val_batch = len(val[1]) if probe and val else cfg.eval_batch_size   # a probe's features fit in one batch
    val_fn = (lambda m: score_fn(*rest_logits(m, val, val_batch, device, ctx, cl))) if val else None
    result = fit(rest, loader, cfg, run, device, val_fn=val_fn, resume=resume, resume_weights=resume_weights,
                 callbacks=callbacks, ctx=ctx)
    rest.load_state_dict(result.eval_state)
    result.eval_state = spliced(model, result.eval_state, rest.model_keys().__getitem__, run)
    logits = None
    if not probe and cfg.tta <= 1:
        logits = {s: rest_logits(rest, c, cfg.eval_batch_size, device, ctx, cl)
                  for s, c in (("test", load_split(folder, "test")), ("val", val)) if c is not None}
    return result, info, logits
