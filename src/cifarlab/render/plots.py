"""Figures across runs: training curves overlaid, accuracy against training time and parameters."""
from __future__ import annotations

from pathlib import Path

from .mpl import pyplot


def plot_curves(path: Path, curves: dict[str, list[dict]]) -> Path:
    """`curves_figure` written to the PNG file ``path``."""
    fig = curves_figure(curves)
    fig.savefig(path, dpi=100)
    return Path(path)


def curves_figure(curves: dict[str, list[dict]]):
    """Three panels per epoch, one line per run: loss (train solid, validation dashed), top-1
    accuracy (train solid, validation dashed) and the learning-rate multiplier of the schedule.

    Args:
        curves: run name -> ``metrics.jsonl`` rows (``epoch``, ``train_loss``, ``train_top1``,
            ``lr_mult``, optional ``val_loss`` / ``val_top1``).

    Returns:
        A matplotlib ``Figure`` (closed in pyplot: saving or showing it is the caller's).
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (name, rows) in enumerate(curves.items()):
        if not rows:
            continue
        color = f"C{i % 10}"
        ep = [r["epoch"] + 1 for r in rows]
        axes[0].plot(ep, [r["train_loss"] for r in rows], color=color, label=name)
        axes[1].plot(ep, [r["train_top1"] for r in rows], color=color, label=name)
        axes[2].plot(ep, [r["lr_mult"] for r in rows], color=color, label=name)
        if any("val_loss" in r for r in rows):
            vr = [r for r in rows if "val_loss" in r]
            axes[0].plot([r["epoch"] + 1 for r in vr], [r["val_loss"] for r in vr], color=color, ls="--")
            axes[1].plot([r["epoch"] + 1 for r in vr], [r["val_top1"] for r in vr], color=color, ls="--")
    for ax, label in zip(axes, ("loss (train solid, val dashed)", "top-1 % (train solid, val dashed)",
                                "learning-rate multiplier")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_tradeoff(path: Path, rows: list[dict], x: str, xlabel: str, log_x: bool = False) -> Path:
    """Test top-1 (%) against ``x`` (a comparison-row key such as ``train_seconds``), one labelled
    point per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, r in enumerate(rows):
        if r.get(x) is None or r.get("top1") is None:
            continue
        ax.scatter(r[x], r["top1"], color=f"C{i % 10}", s=30)
        ax.annotate(r["run"], (r[x], r["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Accuracy vs {xlabel.split(' (')[0]}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_forest(path: Path, rows: list[dict]) -> Path:
    """Two panels, one line per row of a verdict table (`cifarlab.workflow.verdicts.verdict_table`):
    test top-1 with its 95% interval, and the difference from the baseline with its paired 95%
    interval (a forest plot; the dashed line is no difference)."""
    plt = pyplot()
    names = [r["run"] for r in rows][::-1]
    ys = range(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.4), sharey=True)
    for y, r in zip(ys, rows[::-1]):
        axes[0].errorbar(r["top1"], y, xerr=[[r["top1"] - r["low"]], [r["high"] - r["top1"]]], fmt="o", color="C0", capsize=3)
        if "difference" in r:
            color = {"better": "C2", "worse": "C3"}.get(r["verdict"], "C7")
            axes[1].errorbar(r["difference"], y, xerr=[[r["difference"] - r["diff_low"]], [r["diff_high"] - r["difference"]]],
                             fmt="o", color=color, capsize=3)
        else:
            axes[1].plot(0, y, "D", color="k")
    axes[1].axvline(0, ls="--", color="k", lw=0.8)
    axes[0].set_yticks(list(ys), names, fontsize=8)
    axes[0].set_xlabel("test top-1 (%), 95% interval")
    axes[1].set_xlabel("difference from the baseline (points), paired 95% interval")
    for ax in axes:
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
