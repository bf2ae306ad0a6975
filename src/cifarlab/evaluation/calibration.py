"""Calibration: expected calibration error (ECE) and the bins of a reliability diagram.

Definitions follow Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML): predictions
are grouped by confidence (the top class probability) into equal-width bins over [0, 1]; ECE is the
image-weighted mean of |accuracy - confidence| over the bins, here in % (0 = perfectly calibrated).
15 bins is the paper's setting.
"""
from __future__ import annotations

import numpy as np

DEFAULT_BINS = 15  # Guo et al. 2017


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float (N, C) logits: float32 (N, C) probabilities."""
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


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


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood in nats per image of float (N, C) logits divided by ``temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017, section 4.2): the scalar T > 0 minimizing the NLL of
    ``softmax(logits / T)`` on held-out predictions. T > 1 softens over-confident predictions, T < 1
    sharpens under-confident ones; the argmax, and so top-1, never changes.

    The NLL is convex in 1/T, so a bracketing golden-section search over log T in [-4, 4]
    (T from 0.018 to 55) finds the minimum to 1e-6 without a gradient.

    Args:
        logits: float (N, C) held-out (validation) logits, e.g. averaged over TTA views.
        labels: int (N,) their classes.

    Raises:
        ValueError: no images, shapes that disagree, or non-finite logits.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or len(labels) == 0:
        raise ValueError(f"logits must be (N, C) with N > 0 and labels (N,), got {logits.shape} and {labels.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits hold NaN/inf; a temperature cannot be fitted to them")
    f = lambda log_t: nll(logits, labels, float(np.exp(log_t)))
    a, b = -4.0, 4.0
    g = (np.sqrt(5.0) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > 1e-6:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(np.exp((a + b) / 2))


def calibration_summary(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                        test_labels: np.ndarray) -> dict:
    """Fit a temperature on the validation predictions and report what it does on the test set.

    Returns:
        ``{"temperature", "fitted_on_images", "test_ece_before", "test_ece_after" (%, 15 bins),
        "test_nll_before", "test_nll_after" (nats per image)}``.

    Raises:
        ValueError: as `fit_temperature`.
    """
    t = fit_temperature(val_logits, val_labels)
    probs = lambda temp: softmax(np.asarray(test_logits, dtype=np.float64) / temp)
    return {"temperature": t, "fitted_on_images": int(len(val_labels)),
            "test_ece_before": expected_calibration_error(probs(1.0), test_labels),
            "test_ece_after": expected_calibration_error(probs(t), test_labels),
            "test_nll_before": nll(test_logits, test_labels), "test_nll_after": nll(test_logits, test_labels, t)}
