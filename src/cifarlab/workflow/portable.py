"""Models that travel: a checkpoint file that describes itself, and the notebook's model object.

At the end of training (and after ``cifarlab calibrate``) both checkpoints of a run get safetensors
metadata (the header's ``__metadata__``, strings only): the run's config (so the model can be
rebuilt), classes, normalization, data and input side, temperature and the cifarlab version. A
checkpoint alone is then enough for ``cifarlab predict CHECKPOINT images/`` and
`load` -- no run directory needed. Paths and times are left out, so that a resumed run's
checkpoint stays bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..version import __version__
from ..config import TrainConfig
from ..models import build_model
from ..runs import RunDir
from ..runtime import resolve_device
from ..training import CheckpointError, load_model_checkpoint, read_checkpoint_metadata, stamp_checkpoint

FORMAT = "cifarlab-checkpoint-1"


def checkpoint_metadata(cfg: TrainConfig, classes: list[str], normalization: dict, data_side: int,
                        input_side: int, temperature: float = 1.0) -> dict[str, str]:
    """The metadata a run's checkpoints carry (see the module docstring); all values strings."""
    return {"format": "pt", "cifarlab_format": FORMAT, "cifarlab_version": __version__,
            "config": json.dumps(cfg.to_dict()), "classes": json.dumps(list(classes)), "num_classes": str(len(classes)),
            "normalization": json.dumps(normalization), "data_side": str(int(data_side)),
            "input_side": str(int(input_side)), "temperature": repr(float(temperature))}


def stamp_run_checkpoints(run_dir, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the run's ``checkpoint-best`` and ``checkpoint-last``."""
    rd = RunDir(run_dir)
    for name in ("best", "last"):
        if rd.checkpoint(name).is_file():
            stamp_checkpoint(rd.checkpoint(name), metadata)


def stamp_temperature(run_dir, temperature: float) -> None:
    """Update the temperature in the run's stamped checkpoints (after ``cifarlab calibrate``)."""
    rd = RunDir(run_dir)
    for name in ("best", "last"):
        meta = read_checkpoint_metadata(rd.checkpoint(name)) if rd.checkpoint(name).is_file() else {}
        if meta.get("cifarlab_format") == FORMAT:
            stamp_checkpoint(rd.checkpoint(name), {**meta, "temperature": repr(float(temperature))})


def model_from_checkpoint(path, device: torch.device | None = None):
    """Rebuild a model from a stamped checkpoint file alone.

    Returns:
        (config, model in eval mode, info): ``info`` has the keys of ``results.json`` that using a
        model needs: classes, num_classes, normalization, data_side, input_side, calibration.

    Raises:
        CheckpointError: the file is missing, damaged, or carries no cifarlab metadata (a
            checkpoint from before version 0.2 or another tool: use its run directory).
    """
    path = Path(path)
    meta = read_checkpoint_metadata(path)
    if meta.get("cifarlab_format") != FORMAT:
        raise CheckpointError(f"{path} carries no cifarlab metadata (written by another tool or an older cifarlab), so "
                              "the model cannot be rebuilt from it alone. Use the run directory it belongs to, e.g. "
                              f"cifarlab predict {path.parent} IMAGES.")
    cfg = TrainConfig.from_dict(json.loads(meta["config"]), source=f"{path} metadata")
    info = {"classes": json.loads(meta["classes"]), "num_classes": int(meta["num_classes"]),
            "normalization": json.loads(meta["normalization"]), "data_side": int(meta["data_side"]),
            "input_side": int(meta["input_side"]), "calibration": {"temperature": float(meta["temperature"])}}
    device = device or resolve_device(cfg.device)
    model = build_model(cfg, info["num_classes"], device, load_weights=False)
    load_model_checkpoint(model, path, f"{cfg.model} (from {path.name}'s metadata)")
    return cfg, model.eval(), info
