"""A run's predictions, computed once and cached in ``RUN/predictions.npz``; comparisons, ensembles
and reports all read that file. The cache is keyed to the checkpoint's size and modification time
and the TTA level, so retraining or re-evaluating invalidates it.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ..evaluation import Predictions, predict_logits
from ..files import atomic_write
from ..runs import PREDICTIONS_FILE, RunDir
from .setup import Setup, assemble_run


def _cache_key(rd: RunDir, checkpoint: str, tta: int) -> dict:
    st = rd.checkpoint(checkpoint).stat()
    return {"checkpoint": checkpoint, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "tta": int(tta)}


def save_predictions(run_dir, preds: Predictions, checkpoint: str = "best"):
    """Write ``predictions.npz`` atomically (plain arrays and a JSON header; no pickles); returns its path."""
    rd = RunDir(run_dir)
    meta = {"key": _cache_key(rd, checkpoint, preds.tta), "dataset": preds.dataset, "classes": preds.classes,
            "coarse_classes": preds.coarse_classes}
    arrays = {"meta": np.array(json.dumps(meta)), "test_logits": preds.test_logits.astype(np.float32),
              "test_labels": preds.test_labels.astype(np.int64)}
    if preds.val_logits is not None:
        arrays.update(val_logits=preds.val_logits.astype(np.float32), val_labels=preds.val_labels.astype(np.int64))
    if preds.coarse_of_fine is not None:
        arrays["coarse_of_fine"] = preds.coarse_of_fine.astype(np.int64)
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a bare name
            np.savez(f, **arrays)
    return atomic_write(rd.file(PREDICTIONS_FILE), write, needed=sum(a.nbytes for a in arrays.values()))


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


def predictions_of(model: torch.nn.Module, s: Setup, test=None, val=None, progress: bool = False) -> Predictions:
    """`Predictions` of ``model`` on the setup's test (and val) splits at the config's TTA level.

    ``test`` / ``val`` may pass already computed ``(logits, labels)`` tensors for those splits;
    ``progress`` shows a bar per split.
    """
    run = lambda split: predict_logits(model, s.pipes[split].ordered(), s.ctx, s.cfg.tta,
                                       f"predicting {split}" if progress else None, s.cfg.tta_fraction)
    tl, ty = test if test is not None else run("test")
    vl = vy = None
    if s.pipes.get("val") is not None:
        vl, vy = (t.numpy() for t in (val if val is not None else run("val")))
    src = s.source
    return Predictions(s.cfg.dataset, list(src.classes), s.cfg.tta, tl.numpy(), ty.numpy(), vl, vy,
                       src.coarse_of_fine, list(src.coarse_classes) if src.coarse_classes else None)


def run_predictions(run_dir, checkpoint: str = "best", data_dir: str | None = None,
                    recompute: bool = False) -> Predictions:
    """The run's test (and validation) TTA logits, from the cache or computed once and cached, with
    the run's temperature (`temperature_of`) set so that the probabilities are calibrated.

    Raises:
        RunDirError: the run is incomplete.
        CheckpointError: the weights do not fit the model.
        DataError: the dataset cannot be read (needed to compute the predictions, not to read the cache).
    """
    rd = RunDir(run_dir)
    rd.require_complete()
    preds = None if recompute else load_cached_predictions(rd.path, checkpoint, rd.load_config().tta)
    if preds is None:
        rd, s = assemble_run(rd.path, checkpoint, data_dir)
        preds = predictions_of(s.model, s, progress=True)
        save_predictions(rd.path, preds, checkpoint)
    preds.temperature = temperature_of(rd.read_results())
    return preds


def temperature_of(results: dict) -> float:
    """The run's fitted temperature (``results.json['calibration']``), or 1.0 when it has none."""
    return float((results.get("calibration") or {}).get("temperature", 1.0))
