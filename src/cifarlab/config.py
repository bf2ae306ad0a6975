"""The run configuration: one dataclass, YAML in and out, CLI-style overrides, validation.

Deliberately free of torch imports so that reading or validating a config is instant.
Every field has a default; `cifarlab.recipes` supplies the tuned values per dataset.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .config_retired import RETIRED, check_retired

STRATEGIES = ("scratch", "linear-probe", "fine-tune", "partial-fine-tune", "full")
CIFAR_NAMES = ("cifar10", "cifar100")
PATH_KINDS = ("folder", "store", "shards")   # dataset strings KIND:PATH
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # auto: cifarlab.runtime.resolve_precision
TTA_LEVELS = (0, 1, 2, 3)                    # test-time augmentation levels: cifarlab.data.augment.tta_views

# Keys whose change leaves a saved training state (and a finished run's result) meaningful: where
# things are read or shown, not what is computed. on_nan too: it changes nothing while the losses stay
# finite, and resuming a diverged run with on_nan=skip-batch is the way on past a rare bad batch.
RESUME_SAFE_KEYS = frozenset({"progress", "threads", "device", "data_dir", "download", "eval_batch_size",
                              "cache_dir", "on_nan"})


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


@dataclass
class TrainConfig:
    """Everything that determines a training run (nanoGPT habit: the config is saved with the run).

    Units: ``epochs`` in passes over the training split (fractions allowed), learning rates per
    optimizer step, ``val_size`` in images, ``batch_size`` in images per step.
    """

    # --- data
    dataset: str = "cifar10"            # cifar10 | cifar100 | folder:PATH | store:PATH | shards:PATH
    folder_size: int = 32               # image folders: side the images are brought to when packed
    resize_policy: str = "center-crop"  # image folders: center-crop (shorter side + centre crop) | pad
    data_dir: str | None = None         # folder holding cifar-10-batches-py/ or cifar-100-python/
    val_size: int = 0                   # images carved from train, class-stratified; 0 = none
    train_size: int = 0                 # keep a class-stratified subset of this many training images; 0 = all
    download: bool = True               # fetch the official tarball when the folder is missing
    # --- augmentation (applied in batch on the device)
    flip: str = "alternating"           # none | random | alternating (airbench: flip all every other epoch)
    translate: int = 2                  # max random shift in pixels (reflect padding)
    cutout: int = 0                     # side of the zeroed square in pixels; 0 = off (DeVries & Taylor 2017)
    mixup: float = 0.0                  # mixup Beta(alpha, alpha) of image pairs; 0 = off (Zhang et al. 2018)
    cutmix: float = 0.0                 # CutMix Beta(alpha, alpha) box pasting; 0 = off (Yun et al. 2019)
    auto_augment: str = "none"          # none | trivialaugment (per-image op and magnitude, batched; Müller & Hutter 2021)
    random_resized_crop: float = 0.0    # RandomResizedCrop, batched: smallest area fraction of the box, e.g. 0.35; 0 = off
    # --- model
    model: str = "airbench94"          # a registered name (cifarlab models) or any timm model name
    model_kwargs: dict = field(default_factory=dict)  # keyword arguments of the model, e.g. {widths: [64, 256, 256]}
    pretrained: bool = False            # ImageNet weights: an installed weight package, else timm's hub download
    weights: str | None = None          # local weights file (safetensors / torch), timm or torchvision names
    strategy: str = "scratch"           # scratch | linear-probe | fine-tune | partial-fine-tune | full
    freeze_epochs: float = 1.0          # fine-tune, partial-fine-tune: epochs training the head only before unfreezing
    trainable_stages: int = 2           # partial-fine-tune: the last N stages train; the earlier ones are frozen, run once, cached
    cached_views: int = 4               # partial-fine-tune: views cached per training image: the image, its mirror, then random resized crops
    cache_dtype: str = "bf16"           # partial-fine-tune: storage of the cached training views, bf16 | fp32 (val/test always fp32)
    head_hidden: int = 0                # hidden units of an MLP classifier head (Linear-ReLU-Dropout-Linear); 0 = linear head
    layer_decay: float = 0.7            # fine-tune: lr multiplier per layer group going down from the head
    img_size: int | None = None         # upsample batches on the device to this side (None: data's size)
    img_sizes: list | None = None       # progressive resizing: [[epoch, size], ...], e.g. [[0, 64], [3, 96]]
    interpolation: str = "bilinear"     # nearest | bilinear | bicubic | area
    downsize: str = "resize"            # a side below the data's: resize the image, or crop (a random crop, centred at test)
    feature_cache: bool = True          # linear-probe: train the head on cached backbone features
    cache_dir: str | None = None        # feature cache folder (default: <data cache>/features)
    # --- optimisation
    recipe: str | None = None           # a named recipe (cifarlab config recipes), e.g. airbench94_muon; None = the dataset's own
    epochs: float = 8.0                 # passes over the training split (fractions allowed)
    batch_size: int = 2000              # images per optimizer step (all processes together)
    optimizer: str = "muon"             # muon | sgd | adamw
    lr: float = 0.24                    # peak learning rate of the filters (muon) or all weights (sgd/adamw)
    bias_lr: float = 0.053              # peak learning rate of the BatchNorm biases and the whitening bias
    head_lr: float = 0.67               # peak learning rate of the classifier
    momentum: float = 0.85              # SGD/Nesterov momentum (beta1 for adamw)
    muon_momentum: float = 0.6          # Muon's momentum on the conv filters
    weight_decay: float = 0.004         # decoupled: multiplied by lr/group_lr so it does not scale with lr
    label_smoothing: float = 0.2        # target mass spread over all classes (Szegedy et al. 2016)
    loss_reduction: str = "sum"         # sum | mean (airbench sums the per-example losses)
    schedule: str = "linear"            # linear | cosine | onecycle | constant
    warmup_epochs: float = 0.0          # linear warmup from 0 to the peak lr, in epochs
    final_lr_frac: float = 0.0          # lr at the end as a fraction of the peak
    decay_epochs: float = 0.0           # linear/cosine: peak lr held, then decayed over the last N epochs (warmup-stable-decay); 0 = whole run
    whiten_bias_epochs: float = 3.0     # the whitening bias trains this long, then is frozen
    ema: bool = False                   # keep an exponential moving average of the weights
    ema_decay: float = 0.99             # EMA decay per step
    # --- numerics and speed
    precision: str = "auto"             # auto (bf16 where the device has it natively, fp16 + gradient scaler on older GPUs, else fp32) | bf16 | fp16 (CUDA) | fp32
    channels_last: bool = False         # NHWC memory format (faster convolutions on CPU for the airbench nets)
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int | None = None          # torch intra-op threads; unset: one per physical core this process may use (torch's default, capped)
    # --- evaluation and control
    tta: int = 2                        # 0 none, 1 mirror, 2 + 2 diagonal 1-pixel shifts (6 views), 3 all 4 (10 views)
    tta_fraction: float = 1.0           # selective TTA: the share of each batch, least sure first, given the views
    eval_batch_size: int = 2000         # images per batch at evaluation and prediction
    early_stopping_patience: int = 0    # epochs without val improvement; 0 = off (needs val_size > 0)
    early_stopping_min_delta: float = 0.0  # in top-1 accuracy points (%)
    on_nan: str = "stop"                # stop | skip-batch: a non-finite loss or gradient stops the run,
                                        # or skips that batch (counted); non-finite weights always stop it
    seed: int = 0                       # weights init, data order, augmentation
    split_seed: int = 0                 # validation split and train_size subset: fixed, so seeds share them (ensembles)
    progress: bool = True               # progress bar and per-epoch summary lines on the console

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """Build from a mapping, rejecting unknown keys with close-match suggestions."""
        return cls().update(values, source=source)

    def update(self, values: dict, source: str = "override") -> "TrainConfig":
        """Return a copy with ``values`` applied (keys checked, strings coerced to field types)."""
        known = {f.name: f for f in fields(self)}
        out = dataclasses.replace(self)
        values = {k.replace("-", "_"): v for k, v in values.items()}
        for key in sorted(RETIRED.keys() & values.keys()):   # refused unless "off", which changes nothing
            check_retired(key, values.pop(key), source, ConfigError)
        for key, value in values.items():
            if key not in known:
                close = ", ".join(difflib.get_close_matches(key, known, n=3))
                raise ConfigError(f"Unknown config key {key!r} in {source}." + (f" Did you mean {close}?" if close else "")
                                  + f" Valid keys: {', '.join(sorted(known))}.")
            setattr(out, key, _coerce(key, value, getattr(TrainConfig(), key), source))
        return out

    def validate(self) -> "TrainConfig":
        """Check ranges and choices; raise `ConfigError` naming the field and the fix."""
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)
        need(self.epochs > 0, f"epochs must be > 0 (got {self.epochs}); e.g. --epochs 8.")
        need(self.batch_size > 0, f"batch_size must be a positive integer (got {self.batch_size}).")
        need(self.eval_batch_size > 0, f"eval_batch_size must be positive (got {self.eval_batch_size}).")
        need(self.val_size >= 0, f"val_size must be >= 0 images (got {self.val_size}).")
        need(self.train_size >= 0, f"train_size must be >= 0 images; 0 keeps all (got {self.train_size}).")
        need(self.flip in ("none", "random", "alternating"),
             f"flip must be none, random or alternating (got {self.flip!r}).")
        need(self.translate >= 0, f"translate must be >= 0 pixels (got {self.translate}).")
        need(self.cutout >= 0, f"cutout must be >= 0 pixels (got {self.cutout}).")
        need(self.mixup >= 0 and self.cutmix >= 0, f"mixup and cutmix are Beta alphas >= 0; 0 = off (got "
             f"{self.mixup}, {self.cutmix}).")
        need(self.optimizer in ("muon", "sgd", "adamw"),
             f"optimizer must be muon, sgd or adamw (got {self.optimizer!r}).")
        need(self.schedule in ("linear", "cosine", "onecycle", "constant"),
             f"schedule must be linear, cosine, onecycle or constant (got {self.schedule!r}).")
        need(self.loss_reduction in ("sum", "mean"), "loss_reduction must be sum or mean.")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r}).")
        need(self.tta in TTA_LEVELS, f"tta must be one of {', '.join(map(str, TTA_LEVELS))} (got {self.tta}).")
        need(0 < self.tta_fraction <= 1, f"tta_fraction must be in (0, 1] (got {self.tta_fraction}).")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1) (got {self.label_smoothing}).")
        need(0 <= self.warmup_epochs < self.epochs,
             f"warmup_epochs ({self.warmup_epochs}) must be >= 0 and below epochs ({self.epochs}).")
        need(0 <= self.decay_epochs <= self.epochs - self.warmup_epochs, f"decay_epochs ({self.decay_epochs}) must be in "
             f"[0, epochs - warmup_epochs = {self.epochs - self.warmup_epochs:g}]; 0 decays over the whole run.")
        need(self.decay_epochs == 0 or self.schedule in ("linear", "cosine"), f"decay_epochs applies to the linear and "
             f"cosine schedules, not {self.schedule!r}: set --set schedule=linear or decay_epochs=0.")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (got {self.ema_decay}).")
        for name in ("lr", "bias_lr", "head_lr"):
            need(getattr(self, name) > 0, f"{name} must be > 0 (got {getattr(self, name)}).")
        need(self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0 epochs.")
        need(self.on_nan in ("stop", "skip-batch"), f"on_nan must be stop or skip-batch (got {self.on_nan!r}).")
        need(self.early_stopping_patience == 0 or self.val_size > 0 or not parse_dataset(self.dataset).is_cifar,
             "early stopping needs a validation split: set --val-size (e.g. 5000) or patience 0.")
        need(self.threads is None or self.threads > 0, f"threads must be positive (got {self.threads}); leave it out for one per core.")
        need(self.resize_policy in ("center-crop", "pad"),
             f"resize_policy must be center-crop or pad (got {self.resize_policy!r}).")
        need(self.folder_size >= 8, f"folder_size must be >= 8 pixels (got {self.folder_size}).")
        need(self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)} (got {self.strategy!r}).")
        need(self.strategy not in ("fine-tune", "partial-fine-tune") or self.freeze_epochs < self.epochs,
             f"freeze_epochs ({self.freeze_epochs}) must be below epochs ({self.epochs}) for {self.strategy}: "
             "otherwise the backbone never unfreezes. Lower --set freeze_epochs or raise --epochs.")
        need(self.trainable_stages >= 0, f"trainable_stages must be >= 0 (got {self.trainable_stages}).")
        need(self.cached_views >= 1, f"cached_views must be >= 1 (got {self.cached_views}).")
        need(self.cache_dtype in ("bf16", "fp32"), f"cache_dtype must be bf16 or fp32 (got {self.cache_dtype!r}).")
        need(self.head_hidden >= 0, f"head_hidden must be >= 0 units; 0 = a linear head (got {self.head_hidden}).")
        need(self.auto_augment in ("none", "trivialaugment"),
             f"auto_augment must be none or trivialaugment (got {self.auto_augment!r}).")
        need(0 <= self.random_resized_crop <= 1,
             f"random_resized_crop is an area fraction in (0, 1], 0 = off (got {self.random_resized_crop}).")
        need(self.freeze_epochs >= 0, f"freeze_epochs must be >= 0 (got {self.freeze_epochs}).")
        need(0 < self.layer_decay <= 1, f"layer_decay must be in (0, 1] (got {self.layer_decay}).")
        need(self.img_size is None or self.img_size >= 8, f"img_size must be >= 8 pixels (got {self.img_size}).")
        need(self.interpolation in ("nearest", "bilinear", "bicubic", "area"),
             f"interpolation must be nearest, bilinear, bicubic or area (got {self.interpolation!r}).")
        need(self.downsize in ("resize", "crop"), f"downsize must be resize or crop (got {self.downsize!r}).")
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


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Convert CLI strings (``--set epochs=10``) to the type of the field's default; CIFAR names lower-cased."""
    if key == "dataset" and str(value).lower() in CIFAR_NAMES:
        return str(value).lower()
    if not isinstance(value, str) or isinstance(default, str):
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if default is None or isinstance(default, dict):
            parsed = yaml.safe_load(value)
            if isinstance(default, dict) and not isinstance(parsed, dict):
                raise ValueError("expected a mapping such as {widths: [64, 256, 256]}")
            return parsed
        if isinstance(default, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        return type(default)(value)
    except ValueError as e:
        raise ConfigError(f"Bad value {value!r} for {key} in {source}: {e}.") from None


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ``["epochs=10", "lr=0.1"]`` into a dict; raise `ConfigError` on a bad pair."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"Override {pair!r} must look like key=value (e.g. epochs=10).")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out
