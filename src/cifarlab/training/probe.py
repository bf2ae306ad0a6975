"""Linear probes on cached features: run the frozen backbone once, train the head many times.

The pooled pre-logit features (``model.forward_head(model.forward_features(x), pre_logits=True)``)
of every train/val/test image are computed once per (model, weights, input side, interpolation,
normalization, dataset files, split, views) and stored as a safetensors file in the cache folder.
The head then trains with the same :func:`~cifarlab.training.fit` loop, on a loader of features.
Any change to those inputs changes the key, so a stale cache is never read.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..data import batches_per_epoch, default_data_dir, epoch_generator
from ..models import classifier_names
from ..runs import RunDir
from ..runtime import progress_bar
from ..files import atomic_write
from .checkpoint import save_checkpoint
from .fit import fit
from .state import FitResult

FORMAT_VERSION = 1


class HeadOnly(nn.Module):
    """The model's classifier alone, applied to pooled features (B, D) -> logits (B, C)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)


class FeatureLoader:
    """Batches of cached features with :class:`~cifarlab.data.DeviceLoader`'s interface.

    Shuffled per (seed, epoch) when ``train``; features float32 (N, D), labels int64 (N,).
    """

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool, seed: int):
        self.feats, self.labels, self.batch_size, self.train, self.seed = feats, labels, batch_size, train, seed

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return batches_per_epoch(len(self.labels), self.batch_size, self.train)

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None):
        if not self.train:
            yield from self.ordered()
            return
        order = torch.randperm(len(self.labels), generator=epoch_generator(self.seed, epoch))
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size].to(self.feats.device)
            yield self.feats[idx], self.labels[idx]

    def ordered(self):
        for i in range(0, len(self.labels), self.batch_size):
            yield self.feats[i:i + self.batch_size], self.labels[i:i + self.batch_size]


def rounded_normalization(loader) -> dict:
    """A loader's normalization as a cache key holds it: ``{"mean": [3], "std": [3]}`` rounded to 6
    digits, so float noise in the statistics does not change the key."""
    return {"mean": [round(v, 6) for v in loader.mean.tolist()], "std": [round(v, 6) for v in loader.std.tolist()]}


def cache_root(cfg: TrainConfig) -> Path:
    """Where cached features live: ``cfg.cache_dir``, else ``features/`` under the default data folder."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_data_dir() / "features"


def spliced(model: nn.Module, trained: dict, key_of, run: RunDir) -> dict:
    """``model``'s full state dict with the ``trained`` tensors put in (``key_of``: a trained tensor's
    name -> its name in ``model``), saved as the run's ``checkpoint-best`` (evaluate and predict read
    full-model weights). Returns that state dict (copies)."""
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    full.update({key_of(k): v for k, v in trained.items()})
    save_checkpoint(run.path, "best", full)
    return full


def _file_id(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def feature_key(cfg: TrainConfig, location: str, side: int, normalization: dict, views: tuple[str, ...],
                extra: dict | None = None, precision: str | None = None) -> str:
    """Hex key of everything the cached features depend on (``location``: the data's folder;
    ``extra``: anything else a cache's contents depend on, e.g. where the network is cut;
    ``precision``: the one the features are computed in, default ``cfg.precision``).

    The training seed is part of the key only through randomly initialised weights: features of
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


@torch.no_grad()
def extract_features(model: nn.Module, batches, ctx, flip: bool = False, progress: str | None = None):
    """Pooled pre-logit features of every batch: float32 (N, D) and labels (N,), on the batches'
    device. ``ctx``: zero-argument callable giving the precision context; ``progress``: a bar's label."""
    model.eval()
    out, ys = [], []
    with ctx():
        for x, y in progress_bar(batches, progress):
            x = x.flip(-1) if flip else x
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
            ys.append(y)
    return torch.cat(out), torch.cat(ys)


def _scorer(x: torch.Tensor, y: torch.Tensor, score_fn):
    """model -> ``score_fn`` of its logits on the cached features ``x`` (N, D) and labels ``y`` (N,)."""
    def score(m):
        with torch.no_grad():
            return score_fn(m(x).float(), y)
    return score


def fit_linear_probe(model: nn.Module, pipes: dict, cfg: TrainConfig, run: RunDir, device: torch.device,
                     location: str, ctx, score_fn, resume=None, resume_weights=None,
                     callbacks=()) -> tuple[FitResult, dict]:
    """Train ``model``'s classifier on cached features; returns the fit result (full-model weights
    in ``eval_state``) and cache facts: ``{"key", "hit", "extract_seconds", "backbone_seconds_per_epoch"}``.

    Args:
        pipes: ``{"train", "val", "test"}`` :class:`~cifarlab.data.Batches` (val may be None).
        location: the data's folder (part of the cache key); ctx: the precision context factory;
        score_fn: ``(logits, labels) -> {"loss", "top1"}`` for the validation features.
    """
    from safetensors.torch import load_file, save_file

    views = ("center", "flip") if cfg.flip != "none" else ("center",)
    side = pipes["test"].side() or 32
    norm = rounded_normalization(pipes["test"].loader)
    key = feature_key(cfg, location, side, norm, views, precision=getattr(ctx, "name", None))
    folder = cache_root(cfg)
    path = folder / f"{key}.safetensors"
    t0 = time.perf_counter()
    hit = path.is_file()
    feats = None
    if hit:
        try:
            feats = {k: v.to(device) for k, v in load_file(str(path)).items()}
        except Exception:  # unreadable cache file: recompute and overwrite
            hit = False
    if feats is None:
        feats = {}
        for split in ("train", "val", "test"):
            if pipes[split] is None:
                continue
            xs, ys = zip(*[extract_features(model, pipes[split].ordered(), ctx, flip=(v == "flip"),
                                            progress=f"caching {split} features ({v})" if cfg.progress else None)
                           for v in (views if split == "train" else ("center",))])
            feats[f"{split}_x"], feats[f"{split}_y"] = torch.cat(xs), torch.cat(ys)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: save_file({k: v.contiguous().cpu() for k, v in feats.items()}, p))
    extract_seconds = time.perf_counter() - t0
    n_train_passes = len(views)
    info = {"key": key, "path": str(path), "hit": hit, "extract_seconds": extract_seconds,
            "views": list(views)}
    if not hit:  # the cost one epoch of an uncached probe would pay for the backbone on train
        total = sum(len(feats[f"{s}_y"]) * (n_train_passes if s == "train" else 1)
                    for s in ("train", "val", "test") if f"{s}_y" in feats)
        info["backbone_seconds_per_epoch"] = extract_seconds * len(feats["train_y"]) / max(total, 1)

    head_name = classifier_names(model)[0]
    head = HeadOnly(model.get_classifier())
    loader = FeatureLoader(feats["train_x"], feats["train_y"], cfg.batch_size, train=True, seed=cfg.seed)
    val_fn = _scorer(feats["val_x"], feats["val_y"], score_fn) if "val_x" in feats else None
    result = fit(head, loader, cfg, run, device, val_fn=val_fn, resume=resume, resume_weights=resume_weights,
                 callbacks=callbacks, ctx=ctx)
    result.eval_state = spliced(model, result.eval_state, lambda k: f"{head_name}.{k[len('classifier.'):]}", run)
    return result, info
