"""The public Python API: ``train(config) -> Run``, ``evaluate(run_dir)``, ``Run.load(path)``.

This module wires the packages together (data -> models -> train -> evaluate -> report); each of
them stays ignorant of the ones downstream. The CLI is a thin layer over these functions.
"""
from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._malloc import tune_malloc
from .config import ConfigError, TrainConfig
from .runs import RunDir, RunDirError, generate_run_name

# Keys whose change makes a saved training state meaningless on resume.
RESUME_SAFE_KEYS = {"progress", "threads", "device", "data_dir", "download", "eval_batch_size", "cache_dir"}


@dataclass
class Run:
    """A run directory read back: its config, per-epoch metrics and final results."""
    path: Path
    config: TrainConfig
    metrics: list[dict] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    @property
    def test_top1(self) -> float | None:
        return self.results.get("test", {}).get("top1")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Run":
        rd = RunDir(path)
        cfg = rd.load_config()
        results = rd.read_json("results.json") if rd.file("results.json").is_file() else {}
        return cls(rd.path, cfg, rd.read_metrics(), results)

    def __repr__(self) -> str:
        top1 = f"{self.test_top1:.2f}%" if self.test_top1 is not None else "n/a"
        return f"Run({str(self.path)!r}, model={self.config.model}, test_top1={top1})"


def expected_errors() -> tuple[type[Exception], ...]:
    """The exception types that mean bad input (config, data, run directory, model, weights,
    checkpoint, divergence): reported to a user as one paragraph rather than a traceback."""
    from .data import DataError
    from .models import UnknownModelError, WeightsError
    from .training import CheckpointError, TrainingDiverged
    return (ConfigError, DataError, RunDirError, UnknownModelError, CheckpointError, TrainingDiverged, WeightsError,
            ValueError)


# ---------------------------------------------------------------------------------------- setup
def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Raises :class:`ConfigError` for an absent GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but no CUDA GPU is available; use --device cpu.")
    return dev


def environment(device: torch.device) -> dict:
    """Versions and hardware next to every number (airbench habit)."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "device": str(device), "threads": torch.get_num_threads(), "cpu": cpu,
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _load_data(cfg: TrainConfig):
    from .data import load_dataset, split_train_val, stratified_split

    ds = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, size=cfg.folder_size,
                      policy=cfg.resize_policy, progress=cfg.progress)
    if ds.val is not None:  # the data ships its own validation split (an image folder's val/)
        train, val = ds.train, ds.val
    else:
        train, val = split_train_val(ds.train, cfg.val_size, cfg.split_seed)
    if cfg.train_size:
        if cfg.train_size > len(train):
            raise ConfigError(f"train_size {cfg.train_size} exceeds the {len(train)} training images available.")
        if cfg.train_size < len(train):  # keep a class-stratified subset (the "held-out" part is unused)
            _, keep = stratified_split(train.labels, cfg.train_size, cfg.split_seed + 1)
            train = train.subset(keep)
    return ds, train, val


def _loaders(cfg: TrainConfig, ds, train, val, device, mean, std, dist_env=None) -> dict:
    from .data import DeviceLoader

    mk = lambda arrays, **kw: DeviceLoader(arrays, mean, std, device=device, seed=cfg.seed, **kw)
    return {
        "train": mk(train, batch_size=cfg.batch_size, train=True, flip=cfg.flip, translate=cfg.translate,
                    cutout=cfg.cutout, rank=dist_env.rank if dist_env else 0, world=dist_env.world if dist_env else 1),
        "val": mk(val, batch_size=cfg.eval_batch_size) if val is not None else None,
        "test": mk(ds.test, batch_size=cfg.eval_batch_size),
    }


def _size_schedule(cfg: TrainConfig, model) -> list[tuple[int, int]] | None:
    """[(first_epoch, side), ...] for on-device resizing; None keeps the data's 32x32."""
    from .models import data_config
    if cfg.img_sizes:
        return sorted((int(e), int(sz)) for e, sz in cfg.img_sizes)
    side = cfg.img_size or data_config(model)["input_size"][-1]
    return None if side == 32 else [(0, int(side))]


class Batches:
    """A loader's batches as the model sees them: resized on the device to the epoch's side
    (``F.interpolate``, progressive schedules allowed) and channels_last when asked.

    Evaluation (``ordered``) uses the schedule's final side.
    """

    def __init__(self, loader, sizes: list[tuple[int, int]] | None, interpolation: str, channels_last: bool):
        self.loader, self.sizes, self.mode, self.channels_last = loader, sizes, interpolation, channels_last

    def __len__(self) -> int:
        return len(self.loader)

    def side(self, epoch: int | None = None) -> int | None:
        if not self.sizes:
            return None
        if epoch is None:
            return self.sizes[-1][1]
        return [sz for e, sz in self.sizes if e <= epoch][-1] if epoch >= self.sizes[0][0] else self.sizes[0][1]

    def _tf(self, x: torch.Tensor, side: int | None) -> torch.Tensor:
        if side is not None and side != x.shape[-1]:
            kw = {"align_corners": False, "antialias": side < x.shape[-1]} if self.mode in ("bilinear", "bicubic") else {}
            x = torch.nn.functional.interpolate(x, size=(side, side), mode=self.mode, **kw)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None):
        side = self.side(epoch)
        for x, y in self.loader.epoch(epoch, start=start, stop=stop):
            yield self._tf(x, side), y

    def ordered(self):
        side = self.side()
        for x, y in self.loader.ordered():
            yield self._tf(x, side), y


def _build_model(cfg: TrainConfig, num_classes: int, device: torch.device, load_weights: bool = True):
    """Create the model (seeded). Weights from ``cfg.weights``/``cfg.pretrained`` when ``load_weights``."""
    from .models import create_model, input_size_kwargs, is_timm_model

    torch.manual_seed(cfg.seed)
    kwargs = dict(cfg.model_kwargs)
    if is_timm_model(cfg.model) and cfg.model not in _builtin_names():
        side = cfg.img_size or (max(sz for _, sz in cfg.img_sizes) if cfg.img_sizes else None)
        for k, v in input_size_kwargs(cfg.model, side, progressive=bool(cfg.img_sizes)).items():
            kwargs.setdefault(k, v)
    model = create_model(cfg.model, num_classes, pretrained=cfg.pretrained and load_weights,
                         weights=cfg.weights if load_weights else None, **kwargs)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _builtin_names() -> set:
    from .models import list_models
    return set(list_models())


def check_input_size(model, side: int, device: torch.device, name: str) -> None:
    """Raise :class:`ConfigError` when ``model`` cannot take ``side`` x ``side`` input, naming the minimum."""
    def works(s: int) -> bool:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, s, s, device=device))
            return True
        except (RuntimeError, ValueError, AssertionError):
            return False
        finally:
            model.train(was)
    if works(side):
        return
    minimum = next((s for s in (16, 24, 32, 48, 64, 75, 96, 112, 128, 160, 192, 224, 256, 299, 320, 384)
                    if s > side and works(s)), None)
    hint = f" The smallest side that works is {minimum} pixels: use --set img_size={minimum}." if minimum else ""
    raise ConfigError(f"Input size {side}x{side} is too small for {name}.{hint}")


def _prepare(cfg: TrainConfig, device: torch.device, load_weights: bool = True, dist_env=None):
    """Data, model and input pipelines for ``cfg``: (dataset, model, pipelines, normalization)."""
    from .data import channel_stats
    from .models import data_config

    if cfg.dataset.startswith("shards:"):
        if dist_env is not None and dist_env.enabled:
            raise ConfigError("distributed training reads in-memory datasets; shards stream in one process.")
        return _prepare_shards(cfg, device, load_weights)
    ds, train, val = _load_data(cfg)
    model = _build_model(cfg, ds.num_classes, device, load_weights)
    dc = data_config(model)
    if dc["mean"] is not None:
        mean, std = dc["mean"], dc["std"]          # the pretrained config's normalization
    else:
        mean, std = channel_stats(ds.train.images)  # the dataset's own statistics
    loaders = _loaders(cfg, ds, train, val, device, mean, std, dist_env)
    return ds, model, _pipelines(cfg, model, loaders, device, load_weights), {"mean": list(mean), "std": list(std)}


def _pipelines(cfg: TrainConfig, model, loaders: dict, device: torch.device, load_weights: bool) -> dict:
    """Wrap loaders in :class:`Batches`, check the model takes the input size, and run a fresh
    model's data-dependent init (airbench whitening, on the first 5 000 training images)."""
    sizes = _size_schedule(cfg, model)
    pipes = {k: (Batches(v, sizes, cfg.interpolation, cfg.channels_last) if v is not None else None)
             for k, v in loaders.items()}
    side = pipes["test"].side() or 32
    check_input_size(model, min([side] + [sz for _, sz in (sizes or [])]), device, cfg.model)
    fresh = not (cfg.weights or cfg.pretrained)
    if load_weights and fresh and hasattr(model, "init_from_data"):
        x = torch.cat([x for x, _ in _take(loaders["train"].ordered(), 5000)])[:5000]  # airbench: 5 000 images
        model.init_from_data(x)
    return pipes


def _prepare_shards(cfg: TrainConfig, device: torch.device, load_weights: bool = True):
    """:func:`_prepare` for ``shards:PATH``: the splits stream from WebDataset shards in worker
    processes (:class:`cifarlab.data.shards.ShardLoader`) instead of living in memory."""
    from .data.shards import ShardLoader, read_shard_meta, shard_dataset
    from .models import data_config

    folder = cfg.dataset[len("shards:"):]
    meta = read_shard_meta(Path(folder))
    if cfg.val_size and "val" not in meta["splits"]:
        raise ConfigError("shards have no val split and cannot be split on the fly; write them from a source "
                          "with a val/ folder, or use --val-size 0.")
    if cfg.train_size:
        raise ConfigError("train_size is not supported with shards; pack a subset instead.")
    ds = shard_dataset(folder)
    model = _build_model(cfg, ds.num_classes, device, load_weights)
    dc = data_config(model)
    mean, std = (dc["mean"], dc["std"]) if dc["mean"] is not None else (meta["mean"], meta["std"])
    mk = lambda split, **kw: ShardLoader(folder, split, mean, std, device=device, seed=cfg.seed, **kw)
    loaders = {"train": mk("train", batch_size=cfg.batch_size, train=True, flip=cfg.flip, translate=cfg.translate,
                           cutout=cfg.cutout),
               "val": mk("val", batch_size=cfg.eval_batch_size) if "val" in meta["splits"] else None,
               "test": mk("test", batch_size=cfg.eval_batch_size)}
    return ds, model, _pipelines(cfg, model, loaders, device, load_weights), {"mean": list(mean), "std": list(std)}


def _coarse(ds):
    from .evaluation.metrics import fine_to_coarse
    if getattr(ds.train, "coarse_labels", None) is None:
        return None, None
    return fine_to_coarse(ds.train.labels, ds.train.coarse_labels, ds.num_classes), ds.train.coarse_classes


def _check_resume_compatible(saved: TrainConfig, new: TrainConfig, path: Path) -> None:
    diff = [k for k, v in saved.to_dict().items() if new.to_dict()[k] != v and k not in RESUME_SAFE_KEYS]
    if diff:
        details = "; ".join(f"{k}: {saved.to_dict()[k]!r} -> {new.to_dict()[k]!r}" for k in diff)
        raise ConfigError(f"Cannot resume {path}: the config changed in ways the saved training state "
                          f"cannot follow ({details}). Resume without these overrides, or start a new run "
                          f"with --run-dir.")


# ---------------------------------------------------------------------------------------- train
def train(config: TrainConfig | None = None, run_dir: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, callbacks: tuple = (), **overrides) -> Run:
    """Train, score on the test set once, and record everything in a run directory.

    Args:
        config: the run config (default: the tuned recipe of ``overrides['dataset']`` or cifar10).
        run_dir: where to write (default ``runs/<generated name>``).
        resume: an interrupted run directory to continue; its saved config is used, and
            ``config``/``overrides`` may only change keys in :data:`RESUME_SAFE_KEYS`.
        callbacks: passed to :func:`cifarlab.training.fit`.
        overrides: config keys, e.g. ``epochs=2``.

    Returns:
        :class:`Run` with ``results`` (test top-1/top-5 in %, loss, per-class accuracy, superclass
        accuracy for CIFAR-100, params, seconds, peak memory in bytes, images/s, environment).

    Raises:
        ConfigError, DataError, RunDirError, UnknownModelError, TrainingDiverged, TrainingInterrupted.
    """
    from .evaluation.metrics import classification_metrics, inference_throughput, predict_logits
    from .models import count_parameters
    from .recipes import recipe_config
    from .training import fit, load_train_state, load_weights

    t0 = time.perf_counter()
    tune_malloc()
    if resume is not None:
        rd = RunDir(resume)
        saved = rd.load_config()
        cfg = (config or saved).update(overrides)
        _check_resume_compatible(saved, cfg, rd.path)
        if rd.is_complete():
            raise RunDirError(f"{rd.path} is already complete; nothing to resume.")
        state = load_train_state(rd.file("train-state-last.pt"))
        weights = load_weights(rd.file("checkpoint-last.safetensors"))
    else:
        cfg = config if config is not None else recipe_config(overrides.get("dataset", "cifar10"),
                                                              overrides.get("model"))
        cfg = cfg.update(overrides)
        state = weights = None
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from .training import distributed
    env = distributed.init(cfg.device)
    if env.enabled:
        if cfg.strategy not in ("scratch", "full"):
            raise ConfigError(f"distributed training supports strategy scratch or full, not {cfg.strategy!r}: "
                              "freezing changes which parameters DDP synchronizes. Run it in one process.")
        if cfg.batch_size % env.world:
            raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {env.world} processes.")
    device = distributed.device_for(env, resolve_device(cfg.device))
    if resume is None:
        rd = RunDir(distributed.broadcast_object(str(run_dir or Path("runs") / generate_run_name(cfg)), env))
        if env.is_main and (rd.file("train-state-last.pt").is_file() or rd.file("results.json").is_file()):
            raise RunDirError(f"{rd.path} already holds a run. Resume it with --resume {rd.path} or choose "
                              "another --run-dir.")
        if env.is_main:
            rd.create()
    if env.is_main:
        rd.save_config(cfg)
        rd.set_status("running")
    distributed.barrier(env)

    # On resume the weights come from checkpoint-last, except for a cached linear probe, whose
    # checkpoints hold only the classifier: its backbone must be loaded again.
    probe = cfg.strategy == "linear-probe" and cfg.feature_cache
    ds, model, pipes, stats = _prepare(cfg, device, load_weights=resume is None or probe, dist_env=env)
    prep_seconds = time.perf_counter() - t0

    val_fn = None
    if pipes["val"] is not None:
        def val_fn(m):
            logits, labels = predict_logits(m, pipes["val"].ordered(), device, tta=0, precision=cfg.precision)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels).item(),
                    "top1": 100.0 * (logits.argmax(1) == labels).float().mean().item()}

    cache_info = None
    if probe:
        from .training.probe import fit_linear_probe
        result, cache_info = fit_linear_probe(model, pipes, cfg, rd, device, ds, resume=state,
                                              resume_weights=weights, callbacks=callbacks)
    else:
        result = fit(model, pipes["train"], cfg, rd, device, val_fn=val_fn, resume=state, resume_weights=weights,
                     callbacks=callbacks, dist_env=env)
    if not env.is_main:  # rank 0 scores and writes; the others wait for it and leave
        distributed.shutdown(env)
        return Run(rd.path, cfg, [], {})

    # ---- score the selected weights on the test set, once
    eval_model = _build_model(cfg, ds.num_classes, device, load_weights=False)
    eval_model.load_state_dict(result.eval_state)
    t_eval = time.perf_counter()
    logits, labels = predict_logits(eval_model, pipes["test"].ordered(), device, tta=cfg.tta,
                                    precision=cfg.precision)
    eval_seconds = time.perf_counter() - t_eval
    coarse_of_fine, coarse_classes = _coarse(ds)
    test = classification_metrics(logits, labels, ds.classes, coarse_of_fine, coarse_classes)
    # cache the predictions for comparisons, ensembles and reports (val logits too, when a split exists)
    from .inference import predictions_of, save_predictions
    save_predictions(rd.path, predictions_of(eval_model, pipes, cfg, device, ds, (coarse_of_fine, coarse_classes),
                                             test=(logits, labels)))
    example = next(iter(pipes["test"].ordered()))[0]
    params = count_parameters(model)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    results = {
        "dataset": cfg.dataset, "model": cfg.model, "strategy": cfg.strategy, "num_classes": ds.num_classes,
        "classes": ds.classes, "test": test, "tta": cfg.tta, "input_side": pipes["test"].side() or 32,
        "data_side": int(pipes["test"].loader.size[-1]),
        "train_images": pipes["train"].loader.num_images,
        "best_epoch": result.best_epoch + 1, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
        "parameters": params,
        "model_size_bytes": sum(t.numel() * t.element_size() for t in result.eval_state.values()),
        "train_seconds": result.train_seconds, "prep_seconds": prep_seconds, "test_eval_seconds": eval_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "train_images_per_s": result.images_seen / max(result.train_seconds, 1e-9),
        "inference_images_per_s": inference_throughput(eval_model, example, device, cfg.precision),
        "peak_memory_bytes": peak if device.type == "cpu" else int(torch.cuda.max_memory_allocated(device)),
        "peak_rss_bytes": peak,
        "normalization": stats, "data_source": ds.source, "data_notes": ds.notes,
        "environment": environment(device),
    }
    if cache_info is not None:
        results["feature_cache"] = cache_info
    if env.enabled:
        results["distributed"] = {"world_size": env.world, "backend": torch.distributed.get_backend()}
    rd.write_json("results.json", results)
    rd.set_status("complete")
    distributed.shutdown(env)
    return Run(rd.path, cfg, rd.read_metrics(), results)


def _take(batches, n):
    seen = 0
    for x, y in batches:
        if seen >= n:
            return
        seen += len(x)
        yield x, y


# ---------------------------------------------------------------------------------------- evaluate
def evaluate(run_dir: str | os.PathLike, checkpoint: str = "best", tta: int | None = None,
             data_dir: str | None = None) -> dict:
    """Rescore a run's checkpoint on the test set and write the interpretation files.

    Writes into the run directory: ``evaluation.json``, ``confusion_matrix.csv``,
    ``confusion_matrix.png`` (row-normalized), ``per_class.csv`` and ``per_class.md``.

    Returns:
        The metrics dict (same keys as ``results.json['test']``).

    Raises:
        RunDirError (incomplete run), CheckpointError, DataError.
    """
    from .evaluation.metrics import classification_metrics, predict_logits
    from .report.figures import write_confusion, write_per_class
    from .training import load_model_checkpoint

    tune_malloc()
    rd = RunDir(run_dir)
    rd.require_complete()
    cfg = rd.load_config()
    if data_dir is not None:
        cfg = cfg.update({"data_dir": data_dir})
    device = resolve_device(cfg.device)
    ds, model, pipes, _ = _prepare(cfg, device, load_weights=False)
    load_model_checkpoint(model, rd.file(f"checkpoint-{checkpoint}.safetensors"), cfg.model)
    level = cfg.tta if tta is None else tta
    logits, labels = predict_logits(model, pipes["test"].ordered(), device, tta=level, precision=cfg.precision)
    coarse_of_fine, coarse_classes = _coarse(ds)
    metrics = classification_metrics(logits, labels, ds.classes, coarse_of_fine, coarse_classes)
    metrics["checkpoint"], metrics["tta"] = checkpoint, level
    rd.write_json("evaluation.json", metrics)
    write_confusion(rd.path, np.array(metrics["confusion"]), ds.classes)
    write_per_class(rd.path, metrics, ds.classes)
    return metrics


# ---------------------------------------------------------------------------------------- lr_find
def lr_find(config: TrainConfig | None = None, out_dir: str | os.PathLike = "lr_find", start_lr: float = 1e-6,
            end_lr: float = 10.0, steps: int = 100, **overrides) -> dict:
    """LR range test on the configured data, model and strategy; writes ``lr_find.png`` and
    ``lr_find.json`` in ``out_dir`` and returns the curve with ``valley`` and ``steepest`` suggestions
    (learning rates of the main parameter group, ``cfg.lr``'s role).

    Raises: ConfigError, DataError, UnknownModelError, WeightsError (as :func:`train`).
    """
    from .recipes import recipe_config
    from .report.figures import plot_lr_find
    from .runs import write_json
    from .training.lr_find import lr_range_test

    tune_malloc()
    cfg = config if config is not None else recipe_config(overrides.get("dataset", "cifar10"), overrides.get("model"))
    cfg = cfg.update(overrides).validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"Cannot write {out}: {e.strerror}.") from None
    _, model, pipes, _ = _prepare(cfg, device)
    result = lr_range_test(model, pipes["train"], cfg, device, start_lr=start_lr, end_lr=end_lr, steps=steps)
    write_json(out / "lr_find.json", {**result, "config": cfg.to_dict()})
    plot_lr_find(out / "lr_find.png", result)
    return result
