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
RESUME_SAFE_KEYS = {"progress", "threads", "device", "data_dir", "download", "eval_batch_size"}


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


def _prepare_data(cfg: TrainConfig, device: torch.device):
    """Load, split and wrap the data in device loaders; returns (dataset, loaders, stats)."""
    from .data import DeviceLoader, channel_stats, load_dataset, split_train_val

    ds = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    train, val = split_train_val(ds.train, cfg.val_size, cfg.seed)
    mean, std = channel_stats(ds.train.images)
    mk = lambda arrays, **kw: DeviceLoader(arrays, mean, std, device=device, seed=cfg.seed, **kw)
    loaders = {
        "train": mk(train, batch_size=cfg.batch_size, train=True, flip=cfg.flip, translate=cfg.translate,
                    cutout=cfg.cutout),
        "val": mk(val, batch_size=cfg.eval_batch_size) if val is not None else None,
        "test": mk(ds.test, batch_size=cfg.eval_batch_size),
    }
    return ds, loaders, {"mean": mean, "std": std}


def _build_model(cfg: TrainConfig, num_classes: int, device: torch.device, init_images=None):
    from .models import create_model

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes, **cfg.model_kwargs)
    if init_images is not None and hasattr(model, "init_from_data"):
        model.init_from_data(init_images)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _coarse(ds):
    from .evaluation.metrics import fine_to_coarse
    if ds.train.coarse_labels is None:
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
        cfg = config if config is not None else recipe_config(overrides.get("dataset", "cifar10"))
        cfg = cfg.update(overrides)
        state = weights = None
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if resume is None:
        rd = RunDir(run_dir or Path("runs") / generate_run_name(cfg))
        if rd.file("train-state-last.pt").is_file() or rd.file("results.json").is_file():
            raise RunDirError(f"{rd.path} already holds a run. Resume it with --resume {rd.path} or choose "
                              "another --run-dir.")
        rd.create()
        rd.save_config(cfg)
    else:
        rd.save_config(cfg)
    rd.set_status("running")

    ds, loaders, stats = _prepare_data(cfg, device)
    init = loaders["train"].ordered()
    init_images = torch.cat([x for x, _ in _take(init, 5000)])[:5000]  # airbench: 5 000 images
    model = _build_model(cfg, ds.num_classes, device, init_images)
    prep_seconds = time.perf_counter() - t0

    def batches(loader):
        for x, y in loader.ordered():
            yield (x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x), y

    val_fn = None
    if loaders["val"] is not None:
        def val_fn(m):
            logits, labels = predict_logits(m, batches(loaders["val"]), device, tta=0, precision=cfg.precision)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels).item(),
                    "top1": 100.0 * (logits.argmax(1) == labels).float().mean().item()}

    loader = _ChannelsLast(loaders["train"]) if cfg.channels_last else loaders["train"]
    result = fit(model, loader, cfg, rd, device, val_fn=val_fn, resume=state, resume_weights=weights,
                 callbacks=callbacks)

    # ---- score the selected weights on the test set, once
    eval_model = _build_model(cfg, ds.num_classes, device)
    eval_model.load_state_dict(result.eval_state)
    t_eval = time.perf_counter()
    logits, labels = predict_logits(eval_model, batches(loaders["test"]), device, tta=cfg.tta,
                                    precision=cfg.precision)
    eval_seconds = time.perf_counter() - t_eval
    coarse_of_fine, coarse_classes = _coarse(ds)
    test = classification_metrics(logits, labels, ds.classes, coarse_of_fine, coarse_classes)
    example = next(iter(batches(loaders["test"])))[0]
    params = count_parameters(model)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    results = {
        "dataset": cfg.dataset, "model": cfg.model, "num_classes": ds.num_classes, "classes": ds.classes,
        "test": test, "tta": cfg.tta,
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
    rd.write_json("results.json", results)
    rd.set_status("complete")
    return Run(rd.path, cfg, rd.read_metrics(), results)


class _ChannelsLast:
    """Wraps a loader so its batches come out channels_last (measured faster for conv nets on CPU)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def epoch(self, *a, **kw):
        for x, y in self.loader.epoch(*a, **kw):
            yield x.contiguous(memory_format=torch.channels_last), y


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
    from .training import load_weights

    tune_malloc()
    rd = RunDir(run_dir)
    rd.require_complete()
    cfg = rd.load_config()
    if data_dir is not None:
        cfg = cfg.update({"data_dir": data_dir})
    device = resolve_device(cfg.device)
    ds, loaders, _ = _prepare_data(cfg, device)
    model = _build_model(cfg, ds.num_classes, device)
    state = load_weights(rd.file(f"checkpoint-{checkpoint}.safetensors"))
    try:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("ema.")})
    except RuntimeError as e:
        from .training import CheckpointError
        raise CheckpointError(f"checkpoint-{checkpoint} does not fit model {cfg.model}: {e}") from None
    level = cfg.tta if tta is None else tta

    def batches():
        for x, y in loaders["test"].ordered():
            yield (x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x), y

    logits, labels = predict_logits(model, batches(), device, tta=level, precision=cfg.precision)
    coarse_of_fine, coarse_classes = _coarse(ds)
    metrics = classification_metrics(logits, labels, ds.classes, coarse_of_fine, coarse_classes)
    metrics["checkpoint"], metrics["tta"] = checkpoint, level
    rd.write_json("evaluation.json", metrics)
    write_confusion(rd.path, np.array(metrics["confusion"]), ds.classes)
    write_per_class(rd.path, metrics, ds.classes)
    return metrics
