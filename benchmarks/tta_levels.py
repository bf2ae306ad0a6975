"""What each test-time augmentation level buys and costs for finished runs: top-1 and scoring
seconds at TTA 0 (the image), 1 (+ mirror), 2 (+ the mirrored pair shifted one pixel up-left
and down-right; airbench's levels) and 3 (all four diagonal shifts); see
:func:`cifarlab.data.augment.tta_views`. ``--fractions`` adds selective TTA: only that share of each
batch, the images the network is least sure of, gets the views
(:func:`cifarlab.evaluation.metrics.selective_tta_logits`).

    python benchmarks/tta_levels.py RUN_DIR... [--splits val test] [--levels 0 1 2 3] [--fractions 1 0.15]

Validation is where a level is chosen (runs trained with ``--val-size``); test figures are for the
record. Scoring seconds are the wall time of the forward passes over the split, single process,
so they scale with the number of views (1, 2, 6, 10), or 1 + (views - 1) x fraction. Prints a
Markdown table.
"""
from __future__ import annotations

import argparse
import time

from cifarlab.config import TTA_LEVELS
from cifarlab.data.augment import tta_view_count
from cifarlab.evaluation.metrics import predict_logits
from cifarlab.runtime import num_threads, tune_malloc
from cifarlab.workflow.setup import assemble_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"])
    ap.add_argument("--levels", nargs="+", type=int, default=[0, 1, 2], choices=TTA_LEVELS)
    ap.add_argument("--fractions", nargs="+", type=float, default=[1.0],
                    help="shares of each batch given the views (selective TTA); 1 = every image")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    tune_malloc()
    print("| run | split | TTA level | fraction | views | top-1 (%) | scoring (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for run in args.runs:
        rd, s = assemble_run(run, data_dir=args.data_dir)
        with num_threads(s.cfg.threads):
            for split in args.splits:
                if s.pipes.get(split) is None:
                    print(f"| {rd.path.name} | {split} | | | | (no {split} split) | |")
                    continue
                for level, frac in [(lv, f) for lv in args.levels for f in (args.fractions if lv else [1.0])]:
                    t = time.perf_counter()
                    logits, labels = predict_logits(s.model, s.pipes[split].ordered(), s.ctx, tta=level,
                                                    tta_fraction=frac)
                    seconds = time.perf_counter() - t
                    top1 = 100.0 * (logits.argmax(1) == labels).float().mean().item()
                    views = tta_view_count(level, frac)
                    print(f"| {rd.path.name} | {split} | {level} | {frac:g} | {views:g} | {top1:.2f} | {seconds:.1f} |",
                          flush=True)


if __name__ == "__main__":
    main()
