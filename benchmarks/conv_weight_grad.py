"""The weight gradient of a 3x3 'same' convolution: oneDNN's kernel against the matrix product of
``cifarlab.models.conv_grad`` (the rule ``MAX_GEMM_PIXELS`` and the bf16-only choice rest on this table).

    python benchmarks/conv_weight_grad.py                       # airbench's 256->256 convs, batch 2000 and 1000
    python benchmarks/conv_weight_grad.py --channels 64 --sides 31 23 15 11

For each dtype, batch and map side: the best of ``--repeats`` timings (one untimed call first) of the
convolution's forward pass, oneDNN's weight gradient (``aten.convolution_backward`` asked for the weight
only), torch's own im2col (``F.unfold``, NCHW order) contracted with the gradient by ``einsum``, and
``weight_grad_gemm`` (im2col in channels-last order, one matrix product), in ms, channels_last inputs,
malloc tuned as in training. The largest relative difference between oneDNN's gradient and the
matrix product's is printed with them. Prints Markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cifarlab.models.conv_grad import weight_grad_gemm
from cifarlab.runtime import tune_malloc


def best_ms(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one untimed call, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=256, help="input and output channels")
    ap.add_argument("--sides", type=int, nargs="+", default=[7, 5, 3, 2], help="map sides in px")
    ap.add_argument("--batches", type=int, nargs="+", default=[2000, 1000])
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tune_malloc()
    torch.manual_seed(0)
    c, cl = args.channels, torch.channels_last
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {c} -> {c} channels, 3x3, padding 1\n")
    print("| dtype | batch | map (px) | forward (ms) | oneDNN weight grad (ms) | F.unfold + einsum (ms) "
          "| matrix product (ms) | max rel. diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.dtypes:
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        for b in args.batches:
            for s in args.sides:
                x = torch.randn(b, c, s, s).to(dtype).contiguous(memory_format=cl)
                g = torch.randn(b, c, s, s).to(dtype).contiguous(memory_format=cl)
                w = torch.randn(c, c, 3, 3).to(dtype).contiguous(memory_format=cl)

                def native():
                    return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                               [0, 0], 1, [False, True, False])[1]

                def unfold():
                    cols = F.unfold(x, 3, padding=1)                          # B, 9I, HW
                    return torch.einsum("bol,bkl->ok", g.reshape(b, c, -1), cols).view(c, c, 3, 3)

                ref, got = native().float(), weight_grad_gemm(x, g).float()
                diff = ((got - ref).abs().max() / ref.abs().max()).item()
                fwd = best_ms(lambda: F.conv2d(x, w, padding=1), args.repeats)
                gemm = best_ms(lambda: weight_grad_gemm(x, g), args.repeats)
                unf = best_ms(unfold, args.repeats)
                nat = best_ms(native, args.repeats)
                print(f"| {name} | {b} | {s}x{s} | {fwd:.0f} | {nat:.0f} | {unf:.0f} | {gemm:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
