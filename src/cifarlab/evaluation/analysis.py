"""Error analysis on predictions: most-confused class pairs and top-loss images (NumPy only).

Both follow fastai's ``ClassificationInterpretation`` ideas (``most_confused``, ``plot_top_losses``)
computed from a run's cached test probabilities.
"""
from __future__ import annotations

import numpy as np


def most_confused(confusion: np.ndarray, classes: list[str], k: int = 10, min_count: int = 1) -> list[dict]:
    """The ``k`` largest off-diagonal cells of a count confusion matrix (rows = true class).

    Returns:
        ``[{"true", "predicted", "count", "percent_of_true"}]`` sorted by count, descending
        (ties by class order); ``percent_of_true`` is count / images of the true class in %.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = []
    for flat in order:
        i, j = divmod(int(flat), cm.shape[1])
        if off[i, j] < min_count:
            break
        rows.append({"true": classes[i], "predicted": classes[j], "count": int(off[i, j]),
                     "percent_of_true": 100.0 * off[i, j] / max(cm[i].sum(), 1)})
    return rows


def top_losses(probs: np.ndarray, labels: np.ndarray, k: int = 16) -> list[dict]:
    """The ``k`` test images with the highest cross-entropy loss.

    Args:
        probs: float (N, C) probabilities; labels: int (N,).

    Returns:
        ``[{"index", "true", "predicted", "prob_true", "prob_predicted", "loss"}]`` (class indices,
        probabilities in [0, 1], loss in nats), highest loss first.
    """
    p_true = probs[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(p_true, 1e-12, None))
    idx = np.argsort(-loss, kind="stable")[:k]
    pred = probs.argmax(1)
    return [{"index": int(i), "true": int(labels[i]), "predicted": int(pred[i]), "prob_true": float(p_true[i]),
             "prob_predicted": float(probs[i, pred[i]]), "loss": float(loss[i])} for i in idx]
