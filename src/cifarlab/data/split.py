"""Seeded, class-stratified train/validation split."""
from __future__ import annotations

import numpy as np

from .cifar import DataError, ImageArrays


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) so that each class keeps its share in val.

    Per-class quotas follow largest-remainder rounding of ``val_size * class_fraction``, so the
    validation split holds exactly ``val_size`` images. Same labels + seed -> same split.

    Returns:
        Two sorted int64 index arrays.

    Raises:
        DataError: ``val_size`` is negative or leaves a class with no training image.
    """
    n = len(labels)
    if val_size < 0 or val_size >= n:
        raise DataError(f"val_size must be in [0, {n}) images for this training set (got {val_size}).")
    if val_size == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = val_size * counts / n
    quota = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - quota), kind="stable")
    quota[remainder_order[: val_size - quota.sum()]] += 1
    if np.any(quota >= counts):
        raise DataError(f"val_size {val_size} would leave a class without training images; use a smaller one.")
    val = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(labels == c)
        val.append(rng.permutation(idx)[:q])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(n, dtype=np.int64), val)
    return train, val


def split_train_val(train: ImageArrays, val_size: int, seed: int) -> tuple[ImageArrays, ImageArrays | None]:
    """Carve a validation split from ``train`` (None when ``val_size`` is 0)."""
    tr, va = stratified_split(train.labels, val_size, seed)
    if len(va) == 0:
        return train, None
    return train.subset(tr), train.subset(va)
