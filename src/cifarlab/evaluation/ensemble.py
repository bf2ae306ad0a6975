"""Ensembles of classifiers by averaging class probabilities.

Three ways to weight the members, all applied to probabilities (softmax of each run's TTA logits):

* ``uniform``: the plain mean.
* ``weighted``: weights proportional to validation top-1 accuracy (as the seed notebook 003 did
  with its nine pretrained models).
* ``greedy``: forward selection with replacement on the validation set (Caruana, Niculescu-Mizil,
  Crew & Ksikes 2004, "Ensemble Selection from Libraries of Models", ICML): start from the required
  members (or nothing), repeatedly add the member whose addition gives the best validation accuracy
  (ties broken by validation log-loss), and keep the best ensemble seen along the way. A member
  picked k times has weight k.

Everything here is NumPy on arrays already computed; nothing is trained or loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("uniform", "weighted", "greedy")


class EnsembleError(ValueError):
    """The members cannot be ensembled (no validation predictions for a method that needs them...)."""


def combine(probs: list[np.ndarray], weights) -> np.ndarray:
    """Weighted mean of probability arrays, each float (N, C); weights need not sum to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(probs) or w.sum() <= 0 or (w < 0).any():
        raise EnsembleError(f"need one non-negative weight per member with a positive sum, got {w.tolist()}")
    out = np.zeros_like(probs[0], dtype=np.float64)
    for p, wi in zip(probs, w):
        if wi:
            out += wi * p
    return (out / w.sum()).astype(np.float32)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in %."""
    return float(100.0 * (probs.argmax(1) == labels).mean())


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class, in nats."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def error_diversity(probs: list[np.ndarray], labels: np.ndarray, names: list[str]) -> dict:
    """How differently the members err on the same images: what an average can fix and what it cannot.

    Args:
        probs: one float (N, C) probability array per member, on the same N images.
        labels: int (N,) true classes.
        names: one name per member.

    Returns:
        ``{"images", "wrong_for_all", "wrong_for_any", "oracle_top1", "error_correlation",
        "mean_error_correlation"}``: counts of images every member / at least one member gets wrong;
        the top-1 (%) of an oracle that picks the right member per image (an average cannot beat it);
        Pearson's correlation of the members' 0/1 error indicators for every pair (``"a vs b"`` to r,
        None where a member makes no error or only errors); and the mean over the defined pairs.
        Correlated errors are why an ensemble of one family saturates (Kuncheva & Whitaker 2003,
        "Measures of diversity in classifier ensembles", Machine Learning 51).
    """
    wrong = np.stack([p.argmax(1) != labels for p in probs]).astype(np.float64)  # (M, N)
    pairs = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = wrong[i], wrong[j]
            pairs[f"{names[i]} vs {names[j]}"] = (None if a.std() == 0 or b.std() == 0
                                                 else float(np.corrcoef(a, b)[0, 1]))
    defined = [r for r in pairs.values() if r is not None]
    all_wrong = int(wrong.all(0).sum())
    return {"images": int(len(labels)), "wrong_for_all": all_wrong, "wrong_for_any": int(wrong.any(0).sum()),
            "oracle_top1": float(100.0 * (1 - all_wrong / max(len(labels), 1))),
            "error_correlation": pairs,
            "mean_error_correlation": float(np.mean(defined)) if defined else None}


def accuracy_weights(val_probs: list[np.ndarray], val_labels: np.ndarray) -> np.ndarray:
    """Weights proportional to each member's validation top-1 accuracy (sum 1).

    Raises:
        EnsembleError: every member has 0% validation accuracy (there is nothing to weight by).
    """
    acc = np.array([accuracy(p, val_labels) for p in val_probs])
    if acc.sum() <= 0:
        raise EnsembleError("every run has 0% validation top-1, so accuracy weights are undefined; use the "
                            "uniform or greedy method, or check that the runs trained.")
    return acc / acc.sum()


def greedy_selection(val_probs: list[np.ndarray], val_labels: np.ndarray, max_rounds: int | None = None,
                     init: list[int] = ()) -> np.ndarray:
    """Caruana et al. (2004) forward selection with replacement.

    Args:
        val_probs: per member, float (N_val, C) validation probabilities.
        val_labels: int (N_val,).
        max_rounds: additions to try (default 2 x members).
        init: member indices the ensemble starts with (e.g. the best run of each architecture).

    Returns:
        int64 (members,) counts: how many times each member was picked (its weight).
    """
    n = len(val_probs)
    rounds = max_rounds if max_rounds is not None else 2 * n
    counts = np.zeros(n, dtype=np.int64)
    total = np.zeros_like(val_probs[0], dtype=np.float64)
    for i in init:
        counts[i] += 1
        total += val_probs[i]
    score = lambda s, k: (accuracy(s / k, val_labels), -log_loss(s / k, val_labels))
    best_counts = counts.copy() if counts.sum() else None
    best_score = score(total, counts.sum()) if counts.sum() else (-np.inf, -np.inf)
    for _ in range(rounds):
        k = counts.sum() + 1
        cands = [score(total + p, k) for p in val_probs]
        j = max(range(n), key=lambda i: cands[i])
        counts[j] += 1
        total += val_probs[j]
        if cands[j] > best_score:
            best_score, best_counts = cands[j], counts.copy()
    return best_counts


@dataclass
class Member:
    """One candidate: a name (run directory), its architecture and its predictions."""
    name: str
    architecture: str
    test_probs: np.ndarray                 # float32 (N_test, C)
    val_probs: np.ndarray | None = None    # float32 (N_val, C) or None when the run had no validation split


def select_members(members: list[Member], val_labels: np.ndarray | None, min_val_acc: float | None = None
                   ) -> tuple[list[Member], list[str]]:
    """Apply "validation accuracy >= threshold" (in %). Returns (kept, notes about dropped runs).

    Raises:
        EnsembleError: a threshold without validation predictions, or nothing left.
    """
    if min_val_acc is None:
        return list(members), []
    if val_labels is None or any(m.val_probs is None for m in members):
        raise EnsembleError("min_val_acc needs validation predictions: train the runs with --val-size.")
    kept, notes = [], []
    for m in members:
        acc = accuracy(m.val_probs, val_labels)
        if acc >= min_val_acc:
            kept.append(m)
        else:
            notes.append(f"{m.name}: validation top-1 {acc:.2f}% < {min_val_acc}%")
    if not kept:
        raise EnsembleError(f"no run reaches validation top-1 >= {min_val_acc}%: " + "; ".join(notes))
    return kept, notes


def ensemble_weights(method: str, members: list[Member], val_labels: np.ndarray | None,
                     per_architecture: bool = False) -> np.ndarray:
    """Member weights (sum 1) for ``method`` in `METHODS`.

    ``per_architecture`` (greedy only; uniform and weighted use every member anyway) starts the
    greedy search from the best-validation run of each architecture, so each is represented.

    Raises:
        EnsembleError: unknown method, or weighted/greedy without validation predictions.
    """
    if method not in METHODS:
        raise EnsembleError(f"unknown ensemble method {method!r}; choose from {', '.join(METHODS)}")
    if method == "uniform":
        return np.full(len(members), 1.0 / len(members))
    missing = [m.name for m in members if m.val_probs is None]
    if val_labels is None or missing:
        raise EnsembleError(f"the {method} ensemble needs validation predictions, and these runs have none "
                            f"(trained with val_size=0): {', '.join(missing) or 'all'}. Train them with "
                            "--val-size N, or use --method uniform.")
    val = [m.val_probs for m in members]
    if method == "weighted":
        return accuracy_weights(val, val_labels)
    init = []
    if per_architecture:
        for arch in dict.fromkeys(m.architecture for m in members):
            idx = [i for i, m in enumerate(members) if m.architecture == arch]
            init.append(max(idx, key=lambda i: accuracy(val[i], val_labels)))
    counts = greedy_selection(val, val_labels, init=init)
    return counts / counts.sum()
