"""The run configuration: one dataclass, YAML in and out, CLI-style overrides, validation.

Deliberately free of torch imports so that reading or validating a config is instant.
Every field has a default; `cifarlab.recipes` supplies the tuned values per dataset.
"""
from __future__ import annotations

import difflib
import os
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config_retired import RETIRED, check_retired
from .config_values import Float, Int, one_line, parsed

STRATEGIES = ("scratch", "linear-probe", "fine-tune", "partial-fine-tune", "full")
CIFAR_NAMES = ("cifar10", "cifar100")
PATH_KINDS = ("folder", "store", "shards")   # dataset strings KIND:PATH
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # auto: cifarlab.runtime.resolve_precision
TTA_LEVELS = (0, 1, 2, 3)                    # test-time augmentation levels: cifarlab.data.augment.tta_views

# Keys whose change leaves a saved training state (and a finished run's result) meaningful: where
# things are read or shown, not what is computed. on_nan too: it changes nothing while the losses stay
# finite, and resuming a diverged run with on_nan=skip-batch is the way on past a rare bad batch.
RESUME_SAFE_KEYS = frozenset({"progress", "threads", "device", "data_dir", "download", "eval_batch_size",
                              "cache_dir", "on_nan", "logger"})


class ConfigError(ValueError):
    """A config value or key is invalid. The message says which and how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset string: ``kind`` is ``cifar10``, ``cifar100``, ``folder``, ``store`` or
    ``shards``; ``path`` is the folder of the last three (None for CIFAR)."""
    kind: str
    path: str | None = None

    @property
    def is_cifar(self) -> bool:
        return self.kind in CIFAR_NAMES

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_dataset(name: str, bare_path: str | None = None) -> DatasetSpec:
    """The one parser of dataset strings (``cifar10``, ``cifar100``, ``folder:PATH``, ``store:PATH``,
    ``shards:PATH``). ``bare_path="folder"`` reads any other string as an image folder's path (the
    ``cifarlab data`` commands' convention).

    Raises:
        ConfigError: an unknown name (close matches and the valid forms listed) or an empty path.
    """
    name = str(name)
    if name.lower() in CIFAR_NAMES:  # CIFAR10 as well
        return DatasetSpec(name.lower())
    kind, sep, path = name.partition(":")
    if sep and kind in PATH_KINDS:
        if not path:
            raise ConfigError(f"Dataset {name!r} names no path; write {kind}:PATH.")
        return DatasetSpec(kind, path)
    if bare_path is not None:
        return DatasetSpec(bare_path, name)
    close = difflib.get_close_matches(name.lower(), CIFAR_NAMES, n=2)
    raise ConfigError(f"Unknown dataset {name!r}." + (f" Did you mean {', '.join(close)}?" if close else "")
                      + " Available: cifar10, cifar100, folder:PATH (an image folder), store:PATH (a packed "
                      "store), shards:PATH (WebDataset shards).")


def config_diff(saved: "TrainConfig", new: "TrainConfig", ignore=RESUME_SAFE_KEYS) -> dict[str, tuple]:
    """``{key: (saved value, new value)}`` for every key that differs, except those in ``ignore``."""
    a, b = saved.to_dict(), new.to_dict()
    return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


# the first key of each group of keys, and the group's name (``cifarlab config keys``, ``train --help``)
SECTIONS = {"dataset": "data", "flip": "augmentation (applied in batch on the device)", "model": "model",
            "recipe": "optimisation", "precision": "numerics and speed", "tta": "evaluation and control"}
_SOURCE: ContextVar[str] = ContextVar("config_source", default="TrainConfig(...)")


class TrainConfig(BaseModel):
    """Everything that determines a training run (nanoGPT habit: the config is saved with the run).

    Each key's type, range or choices and meaning are declared once, here (pydantic): YAML values,
    ``--set`` strings and keyword arguments all pass through them, and the CLI's choices and help
    and ``cifarlab config keys`` are read from them. Checks across keys: `validate`.

    Units: ``epochs`` in passes over the training split (fractions allowed), learning rates per
    optimizer step, ``val_size`` in images, ``batch_size`` in images per step.

    Raises:
        ConfigError: a key that does not exist, or a value of the wrong type or out of range.
    """
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_default=False)

    dataset: str = Field("cifar10", description="cifar10 | cifar100 | folder:PATH | store:PATH | shards:PATH")
    folder_size: Int = Field(32, ge=8, description="image folders: side the images are brought to when packed")
    resize_policy: Literal["center-crop", "pad"] = Field("center-crop", description=(
        "image folders: center-crop (shorter side + centre crop) | pad"))
    data_dir: str | None = Field(None, description="folder holding cifar-10-batches-py/ or cifar-100-python/")
    val_size: Int = Field(0, ge=0, description="images carved from train, class-stratified; 0 = none")
    train_size: Int = Field(0, ge=0, description=(
        "keep a class-stratified subset of this many training images; 0 = all"))
    download: bool = Field(True, description="fetch the official tarball when the folder is missing")
    flip: Literal["none", "random", "alternating"] = Field("alternating", description=(
        "none | random | alternating (airbench: flip all every other epoch)"))
    translate: Int = Field(2, ge=0, description="max random shift in pixels (reflect padding)")
    cutout: Int = Field(0, ge=0, description="side of the zeroed square in pixels; 0 = off (DeVries & Taylor 2017)")
    mixup: Float = Field(0.0, ge=0, description=(
        "mixup Beta(alpha, alpha) of image pairs; 0 = off (Zhang et al. 2018)"))
    cutmix: Float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha) box pasting; 0 = off (Yun et al. 2019)")
    auto_augment: Literal["none", "trivialaugment"] = Field("none", description=(
        "none | trivialaugment (per-image op and magnitude, batched; Müller & Hutter 2021)"))
    random_resized_crop: Float = Field(0.0, ge=0, le=1, description=(
        "RandomResizedCrop, batched: smallest area fraction of the box, e.g. 0.35; 0 = off"))
    model: str = Field("airbench94", description="a registered name (cifarlab models) or any timm model name")
    model_kwargs: dict = Field(default_factory=dict, description=(
        "keyword arguments of the model, e.g. {widths: [64, 256, 256]}"))
    pretrained: bool = Field(False, description=(
        "ImageNet weights: an installed weight package, else timm's hub download"))
    weights: str | None = Field(None, description=(
        "local weights file (safetensors / torch), timm or torchvision names"))
    strategy: Literal[STRATEGIES] = Field("scratch", description=(
        "scratch | linear-probe | fine-tune | partial-fine-tune | full"))
    freeze_epochs: Float = Field(1.0, ge=0, description=(
        "fine-tune, partial-fine-tune: epochs training the head only before unfreezing"))
    trainable_stages: Int = Field(2, ge=0, description=(
        "partial-fine-tune: the last N stages train; the earlier ones are frozen, run once, cached"))
    cached_views: Int = Field(4, ge=1, description=(
        "partial-fine-tune: views cached per training image: the image, its mirror, then random resized crops"))
    cache_dtype: Literal["bf16", "fp32"] = Field("bf16", description=(
        "partial-fine-tune: storage of the cached training views, bf16 | fp32 (val/test always fp32)"))
    head_hidden: Int = Field(0, ge=0, description=(
        "hidden units of an MLP classifier head (Linear-ReLU-Dropout-Linear); 0 = linear head"))
    layer_decay: Float = Field(0.7, gt=0, le=1, description=(
        "fine-tune: lr multiplier per layer group going down from the head"))
    img_size: Int | None = Field(None, ge=8, description=(
        "upsample batches on the device to this side (None: data's size)"))
    img_sizes: list | None = Field(None, description=(
        "progressive resizing: [[epoch, size], ...], e.g. [[0, 64], [3, 96]]"))
    interpolation: Literal["nearest", "bilinear", "bicubic", "area"] = Field("bilinear", description=(
        "nearest | bilinear | bicubic | area"))
    downsize: Literal["resize", "crop"] = Field("resize", description=(
        "a side below the data's: resize the image, or crop (a random crop, centred at test)"))
    feature_cache: bool = Field(True, description="linear-probe: train the head on cached backbone features")
    cache_dir: str | None = Field(None, description="feature cache folder (default: <data cache>/features)")
    recipe: str | None = Field(None, description=(
        "a named recipe (cifarlab config recipes), e.g. airbench94_muon; None = the dataset's own"))
    epochs: Float = Field(8.0, gt=0, description="passes over the training split (fractions allowed)")
    batch_size: Int = Field(2000, gt=0, description="images per optimizer step (all processes together)")
    optimizer: Literal["muon", "sgd", "adamw"] = Field("muon", description="muon | sgd | adamw")
    lr: Float = Field(0.24, gt=0, description="peak learning rate of the filters (muon) or all weights (sgd/adamw)")
    bias_lr: Float = Field(0.053, gt=0, description=(
        "peak learning rate of the BatchNorm biases and the whitening bias"))
    head_lr: Float = Field(0.67, gt=0, description="peak learning rate of the classifier")
    momentum: Float = Field(0.85, description="SGD/Nesterov momentum (beta1 for adamw)")
    muon_momentum: Float = Field(0.6, description="Muon's momentum on the conv filters")
    weight_decay: Float = Field(0.004, description=(
        "decoupled: multiplied by lr/group_lr so it does not scale with lr"))
    label_smoothing: Float = Field(0.2, ge=0, lt=1, description=(
        "target mass spread over all classes (Szegedy et al. 2016)"))
    loss_reduction: Literal["sum", "mean"] = Field("sum", description=(
        "sum | mean (airbench sums the per-example losses)"))
    schedule: Literal["linear", "cosine", "onecycle", "constant"] = Field("linear", description=(
        "linear | cosine | onecycle | constant"))
    warmup_epochs: Float = Field(0.0, ge=0, description="linear warmup from 0 to the peak lr, in epochs")
    final_lr_frac: Float = Field(0.0, description="lr at the end as a fraction of the peak")
    decay_epochs: Float = Field(0.0, ge=0, description=(
        "linear/cosine: peak lr held, then decayed over the last N epochs (warmup-stable-decay); 0 = whole "
        "run"))
    whiten_bias_epochs: Float = Field(3.0, description="the whitening bias trains this long, then is frozen")
    ema: bool = Field(False, description="keep an exponential moving average of the weights")
    ema_decay: Float = Field(0.99, ge=0, lt=1, description="EMA decay per step")
    precision: Literal[PRECISIONS] = Field("auto", description=(
        "auto (bf16 where the device has it natively, fp16 + gradient scaler on older GPUs, else fp32) | bf16"
        " | fp16 (CUDA) | fp32"))
    channels_last: bool = Field(False, description=(
        "NHWC memory format (faster convolutions on CPU for the airbench nets)"))
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: Int | None = Field(None, gt=0, description=(
        "torch intra-op threads; unset: one per physical core this process may use (torch's default, capped)"))
    tta: Literal[TTA_LEVELS] = Field(2, description=(
        "0 none, 1 mirror, 2 + 2 diagonal 1-pixel shifts (6 views), 3 all 4 (10 views)"))
    tta_fraction: Float = Field(1.0, gt=0, le=1, description=(
        "selective TTA: the share of each batch, least sure first, given the views"))
    eval_batch_size: Int = Field(2000, gt=0, description="images per batch at evaluation and prediction")
    early_stopping_patience: Int = Field(0, ge=0, description=(
        "epochs without val improvement; 0 = off (needs val_size > 0)"))
    early_stopping_min_delta: Float = Field(0.0, description="in top-1 accuracy points (%)")
    on_nan: Literal["stop", "skip-batch"] = Field("stop", description=(
        "stop | skip-batch: a non-finite loss or gradient stops the run, or skips that batch (counted); non-"
        "finite weights always stop it"))
    seed: Int = Field(0, description="weights init, data order, augmentation")
    split_seed: Int = Field(0, description=(
        "validation split and train_size subset: fixed, so seeds share them (ensembles)"))
    logger: Literal["tensorboard", "mlflow", "wandb", "none"] = Field("tensorboard", description=(
        "experiment tracker: tensorboard (event files in the run directory), mlflow, wandb (optional extras), none"))
    progress: bool = Field(True, description="progress bar and per-epoch summary lines on the console")

    # ------------------------------------------------------------------ helpers
    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(one_line(e, type(self).model_fields, _SOURCE.get())) from None

    @field_validator("dataset", mode="before")
    @classmethod
    def _cifar_in_any_case(cls, value):
        return value.lower() if isinstance(value, str) and value.lower() in CIFAR_NAMES else value

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """Build from a mapping, rejecting unknown keys with close-match suggestions."""
        return cls().update(values, source=source)

    def update(self, values: dict, source: str = "override") -> "TrainConfig":
        """A copy with ``values`` applied: keys checked, command-line strings read as YAML where the
        key is not text (``--set img_sizes=[[0, 24], [4, 32]]``), every value checked by its type."""
        known = type(self).model_fields
        values = {k.replace("-", "_"): v for k, v in values.items()}
        for key in sorted(RETIRED.keys() & values.keys()):   # refused unless "off", which changes nothing
            check_retired(key, values.pop(key), source, ConfigError)
        for key, value in values.items():
            if key not in known:
                close = ", ".join(difflib.get_close_matches(key, known, n=3))
                raise ConfigError(f"Unknown config key {key!r} in {source}." + (f" Did you mean {close}?" if close else "")
                                  + f" Valid keys: {', '.join(sorted(known))}.")
        merged = {**self.model_dump(), **{k: parsed(known[k].annotation, k, v, source, ConfigError)
                                          for k, v in values.items()}}
        token = _SOURCE.set(source)    # what the errors of __init__ name
        try:
            return type(self)(**merged)
        finally:
            _SOURCE.reset(token)

    def validate(self) -> "TrainConfig":
        """Check what involves more than one key (each key's own type and range are checked when it is
        set); raise `ConfigError` naming the keys and the fix. Returns ``self``."""
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)
        need(self.warmup_epochs < self.epochs,
             f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs}).")
        need(self.decay_epochs <= self.epochs - self.warmup_epochs, f"decay_epochs ({self.decay_epochs}) must be in "
             f"[0, epochs - warmup_epochs = {self.epochs - self.warmup_epochs:g}]; 0 decays over the whole run.")
        need(self.decay_epochs == 0 or self.schedule in ("linear", "cosine"), f"decay_epochs applies to the linear and "
             f"cosine schedules, not {self.schedule!r}: set --set schedule=linear or decay_epochs=0.")
        need(self.early_stopping_patience == 0 or self.val_size > 0 or not parse_dataset(self.dataset).is_cifar,
             "early stopping needs a validation split: set --val-size (e.g. 5000) or patience 0.")
        need(self.strategy not in ("fine-tune", "partial-fine-tune") or self.freeze_epochs < self.epochs,
             f"freeze_epochs ({self.freeze_epochs}) must be below epochs ({self.epochs}) for {self.strategy}: "
             "otherwise the backbone never unfreezes. Lower --set freeze_epochs or raise --epochs.")
        sizes, num = self.img_sizes, (int, float)
        need(sizes is None or (isinstance(sizes, list) and sizes and all(isinstance(p, (list, tuple)) and len(p) == 2
             and all(isinstance(v, num) for v in p) and float(p[0]).is_integer() and p[1] >= 8 for p in sizes)),
             "img_sizes must be a list of [epoch, size] pairs, whole epochs (the side changes between epochs), "
             f"sizes >= 8, e.g. [[0, 64], [3, 128]] (got {sizes}).")
        need(not (self.pretrained and self.weights), "use either --pretrained or --weights, not both.")
        return self

    # ------------------------------------------------------------------ YAML
    def to_yaml(self) -> str:
        """Every key as YAML text, in field order (what a run's ``config.yaml`` holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def load_yaml(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a complete YAML config on top of the dataclass defaults (a run's ``config.yaml``).
        To layer a file over a recipe, use `cifarlab.recipes.resolve_config` with
        `read_config_file`. Raises `ConfigError` for a missing file, bad YAML or keys."""
        return cls.from_dict(read_config_file(path), source=str(path))


def read_config_file(path: str | os.PathLike) -> dict:
    """The key: value mapping of a YAML config file, as written (its callers, `TrainConfig.load_yaml`
    and `cifarlab.recipes.resolve_config`, check the keys and values, naming the file).

    Raises:
        ConfigError: missing or unreadable file, not YAML, not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} does not exist.")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"Config file {p} is not valid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"Cannot read config file {p}: {e.strerror}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"Config file {p} must hold a mapping of key: value pairs.")
    return values


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ``["epochs=10", "lr=0.1"]`` into a dict; raise `ConfigError` on a bad pair."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"Override {pair!r} must look like key=value (e.g. epochs=10).")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out
