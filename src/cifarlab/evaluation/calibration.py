"""Calibration: expected calibration error (ECE) and the bins of a reliability diagram.

Definitions follow Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML): predictions
are grouped by confidence (the top class probability) into equal-width bins over [0, 1]; ECE is the
image-weighted mean of |accuracy - confidence| over the bins, here in % (0 = perfectly calibrated).
15 bins is the paper's setting.
"""
from __future__ import annotations

import numpy as np

DEFAULT_BINS = 15  # Guo et al. 2017


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict:
    """Per-bin counts, mean confidence and accuracy.

    Args:
        probs: float (N, C) class probabilities (rows sum to 1).
        labels: int (N,) true classes.
        n_bins: equal-width confidence bins over [0, 1].

    Returns:
        ``{"edges": (n_bins+1,), "count": (n_bins,), "confidence": (n_bins,), "accuracy": (n_bins,)}``
        as lists; confidence and accuracy are fractions in [0, 1], NaN for empty bins.

    Raises:
        ValueError: shapes disagree or ``n_bins`` < 1.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot occur with C >= 1
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": mean_conf.tolist(),
            "accuracy": acc.tolist()}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE in % (Guo et al. 2017): sum over bins of (bin share of images) x |accuracy - confidence|."""
    b = reliability_bins(probs, labels, n_bins)
    count = np.asarray(b["count"], dtype=np.float64)
    gap = np.abs(np.nan_to_num(np.asarray(b["accuracy"]) - np.asarray(b["confidence"])))
    return float(100.0 * (count * gap).sum() / max(count.sum(), 1.0))
