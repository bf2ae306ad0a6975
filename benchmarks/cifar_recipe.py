"""Benchmark a dataset's default recipe: test top-1 (mean +- std over seeds), wall seconds, memory,
and a time-to-accuracy curve.

    python benchmarks/cifar_recipe.py --dataset cifar10 --data-dir data --seeds 0 1 2

Wall seconds cover everything ``cifarlab.train`` does (data loading, whitening init, training,
TTA test scoring, throughput probe, writing the run) plus ``import torch`` measured at start-up.
The curve's per-epoch test top-1 (no TTA) is a benchmark-only probe: its time is measured and
subtracted from the wall time, and it never influences training or model selection.
Writes <dataset>-recipe.json (every run, every curve) into --results and prints a Markdown table; the
rows BENCHMARKS.md shows go into benchmarks/results/recipes.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

t_import = time.perf_counter()
import torch  # noqa: E402,F401  (timed: import cost is part of the wall clock)

IMPORT_SECONDS = time.perf_counter() - t_import

import cifarlab  # noqa: E402
from cifarlab.evaluation.metrics import predict_logits  # noqa: E402
from cifarlab.workflow.setup import precision_context  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="benchmarks/runs")
    ap.add_argument("--set", action="append", default=[], help="config overrides key=value")
    ap.add_argument("--results", default=".", help="folder for the summary JSON")
    args = ap.parse_args()
    overrides = cifarlab.config.parse_overrides(args.set)
    results = []
    for seed in args.seeds:
        curve, probe = [], {"seconds": 0.0}
        test_loader = {}

        def probe_cb(event, info, model):
            if event != "epoch":
                return
            t = time.perf_counter()
            if "loader" not in test_loader:  # the test split, normalized as in training, built once
                from cifarlab.data import Batches, DeviceLoader, channel_stats, load_dataset
                ds = load_dataset(run_cfg.dataset, run_cfg.data_dir, download=False)
                mean, std = channel_stats(ds.train.images)
                test_loader["loader"] = Batches(DeviceLoader(ds.test, mean, std, run_cfg.eval_batch_size,
                                                             device=next(model.parameters()).device),
                                                None, run_cfg.interpolation, run_cfg.channels_last)
            batches = test_loader["loader"].ordered()
            ctx = precision_context(next(model.parameters()).device, run_cfg.precision)
            logits, labels = predict_logits(model, batches, ctx, tta=0)
            probe["seconds"] += time.perf_counter() - t
            curve.append({"epoch": info["epoch"] + 1, "elapsed_s": time.perf_counter() - t0 - probe["seconds"],
                          "test_top1_no_tta": 100.0 * (logits.argmax(1) == labels).float().mean().item()})

        run_cfg = cifarlab.recipe_config(args.dataset).update(
            {"data_dir": args.data_dir, "seed": seed, "progress": False, **overrides})
        run_dir = Path(args.out) / f"{args.dataset}-seed{seed}-{int(time.time())}"
        t0 = time.perf_counter()
        run = cifarlab.train(run_cfg, run_dir=run_dir, callbacks=(probe_cb,))
        wall = time.perf_counter() - t0 - probe["seconds"] + IMPORT_SECONDS
        r = run.results
        row = {"seed": seed, "test_top1": r["test"]["top1"], "test_top5": r["test"]["top5"],
               "superclass_top1": r["test"].get("superclass_top1"), "wall_seconds": wall,
               "train_seconds": r["train_seconds"], "train_images_per_s": r["train_images_per_s"],
               "inference_images_per_s": r["inference_images_per_s"], "peak_rss_bytes": r["peak_rss_bytes"],
               "probe_seconds": probe["seconds"], "curve": curve, "run_dir": str(run_dir)}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
        print("curve:", [(c["epoch"], round(c["elapsed_s"], 1), round(c["test_top1_no_tta"], 2)) for c in curve],
              flush=True)
    accs = [r["test_top1"] for r in results]
    summary = {"dataset": args.dataset, "overrides": overrides, "seeds": args.seeds,
               "mean_top1": statistics.mean(accs), "std_top1": statistics.stdev(accs) if len(accs) > 1 else 0.0,
               "max_wall_seconds": max(r["wall_seconds"] for r in results),
               "environment": run.results["environment"], "date": time.strftime("%Y-%m-%d"),
               "command": " ".join(["python", *sys.argv]), "runs": results}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.dataset}-recipe.json").write_text(json.dumps(summary, indent=2))
    print("\n| seed | test top-1 (%) | superclass (%) | wall (s) | train (s) | train img/s | peak RSS (GiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        sc = f"{r['superclass_top1']:.2f}" if r["superclass_top1"] is not None else "-"
        print(f"| {r['seed']} | {r['test_top1']:.2f} | {sc} | {r['wall_seconds']:.0f} | {r['train_seconds']:.0f} | "
              f"{r['train_images_per_s']:.0f} | {r['peak_rss_bytes'] / 2**30:.2f} |")
    print(f"\nmean {summary['mean_top1']:.2f} +- {summary['std_top1']:.2f} %, max wall "
          f"{summary['max_wall_seconds']:.0f} s on {platform.node()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
