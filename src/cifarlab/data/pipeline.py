"""Batches as the model sees them: resized on the device to the epoch's side, in the memory format
the model runs in. Wraps any loader with `DeviceLoader`'s interface
(images in memory, shards)."""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from .augment import crop_batch, mix_images, mixed_targets, resized_crop_batch
from .autoaugment import trivial_augment_batch
from .loader import epoch_generator


def size_schedule(img_size: int | None, img_sizes: list | None, default_side: int) -> list[tuple[int, int]] | None:
    """``[(first_epoch, side), ...]`` for on-device resizing, or None to keep the data's 32x32.

    Args:
        img_size: one side for every epoch (config ``img_size``); None: ``default_side``.
        img_sizes: a progressive schedule ``[[epoch, side], ...]`` (config ``img_sizes``); wins over ``img_size``.
        default_side: the model's own input side (its pretrained config; 32 for the built-ins).
    """
    if img_sizes:
        return sorted((int(e), int(sz)) for e, sz in img_sizes)
    side = img_size or default_side
    return None if side == 32 else [(0, int(side))]


class Batches:
    """A loader's batches resized on the device to the epoch's side (``F.interpolate``; a
    progressive schedule allowed) and made channels_last when asked.

    Yields ``(x, y)``: x float32 (B, 3, S, S) normalized, S the epoch's side; y int64 (B,).
    Evaluation (`ordered`) uses the schedule's final side.

    Training batches only: ``auto_augment="trivialaugment"`` applies
    `trivial_augment_batch` at the data's side (before resizing);
    ``random_resized_crop`` > 0 makes each image a random box of at least that area fraction resized
    to S (`resized_crop_batch`, one bilinear sampling instead of the
    plain resize). Their draws are seeded by (seed, epoch, batch), so a resumed epoch replays.

    ``downsize="crop"`` gives a side S below the data's by cropping instead of resizing: training
    batches take each image's S x S window at a random position, evaluation the centred one. The
    objects keep the pixel size they have at test time, unlike a resized image, whose objects shrink
    by S/32 (Touvron et al. 2019, "Fixing the train-test resolution discrepancy": a mismatch of
    apparent object size between training and test costs accuracy). Sides above the data's resize.
    """

    def __init__(self, loader, sizes: list[tuple[int, int]] | None, interpolation: str, channels_last: bool,
                 random_resized_crop: float = 0.0, seed: int = 0, auto_augment: str = "none", downsize: str = "resize"):
        self.loader, self.sizes, self.mode, self.channels_last = loader, sizes, interpolation, channels_last
        self.downsize = downsize
        self.rrc, self.seed, self.auto_augment = random_resized_crop, seed, auto_augment

    def __len__(self) -> int:
        return len(self.loader)

    def side(self, epoch: int | None = None) -> int | None:
        """The side of ``epoch`` (the final side when None); None when no resizing happens."""
        if not self.sizes:
            return None
        if epoch is None:
            return self.sizes[-1][1]
        return [sz for e, sz in self.sizes if e <= epoch][-1] if epoch >= self.sizes[0][0] else self.sizes[0][1]

    def smallest_side(self) -> int:
        """The smallest side the model will be given, in pixels (the data's own side when no resizing)."""
        data_side = int(self.loader.size[-1])
        return min([self.side() or data_side] + [sz for _, sz in (self.sizes or [])])

    def _tf(self, x: torch.Tensor, side: int | None, generator: torch.Generator | None = None) -> torch.Tensor:
        if side is not None and side < x.shape[-1] and self.downsize == "crop":
            h, w = x.shape[-2:]
            if generator is None:  # evaluation: the centred window
                x = x[..., (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
            else:
                dy, dx = (torch.randint(0, n - side + 1, (len(x),), generator=generator).to(x.device) for n in (h, w))
                x = crop_batch(x, dy, dx, (side, side))
        elif side is not None and side != x.shape[-1]:
            kw = {"align_corners": False, "antialias": side < x.shape[-1]} if self.mode in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=(side, side), mode=self.mode, **kw)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        side = self.side(epoch)
        for i, (x, y) in enumerate(self.loader.epoch(epoch, start=start, stop=stop), start):
            g = epoch_generator(self.seed * 7919 + i + 1, epoch)  # this batch's draws (augmentations, crops)
            if self.auto_augment == "trivialaugment":
                mean, std = self.loader.mean.view(1, -1, 1, 1), self.loader.std.view(1, -1, 1, 1)
                x = (trivial_augment_batch((x * std + mean).clamp(0, 1), g) - mean) / std
            if self.rrc:
                x = resized_crop_batch(x, side or x.shape[-1], self.rrc, g)
            yield self._tf(x, side, g), y

    def ordered(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        side = self.side()
        for x, y in self.loader.ordered():
            yield self._tf(x, side), y


class MixedBatches:
    """Training batches mixed by mixup and/or CutMix (`mix_images`), with
    soft targets: yields ``(x, t)``, x float (B, 3, S, S) mixed, t float32 (B, num_classes) summing to 1
    per row, label smoothing included (`mixed_targets`), so the loss takes
    ``t`` as it is. Draws from torch's global generator at each batch, so a resumed run mixes the same
    way. Evaluation (`ordered`) is the wrapped batches', unmixed."""

    def __init__(self, batches: Batches, mixup: float, cutmix: float, num_classes: int, smoothing: float):
        self.batches, self.mixup, self.cutmix = batches, mixup, cutmix
        self.num_classes, self.smoothing = num_classes, smoothing

    @property
    def loader(self):
        return self.batches.loader

    def __len__(self) -> int:
        return len(self.batches)

    def side(self, epoch: int | None = None) -> int | None:
        return self.batches.side(epoch)

    def smallest_side(self) -> int:
        return self.batches.smallest_side()

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches.epoch(epoch, start=start, stop=stop):
            x, lam = mix_images(x, self.mixup, self.cutmix)
            yield x, mixed_targets(y, lam, self.num_classes, self.smoothing)

    def ordered(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches.ordered()


def take(batches: Iterable, n: int) -> torch.Tensor:
    """The first ``n`` images of ``batches`` of ``(x, y)``, concatenated: (n, ...) (fewer if the
    batches run out)."""
    out, seen = [], 0
    for x, _ in batches:
        if seen >= n:
            break
        out.append(x)
        seen += len(x)
    return torch.cat(out)[:n]
