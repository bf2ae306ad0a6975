"""Partial fine-tuning on a cached trunk: freeze the first stages, run them once, train the rest many times.

The frozen trunk's outputs (e.g. EfficientNet-Lite0's third stage at 128 px: 40 x 16 x 16 values an
image) are computed once per training image and *view* -- the image, its mirror, and random resized
crops at the input level -- and stored in a folder of ``.npy`` files (training views as bf16 bits
or float32, read memory-mapped; validation and test in float32, so their logits equal the full
network's). Each epoch then shows every image once, in one of its views drawn at random, to the
trainable stages and the head: the trunk's forward pass (most of a CNN's cost at the early, large
resolutions) is paid once instead of every epoch.

Keyed like the linear probe's feature cache (:func:`~.probe.feature_key`) plus the cut, the views and
the storage type, so a stale cache is never read. None of the CIFAR-fine-tuning projects cifarlab
replaces do this; it is the "cache the frozen part" idea of linear probing moved down the network.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import batches_per_epoch, epoch_generator
from ..data.augment import resized_crop_batch
from ..models.stages import split_at_stage
from ..runs import RunDir
from ..runtime import progress_bar
from .fit import fit
from .state import FitResult
from .probe import cache_root, feature_key, rounded_normalization, spliced

CROP_SCALE = 0.35  # smallest area of a cached crop view when random_resized_crop is 0
CHUNK = 256       # images per trunk forward pass while caching


def view_names(cfg: TrainConfig) -> list[str]:
    """The cached training views: ``center``, ``flip`` (unless flip is none), then ``crop1``, ``crop2``..."""
    base = ["center", "flip"] if cfg.flip != "none" else ["center"]
    n = max(cfg.cached_views, 1)
    return base[:n] + [f"crop{i}" for i in range(1, n - len(base) + 1)]


def _view(x: torch.Tensor, view: str, g: torch.Generator, min_scale: float) -> torch.Tensor:
    if view == "center":
        return x
    if view == "flip":
        return x.flip(-1)
    return resized_crop_batch(x, x.shape[-1], min_scale, g, flip=torch.rand(len(x), generator=g) < 0.5)


class TrunkLoader:
    """Batches of cached trunk outputs with :class:`~cifarlab.data.DeviceLoader`'s interface.

    ``x``: array (V, N, C, h, w) (uint16 bf16 bits or float32, memory-mapped), ``y``: int64 (N,).
    Training: each epoch is a permutation of the N images, each in a view drawn uniformly, both from
    the (seed, epoch) generator. Evaluation: view 0 in stored order. Yields float32 tensors on ``device``
    (channels_last when asked: 1.7x faster training of EfficientNet-Lite0's last stages on a CPU).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, train: bool, seed: int, device,
                 channels_last: bool = False):
        self.x, self.y, self.batch_size, self.train, self.seed = x, torch.from_numpy(np.asarray(y)), batch_size, train, seed
        self.device, self.channels_last = torch.device(device), channels_last

    @property
    def num_images(self) -> int:
        return len(self.y)

    def __len__(self) -> int:
        return batches_per_epoch(len(self.y), self.batch_size, self.train)

    def _rows(self, views: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(self.x[views, idx])
        t = torch.from_numpy(a)
        t = (t.view(torch.bfloat16) if a.dtype == np.uint16 else t).to(self.device).float()
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.ndim == 4 else t

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None):
        if not self.train:
            yield from self.ordered()
            return
        g = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.y), generator=g).numpy()
        views = torch.randint(len(self.x), (len(self.y),), generator=g).numpy()
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            sel = np.sort(order[i * self.batch_size:(i + 1) * self.batch_size])  # sorted: sequential memmap reads
            yield self._rows(views[sel], sel), self.y[sel].to(self.device)

    def ordered(self, view: int = 0):
        for i in range(0, len(self.y), self.batch_size):
            idx = np.arange(i, min(i + self.batch_size, len(self.y)))
            yield self._rows(np.full(len(idx), view), idx), self.y[idx].to(self.device)


@torch.no_grad()
def _write_split(trunk: nn.Module, pipe, views: list[str], out: Path, name: str, dtype: str, ctx, cfg) -> None:
    """Run the trunk over ``pipe``'s images in stored order once per view; write ``{name}_x.npy``
    (V, N, C, h, w) and ``{name}_y.npy`` (N,)."""
    n = pipe.loader.num_images
    scale = cfg.random_resized_crop or CROP_SCALE
    trunk.eval()
    arr, ys = None, []
    for v, view in enumerate(views):
        g = epoch_generator(cfg.split_seed, 10_000 + v)  # not cfg.seed: every seed shares the cache
        row = 0
        label = f"caching {name} trunk outputs ({view})" if cfg.progress else None
        for x, y in progress_bar(pipe.ordered(), label, total=-(-n // pipe.loader.batch_size)):
            with ctx():  # in chunks: an evaluation batch at 224 px would hold gigabytes of activations
                h = torch.cat([trunk(c).float() for c in _view(x, view, g, scale).split(CHUNK)])
            if arr is None:
                np_dtype = np.uint16 if dtype == "bf16" else np.float32
                arr = np.lib.format.open_memmap(out / f"{name}_x.npy", mode="w+", dtype=np_dtype,
                                                shape=(len(views), n) + tuple(h.shape[1:]))
            h = h.cpu().contiguous()
            arr[v, row:row + len(h)] = (h.bfloat16().view(torch.uint16) if dtype == "bf16" else h).numpy()
            row += len(h)
            if v == 0:
                ys.append(y.cpu())
    arr.flush()
    np.save(out / f"{name}_y.npy", torch.cat(ys).numpy())


def _readable(folder: Path) -> bool:
    """Whether ``folder`` holds a complete cache whose arrays open (a damaged one is recomputed)."""
    try:
        arrays = [np.load(f, mmap_mode="r", allow_pickle=False) for f in sorted(folder.glob("*.npy"))]
    except (OSError, ValueError):
        return False
    return (folder / "train_x.npy").is_file() and len(arrays) >= 4 and all(a.size for a in arrays)


def build_trunk_cache(trunk: nn.Module, pipes: dict, cfg: TrainConfig, key: str, ctx) -> tuple[Path, bool]:
    """The cache folder of ``key`` (computed and written atomically when absent) and whether it was
    already there. Test/val views: ``center`` (and ``flip`` when cfg.tta >= 1), float32."""
    root = cache_root(cfg)
    folder = root / f"trunk-{key}"
    if _readable(folder):
        return folder, True
    tmp = root / f"trunk-{key}.tmp{os.getpid()}"  # per process: two runs may build the same cache at once
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_split(trunk, pipes["train"], view_names(cfg), tmp, "train", cfg.cache_dtype, ctx, cfg)
        for split in ("val", "test"):
            if pipes.get(split) is not None:
                _write_split(trunk, pipes[split], ["center", "flip"][:1 + (cfg.tta >= 1)], tmp, split, "fp32", ctx, cfg)
    except BaseException:  # Ctrl-C, a full disk: leave no half-written gigabytes behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if _readable(folder):  # another run finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a damaged leftover
        tmp.rename(folder)
    return folder, False


def _load(folder: Path, split: str):
    if not (folder / f"{split}_x.npy").is_file():
        return None
    return np.load(folder / f"{split}_x.npy", mmap_mode="r"), np.load(folder / f"{split}_y.npy")


@torch.no_grad()
def rest_logits(rest: nn.Module, cached, batch_size: int, device, ctx,
                channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the rest on a cached split, averaged over its views (the mirror TTA when two):
    float32 (N, classes) and int64 (N,) on the CPU."""
    x, y = cached
    loader = TrunkLoader(x, y, batch_size, train=False, seed=0, device=device, channels_last=channels_last)
    was = rest.training
    rest.eval()
    total = None
    for v in range(len(x)):
        with ctx():
            out = torch.cat([rest(h).float().cpu() for h, _ in loader.ordered(view=v)])
        total = out if total is None else total + out
    rest.train(was)
    return total / len(x), torch.from_numpy(np.asarray(y))


def fit_partial(model: nn.Module, pipes: dict, cfg: TrainConfig, run: RunDir, device: torch.device, location: str,
                ctx, score_fn, resume=None, resume_weights=None, callbacks=()) -> tuple[FitResult, dict, dict]:
    """Partial fine-tuning: cut ``model`` before its last ``cfg.trainable_stages`` stages, cache the
    trunk's outputs, train the rest on them with :func:`~.loop.fit`.

    Args: as :func:`~.probe.fit_linear_probe` (pipes ``{"train", "val", "test"}``, the data's folder,
        the precision context factory, ``score_fn(logits, labels) -> {"loss", "top1"}``).

    Returns:
        ``(result, info, logits)``: the fit result with full-model weights in ``eval_state``; cache
        facts ``{"key", "path", "hit", "extract_seconds", "views", "trunk_shape", "bytes"}``; and
        ``{"test": (logits, labels), "val": ...}`` of the selected weights from the cached splits
        (with mirror TTA when cfg.tta >= 1; None when cfg.tta is 2, which needs the full network).

    Raises:
        ConfigError: the model cannot be cut there (:func:`~cifarlab.models.stages.split_at_stage`).
    """
    side = pipes["test"].side() or int(pipes["test"].loader.size[-1])
    trunk, rest = split_at_stage(model, cfg.trainable_stages, side=min(side, 64))
    for p in trunk.parameters():
        p.requires_grad_(False)
    norm = rounded_normalization(pipes["test"].loader)
    extra = {"trainable_stages": cfg.trainable_stages, "dtype": cfg.cache_dtype, "tta_views": min(cfg.tta, 1),
             "crop_scale": cfg.random_resized_crop or CROP_SCALE, "kind": "trunk"}
    key = feature_key(cfg, location, side, norm, tuple(view_names(cfg)), extra, precision=getattr(ctx, "name", None))
    t0 = time.perf_counter()
    folder, hit = build_trunk_cache(trunk, pipes, cfg, key, ctx)
    extract_seconds = time.perf_counter() - t0
    train_x, train_y = _load(folder, "train")
    info = {"key": key, "path": str(folder), "hit": hit, "extract_seconds": extract_seconds,
            "views": view_names(cfg), "trunk_shape": list(train_x.shape[2:]),
            "bytes": sum(f.stat().st_size for f in folder.iterdir())}
    cl = cfg.channels_last
    loader = TrunkLoader(train_x, train_y, cfg.batch_size, train=True, seed=cfg.seed, device=device, channels_last=cl)
    val = _load(folder, "val")
    val_fn = (lambda m: score_fn(*rest_logits(m, val, cfg.eval_batch_size, device, ctx, cl))) if val else None
    result = fit(rest, loader, cfg, run, device,
                 val_fn=val_fn, resume=resume, resume_weights=resume_weights, callbacks=callbacks, ctx=ctx)
    rest.load_state_dict(result.eval_state)
    result.eval_state = spliced(model, result.eval_state, rest.model_keys().__getitem__, run)
    logits = None
    if cfg.tta <= 1:
        logits = {s: rest_logits(rest, c, cfg.eval_batch_size, device, ctx, cl)
                  for s, c in (("test", _load(folder, "test")), ("val", val)) if c is not None}
    return result, info, logits
