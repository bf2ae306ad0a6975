"""Time of one training step of a recipe's network at several input sides, relative to the full
side: the weights ``benchmarks/recipe_search.py --side-costs`` uses to count a progressive-resizing
run's compute in full-side epochs.

    python benchmarks/side_cost.py --dataset cifar10 --sides 32 24 20 16 --precision fp32
    python benchmarks/side_cost.py --dataset cifar100 --sides 32 --precision bf16 \
      --set 'model_kwargs={widths: [64, 256, 512], depth: 2, residual: true}'   # another network

``--set KEY=VALUE`` changes the recipe as ``cifarlab train --set`` does, so the same script prices
the networks of a widths/depth sweep against each other (one process per network: the peak RSS it
prints, in GiB, is then that network's training step alone, without the dataset or evaluation).

Each side: forward + backward + optimizer step of the recipe's network and optimizers on random
data at the recipe's batch size, channels_last, malloc tuned as in training; the best of
``--steps`` steps after one warm-up step. The full side is measured first and last, and the ratio
uses their mean, so a drift of the machine's speed during the measurement shows.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

import cifarlab
from cifarlab.config import parse_overrides
from cifarlab.models import create_model
from cifarlab.runtime import autocast, tune_malloc
from cifarlab.training.optim import build_optimizers


def step_seconds(model, opts, side: int, batch: int, classes: int, precision: str, steps: int) -> float:
    """Best of ``steps`` timed training steps at ``side`` px (one untimed warm-up first), in seconds."""
    x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,))
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2, reduction="sum")
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--sides", type=int, nargs="+", default=[32, 24, 20, 16])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a recipe key, as cifarlab train --set (e.g. model_kwargs={widths: [64, 256, 512]})")
    args = ap.parse_args()
    tune_malloc()
    torch.manual_seed(0)
    cfg = cifarlab.recipe_config(args.dataset)
    cfg = cfg.update(parse_overrides(args.set), source="--set")
    if args.batch_size:
        cfg = cfg.update({"batch_size": args.batch_size})
    classes = 100 if args.dataset == "cifar100" else 10
    model = create_model(cfg.model, classes, **cfg.model_kwargs).to(memory_format=torch.channels_last)
    opts = build_optimizers(model, cfg)
    full = max(args.sides)
    order = [full] + [s for s in args.sides if s != full] + [full]
    seconds = [(s, step_seconds(model, opts, s, cfg.batch_size, classes, args.precision, args.steps)) for s in order]
    ref = (seconds[0][1] + seconds[-1][1]) / 2
    print(f"| side (px) | step (s), batch {cfg.batch_size}, {args.precision} | ms per image | relative to {full} px |\n"
          "|---:|---:|---:|---:|")
    for s, t in seconds:
        print(f"| {s} | {t:.2f} | {1000 * t / cfg.batch_size:.2f} | {t / ref:.2f} |")
    params = sum(p.numel() for p in model.parameters())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    print(f"\n{cfg.model} {cfg.model_kwargs}: {params / 1e6:.2f} M parameters, peak RSS {peak_gib:.2f} GiB")
    print("--side-costs " + " ".join(f"{s}={t / ref:.2f}" for s, t in seconds[1:-1]) + f" {full}=1")


if __name__ == "__main__":
    main()
