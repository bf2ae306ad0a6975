"""Using a finished run's model: rebuilt from its run directory or a stamped checkpoint file alone,
and applied to new image files."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..data import Batches, DeviceLoader, ImageArrays
from ..data.images import ImageDecodeError, expand_paths, load_image
from ..evaluation import predict_logits
from ..models import build_model
from ..runs import RunDir
from ..runtime import resolve_device
from ..training import CheckpointError, load_model_checkpoint
from .predictions import temperature_of
from .setup import model_sizes, precision_context


def load_run_model(run_dir, checkpoint: str = "best", device: torch.device | None = None):
    """Rebuild a finished run's model with its checkpoint, in eval mode. ``run_dir`` may also be a
    checkpoint ``.safetensors`` file written by cifarlab (`.portable`): no run directory needed.

    Returns:
        (config, model, results): results is ``results.json`` (classes, normalization, data side,
        calibration), or the same keys from the checkpoint's metadata.

    Raises:
        RunDirError: incomplete run (names what is missing).
        CheckpointError: weights do not fit, or a checkpoint file without cifarlab metadata.
    """
    if Path(run_dir).is_file():
        from .portable import model_from_checkpoint
        return model_from_checkpoint(run_dir, device)
    if Path(run_dir).suffix in (".safetensors", ".pt", ".pth"):
        raise CheckpointError(f"Checkpoint file {run_dir} does not exist: give a run directory or a checkpoint "
                              "file cifarlab wrote (runs/<name>/checkpoint-best.safetensors).")
    rd = RunDir(run_dir)
    rd.require_complete()
    cfg = rd.load_config()
    results = rd.read_results()
    device = device or resolve_device(cfg.device)
    model = build_model(cfg, results["num_classes"], device, load_weights=False)
    load_model_checkpoint(model, rd.checkpoint(checkpoint), f"{cfg.model} ({rd.path})")
    return cfg, model.eval(), results


def score_arrays(cfg, model, results: dict, images: np.ndarray, tta: int | None = None,
                 batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Probabilities of uint8 (N, 3, S, S) images at the run's data side S: float32 (N, C) on the
    CPU, normalized and resized on the device as the run's test images were, scored at the run's
    TTA level (or ``tta``), temperature-scaled when the run was calibrated."""
    device = next(model.parameters()).device
    arrays = ImageArrays(images, np.zeros(len(images), dtype=np.int64), results["classes"])
    norm = results["normalization"]
    loader = DeviceLoader(arrays, norm["mean"], norm["std"], batch_size=batch_size, device=device)
    batches = Batches(loader, model_sizes(cfg, model), cfg.interpolation, cfg.channels_last,
                      downsize=cfg.downsize).ordered()
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=-(-len(images) // batch_size), desc="predicting", unit="batch", file=sys.stderr, leave=False)
    logits, _ = predict_logits(model, batches, precision_context(device, cfg.precision, scoring=True),
                               tta=cfg.tta if tta is None else tta, tta_fraction=cfg.tta_fraction)
    return (logits.float() / temperature_of(results)).softmax(1).cpu()


def predict_images(run_dir, paths, top_k: int = 5, tta: int | None = None, policy: str | None = None,
                   batch_size: int = 256, progress: bool = False) -> dict:
    """Classify image files (or folders of them, recursively) with a finished run's model (a run
    directory, or a stamped checkpoint file alone).

    Each image, of any size and mode, is converted to RGB and brought to the run's data size
    (32x32 for CIFAR) by ``policy`` (default: the run's ``resize_policy``; see
    `cifarlab.data.images`), then normalized and resized on the device exactly as the run's
    test images were, and scored with the run's TTA level. ``progress``: bars over decoding and
    scoring when there are more than a few hundred files.

    Returns:
        ``{"run", "classes", "predictions": [{"file", "top": [{"class", "index", "probability"}]}],
        "errors": [{"file", "error"}]}``; probabilities in [0, 1] (temperature-scaled when the run
        was calibrated), ``top_k`` per image, best first. Unreadable, corrupt and non-image files
        are listed in ``errors``; the others are predicted.

    Raises:
        RunDirError: incomplete run.
        CheckpointError: the weights do not fit the model.
        ConfigError: ``top_k`` < 1.
    """
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1 (got {top_k}).")
    cfg, model, results = load_run_model(run_dir)
    classes = results["classes"]
    side = int(results.get("data_side", 32))
    policy = policy or cfg.resize_policy
    files, problems = expand_paths(paths)
    errors = [{"file": path, "error": why} for path, why in problems]
    images, ok = [], []
    show = progress and len(files) > 256
    if show:
        from tqdm.auto import tqdm
        files = tqdm(files, desc="reading images", unit="img", file=sys.stderr, leave=False)
    for f in files:
        try:
            images.append(load_image(f, side, policy))
            ok.append(str(f))
        except ImageDecodeError as e:
            errors.append({"file": str(f), "error": e.reason})
    preds = []
    if images:
        probs = score_arrays(cfg, model, results, np.stack(images), tta, batch_size, progress=show)
        k = min(top_k, len(classes))
        top_p, top_i = probs.topk(k, dim=1)
        for f, ps, ids in zip(ok, top_p.tolist(), top_i.tolist()):
            preds.append({"file": f, "top": [{"class": classes[i], "index": i, "probability": p}
                                             for p, i in zip(ps, ids)]})
    return {"run": str(run_dir), "classes": classes, "predictions": preds, "errors": errors}
