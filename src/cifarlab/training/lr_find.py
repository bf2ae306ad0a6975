"""Learning-rate range test (Smith 2017, arXiv:1506.01186; popularised by fastai's ``lr_find``).

The learning rate grows exponentially from ``start_lr`` to ``end_lr`` over ``steps`` optimizer
steps of the real training setup (same model, strategy, optimizer groups and augmentation); the
loss is smoothed with a bias-corrected exponential moving average and the test stops once it
exceeds ``diverge`` times its minimum. Two suggestions are read off the curve:

* **steepest**: the learning rate where the smoothed loss falls fastest against log(lr);
* **valley**: fastai's rule: inside the longest run of decreasing loss, a point a bit past its
  first third (the region that is still falling steadily, away from the edge of divergence).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..runtime import matmul_dtype_of
from .optim import build_optimizers
from .strategy import Strategy


def lr_range_test(model: torch.nn.Module, loader, cfg, ctx=contextlib.nullcontext, start_lr: float = 1e-6,
                  end_lr: float = 10.0, steps: int = 100, diverge: float = 4.0, beta: float = 0.98) -> dict:
    """Run the range test; returns ``{"lr": [...], "loss": [...], "raw_loss": [...], "valley": lr,
    "steepest": lr}`` (lr of the main parameter group, per step). The model is modified: use a copy.

    Group learning rates keep their ratios to ``cfg.lr`` (bias, head, layer-decay scales). ``ctx``:
    zero-argument callable giving the precision context (a `cifarlab.runtime.Precision`).

    Raises:
        ValueError: ``start_lr``/``end_lr`` not 0 < start < end.
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find needs 0 < --start-lr < --end-lr (got {start_lr}, {end_lr}).")
    strategy = Strategy.from_config(model, cfg, len(loader))
    opts = build_optimizers(model, cfg, params=strategy.optimized_ids, scales=strategy.scales,
                            matmul_dtype=matmul_dtype_of(ctx))
    ratios = [[g["lr"] / cfg.lr for g in o.param_groups] for o in opts]
    lrs, raw, smooth = [], [], []
    avg, best, step, epoch = 0.0, math.inf, 0, 0
    while step < steps:
        for x, y in loader.epoch(epoch):
            lr = start_lr * (end_lr / start_lr) ** (step / max(1, steps - 1))
            for o, rs in zip(opts, ratios):
                for g, r in zip(o.param_groups, rs):
                    g["lr"] = lr * r
            model.train()
            strategy.set_mode(model, step)
            with ctx():
                loss = F.cross_entropy(model(x).float(), y,  # soft (mixed) targets carry their own smoothing
                                       label_smoothing=0.0 if y.is_floating_point() else cfg.label_smoothing)
            value = loss.item()
            if not math.isfinite(value):
                break
            loss.backward()
            for o in opts:
                o.step()
            model.zero_grad(set_to_none=True)
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (step + 1))
            lrs.append(lr), raw.append(value), smooth.append(s)
            best = min(best, s)
            step += 1
            if s > diverge * best or step >= steps:
                break
        else:
            epoch += 1
            continue
        break
    return {"lr": lrs, "loss": smooth, "raw_loss": raw, **suggest(lrs, smooth)}


def suggest(lrs: list[float], losses: list[float]) -> dict:
    """``{"valley": lr, "steepest": lr}`` from a smoothed loss-vs-lr curve (None when too short)."""
    if len(lrs) < 5:
        return {"valley": None, "steepest": None}
    loss = np.asarray(losses)
    grad = np.gradient(loss, np.log(np.asarray(lrs)))
    steepest = lrs[int(np.argmin(grad[1:-1])) + 1]
    # longest decreasing subsequence ending at each point (O(n^2), n ~ 100): fastai's valley rule
    n = len(loss)
    run = np.ones(n, dtype=int)
    start_of = np.arange(n)
    for i in range(1, n):
        for j in range(i):
            if loss[i] < loss[j] and run[j] + 1 > run[i]:
                run[i], start_of[i] = run[j] + 1, start_of[j]
    end = int(np.argmax(run))
    start = int(start_of[end])
    third = (end - start) / 3
    valley = lrs[min(n - 1, start + int(third) + int(third / 2))]
    return {"valley": float(valley), "steepest": float(steepest)}
