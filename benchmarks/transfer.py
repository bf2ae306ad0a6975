"""The transfer experiment that can run without ImageNet weights: CIFAR-100 -> CIFAR-10 (5 000 labels).

    python benchmarks/transfer.py --pretrained-run benchmarks/runs/<cifar100 run> --data-dir data

1. Take the weights of a CIFAR-100 run of the from-scratch recipe (checkpoint-best.safetensors),
   save them as a plain safetensors file, and load it through ``weights=`` exactly as a user would
   load downloaded weights (the 100-class classifier is dropped, with a message).
2. On CIFAR-10 restricted to 5 000 class-stratified training images (``train_size=5000``), train
   the same architecture three ways with the same schedule: from scratch, linear probe (cached
   features), and fine-tune (head first, then all layers with discriminative learning rates).
3. Linear probe with and without the feature cache on the same un-augmented features: time and
   accuracy side by side.

Writes transfer.json (in the current folder) and prints Markdown tables; the feature-cache rows
BENCHMARKS.md shows go into benchmarks/results/feature-cache.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

import cifarlab
import cifarlab.runs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrained-run", required=True, help="a complete CIFAR-100 run directory")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--out", default="benchmarks/runs/transfer")
    ap.add_argument("--epochs", type=float, default=30)
    ap.add_argument("--train-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src = cifarlab.runs.Run.load(args.pretrained_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{src.config.model}-cifar100.safetensors"
    state = {k: v for k, v in load_file(str(Path(args.pretrained_run) / "checkpoint-best.safetensors")).items()
             if not k.startswith("ema.")}
    save_file(state, str(weights))

    common = dict(dataset="cifar10", data_dir=args.data_dir, model=src.config.model,
                  model_kwargs=src.config.model_kwargs, train_size=args.train_size, epochs=args.epochs,
                  batch_size=500, seed=args.seed, progress=False, cache_dir=str(out / "feature-cache"))
    base = cifarlab.recipe_config("cifar10").update(common)
    variants = {
        "scratch": {},
        "linear-probe": {"weights": str(weights), "strategy": "linear-probe"},
        "fine-tune": {"weights": str(weights), "strategy": "fine-tune", "freeze_epochs": 3.0, "layer_decay": 0.7},
    }
    rows = {}
    for name, extra in variants.items():
        t = time.perf_counter()
        run = cifarlab.train(base.update(extra), run_dir=out / f"{name}-{int(time.time())}")
        rows[name] = {"test_top1": run.results["test"]["top1"], "wall_seconds": time.perf_counter() - t,
                      "train_seconds": run.results["train_seconds"], "run_dir": str(run.path),
                      "feature_cache": run.results.get("feature_cache")}
        print(name, json.dumps(rows[name]), flush=True)

    # feature cache: same un-augmented probe, cached vs recomputing the backbone every epoch
    probe = base.update({"weights": str(weights), "strategy": "linear-probe", "flip": "none", "translate": 0,
                         "cache_dir": str(out / f"cache-{int(time.time())}")})
    cache_rows = {}
    for name, extra in (("cached (first run: extracts)", {}), ("cached (second run: cache hit)", {}),
                        ("recomputed every epoch", {"feature_cache": False})):
        t = time.perf_counter()
        run = cifarlab.train(probe.update(extra), run_dir=out / f"probe-{len(cache_rows)}-{int(time.time())}")
        cache_rows[name] = {"test_top1": run.results["test"]["top1"], "head_train_seconds": run.results["train_seconds"],
                            "wall_seconds": time.perf_counter() - t, "feature_cache": run.results.get("feature_cache")}
        print(name, json.dumps(cache_rows[name]), flush=True)

    env = run.results["environment"]
    Path("transfer.json").write_text(json.dumps(
        {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"), "environment": env,
         "pretrained_run": args.pretrained_run, "pretrained_test_top1": src.results["test"]["top1"],
         "variants": rows, "feature_cache": cache_rows}, indent=2))
    print("\n| strategy (CIFAR-10, 5 000 labels) | test top-1 (%) | train (s) | wall (s) |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['test_top1']:.2f} | {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |")
    print("\n| linear probe | test top-1 (%) | head training (s) | wall (s) |\n|---|---:|---:|---:|")
    for name, r in cache_rows.items():
        print(f"| {name} | {r['test_top1']:.2f} | {r['head_train_seconds']:.2f} | {r['wall_seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
