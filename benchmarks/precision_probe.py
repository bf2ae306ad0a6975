"""Precision on this CPU: a 2048x2048 matmul per dtype, and whole training steps of the ``cifar10``
recipe's network (airbench94, channels_last, forward + backward + the recipe's Muon/SGD step) per
precision. CPUs without native bf16 (no avx512_bf16 / amx_bf16 in lscpu's flags) emulate it, and
bf16 autocast then costs rather than saves time.

    python benchmarks/precision_probe.py [--batch 2000] [--steps 4] [--precision auto fp32 bf16] [--nchw]

Prints GFLOP/s per dtype and training images/s per precision: the mean of the steps after the
first (the first pays oneDNN's primitive creation).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cifarlab.models import create_model
from cifarlab.recipes import recipe_config
from cifarlab.runtime import autocast, tune_malloc
from cifarlab.training import build_optimizers


def step_rates(precision: str, batch: int, steps: int, channels_last: bool = True) -> list[float]:
    """Training images/s of ``steps`` recipe steps at ``precision`` (an explicit one, or ``auto``)."""
    cpu = torch.device("cpu")
    cfg = recipe_config("cifar10")
    opt_kwargs = {}
    try:  # the precision resolver and the optimizer's matmul dtype, where this version of cifarlab has them
        from cifarlab.runtime import resolve_precision
        chosen = resolve_precision(precision, cpu)
        precision, opt_kwargs = chosen.name, {"matmul_dtype": chosen.matmul_dtype}
    except ImportError:
        if precision == "auto":
            raise SystemExit("this version of cifarlab has no precision auto")
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("airbench94", 10).to(memory_format=fmt)
    opts = build_optimizers(model, cfg, **opt_kwargs)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    rates = []
    for _ in range(steps):
        t = time.perf_counter()
        with autocast(cpu, precision):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2, reduction="sum")
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        rates.append(batch / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2000, help="images per step (the cifar10 recipe's: 2000)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per precision, the first left out of the mean")
    ap.add_argument("--precision", nargs="+", default=["auto", "fp32", "bf16"])
    ap.add_argument("--no-matmul", action="store_true", help="skip the matmul GFLOP/s lines")
    ap.add_argument("--nchw", action="store_true", help="NCHW tensors instead of the recipe's channels_last")
    args = ap.parse_args()
    tune_malloc()
    if not args.no_matmul:
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        for dt in (torch.float32, torch.bfloat16):
            x, y = a.to(dt), b.to(dt)
            x @ y
            t = time.perf_counter()
            for _ in range(3):
                x @ y
            print(f"matmul {dt}: {3 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9:.1f} GFLOP/s", flush=True)
    for precision in args.precision:
        rates = step_rates(precision, args.batch, args.steps, not args.nchw)
        steady = rates[1:] or rates
        print(f"training step, batch {args.batch}, {'NCHW' if args.nchw else 'channels_last'}, precision {precision}: {sum(steady) / len(steady):.0f} images/s "
              f"(steps {', '.join(f'{r:.0f}' for r in rates)})", flush=True)


if __name__ == "__main__":
    main()
