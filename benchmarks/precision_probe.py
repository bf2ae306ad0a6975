"""bf16 against fp32 on this CPU: a 2048x2048 matmul and airbench94 training steps (forward +
backward, channels_last, batch 1000). CPUs without native bf16 (no avx512_bf16 / AMX in lscpu's
flags) emulate it, and the recipe's bf16 autocast then costs rather than saves time.

    python benchmarks/precision_probe.py [--batch 1000] [--steps 6]

Prints GFLOP/s per dtype and training images/s per precision (steady state: the first step,
oneDNN's primitive creation, is left out).
"""
from __future__ import annotations

import argparse
import time

import torch

from cifarlab.models import create_model
from cifarlab.runtime import autocast, tune_malloc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    tune_malloc()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        x @ y
        t = time.perf_counter()
        for _ in range(5):
            x @ y
        print(f"matmul {dt}: {5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9:.0f} GFLOP/s", flush=True)
    model = create_model("airbench94", 10).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    cpu = torch.device("cpu")
    for precision in ("fp32", "bf16"):
        rates = []
        for _ in range(args.steps):
            t = time.perf_counter()
            with autocast(cpu, precision):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            rates.append(args.batch / (time.perf_counter() - t))
        steady = rates[1:]
        print(f"airbench94 training step, {precision}: {sum(steady) / len(steady):.0f} images/s "
              f"(steps {', '.join(f'{r:.0f}' for r in rates)})", flush=True)


if __name__ == "__main__":
    main()
