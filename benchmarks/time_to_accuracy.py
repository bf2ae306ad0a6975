"""Time to accuracy of finished runs: wall seconds vs test top-1, one point per run, one colour per
strategy, one marker per label budget, one panel per dataset; and the table BENCHMARKS.md records.

Usage: python benchmarks/time_to_accuracy.py RUN_DIR... --out time_to_accuracy.png [--title TEXT]
(a folder of run directories, e.g. a suite's output, may be given instead of the runs)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from cifarlab.render.mpl import pyplot

MARKERS = "osD^v<>ph*"


def finished_run_dirs(paths: list[str]) -> list[Path]:
    """Every finished run directory (one holding ``results.json``) among ``paths``, each a run or a
    folder of runs (a suite's output). Exits with a message when there is none."""
    found = []
    for p in map(Path, paths):
        found += [p] if (p / "results.json").is_file() else sorted(q.parent for q in p.glob("*/results.json"))
    if not found:
        raise SystemExit(f"no finished run (results.json) under {', '.join(paths)}")
    return found


def read_runs(paths: list[str]) -> list[dict]:
    """``results.json`` plus the run's name of every finished run under ``paths``."""
    return [{**json.loads((run / "results.json").read_text()), "name": run.name} for run in finished_run_dirs(paths)]


def table(runs: list[dict]) -> str:
    """Markdown rows: run, strategy, labels, side, test top-1, training / wall seconds, images/s, peak memory."""
    rows = ["| run | dataset | strategy | labels | side (px) | test top-1 (%) | training (s) | wall (s) | train images/s | peak RSS (GiB) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r["dataset"], r["train_images"], r["wall_seconds"])):
        rows.append(f"| {r['name']} | {r['dataset']} | {r['strategy']} | {r['train_images']} | {r['input_side']} | "
                    f"{r['test']['top1']:.2f} | {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | "
                    f"{r['train_images_per_s']:.0f} | {r['peak_rss_bytes'] / 2**30:.1f} |")
    return "\n".join(rows)


def _label(ax, runs: list[dict]) -> None:
    """Name each point, right of it, at the first of a few heights where the text covers no marker
    and no label already placed (highest points first). Needs the axes' final limits and layout."""
    fig = ax.get_figure()
    box = ax.get_window_extent()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    px = (math.log10(x1) - math.log10(x0)) / (box.width * 72 / fig.dpi)  # decades per typographic point
    py = (y1 - y0) / (box.height * 72 / fig.dpi)                          # % per point
    runs = sorted(runs, key=lambda r: -r["test"]["top1"])
    points = [(math.log10(r["wall_seconds"] / 60), r["test"]["top1"]) for r in runs]
    taken = [(lx - 4 * px, lx + 4 * px, y - 4 * py, y + 4 * py) for lx, y in points]  # the markers
    for r, (lx, y) in zip(runs, points):
        hit = (r.get("feature_cache") or {}).get("hit")  # its wall time leaves out the caching pass
        text = r["name"] + (" (cache reused)" if hit else "")
        for off in (3, -11, 13, -21, 23, -31):
            cand = (lx + 5 * px, lx + (5 + 4.2 * len(text)) * px, y + off * py, y + (off + 8) * py)  # 7-pt text
            if not any(cand[0] < t[1] and t[0] < cand[1] and cand[2] < t[3] and t[2] < cand[3] for t in taken):
                break
        taken.append(cand)
        ax.annotate(text, (10 ** lx, y), fontsize=7, xytext=(5, off), textcoords="offset points")


def plot(runs: list[dict], out: Path, title: str) -> None:
    plt = pyplot()
    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 4.8), dpi=120, squeeze=False)
    strategies = sorted({r["strategy"] for r in runs})
    budgets = sorted({r["train_images"] for r in runs})
    colours = dict(zip(strategies, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    by_axis = {}
    for ax, dataset in zip(axes[0], datasets):
        mine = by_axis[ax] = [r for r in runs if r["dataset"] == dataset]
        for r in mine:
            ax.scatter(r["wall_seconds"] / 60, r["test"]["top1"], color=colours[r["strategy"]], s=48,
                       marker=MARKERS[budgets.index(r["train_images"]) % len(MARKERS)], zorder=3)
        ax.margins(y=0.08)
        for s in sorted({r["strategy"] for r in mine}):
            ax.scatter([], [], color=colours[s], label=s)
        for b in sorted({r["train_images"] for r in mine}):
            ax.scatter([], [], color="grey", marker=MARKERS[budgets.index(b) % len(MARKERS)], label=f"{b} labels")
        ax.set_xscale("log")
        minutes = [r["wall_seconds"] / 60 for r in mine]
        lo, hi = min(minutes) / 1.3, max(minutes) * 2.4  # room for the labels of the right-most points
        ax.set_xlim(lo, hi)
        ticks = [t for t in (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120) if lo <= t <= hi]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("wall time (minutes, log scale)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"{title}: {dataset}" if len(datasets) > 1 else title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    for ax, mine in by_axis.items():
        _label(ax, mine)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="time_to_accuracy.png")
    ap.add_argument("--title", default="Time to accuracy")
    args = ap.parse_args()
    runs = read_runs(args.runs)
    plot(runs, Path(args.out), args.title)
    print(table(runs))
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
