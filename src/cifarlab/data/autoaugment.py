"""TrivialAugment on a whole batch at once: every image gets its own operation and magnitude, and the
images that drew the same operation are transformed together by one tensor op with per-image
parameters (affine grids for the geometric ones, blends and look-up tables for the colour ones).

Recipe: Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data Augmentation"
(ICCV 2021, arXiv:2103.10158), the "wide" search space: one op uniformly from 14, a magnitude
uniformly from 31 bins, ranges as torchvision's ``TrivialAugmentWide`` (shear 0.99, translate 32 px,
rotate 135 degrees, colour factors 1 +- 0.99, posterize 2-8 bits, solarize any threshold).
The translation range is 32 pixels whatever the image side, as in the paper and torchvision: on
32-px CIFAR images the largest shifts push most of the image out (applied before upsampling).
torchvision applies one draw per call, so a batch tensor would get the same op everywhere; this
module draws per image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
       "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
BINS = 31
GEOMETRIC = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # ITU-R 601-2 luma, as PIL


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp(0, 1)


def _geometric(x: torch.Tensor, op: str, m: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if op == "shear_x":
        theta[:, 0, 1] = m * 0.99
    elif op == "shear_y":
        theta[:, 1, 0] = m * 0.99
    elif op == "translate_x":
        theta[:, 0, 2] = m * 32.0 * 2 / w   # pixels -> [-1, 1] grid units
    elif op == "translate_y":
        theta[:, 1, 2] = m * 32.0 * 2 / h
    else:
        a = m * math.radians(135.0)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    idx = (x * 255).round().long().view(b * c, -1)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float))
    cdf = hist.cumsum(1)
    first = cdf.gather(1, (hist > 0).float().argmax(1, keepdim=True))  # count at the lowest used level
    lut = ((cdf - first) / (h * w - first).clamp_min(1)).clamp(0, 1)
    return lut.gather(1, idx).view(b, c, h, w)


def _colour(x: torch.Tensor, op: str, m: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + 0.99 * m)
    if op == "color":
        return _blend(x, _gray(x).expand_as(x), 1 + 0.99 * m)
    if op == "contrast":
        return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), 1 + 0.99 * m)
    if op == "sharpness":
        k = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], device=x.device) / 13
        smooth = F.conv2d(x, k.expand(3, 1, 3, 3).to(x.dtype), padding=1, groups=3)
        smooth[..., 0, :], smooth[..., -1, :], smooth[..., 0], smooth[..., -1] = x[..., 0, :], x[..., -1, :], x[..., 0], x[..., -1]
        return _blend(x, smooth, 1 + 0.99 * m)
    if op == "posterize":
        q = (2.0 ** (mag * 6 / (BINS - 1)).round()).view(-1, 1, 1, 1)  # keep 8 - log2(q) bits, 2..8
        return torch.floor(x * 255 / q) * q / 255
    if op == "solarize":
        thr = (1.0 - mag / (BINS - 1)).view(-1, 1, 1, 1)
        return torch.where(x >= thr, 1.0 - x, x)
    if op == "autocontrast":
        lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    return _equalize(x)


def trivial_augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugment (wide) with one draw per image.

    Args:
        x: float (B, 3, H, W) images in [0, 1] (not normalized).
        generator: CPU generator of the draws (seeded by the caller, so resumed runs replay).

    Returns:
        float (B, 3, H, W) in [0, 1], on x's device.
    """
    b = len(x)
    op = torch.randint(len(OPS), (b,), generator=generator)
    mag = torch.randint(BINS, (b,), generator=generator).float()
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    signed = (mag / (BINS - 1) * sign).to(x.device, x.dtype)
    out = x.clone()
    for i, name in enumerate(OPS[1:], 1):
        sel = (op == i).nonzero().flatten()
        if len(sel) == 0:
            continue
        sel_d = sel.to(x.device)
        part = x.index_select(0, sel_d)
        part = (_geometric(part, name, signed[sel_d]) if name in GEOMETRIC
                else _colour(part, name, signed[sel_d], mag[sel].to(x.device)))
        out.index_copy_(0, sel_d, part)
    return out
