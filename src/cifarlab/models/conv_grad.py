"""A faster CPU weight gradient for 3x3 'same' convolutions on small feature maps.

On a 2-vCPU Intel Xeon with AMX-BF16 (torch 2.15, oneDNN), the weight gradient of airbench's
256->256 3x3 convolutions at batch 2000 in bf16 takes 4-8x the time of the same convolution's
forward pass, though it is the same number of multiply-adds: 140 ms against 34 ms on 5x5 maps,
102 ms against 12 ms on 3x3, 86 ms against 13 ms on 2x2 (``benchmarks/conv_weight_grad.py``).
Those small maps are the last conv groups', and they are why a 24-px training step cost 0.68 of a
32-px one there, not (24/32)^2 (docs/recipe-search.md, row 'a matrix-product weight gradient').

Written as one matrix product instead, it takes 0.8-2.8x the forward's time on those maps: with
x zero-padded by one pixel, dW[o, i, u, v] = sum over (b, h, w) of g[b, o, h, w] * x[b, i, h+u, w+v],
so stacking the nine shifted copies of x along channels (im2col in channels-last order) gives
dW = G (O x BHW) @ cols (BHW x 9I). Building ``cols`` writes 9x the input's bytes, which is cheap
for small maps and not for large ones, so the product is used only for maps of at most
`MAX_GEMM_PIXELS` pixels (5x5); larger ones keep oneDNN's kernel. In fp32 oneDNN's kernel is
level with the product on 2x2-3x3 maps and faster on 5x5 (207 against 245 ms), so fp32 keeps it.
torch's own im2col, ``F.unfold``, orders its columns NCHW; contracting them with the gradient
(``einsum``) was slower than oneDNN on 5x5 (189 ms), so the stack here is built channels-last.

``CIFARLAB_CONV_WGRAD=native`` turns the product off: it was measured on that CPU only, and on one
whose oneDNN weight gradient is already efficient it may lose (``gemm``: use it for every map size,
for benchmarks; ``auto``, the default: the rule above). It changes only how the gradient is summed:
the values match oneDNN's to bf16's rounding (largest difference 2e-3 to 4e-3 of the largest entry
in bf16, 3e-6 in fp32).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..config import ConfigError

#: Largest feature map (H*W) whose weight gradient uses the matrix product: 5x5 gained (140 -> 94 ms),
#: 7x7 lost (168 -> 197 ms) on the AMX Xeon at batch 2000 in bf16.
MAX_GEMM_PIXELS = 25


def weight_grad_mode() -> str:
    """``CIFARLAB_CONV_WGRAD``: auto (unset), native or gemm.

    Raises:
        ConfigError: it holds something else (models check it when built, before any work).
    """
    mode = os.environ.get("CIFARLAB_CONV_WGRAD", "auto")
    if mode not in ("auto", "native", "gemm"):
        raise ConfigError(f"CIFARLAB_CONV_WGRAD={mode!r} is not a choice: set auto (the default), native "
                          "(oneDNN's weight gradient everywhere) or gemm (the matrix product for every map size).")
    return mode


def use_gemm_weight_grad(x: torch.Tensor) -> bool:
    """Whether a 3x3 'same' conv on ``x`` (float (B, C, H, W)) should take `Conv3x3GemmGrad`:
    on CPU only (cuDNN's kernels are fine), in bf16 or fp16 (``x``'s dtype, or autocast's), for maps
    of at most `MAX_GEMM_PIXELS` pixels, unless ``CIFARLAB_CONV_WGRAD`` says ``native`` (or
    ``gemm``: every size).

    Raises:
        ConfigError: ``CIFARLAB_CONV_WGRAD`` holds something other than auto, native or gemm.
    """
    mode = weight_grad_mode()
    if mode == "native" or x.device.type != "cpu" or _compute_dtype(x) not in (torch.bfloat16, torch.float16):
        return False
    return mode == "gemm" or x.shape[-2] * x.shape[-1] <= MAX_GEMM_PIXELS


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution on ``x`` runs in: autocast's where it is on, else ``x``'s."""
    on = torch.is_autocast_enabled(x.device.type)
    return torch.get_autocast_dtype(x.device.type) if on else x.dtype


def weight_grad_gemm(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Weight gradient of a 3x3 convolution with padding 1 and stride 1, as one matrix product.

    Args:
        x: the convolution's input, (B, I, H, W), any memory format.
        grad_out: the gradient of its output, (B, O, H, W), same dtype.

    Returns:
        (O, I, 3, 3) tensor of ``x``'s dtype (channels-last strides), the sum over the batch.
    """
    b, i, h, w = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))               # B, H+2, W+2, I
    cols = torch.cat([xp[:, u:u + h, v:v + w] for u in range(3) for v in range(3)], dim=3)
    g = grad_out.permute(1, 0, 2, 3).reshape(grad_out.shape[1], -1)      # O, B*H*W
    return (g @ cols.view(-1, 9 * i)).view(-1, 3, 3, i).permute(0, 3, 1, 2)


class Conv3x3GemmGrad(torch.autograd.Function):
    """``F.conv2d(x, weight, padding=1)`` whose backward takes the input gradient from oneDNN and
    the weight gradient from `weight_grad_gemm`. Inputs of one dtype, no bias, stride 1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, padding=1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad_gemm(x, grad_out)
        return grad_x, grad_w


def conv3x3_gemm_grad(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """3x3 'same' convolution (no bias) through `Conv3x3GemmGrad`, honouring autocast: both
    inputs are cast to its dtype first, as ``F.conv2d`` would do itself, so the backward sees one
    dtype and the fp32 weight gets its gradient through the cast. (B, I, H, W) -> (B, O, H, W)."""
    dtype = _compute_dtype(x)
    return Conv3x3GemmGrad.apply(x.to(dtype), weight.to(dtype))
