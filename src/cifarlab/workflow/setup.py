"""Assembly: a run config becomes the device, the precision context, the dataset source, the model
and the input pipelines, decided here once for every command (train, evaluate, lr-find, predict,
export, predictions) and passed down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError, TrainConfig
from ..data import Batches, DataSource, MixedBatches, size_schedule, source_for, take
from ..models import WeightsError, build_model, check_input_size, data_config, is_user_module, model_kind
from ..runs import RunDir
from ..runtime import Precision, resolve_device, resolve_precision
from ..training import load_model_checkpoint, projected_passes
from ..training.health import is_out_of_memory
from ..training.progress import projection
from ..training.trackers import check_available

# airbench's data-dependent init (patch whitening) looks at this many training images
WHITENING_IMAGES = 5000


@dataclass
class Setup:
    """What a command works with.

    Attributes:
        cfg: the resolved config; device: where tensors live; ctx: the `Precision`
        chosen for ``device`` (calling it gives a forward pass's precision context); source: the dataset; model: on ``device``;
        pipes: ``{"train", "val", "test"}`` `Batches` (val None without a
        split); normalization: ``{"mean": [3], "std": [3]}`` in [0, 1] units.
    """
    cfg: TrainConfig
    device: torch.device
    ctx: Precision
    source: DataSource
    model: nn.Module
    pipes: dict
    normalization: dict

    def fresh_model(self) -> nn.Module:
        """Another model of the same architecture (no weights loaded), e.g. to score a checkpoint."""
        return build_model(self.cfg, self.source.num_classes, self.device, load_weights=False)


def precision_context(device: torch.device, precision: str, scoring: bool = False) -> Precision:
    """The precision ``precision`` (a config's value, ``auto`` included) means on ``device``: the
    zero-argument precision-context factory handed to the training and evaluation code.
    ``scoring``: a finished run scored elsewhere (evaluate, predict): a GPU run's fp16 becomes ``auto``
    off CUDA instead of an error. Raises `ConfigError` for training in fp16 off CUDA
    (`resolve_precision`)."""
    if scoring and precision == "fp16" and device.type != "cuda":
        precision = "auto"
    return resolve_precision(precision, device)


def model_sizes(cfg: TrainConfig, model: nn.Module) -> list[tuple[int, int]] | None:
    """The on-device resizing schedule of ``cfg`` for ``model`` (None: the data's own side)."""
    return size_schedule(cfg.img_size, cfg.img_sizes, data_config(model)["input_size"][-1])


def assemble(cfg: TrainConfig, device: torch.device | None = None, load_weights: bool = True,
             dist_env=None, source: DataSource | None = None, scoring: bool = False,
             precision: Precision | None = None) -> Setup:
    """Build everything a command needs for ``cfg``.

    ``scoring``: see `precision_context`; ``precision``: one already resolved for ``device``. The model is seeded by ``cfg.seed`` and gets its weights from ``cfg.weights``/``pretrained``
    when ``load_weights``; a fresh built-in model runs its data-dependent init (airbench whitening,
    on the first `WHITENING_IMAGES` training images). Normalization is the model's pretrained
    config's, else the dataset's own statistics.

    Raises:
        ConfigError: a setting the data or model cannot honour (input too small, early stopping
            without a validation split, train_size too large, shards with DDP...).
        DataError: the data cannot be read or does not match (from the data layer).
        UnknownModelError: no such model (from the model layer).
        WeightsError: the weights do not fit the model.
    """
    device = device or resolve_device(cfg.device)
    ctx = precision or precision_context(device, cfg.precision, scoring)  # before the data loads: fp16 on a CPU fails at once
    source = source or source_for(cfg)
    model = build_model(cfg, source.num_classes, device, load_weights)
    dc = data_config(model)
    mean, std = (dc["mean"], dc["std"]) if dc["mean"] is not None else source.channel_stats()
    rank, world = (dist_env.rank, dist_env.world) if dist_env is not None else (0, 1)
    loaders = source.loaders(cfg, device, mean, std, rank, world)
    sizes = size_schedule(cfg.img_size, cfg.img_sizes, dc["input_size"][-1])
    train_only = lambda k, value, off: value if k == "train" else off
    pipes = {k: (Batches(v, sizes, cfg.interpolation, cfg.channels_last, seed=cfg.seed, downsize=cfg.downsize,
                         random_resized_crop=train_only(k, cfg.random_resized_crop, 0.0),
                         auto_augment=train_only(k, cfg.auto_augment, "none"))
                 if v is not None else None) for k, v in loaders.items()}
    if cfg.mixup or cfg.cutmix:
        pipes["train"] = MixedBatches(pipes["train"], cfg.mixup, cfg.cutmix, source.num_classes, cfg.label_smoothing)
    if cfg.early_stopping_patience and pipes["val"] is None:
        raise ConfigError(f"early stopping needs a validation split, and {cfg.dataset} has none: set --val-size "
                          "(e.g. 5000) or early_stopping_patience 0.")
    check_input_size(model, pipes["test"].smallest_side(), device, cfg.model,
                     num_classes=source.num_classes if is_user_module(cfg.model) else None)
    if load_weights and not (cfg.weights or cfg.pretrained) and hasattr(model, "init_from_data"):
        model.init_from_data(take(loaders["train"].ordered(), WHITENING_IMAGES))
    return Setup(cfg, device, ctx, source, model, pipes,
                 {"mean": list(mean), "std": list(std)})


MAX_UNASKED_SECONDS = 3600.0  # a run projected longer than this at a model's default input size is refused


def default_size_refusal(cfg: TrainConfig, side: int, data_side: int, seconds_per_image: float,
                         train_images: int) -> str | None:
    """Why a run must not start at a timm model's default input side that nobody asked for (the
    message), or None. Refused when ``cfg`` sets neither ``img_size`` nor ``img_sizes``, the
    default ``side`` upsamples the data, and training projects to over `MAX_UNASKED_SECONDS`
    (``seconds_per_image`` of a training step, measured on this machine)."""
    if cfg.img_size or cfg.img_sizes or side <= data_side:
        return None
    projected = seconds_per_image * projected_passes(cfg, train_images)
    if projected <= MAX_UNASKED_SECONDS:
        return None
    return (f"{cfg.model} would train at its ImageNet input size, {side}x{side} px (the data is {data_side} px), which "
            f"projects to {projected / 3600:.1f} h on this machine. Set the size explicitly: e.g. --img-size 64 or 96 "
            f"(time grows with its square), or --img-size {side} to accept it.")


def time_training_pass(s: Setup, images: int, side: int | None = None) -> float:
    """Seconds per image of a forward and backward pass of ``images`` random images at ``side``
    (default: the first training side) under the run's precision, on a copy of the model (BatchNorm
    statistics, gradients and the random stream untouched). The second of two passes is timed: the
    first pays one-off costs (oneDNN primitives, cuDNN autotuning)."""
    import copy
    import time
    side = side or s.pipes["train"].side(0) or int(s.pipes["train"].loader.size[-1])
    probe = copy.deepcopy(s.model).train()
    sync = torch.cuda.synchronize if s.device.type == "cuda" else (lambda: None)
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        x = torch.randn(images, 3, side, side, device=s.device)
        if s.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for _ in range(2):
            sync()
            t = time.perf_counter()
            with s.ctx():
                probe(x).float().sum().backward()
            sync()
    del probe
    return (time.perf_counter() - t) / images


def check_default_input_size(s: Setup) -> None:
    """Raise `ConfigError` with `default_size_refusal`'s message when it has one; times
    a training pass of 4 images at the default side (CPU only, timm models only, no size set)."""
    cfg, side = s.cfg, s.pipes["train"].side(0)
    data_side = int(s.pipes["train"].loader.size[-1])
    if cfg.img_size or cfg.img_sizes or side is None or side <= data_side or s.device.type != "cpu":
        return
    per_image = time_training_pass(s, 4, side)
    why = default_size_refusal(cfg, side, data_side, per_image, s.pipes["train"].loader.num_images)
    if why:
        raise ConfigError(why)


ESTIMATE_IMAGES = 256  # images in the timed pass behind the first estimate (per image, within 15% of batch 2000 on a 2-core CPU)


def projection_line(s: Setup, state: dict | None) -> str:
    """The line projecting the training time of ``s`` (what is left of it, on resume) from one timed
    forward and backward pass of `ESTIMATE_IMAGES` images, before the first step (``state``: the
    train state resumed from, or None)."""
    cfg, loader = s.cfg, s.pipes["train"].loader
    images = math.ceil(cfg.epochs * loader.num_images)
    if state is not None:
        images = max(0, images - int(state.get("position", {}).get("global_step", 0)) * cfg.batch_size)
    try:
        per_image = time_training_pass(s, min(ESTIMATE_IMAGES, cfg.batch_size))
    except RuntimeError as e:  # out of memory with a second copy of the model: the steps will tell
        if not is_out_of_memory(e):
            raise
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
        return "estimate: after the first steps (the timed pass did not fit beside the model)"
    return projection(per_image * loader.num_images, per_image * images, f"of training for {images} images (from a "
                      f"timed pass of {min(ESTIMATE_IMAGES, cfg.batch_size)}; refined after the first steps)", cfg)


def assemble_run(run_dir, checkpoint: str = "best", data_dir: str | None = None) -> tuple[RunDir, Setup]:
    """A finished run's `Setup` from its saved config, with ``checkpoint-{checkpoint}`` loaded
    into the model (``data_dir`` overrides where the data is read from).

    Raises:
        RunDirError: incomplete run (names what is missing); CheckpointError; DataError.
    """
    rd = RunDir(run_dir)
    rd.require_complete()
    cfg = rd.load_config()
    if data_dir is not None:
        cfg = cfg.update({"data_dir": data_dir})
    s = assemble(cfg, load_weights=False, scoring=True)
    load_model_checkpoint(s.model, rd.checkpoint(checkpoint), f"{cfg.model} ({rd.path})")
    return rd, s


def checked_before_work(cfg: TrainConfig) -> TrainConfig:
    """``cfg``, once its model name, weights file and tracker package are known to exist: refused before
    any data is read or directory made, so nothing is left behind (`UnknownModelError`, `WeightsError`,
    `ConfigError`)."""
    if isinstance(cfg.model, str):
        model_kind(cfg.model)
    if cfg.weights and not Path(cfg.weights).is_file():
        raise WeightsError(f"Weights file {cfg.weights} does not exist: give the path of a .safetensors or .pt file.")
    check_available(cfg)  # the tracker's package
    return cfg
