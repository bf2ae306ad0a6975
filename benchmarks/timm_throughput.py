"""Training and inference throughput (images/s) and peak memory of timm models at several input sizes.

    python benchmarks/timm_throughput.py --models resnet18 resnet50 efficientnet_b0 vit_small_patch16_224 \
        --sizes 32 64 128

Each (model, size) runs in its own process (so peak RSS is its own): bf16 autocast, channels_last,
SGD steps on random data, batch 64 for training and 256 for inference, best of 3 timed steps after
2 warm-up steps. ViTs get ``img_size`` set so their position embeddings match (timm resamples them).
Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r'''
import json, resource, sys, time, torch, torch.nn.functional as F
from cifarlab._malloc import tune_malloc; tune_malloc()
from cifarlab.models import create_model
name, side, bt, bi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kw = {"img_size": side} if "vit" in name else {}
m = create_model(name, 10, **kw).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(bt, 3, side, side).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 10, (bt,))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(m(x).float(), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
step(); step(); best = 0
for _ in range(3):
    t = time.perf_counter(); step(); best = max(best, bt / (time.perf_counter() - t))
m.eval(); xi = torch.randn(bi, 3, side, side).contiguous(memory_format=torch.channels_last); inf = 0
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    m(xi)
    for _ in range(3):
        t = time.perf_counter(); m(xi); inf = max(inf, bi / (time.perf_counter() - t))
print(json.dumps({"model": name, "side": side, "train": best, "infer": inf,
                  "params": sum(p.numel() for p in m.parameters()),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "efficientnet_b0", "vit_small_patch16_224"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--infer-batch", type=int, default=256)
    args = ap.parse_args()
    rows = []
    for name in args.models:
        for side in args.sizes:
            p = subprocess.run([sys.executable, "-c", CHILD, name, str(side), str(args.train_batch), str(args.infer_batch)],
                               capture_output=True, text=True)
            if p.returncode:
                print(f"{name} @ {side}: failed: {p.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                continue
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| model | params (M) | side (px) | train images/s | inference images/s | peak RSS (GiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.1f} | {r['side']} | {r['train']:.0f} | {r['infer']:.0f} | "
              f"{r['peak_rss'] / 2**30:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
