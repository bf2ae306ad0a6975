"""Interpretation figures of one run, and the dataset's own figures (matplotlib, Agg backend).

Draws what `cifarlab.evaluation` computed: reliability diagram, top-loss image grid,
class counts and a sample grid per class. Every function writes one PNG and returns its path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .mpl import pyplot


def plot_reliability(path: Path, bins: dict, ece: float, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin (bars) with the diagonal of perfect calibration
    (Guo et al. 2017, Fig. 1); a bar below the diagonal means over-confidence."""
    plt = pyplot()
    edges = np.asarray(bins["edges"])
    acc = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
    conf = np.asarray(bins["confidence"], dtype=float)
    width = np.diff(edges)
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(4.5, 5.2), height_ratios=[3, 1], sharex=True)
    ax.bar(edges[:-1], acc, width=width, align="edge", color="C0", edgecolor="k", lw=0.5, label="accuracy")
    gap_lo = np.where(np.isnan(conf), 0, np.minimum(acc, np.nan_to_num(conf)))
    ax.bar(edges[:-1], np.abs(np.nan_to_num(conf) - acc), bottom=gap_lo, width=width, align="edge",
           color="C3", alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {ece:.2f}%", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(edges[:-1], bins["count"], width=width, align="edge", color="0.6")
    axc.set_yscale("log")
    axc.set_xlabel("confidence (top-class probability)")
    axc.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_top_losses(path: Path, images: np.ndarray, entries: list[dict], classes: list[str], cols: int = 8) -> Path:
    """`top_losses_figure` written to the PNG file ``path``."""
    top_losses_figure(images, entries, classes, cols).savefig(path, dpi=100)
    return Path(path)


def top_losses_figure(images: np.ndarray, entries: list[dict], classes: list[str], cols: int = 8):
    """Grid of the top-loss images with true / predicted label and probabilities; a matplotlib
    ``Figure`` (closed in pyplot).

    Args:
        images: uint8 (k, 3, H, W) RGB, one per entry (in the entries' order).
        entries: `cifarlab.evaluation.analysis.top_losses` rows.
    """
    plt = pyplot()
    k = len(entries)
    rows = max(1, -(-k // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 2.1 * rows + 0.4), squeeze=False)  # room for 2-line titles
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, e in zip(axes.flat, images, entries):
        ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(f"true {classes[e['true']]} {e['prob_true']:.2f}\npred {classes[e['predicted']]} "
                     f"{e['prob_predicted']:.2f}", fontsize=6.5)
    fig.suptitle("Top losses (true label, its probability / predicted label, its probability)", fontsize=9)
    fig.tight_layout(h_pad=1.5)
    plt.close(fig)
    return fig


def plot_class_counts(path: Path, counts: dict[str, np.ndarray], classes: list[str]) -> Path:
    """Images per class for each split (``{"train": (C,), "test": (C,)}``)."""
    plt = pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.12 * n + 3), 3.2))
    w = 0.8 / max(len(counts), 1)
    for i, (split, c) in enumerate(counts.items()):
        ax.bar(np.arange(n) + i * w, c, width=w, label=f"{split} ({int(np.sum(c))})")
    if n <= 20:
        ax.set_xticks(np.arange(n) + 0.4 - w / 2, classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_class_samples(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
                       per_class: int = 8, max_classes: int = 20, seed: int = 0) -> Path:
    """One row per class (the first ``max_classes``) of ``per_class`` random images.

    Args:
        images: uint8 (N, 3, H, W); labels: int (N,).
    """
    plt = pyplot()
    rng = np.random.default_rng(seed)
    shown = list(range(min(len(classes), max_classes)))
    fig, axes = plt.subplots(len(shown), per_class, figsize=(0.8 * per_class + 1.2, 0.8 * len(shown)),
                             squeeze=False)
    for r, c in enumerate(shown):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j < len(pick):
                ax.imshow(images[pick[j]].transpose(1, 2, 0), interpolation="nearest")
        axes[r][0].text(-0.1, 0.5, classes[c], transform=axes[r][0].transAxes, ha="right", va="center",
                        fontsize=7)
    title = "Samples per class" + (f" (first {max_classes} of {len(classes)} classes)" if len(classes) > max_classes else "")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.15, wspace=0.05, hspace=0.05)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_image_grid(path: Path, images: np.ndarray, titles: list[str], title: str, cols: int = 8) -> Path:
    """`image_grid_figure` written to the PNG file ``path``."""
    image_grid_figure(images, titles, title, cols).savefig(path, dpi=110)
    return Path(path)


def image_grid_figure(images: np.ndarray, titles: list[str], title: str, cols: int = 8):
    """A grid of images with a caption each; a matplotlib ``Figure`` (closed in pyplot).

    Args:
        images: float (N, 3, H, W) RGB in [0, 1] (clipped), or uint8 (N, 3, H, W).
        titles: N captions (small font; long ones are cut at 24 characters).
    """
    plt = pyplot()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.4 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            im = images[i].transpose(1, 2, 0)
            ax.imshow(im if im.dtype == np.uint8 else np.clip(im, 0, 1), interpolation="nearest")
            ax.set_title(titles[i][:24], fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
