"""Using a finished run: its model, its cached predictions, and predictions on new image files.

``run_predictions(run_dir)`` computes a run's TTA logits on the test set (and on its validation
split, when it had one) once and caches them in ``predictions.npz`` inside the run directory;
comparisons, ensembles and reports all read that file. The cache is keyed to the checkpoint's
size and modification time and the TTA level, so retraining or re-evaluating invalidates it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .runs import RunDir

PREDICTIONS_FILE = "predictions.npz"


@dataclass
class Predictions:
    """A run's predictions. Logits are float32 (N, C) averaged over TTA views; labels int64 (N,)."""
    dataset: str
    classes: list[str]
    tta: int
    test_logits: np.ndarray
    test_labels: np.ndarray
    val_logits: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    coarse_of_fine: np.ndarray | None = None   # int64 (C,) CIFAR-100 superclass of each class
    coarse_classes: list[str] | None = None

    @staticmethod
    def softmax(logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    @property
    def test_probs(self) -> np.ndarray:
        return self.softmax(self.test_logits)

    @property
    def val_probs(self) -> np.ndarray | None:
        return None if self.val_logits is None else self.softmax(self.val_logits)


def _cache_key(rd: RunDir, checkpoint: str, tta: int) -> dict:
    st = rd.file(f"checkpoint-{checkpoint}.safetensors").stat()
    return {"checkpoint": checkpoint, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "tta": int(tta)}


def save_predictions(run_dir, preds: Predictions, checkpoint: str = "best") -> Path:
    """Write ``predictions.npz`` atomically (plain arrays and a JSON header; no pickles)."""
    rd = RunDir(run_dir)
    meta = {"key": _cache_key(rd, checkpoint, preds.tta), "dataset": preds.dataset, "classes": preds.classes,
            "coarse_classes": preds.coarse_classes}
    arrays = {"meta": np.array(json.dumps(meta)), "test_logits": preds.test_logits.astype(np.float32),
              "test_labels": preds.test_labels.astype(np.int64)}
    if preds.val_logits is not None:
        arrays.update(val_logits=preds.val_logits.astype(np.float32), val_labels=preds.val_labels.astype(np.int64))
    if preds.coarse_of_fine is not None:
        arrays["coarse_of_fine"] = preds.coarse_of_fine.astype(np.int64)
    tmp = rd.file(".predictions.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, rd.file(PREDICTIONS_FILE))
    return rd.file(PREDICTIONS_FILE)


def load_cached_predictions(run_dir, checkpoint: str = "best", tta: int | None = None) -> Predictions | None:
    """The cached predictions if present and still matching the checkpoint and TTA level, else None."""
    rd = RunDir(run_dir)
    path = rd.file(PREDICTIONS_FILE)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if tta is not None and meta["key"]["tta"] != tta:
                return None
            if meta["key"] != _cache_key(rd, checkpoint, meta["key"]["tta"]):
                return None
            get = lambda k: z[k] if k in z.files else None
            return Predictions(meta["dataset"], meta["classes"], meta["key"]["tta"], z["test_logits"],
                               z["test_labels"], get("val_logits"), get("val_labels"), get("coarse_of_fine"),
                               meta.get("coarse_classes"))
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is recomputed, never trusted


def load_run_model(run_dir, checkpoint: str = "best", device: torch.device | None = None):
    """Rebuild a finished run's model with its checkpoint, in eval mode.

    Returns:
        (config, model, results): results is ``results.json`` (classes, normalization, input side).

    Raises:
        RunDirError: incomplete run (names what is missing); CheckpointError: weights do not fit.
    """
    from .api import _build_model, resolve_device
    from .training import load_model_checkpoint

    rd = RunDir(run_dir)
    rd.require_complete()
    cfg = rd.load_config()
    results = rd.read_json("results.json")
    device = device or resolve_device(cfg.device)
    model = _build_model(cfg, results["num_classes"], device, load_weights=False)
    load_model_checkpoint(model, rd.file(f"checkpoint-{checkpoint}.safetensors"), f"{cfg.model} ({rd.path})")
    return cfg, model.eval(), results


def run_predictions(run_dir, checkpoint: str = "best", data_dir: str | None = None,
                    recompute: bool = False) -> Predictions:
    """The run's test (and validation) TTA logits, from the cache or computed once and cached.

    Raises:
        RunDirError, CheckpointError, DataError (the dataset is needed to compute, not to read the cache).
    """
    from .api import _prepare, _coarse, resolve_device
    from .training import load_model_checkpoint

    rd = RunDir(run_dir)
    rd.require_complete()
    cfg = rd.load_config()
    if not recompute:
        cached = load_cached_predictions(rd.path, checkpoint, cfg.tta)
        if cached is not None:
            return cached
    if data_dir is not None:
        cfg = cfg.update({"data_dir": data_dir})
    device = resolve_device(cfg.device)
    ds, model, pipes, _ = _prepare(cfg, device, load_weights=False)
    load_model_checkpoint(model, rd.file(f"checkpoint-{checkpoint}.safetensors"), f"{cfg.model} ({rd.path})")
    preds = predictions_of(model, pipes, cfg, device, ds, _coarse(ds))
    save_predictions(rd.path, preds, checkpoint)
    return preds


def predictions_of(model, pipes: dict, cfg, device, ds, coarse, test=None) -> Predictions:
    """Compute :class:`Predictions` for ``model`` on the pipelines' test (and val) splits.

    ``test`` may pass already computed ``(logits, labels)`` tensors for the test split.
    """
    from .evaluation.metrics import predict_logits
    run = lambda split: predict_logits(model, pipes[split].ordered(), device, tta=cfg.tta, precision=cfg.precision)
    tl, ty = test if test is not None else run("test")
    vl = vy = None
    if pipes.get("val") is not None:
        vl, vy = (t.numpy() for t in run("val"))
    coarse_of_fine, coarse_classes = coarse
    return Predictions(cfg.dataset, list(ds.classes), cfg.tta, tl.numpy(), ty.numpy(), vl, vy,
                       coarse_of_fine, list(coarse_classes) if coarse_classes else None)


def predict_images(run_dir, paths, top_k: int = 5, tta: int | None = None, policy: str | None = None,
                   batch_size: int = 256) -> dict:
    """Classify image files (or folders of them, recursively) with a finished run's model.

    Each image, of any size and mode, is converted to RGB and brought to the run's data size
    (32x32 for CIFAR) by ``policy`` (default: the run's ``resize_policy``; see
    :mod:`cifarlab.data.images`), then normalized and resized
    on the device exactly as the run's test images were, and scored with the run's TTA level.

    Returns:
        ``{"run", "classes", "predictions": [{"file", "top": [{"class", "index", "probability"}]}],
        "errors": [{"file", "error"}]}``; probabilities in [0, 1], ``top_k`` per image, best first.
        Unreadable, corrupt and non-image files are listed in ``errors``; the others are predicted.

    Raises:
        RunDirError (incomplete run), CheckpointError; ValueError for ``top_k`` < 1 or a bad policy.
    """
    from .api import Batches, _size_schedule
    from .data import DeviceLoader, ImageArrays
    from .data.images import ImageDecodeError, expand_paths, load_image
    from .evaluation.metrics import predict_logits

    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    cfg, model, results = load_run_model(run_dir)
    classes = results["classes"]
    side = int(results.get("data_side", 32))
    policy = policy or cfg.resize_policy
    files, problems = expand_paths(paths)
    errors = [{"file": path, "error": why} for path, why in problems]
    images, ok = [], []
    for f in files:
        try:
            images.append(load_image(f, side, policy))
            ok.append(str(f))
        except ImageDecodeError as e:
            errors.append({"file": str(f), "error": e.reason})
    preds = []
    if images:
        device = next(model.parameters()).device
        arrays = ImageArrays(np.stack(images), np.zeros(len(images), dtype=np.int64), classes)
        norm = results["normalization"]
        loader = DeviceLoader(arrays, norm["mean"], norm["std"], batch_size=batch_size, device=device)
        batches = Batches(loader, _size_schedule(cfg, model), cfg.interpolation, cfg.channels_last)
        logits, _ = predict_logits(model, batches.ordered(), device, tta=cfg.tta if tta is None else tta,
                                   precision=cfg.precision)
        probs = logits.float().softmax(1)
        k = min(top_k, len(classes))
        top_p, top_i = probs.topk(k, dim=1)
        for f, ps, ids in zip(ok, top_p.tolist(), top_i.tolist()):
            preds.append({"file": f, "top": [{"class": classes[i], "index": i, "probability": p}
                                             for p, i in zip(ps, ids)]})
    return {"run": str(run_dir), "classes": classes, "predictions": preds, "errors": errors}
