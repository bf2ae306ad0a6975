"""Batched augmentations as tensor ops on the training device (no per-image Python, no PIL).

Ideas from airbench (Keller Jordan): pad once with reflection, crop by random translation, and
"alternating" flips (each image is flipped on every other epoch, so both views are seen in two
epochs). Cutout: DeVries & Taylor 2017, arXiv:1708.04552.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import ConfigError


def reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflection-pad the last two dims by ``pad`` pixels; works on uint8 (N, C, H, W)."""
    if pad == 0:
        return images
    h, w = images.shape[-2:]
    if pad >= min(h, w):
        raise ConfigError(f"translate ({pad} pixels) must be smaller than the image side ({min(h, w)} pixels); "
                          "lower --set translate.")

    def idx(n):
        i = torch.arange(-pad, n + pad, device=images.device).abs()
        return torch.where(i >= n, 2 * (n - 1) - i, i)
    return images.index_select(-2, idx(h)).index_select(-1, idx(w))


def crop_batch(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop each image of ``padded`` (B, C, H+2p, W+2p) at its own offset.

    Args:
        dy, dx: int64 (B,), offsets into the padded image, in [0, 2p].
        size: output (H, W).

    Returns:
        (B, C, H, W) tensor of ``padded``'s dtype.
    """
    b, c = padded.shape[:2]
    h, w = size
    rows = (dy.view(b, 1) + torch.arange(h, device=padded.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=padded.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=padded.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=padded.device).view(1, c, 1, 1)
    return padded[bi, ci, rows, cols]


def flip_batch(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``mask`` (bool, (B,)) is True."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def cutout_batch(images: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size``x``size`` square centred at (cy, cx) per image (clipped at the border).

    Applied after normalization, so zero is the dataset mean colour.
    """
    h, w = images.shape[-2:]
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    top = cy.view(-1, 1, 1) - size // 2          # window [top, top + size), likewise for columns
    left = cx.view(-1, 1, 1) - size // 2
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images.masked_fill(inside.unsqueeze(1), 0)


def normalize(images_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> ``dtype`` standardized by per-channel mean/std (in [0, 1] units)."""
    x = images_u8.to(dtype).div_(255)
    return x.sub_(mean.to(dtype).view(1, -1, 1, 1)).div_(std.to(dtype).view(1, -1, 1, 1))


def tta_views(x: torch.Tensor, level: int) -> list[tuple[float, torch.Tensor]]:
    """Weighted test-time views of a normalized batch ``x`` (B, C, H, W), each the same shape and dtype.

    level 0: the image; 1: image and mirror (1/2 each); 2: airbench's level (Jordan 2024, "94% on
    CIFAR-10 in 3.29 seconds on a single GPU"): level 1 weighted 1/2, plus the mirrored pair shifted
    one pixel up-left and down-right (reflect padding), 1/8 each, 6 views; 3: the same with all four
    diagonal one-pixel shifts (level 2's two, then down-left and up-right), 1/16 each, 10 views
    (level 2's shifts made symmetric). The weights sum to 1; ``len()`` is the number of
    forward passes per image (`tta_view_count`).
    """
    views = [(1.0, x)] if level == 0 else [(0.5, x), (0.5, x.flip(-1))]
    if level >= 2:
        h, w = x.shape[-2:]
        p = F.pad(x, (1, 1, 1, 1), mode="reflect")
        corners = [(0, 0), (2, 2)] if level == 2 else [(0, 0), (2, 2), (0, 2), (2, 0)]
        shifted = [p[..., top:top + h, left:left + w] for top, left in corners]
        each = 0.5 / (2 * len(shifted))
        views = [(0.25, v) for _, v in views] + [(each, s) for t in shifted for s in (t, t.flip(-1))]
    return views


def tta_view_count(level: int, fraction: float = 1.0) -> float:
    """Forward passes per image at TTA ``level`` (1, 2, 6 or 10: what `tta_views` returns), or
    on average ``1 + (views - 1) * fraction`` under selective TTA
    (`cifarlab.evaluation.metrics.selective_tta_logits`)."""
    return 1 + (len(tta_views(torch.zeros(1, 1, 2, 2), level)) - 1) * min(fraction, 1.0)


def augment_batch(images_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: tuple[int, int],
                  shift: torch.Tensor | None = None, flip: torch.Tensor | None = None,
                  cut: torch.Tensor | None = None, cutout: int = 0) -> torch.Tensor:
    """One training batch's augmentation, in airbench's order: crop (translate) -> flip ->
    normalize -> cutout. The order is shared by every loader, so they augment identically.

    Args:
        images_u8: uint8 (B, C, H+2p, W+2p) reflect-padded images when ``shift`` is given, else (B, C, H, W).
        shift: int (B, 2) crop offsets in [0, 2p]; flip: bool (B,); cut: int (B, 2) cutout centres.

    Returns:
        float32 (B, C, H, W) normalized.
    """
    x = crop_batch(images_u8, shift[:, 0], shift[:, 1], size) if shift is not None else images_u8
    if flip is not None:
        x = flip_batch(x, flip)
    x = normalize(x, mean, std)
    if cut is not None and cutout:
        x = cutout_batch(x, cut[:, 0], cut[:, 1], cutout)
    return x


def mix_images(x: torch.Tensor, mixup: float, cutmix: float) -> tuple[torch.Tensor, float]:
    """Mix each image with its partner in the reversed batch (timm's ``Mixup`` pairing): mixup
    (Zhang et al. 2018, arXiv:1710.09412) blends whole images, CutMix (Yun et al. 2019,
    arXiv:1905.04899) pastes a box. With both alphas > 0, each batch uses one of them at random,
    half the time each (timm's ``switch_prob=0.5``). Randomness from torch's generator, so a
    resumed run mixes the same way.

    Args:
        x: float (N, C, H, W) normalized batch.
        mixup, cutmix: Beta(alpha, alpha) parameters; 0 turns one off.

    Returns:
        (mixed batch, lam): lam in [0, 1] is the share of each image's own pixels (for CutMix, the
        exact share of the box actually pasted); use `mixed_targets` with it.
    """
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    other = x.flip(0)
    if not use_cutmix:
        return lam * x + (1.0 - lam) * other, lam
    h, w = x.shape[-2:]
    cut = (1.0 - lam) ** 0.5
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def mixed_targets(y: torch.Tensor, lam: float, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets of a batch from `mix_images`: float (N, num_classes), each row
    ``lam * t(y) + (1 - lam) * t(y reversed)`` with label-smoothed one-hot ``t`` (off-class mass
    ``smoothing / num_classes``, as timm and ``F.cross_entropy`` spread it)."""
    t = torch.full((len(y), num_classes), smoothing / num_classes, device=y.device)
    t.scatter_(1, y.view(-1, 1), 1.0 - smoothing + smoothing / num_classes)
    return lam * t + (1.0 - lam) * t.flip(0)


def resized_crop_batch(x: torch.Tensor, side: int, min_scale: float, generator: torch.Generator,
                       flip: torch.Tensor | None = None, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop of every image of a batch at once (one ``F.grid_sample``, bilinear): a box of
    area fraction U(min_scale, 1) and aspect ratio log-uniform in ``ratio`` (the sampling of
    Szegedy et al. 2015 and torchvision's ``RandomResizedCrop``, sides clipped to the image instead
    of resampled), at a uniform position, resized to ``side`` x ``side``; mirrored where ``flip``.

    Args:
        x: float (B, C, H, W) normalized images; side: the output side in pixels.
        min_scale: smallest area fraction in (0, 1] (timm's default 0.08; 0.35 keeps CIFAR objects whole).
        generator: CPU generator of the draws (the caller seeds it, so resumed runs replay).
        flip: bool (B,) images to mirror, or None.

    Returns:
        float (B, C, side, side) on x's device.
    """
    b = len(x)
    u = torch.rand(b, 4, generator=generator)
    area = min_scale + (1.0 - min_scale) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)   # box sides as fractions of the image's
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx, cy = (2 * u[:, 2] - 1) * (1 - w), (2 * u[:, 3] - 1) * (1 - h)  # centres in [-1, 1] coordinates
    sx = w * (1 - 2 * flip.float().cpu()) if flip is not None else w
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), [b, x.shape[1], side, side], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
