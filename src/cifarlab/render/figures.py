"""Figures and tables of one evaluation: confusion matrix (CSV + PNG), per-class table (CSV + Markdown).

Computes nothing itself: it draws and writes what `cifarlab.evaluation` measured.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .mpl import pyplot


def write_confusion(out_dir: Path, counts: np.ndarray, classes: list[str], stem: str = "confusion_matrix",
                    title: str = "Confusion matrix (row-normalized)") -> tuple[Path, Path]:
    """Write ``{stem}.csv`` (counts, rows = true class) and ``{stem}.png`` (row-normalized to %,
    so each row reads as where that class's images went)."""
    out_dir = Path(out_dir)
    csv_path, png_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, counts):
            w.writerow([name, *map(int, row)])
    fig = confusion_figure(counts, classes, title)
    fig.savefig(png_path, dpi=110)
    return csv_path, png_path


def confusion_figure(counts: np.ndarray, classes: list[str], title: str = "Confusion matrix (row-normalized)"):
    """The confusion matrix ``counts`` (C, C) int (row = true class) row-normalized to %, each row read
    as where that class's images went; the percentages printed up to 20 classes. A matplotlib
    ``Figure`` (closed in pyplot)."""
    plt = pyplot()
    pct = 100 * counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(5.0, 0.28 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if pct[i, j] > 50 else "black")
    fig.tight_layout()
    plt.close(fig)
    return fig


def write_per_class(out_dir: Path, metrics: dict, classes: list[str]) -> tuple[Path, Path]:
    """Write ``per_class.csv`` and ``per_class.md``: class, images, correct, top-1 accuracy (%)."""
    counts = np.array(metrics["confusion"])
    rows = [(c, int(counts[i].sum()), int(counts[i, i]), metrics["per_class_accuracy"][c])
            for i, c in enumerate(classes)]
    out_dir = Path(out_dir)
    with open(out_dir / "per_class.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "images", "correct", "top1_percent"])
        w.writerows([(c, n, k, f"{a:.2f}") for c, n, k, a in rows])
    lines = ["| class | images | correct | top-1 (%) |", "|---|---:|---:|---:|"]
    lines += [f"| {c} | {n} | {k} | {a:.2f} |" for c, n, k, a in sorted(rows, key=lambda r: r[3])]
    (out_dir / "per_class.md").write_text("\n".join(lines) + "\n")
    return out_dir / "per_class.csv", out_dir / "per_class.md"


def plot_lr_find(path: Path, result: dict) -> Path:
    """Loss (smoothed) against learning rate on a log axis, with the suggestions marked."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lr"], result["raw_loss"], color="0.8", lw=1, label="loss per step")
    ax.plot(result["lr"], result["loss"], color="C0", lw=2, label="smoothed loss")
    for key, color in (("valley", "C2"), ("steepest", "C3")):
        if result.get(key):
            ax.axvline(result[key], color=color, ls="--", label=f"{key}: {result[key]:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (main parameter group)")
    ax.set_ylabel("training loss")
    lo, hi = min(result["loss"]), max(result["loss"][: max(1, len(result["loss"]) // 2)])
    ax.set_ylim(lo - 0.1 * abs(lo), hi + 0.5 * (hi - lo) + 1e-6)
    ax.set_title("Learning-rate range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
