"""Looking at a dataset before training (the seeds' notebooks all open with this): ``cifarlab data
describe`` (class counts, samples per class, image statistics) and ``cifarlab data preview`` (a
batch of training images after the config's augmentation, as the model sees them: fastai's
``show_batch``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..data import open_source
from ..render.interpret import image_grid_figure
from ..runs import write_json
from .report import dataset_figures
from .setup import assemble
from .train import run_config


def describe_dataset(dataset: str, out_dir, data_dir: str | None = None, per_class: int = 8) -> dict:
    """Write ``class_counts.png``, ``samples.png`` and ``describe.json`` for ``dataset`` into ``out_dir``.

    Returns:
        ``{"name", "classes", "images": {split: count}, "side" (pixels), "counts": {split: [per class]},
        "mean"/"std": per-channel statistics of the training images in [0, 1] units, "imbalance":
        largest / smallest training class, "notes", "files": {name: path}}``.

    Raises:
        DataError: the dataset cannot be found or read (the message says how to fix it).
    """
    src = open_source(dataset, data_dir, bare_path="folder")
    ds = src.dataset()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = dataset_figures(ds, out, per_class)
    mean, std = src.channel_stats()
    train_counts = np.asarray(figs["counts"]["train"])
    images = {"train": len(ds.train.labels), "test": len(ds.test.labels)}
    if ds.val is not None:
        images["val"] = len(ds.val.labels)
    info = {"name": ds.name, "classes": list(ds.classes), "images": images, "side": int(ds.train.images.shape[-1]),
            "counts": figs["counts"], "mean": list(map(float, mean)), "std": list(map(float, std)),
            "imbalance": float(train_counts.max() / max(train_counts.min(), 1)), "notes": list(src.notes),
            "files": {"class_counts": str(figs["counts_png"]), "samples": str(figs["samples_png"])}}
    write_json(out / "describe.json", info)
    info["files"]["describe"] = str(out / "describe.json")
    return info


def preview_batches(config: TrainConfig | dict | str | os.PathLike | None, out_file, images: int = 32,
                    epoch: int = 0, **overrides) -> Path:
    """`show_batch` written to the PNG file ``out_file`` (``.png`` added without a suffix); its path.

    Raises:
        ConfigError: as `cifarlab.train`; likewise DataError and UnknownModelError.
    """
    out = Path(out_file)
    out = out if out.suffix else out.with_suffix(".png")  # the name matplotlib would write
    fig = show_batch(config, images, epoch, **overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def show_batch(config: TrainConfig | dict | str | os.PathLike | None = None, images: int = 32, epoch: int = 0,
               **overrides):
    """The first ``images`` training images of ``epoch`` as the model receives them (fastai's
    ``show_batch``): the config's flips, translations, cutout, on-device resizing, then mixup/CutMix,
    normalization undone for display. Captions name the class (mixed: the two largest target shares,
    label smoothing included). ``config`` as in `cifarlab.train`; the model is built without
    pretrained weights (only its input settings matter). Returns a matplotlib ``Figure``, which a
    notebook shows inline.

    Raises:
        ConfigError: as `cifarlab.train`; likewise DataError and UnknownModelError.
    """
    cfg = run_config(config, overrides)
    s = assemble(cfg, load_weights=False)
    torch.manual_seed(cfg.seed)  # mixup's draws, as at the start of training
    x, y = next(iter(s.pipes["train"].epoch(epoch)))
    x, y = x[:images].float().contiguous(), y[:images]
    title = f"{cfg.dataset}: training batch, epoch {epoch + 1}, {x.shape[-1]}x{x.shape[-1]} px"
    if y.is_floating_point():  # mixed: soft targets; each caption names the two largest shares
        share, cls = y.topk(2, dim=1)
        names = s.source.classes
        captions = [f"{names[int(c[0])]} {w[0]:.2f}" + (f"/{names[int(c[1])]} {w[1]:.2f}" if w[1] > 0.05 else "")
                    for c, w in zip(cls, share.tolist())]
        title += ", mixed (mixup/CutMix)"
    else:
        captions = [s.source.classes[int(c)] for c in y]
    mean = torch.tensor(s.normalization["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(s.normalization["std"]).view(1, 3, 1, 1)
    return image_grid_figure((x.cpu() * std + mean).numpy(), captions, title)
