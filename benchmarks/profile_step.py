"""Where a training step's time goes, and the training/inference throughput of a model.

    python benchmarks/profile_step.py --model airbench94 --batch-size 2000 --steps 6

Runs real training steps (bf16 autocast, channels_last, the recipe's Muon+SGD optimizers) on random
data, then profiles two more with torch.profiler and groups the self-CPU time by operator family.
Prints Markdown for BENCHMARKS.md. Throughput is images/s over the timed steps (best of the run).
The profiler's own overhead lands unevenly: it showed ``fill_`` inside max-pool backward at 200-230 ms
a step where timing it directly gives 8 ms (BENCHMARKS.md, sixteenth part), so time a family directly
before acting on its share.
"""
from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

import cifarlab
from cifarlab.runtime import tune_malloc
from cifarlab.models import create_model
from cifarlab.training import build_optimizers

FAMILIES = [("convolution backward", ("convolution_backward",)), ("convolution forward", ("mkldnn_convolution", "conv")),
            ("GELU", ("gelu",)), ("BatchNorm", ("batch_norm",)), ("max-pool", ("max_pool",)),
            ("fill/zero", ("fill_", "zero_")), ("optimizer (Muon/SGD)", ("mm", "addmm", "norm", "add_", "mul_", "lerp", "foreach")),
            ("copies/casts", ("copy_", "_to_copy", "to"))]


def family(name: str) -> str:
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="airbench94")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--side", type=int, default=32, help="input side in px (24: a crop epoch of the crop recipe)")
    ap.add_argument("--no-malloc-tuning", action="store_true")
    args = ap.parse_args()
    if not args.no_malloc_tuning:
        tune_malloc()
    cfg = cifarlab.recipe_config(args.dataset).update({"model": args.model, "batch_size": args.batch_size})
    nc = 100 if args.dataset == "cifar100" else 10
    model = create_model(cfg.model, nc, **(cfg.model_kwargs if args.model == cifarlab.recipe_config(args.dataset).model else {}))
    model = model.to(memory_format=torch.channels_last)
    opts = build_optimizers(model, cfg)
    x = torch.randn(args.batch_size, 3, args.side, args.side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, nc, (args.batch_size,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2, reduction="sum")
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)

    step(); step()
    best = 0.0
    for _ in range(args.steps):
        t = time.perf_counter(); step()
        best = max(best, args.batch_size / (time.perf_counter() - t))
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x); t = time.perf_counter(); model(x); infer = args.batch_size / (time.perf_counter() - t)
    model.train()
    from torch.profiler import profile
    with profile() as prof:
        step(); step()
    totals = defaultdict(float)
    for ev in prof.key_averages():
        if ev.key.startswith("aten::"):
            totals[family(ev.key[6:])] += ev.self_cpu_time_total / 1e6 / 2
    total = sum(totals.values())
    print(f"model {args.model}, batch {args.batch_size}, side {args.side} px, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"malloc tuning {'off' if args.no_malloc_tuning else 'on'}")
    print(f"training: {best:.0f} images/s (best step), inference: {infer:.0f} images/s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB\n")
    print("| operator family | seconds per step (profiled) | share |\n|---|---:|---:|")
    for fam, s in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {fam} | {s:.3f} | {100 * s / total:.0f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
