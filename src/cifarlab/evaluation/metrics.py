"""Predictions (with TTA) and classification metrics.

Metric definitions: top-k accuracy in % of images whose label is among the k highest logits;
loss is the plain cross-entropy (no label smoothing) in nats per image; superclass accuracy (CIFAR-100)
maps predicted and true fine labels to their coarse class (Krizhevsky 2009) and compares those.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import tta_views
from ..runtime import progress_bar
from .calibration import expected_calibration_error


@torch.no_grad()
def predict_logits(model, batches, ctx=contextlib.nullcontext, tta: int = 0, progress: str | None = None,
                   tta_fraction: float = 1.0):
    """Run ``model`` over ``batches`` of ``(x, y)`` and return ``(logits, labels)``.

    Args:
        batches: iterable of float (B, 3, H, W) normalized images and int64 (B,) labels.
        ctx: zero-argument callable giving the precision context (`cifarlab.runtime.autocast`).
        tta: a level in ``TTA_LEVELS`` (0-3), see `cifarlab.data.augment.tta_views`; views' logits are averaged.
        progress: a label for a progress bar over the batches (None: no bar).
        tta_fraction: in (0, 1]; below 1, selective TTA (`selective_tta_logits`).

    Returns:
        float32 logits (N, num_classes) and int64 labels (N,), on the CPU. Restores train mode.
    """
    was_training = model.training
    model.eval()
    out, ys = [], []
    try:
        with ctx():
            for x, y in progress_bar(batches, progress):
                out.append(selective_tta_logits(model, x, tta, tta_fraction).cpu())
                ys.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out), torch.cat(ys)


def selective_tta_logits(model, x: torch.Tensor, tta: int, fraction: float = 1.0) -> torch.Tensor:
    """float32 (B, num_classes) logits of one batch ``x`` (B, 3, H, W) at TTA level ``tta``, the
    views given only to the ``ceil(fraction * B)`` images the model is least sure of.

    Selective TTA (Hiverge's CIFAR-10 speedrun record, 2025, github.com/hiverge/cifar10-speedrun):
    the image's own view runs for the whole batch; the images whose top softmax probability is
    lowest get the level's other views too, with the weights of `tta_views`,
    and the rest keep their own view's logits. The views change few confident predictions, so most of
    TTA's gain stays at ``1 + (V - 1) * fraction`` forward passes per image instead of V. ``fraction``
    1 is plain TTA: every view for every image. Keep the
    fraction well above the network's test error: at 0.25, CIFAR-10 networks (6% errors) lost nothing
    while CIFAR-100 ones (24%) lost 0.66 points (docs/recipe-search.md, row 'selective TTA').
    """
    if fraction >= 1 or tta == 0:
        return sum(w * model(v).float() for w, v in tta_views(x, tta))
    logits = model(x).float()
    k = math.ceil(fraction * len(x))
    unsure = logits.softmax(1).amax(1).topk(k, largest=False).indices
    views = tta_views(x[unsure], tta)
    own_weight = views[0][0]  # the first view is the image itself, whose logits are already known
    rest = sum(w * model(v).float() for w, v in views[1:])
    return logits.index_copy(0, unsure, own_weight * logits[unsure] + rest)


def loss_and_top1(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"loss": cross-entropy in nats per image, "top1": %}`` of float (N, C) logits and int64 (N,)
    labels: the validation numbers of every epoch."""
    return {"loss": F.cross_entropy(logits.float(), labels).item(),
            "top1": 100.0 * (logits.argmax(1) == labels).float().mean().item()}


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy in % (k clipped to the number of classes)."""
    return 100.0 * topk_hits(logits, labels, k).float().mean().item()


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """bool (N,): whether each image's label is among its ``k`` highest logits (ties broken as
    ``torch.topk`` breaks them, so per-image counts add up to `topk_accuracy`)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels.view(-1, 1)).any(dim=1)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                           coarse_of_fine: np.ndarray | None = None,
                           coarse_classes: list[str] | None = None) -> dict:
    """Top-1/top-5 (%), loss (nats), ECE (%), per-class accuracy (%), confusion matrix, superclass accuracy.

    Returns a JSON-ready dict; ``confusion`` is a nested list (rows = true class).
    """
    preds = logits.argmax(1)
    y, p = labels.numpy(), preds.numpy()
    cm = confusion_matrix(y, p, len(classes))
    per_class = (100.0 * np.diag(cm) / np.maximum(cm.sum(1), 1)).tolist()
    out = {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "loss": F.cross_entropy(logits, labels).item(),
        "ece": expected_calibration_error(logits.float().softmax(1).numpy(), y),
        "num_images": int(len(labels)),
        "per_class_accuracy": dict(zip(classes, per_class)),
        "confusion": cm.tolist(),
    }
    if coarse_of_fine is not None:
        yc, pc = coarse_of_fine[y], coarse_of_fine[p]
        out["superclass_top1"] = 100.0 * float((yc == pc).mean())
        ccm = confusion_matrix(yc, pc, len(coarse_classes))
        out["superclass_per_class_accuracy"] = dict(
            zip(coarse_classes, (100.0 * np.diag(ccm) / np.maximum(ccm.sum(1), 1)).tolist()))
    return out


@torch.no_grad()
def inference_throughput(model, example: torch.Tensor, ctx=contextlib.nullcontext, repeats: int = 3) -> float:
    """Images/s of a plain forward pass (no TTA) on ``example`` (B, 3, H, W), best of ``repeats``
    (CUDA synchronized around each timing). ``ctx``: the precision context factory."""
    device = example.device
    was_training = model.training
    model.eval()
    best = 0.0
    try:
        with ctx():
            model(example)  # warm-up (oneDNN primitive creation)
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
                model(example)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = max(best, len(example) / (time.perf_counter() - t))
    finally:
        model.train(was_training)
    return best
