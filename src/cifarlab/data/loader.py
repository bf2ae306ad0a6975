"""The in-memory device loader: a whole split as uint8 on the device, batches augmented in place.

Every random choice of an epoch (order, shifts, flips, cutout centres) is drawn from a generator
seeded by ``(seed, epoch)``, so any epoch -- or the middle of one, after a resume -- replays
exactly, whatever ran before it.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .augment import augment_batch, normalize, reflect_pad
from .cifar import ImageArrays


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random draws: a function of (seed, epoch) alone, so any epoch
    replays exactly, whatever ran before it (epoch -1: draws fixed for the whole run)."""
    return seed * 1_000_003 + epoch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch's random draws (seeded by `epoch_seed`). Shared by every
    loader with this interface (images in memory, shards, cached features)."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def batches_per_epoch(n: int, batch_size: int, train: bool) -> int:
    """Batches in one pass over ``n`` items: training drops the last partial batch (at least one
    batch), evaluation keeps it."""
    return max(1, n // batch_size) if train else -(-n // batch_size)


class DeviceLoader:
    """Batches of a split kept on ``device``.

    Args:
        arrays: the split (uint8 images (N, 3, H, W), int64 labels (N,)).
        mean, std: per-channel statistics in [0, 1] units, (3,) float.
        batch_size: images per batch.
        train: shuffle and augment (and drop the last partial batch) when True.
        flip: ``none`` | ``random`` | ``alternating``; translate: max shift in pixels;
        cutout: square side in pixels (0 = off).
        seed: base seed of the per-epoch generators.
        rank, world: in distributed training, each training batch is this rank's 1/world slice of
            the global batch (``batch_size`` images); evaluation batches are whole on every rank.

    Yields (from `epoch`): ``(x, y)`` with x float32 (B, 3, H, W) normalized and y int64 (B,).
    Memory: N*3*(H+2t)*(W+2t) bytes for the padded uint8 copy, nothing per epoch beyond indices.
    """

    def __init__(self, arrays: ImageArrays, mean, std, batch_size: int, device: torch.device | str = "cpu",
                 train: bool = False, flip: str = "none", translate: int = 0, cutout: int = 0, seed: int = 0,
                 rank: int = 0, world: int = 1):
        self.device = torch.device(device)
        imgs = arrays.images if arrays.images.flags.writeable else np.array(arrays.images)  # a store's memmap: read into RAM
        self.images = torch.from_numpy(np.ascontiguousarray(imgs)).to(self.device)
        self.labels = torch.from_numpy(np.asarray(arrays.labels, dtype=np.int64)).to(self.device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world = rank, world  # distributed training: this rank's share of each global batch
        self.flip, self.translate, self.cutout = (flip, translate, cutout) if train else ("none", 0, 0)
        self.size = tuple(self.images.shape[-2:])
        self.padded = reflect_pad(self.images, self.translate) if self.translate else self.images

    def __len__(self) -> int:
        """Batches per epoch."""
        return batches_per_epoch(len(self.labels), self.batch_size, self.train)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def _plan(self, epoch: int) -> dict[str, torch.Tensor]:
        """All random draws of one epoch, from a generator seeded by (seed, epoch)."""
        n = len(self.labels)
        g = epoch_generator(self.seed, epoch)
        plan = {"order": torch.randperm(n, generator=g)}
        if self.translate:
            plan["shift"] = torch.randint(0, 2 * self.translate + 1, (n, 2), generator=g)
        if self.flip == "random":
            plan["flip"] = torch.rand(n, generator=g) < 0.5
        elif self.flip == "alternating":
            # a fixed per-image coin (epoch 0's), inverted on odd epochs
            base = torch.rand(n, generator=epoch_generator(self.seed, -1)) < 0.5
            plan["flip"] = base ^ bool(epoch % 2)
        if self.cutout:
            h, w = self.size
            plan["cut"] = torch.stack([torch.randint(0, h, (n,), generator=g),
                                       torch.randint(0, w, (n,), generator=g)], 1)
        return {k: v.to(self.device) for k, v in plan.items()}

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield batches ``start`` .. ``stop`` (exclusive) of ``epoch`` (training order)."""
        if not self.train:
            yield from self.ordered()
            return
        plan = self._plan(epoch)
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            idx = plan["order"][i * self.batch_size:(i + 1) * self.batch_size]
            if self.world > 1:  # the same global batch as one process, split into disjoint parts
                b = len(idx)
                idx = idx[self.rank * b // self.world:(self.rank + 1) * b // self.world]
            pick = lambda k: plan[k][idx] if k in plan else None
            x = augment_batch(self.padded[idx], self.mean, self.std, self.size, shift=pick("shift"),
                              flip=pick("flip"), cut=pick("cut"), cutout=self.cutout)
            yield x, self.labels[idx]

    def ordered(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in stored order, normalized, no augmentation (for evaluation)."""
        for i in range(0, len(self.labels), self.batch_size):
            yield (normalize(self.images[i:i + self.batch_size], self.mean, self.std),
                   self.labels[i:i + self.batch_size])


def channel_stats(images_u8: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images, in [0, 1] units (float64 sums)."""
    x = images_u8
    n = x.shape[0] * x.shape[2] * x.shape[3]
    s = np.zeros(x.shape[1]); ss = np.zeros(x.shape[1])
    for i in range(0, len(x), 5000):  # chunked to keep memory flat
        c = x[i:i + 5000].astype(np.float64) / 255
        s += c.sum(axis=(0, 2, 3)); ss += (c * c).sum(axis=(0, 2, 3))
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean ** 2, 1e-12))
    return mean.tolist(), std.tolist()
