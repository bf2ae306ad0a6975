"""The cache of a frozen trunk's outputs, shared by linear probes and partial fine-tunes.

A cache is a folder ``trunk-KEY/`` under `cache_root` holding, per split, ``{split}_x.npy``
(V, N, ...) -- the trunk's output for each of V views of N images, float32 or bf16 bits (uint16),
read memory-mapped -- and ``{split}_y.npy`` (N,) int64. KEY hashes everything the outputs depend on
(`feature_key`), so a stale cache is never read. It is written to a per-process temporary
folder and renamed into place, so a killed run leaves no half cache behind, and two runs building
the same cache at once both end with a complete one.

Linear-probe caches of the single-file layout (``KEY.safetensors``: ``train_x`` (V*N, D) with the
views one after another, ``val_x``/``test_x`` (N, D)) are read once and rewritten in this layout.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import batches_per_epoch, default_data_dir, epoch_generator
from ..data.augment import resized_crop_batch
from ..runtime import progress_bar

FORMAT_VERSION = 1
CROP_SCALE = 0.35  # smallest area of a cached crop view when random_resized_crop is 0
CHUNK = 256       # images per trunk forward pass while caching


def rounded_normalization(loader) -> dict:
    """A loader's normalization as a cache key holds it: ``{"mean": [3], "std": [3]}`` rounded to 6
    digits, so float noise in the statistics does not change the key."""
    return {"mean": [round(v, 6) for v in loader.mean.tolist()], "std": [round(v, 6) for v in loader.std.tolist()]}


def cache_root(cfg: TrainConfig) -> Path:
    """Where caches live: ``cfg.cache_dir``, else ``features/`` under the default data folder."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_data_dir() / "features"


def _file_id(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def feature_key(cfg: TrainConfig, location: str, side: int, normalization: dict, views: tuple[str, ...],
                extra: dict | None = None, precision: str | None = None) -> str:
    """Hex key of everything the cached outputs depend on (``location``: the data's folder;
    ``extra``: anything else a cache's contents depend on, e.g. where the network is cut;
    ``precision``: the one the outputs are computed in, default ``cfg.precision``).

    The training seed is part of the key only through randomly initialised weights: outputs of
    loaded weights are the same for every seed, so the seeds of a suite share one cache."""
    if cfg.weights:
        weights = "file:" + _file_id(cfg.weights)
    elif cfg.pretrained:
        weights = "pretrained:" + cfg.model
    else:
        weights = f"random:{cfg.seed}"
    src = Path(location)
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in src.iterdir() if p.is_file()) \
        if src.is_dir() else []
    material = {"v": FORMAT_VERSION, "model": cfg.model, "kwargs": cfg.model_kwargs, "weights": weights,
                "side": side, "interpolation": cfg.interpolation, "dataset": cfg.dataset, "files": files,
                "source": str(src), "val_size": cfg.val_size, "train_size": cfg.train_size,
                "split_seed": cfg.split_seed,
                "normalization": normalization, "views": list(views), "precision": precision or cfg.precision, **(extra or {})}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def view_names(cfg: TrainConfig) -> list[str]:
    """A partial fine-tune's training views: ``center``, ``flip`` (unless flip is none), then ``crop1``..."""
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
    """Batches of cached trunk outputs with `DeviceLoader`'s interface.

    ``x``: array (V, N, ...) (uint16 bf16 bits or float32, memory-mapped), ``y``: int64 (N,). Training
    draws from the (seed, epoch) generator either a permutation of the N images, each in one view
    drawn uniformly (rows of a batch read in sorted order: sequential memory-map reads), or with
    ``every_view`` a permutation of all V x N (view, image) pairs. Evaluation: one view in stored order.
    Yields float32 tensors on ``device`` (channels_last when asked and 4-D).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, train: bool, seed: int, device,
                 channels_last: bool = False, every_view: bool = False):
        self.x, self.y, self.batch_size, self.train, self.seed = x, torch.from_numpy(np.asarray(y)), batch_size, train, seed
        self.device, self.channels_last, self.every_view = torch.device(device), channels_last, every_view

    @property
    def num_images(self) -> int:
        return len(self.y) * (len(self.x) if self.every_view and self.train else 1)

    def __len__(self) -> int:
        return batches_per_epoch(self.num_images, self.batch_size, self.train)

    def _rows(self, views: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(self.x[views, idx])
        t = torch.from_numpy(a)
        t = (t.view(torch.bfloat16) if a.dtype == np.uint16 else t).to(self.device).float()
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.ndim == 4 else t

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None):
        if not self.train:
            yield from self.ordered()
            return
        g, n, b = epoch_generator(self.seed, epoch), len(self.y), self.batch_size
        stop = len(self) if stop is None else min(stop, len(self))
        if self.every_view:
            order = torch.randperm(len(self.x) * n, generator=g).numpy()
            for i in range(start, stop):
                rows = order[i * b:(i + 1) * b]
                yield self._rows(rows // n, rows % n), self.y[rows % n].to(self.device)
            return
        order = torch.randperm(n, generator=g).numpy()
        views = torch.randint(len(self.x), (n,), generator=g).numpy()
        for i in range(start, stop):
            sel = np.sort(order[i * b:(i + 1) * b])
            yield self._rows(views[sel], sel), self.y[sel].to(self.device)

    def ordered(self, view: int = 0):
        for i in range(0, len(self.y), self.batch_size):
            idx = np.arange(i, min(i + self.batch_size, len(self.y)))
            yield self._rows(np.full(len(idx), view), idx), self.y[idx].to(self.device)


@torch.no_grad()
def _write_split(trunk: nn.Module, pipe, views: list[str], out: Path, name: str, dtype: str, ctx, cfg) -> None:
    """Run the trunk over ``pipe``'s images in stored order once per view; write ``{name}_x.npy``
    (V, N, ...) and ``{name}_y.npy`` (N,)."""
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
        arrays = {f.stem: np.load(f, mmap_mode="r", allow_pickle=False) for f in folder.glob("*.npy")}
    except (OSError, ValueError):
        return False
    paired = all(f"{name[:-2]}_y" in arrays for name in arrays if name.endswith("_x"))
    return "train_x" in arrays and paired and all(a.size for a in arrays.values())


def _from_single_file(path: Path, out: Path, views: int) -> bool:
    """Rewrite a single-file linear-probe cache ``path`` into the folder ``out``; False if unreadable."""
    from safetensors.torch import load_file
    try:
        t = load_file(str(path))
        for split in ("train", "val"):
            if f"{split}_x" in t:
                x, y = t[f"{split}_x"], t[f"{split}_y"]
                v = views if split == "train" else 1
                np.save(out / f"{split}_x.npy", x.reshape(v, len(x) // v, *x.shape[1:]).numpy())
                np.save(out / f"{split}_y.npy", y[:len(y) // v].numpy())
    except Exception:  # noqa: BLE001 - an unreadable cache is computed again
        return False
    return True


def build_trunk_cache(trunk: nn.Module, pipes: dict, cfg: TrainConfig, key: str, ctx, train_views: list[str],
                      eval_views: list[str], dtype: str, splits=("train", "val", "test"),
                      single_file: Path | None = None) -> tuple[Path, bool]:
    """The cache folder of ``key`` (computed and written atomically when absent) and whether it was
    already there. ``train_views`` are stored in ``dtype`` (``bf16`` or ``fp32``), the other splits'
    ``eval_views`` in float32; ``single_file``: a single-file probe cache to rewrite instead of computing."""
    root = cache_root(cfg)
    folder = root / f"trunk-{key}"
    if _readable(folder):
        return folder, True
    tmp = root / f"trunk-{key}.tmp{os.getpid()}"  # per process: two runs may build the same cache at once
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rewritten = single_file is not None and single_file.is_file() and \
            _from_single_file(single_file, tmp, len(train_views))
        for split in ([] if rewritten else splits):
            if pipes.get(split) is not None:
                views = train_views if split == "train" else eval_views
                _write_split(trunk, pipes[split], views, tmp, split, dtype if split == "train" else "fp32", ctx, cfg)
    except BaseException:  # Ctrl-C, a full disk: leave no half-written gigabytes behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if _readable(folder):  # another run finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a damaged leftover
        tmp.rename(folder)
    if rewritten:
        single_file.unlink(missing_ok=True)
    return folder, rewritten


def load_split(folder: Path, split: str):
    """``(x, y)`` of a cached split (x memory-mapped), or None when the cache has no such split."""
    if not (folder / f"{split}_x.npy").is_file():
        return None
    return np.load(folder / f"{split}_x.npy", mmap_mode="r"), np.load(folder / f"{split}_y.npy")
