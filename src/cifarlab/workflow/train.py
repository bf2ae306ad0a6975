"""Training and rescoring, as a user asks for them: ``train(config) -> Run``, ``evaluate(run)``.
Each resolves its config through `cifarlab.recipes.resolve_config`, assembles through
`.setup`, and records through `cifarlab.runs`.
"""
from __future__ import annotations

import contextlib
import math
import os
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, TrainConfig, config_diff
from ..data.augment import tta_view_count
from ..evaluation import classification_metrics, inference_throughput, loss_and_top1, predict_logits
from ..evaluation.calibration import calibration_summary
from ..files import StorageError, remove_stale_temps
from ..models import count_parameters, register_module
from ..recipes import resolve_config
from ..render import write_confusion, write_per_class
from ..render.plots import plot_curves
from ..runs import (CURVES_FILE, EVALUATION_FILE, INTERPRETATION_DIR, Results, RunDir, RunDirError,
                    generate_run_name)
from ..runtime import Precision, default_threads, environment, num_threads, resolve_device, tune_malloc
from ..training import (ResumePoint, TrainingDiverged, caches_trunk, check_distributable, distributed, fit_strategy,
                        load_resume_point)
from ..training.progress import say
from ..training.trackers import tracking
from .portable import checkpoint_metadata, stamp_run_checkpoints
from .notebook import Run
from .predictions import predictions_of, save_predictions
from .setup import (Setup, assemble, assemble_run, check_default_input_size, checked_before_work, precision_context,
                    projection_line)


def run_config(config: TrainConfig | dict | str | os.PathLike | None, overrides: dict) -> TrainConfig:
    """The config a call asks for: a `TrainConfig` as given (then ``overrides``); a mapping
    or a YAML file's path as the file level of `resolve_config`; None: the recipe."""
    if isinstance(config, TrainConfig):
        return config.update(overrides).validate()
    return resolve_config(config, overrides)


def check_resume_compatible(saved: TrainConfig, new: TrainConfig, path: Path) -> None:
    """Raise `ConfigError` when ``new`` changes keys a saved training state cannot follow
    (anything outside `cifarlab.config.RESUME_SAFE_KEYS`), naming each change."""
    diff = config_diff(saved, new)
    if diff:
        details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"Cannot resume {path}: the config changed in ways the saved training state "
                          f"cannot follow ({details}). Resume without these overrides, or start a new run "
                          f"with --run-dir.")


def train(config: TrainConfig | dict | str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, callbacks: tuple = (), **overrides) -> Run:
    """Train, score on the test set once, and record everything in a run directory.

    Args:
        config: a `TrainConfig` (used as is), a mapping or YAML file of keys (layered over
            the recipe), or None (the tuned recipe of ``overrides['dataset']``, default cifar10).
        run_dir: where to write (default ``runs/<generated name>``).
        resume: an interrupted run directory to continue; its saved config is used, and
            ``config``/``overrides`` may only change keys in `RESUME_SAFE_KEYS`.
        callbacks: passed to `cifarlab.training.fit`.
        overrides: config keys, e.g. ``epochs=2``; also ``model=`` your own ``nn.Module`` instance
            (float (B, 3, H, W) -> (B, num_classes) logits) and ``dataset=`` an image folder's path.

    Returns:
        `Run` whose ``results`` follow `Results`.

    Raises:
        ConfigError: a bad key or value, or a setting the data or model cannot honour.
        DataError: the data cannot be read or does not match the run.
        RunDirError: the run directory is unusable, or another process holds it.
        UnknownModelError: no such model.
        WeightsError: the weights do not fit the model.
        CheckpointError: resuming, both saved train states are damaged.
        TrainingDiverged: a non-finite loss, gradient, weight or evaluation output (status ``diverged``).
        TrainingInterrupted: Ctrl-C or SIGTERM (position saved for ``resume``).
        TrainingOutOfMemory: a step ran out of memory (the message names a batch size that fits).
        StorageError: disk full or read-only; the last good checkpoint is kept and ``resume``
            continues once space is freed.
    """
    started = time.perf_counter()
    tune_malloc()
    cfg, resumed = _config_and_resumed(config, resume, _own_model_and_folder(overrides))
    with num_threads(default_threads(cfg.threads)):
        env = distributed.init(cfg.device)
        if env.enabled:
            check_distributable(cfg, env.world)
        device = distributed.device_for(env, resolve_device(cfg.device))
        precision = precision_context(device, cfg.precision)  # fp16 on a CPU is refused before a directory exists
        if cfg.progress and env.is_main:  # the first line: what this machine will compute in, and why
            say(f"{precision.reason}; {torch.get_num_threads()} CPU threads")
        rd = resumed or _new_run_dir(cfg, run_dir, env)
        with rd.lock("train") if env.is_main else contextlib.nullcontext():
            job = Job(cfg, rd, env, device, precision, _resume_point(rd, env) if resumed else None, callbacks, started)
            if env.is_main:
                rd.save_config(cfg)
                rd.set_status("running")
            distributed.barrier(env)
            with _failed_on_error(rd, env):
                return _fit_and_record(job)


@dataclass
class Job:
    """One training run as `train` hands it on: the validated config (not changed after
    ``config.yaml`` is written), its run directory, the process group, the device and precision,
    the point resumed from (or None), the callbacks, and ``started`` (``time.perf_counter()`` when
    `train` was called, for the preparation and wall times in seconds)."""
    cfg: TrainConfig
    run: RunDir
    env: distributed.DistEnv
    device: torch.device
    precision: Precision
    point: ResumePoint | None
    callbacks: tuple
    started: float


def _config_and_resumed(config, resume, overrides: dict) -> tuple[TrainConfig, RunDir | None]:
    """The validated config of a new run (and None), or of the run ``resume`` names (and its directory),
    checked against what the saved training state can follow."""
    if resume is None:
        return checked_before_work(run_config(config, overrides)), None
    rd = RunDir(resume)
    saved = rd.load_config()
    cfg = (config if isinstance(config, TrainConfig) else saved).update(overrides).validate()
    check_resume_compatible(saved, cfg, rd.path)
    if rd.is_complete():
        raise RunDirError(f"{rd.path} is already complete; nothing to resume.")
    return cfg, rd


def _new_run_dir(cfg: TrainConfig, run_dir, env) -> RunDir:
    """The run directory of a new run (rank 0's name on every rank), created; refused when it holds a run."""
    rd = RunDir(distributed.broadcast_object(str(run_dir or Path("runs") / generate_run_name(cfg)), env))
    if env.is_main and rd.has_run():
        raise RunDirError(f"{rd.path} already holds a run. Resume it with --resume {rd.path} or choose "
                          "another --run-dir.")
    if env.is_main:
        rd.create()
    return rd


def _resume_point(rd: RunDir, env) -> ResumePoint | None:
    """The saved position of an interrupted run (temporary files of the interrupted writes removed),
    or None, with a warning, when it stopped before its first checkpoint (then it trains from the start)."""
    if env.is_main:
        remove_stale_temps(rd.path)
    point = load_resume_point(rd.path)
    if point is None:
        warnings.warn(f"{rd.path} was stopped before its first checkpoint; training it from the start.", stacklevel=3)
        if env.is_main:
            rd.truncate_metrics(0)
    return point


@contextlib.contextmanager
def _failed_on_error(rd: RunDir, env):
    """A run stopped by an error says so (status ``failed``) instead of ``running`` forever; the
    statuses the loop writes itself (diverged, interrupted, failed) are kept."""
    try:
        yield
    except Exception as err:
        if env.is_main and rd.status() == "running":
            with contextlib.suppress(OSError, StorageError):
                rd.set_status("failed", reason=str(err))
        raise


def _own_model_and_folder(overrides: dict) -> dict:
    """The notebook conveniences of `train`: ``model=`` a user's ``nn.Module`` instance (registered
    with `cifarlab.models.register_module`), ``dataset=`` an image folder's path (a Path, or a
    string naming an existing folder that is not a dataset name) read as ``folder:PATH``."""
    out = dict(overrides)
    if isinstance(out.get("model"), torch.nn.Module):
        out["model"] = register_module(out["model"])
    ds = out.get("dataset")
    if isinstance(ds, os.PathLike) or (isinstance(ds, str) and ":" not in ds and ds not in ("cifar10", "cifar100")
                                       and Path(ds).is_dir()):
        out["dataset"] = f"folder:{ds}"
    return out


def _fit_and_record(job: Job) -> Run:
    """Assemble, fit (or go on from ``job.point``), score on the test set, record; other DDP ranks leave
    after fitting."""
    cfg, rd, env = job.cfg, job.run, job.env
    state, weights = (job.point.state, job.point.weights) if job.point is not None else (None, None)
    cached = caches_trunk(cfg)  # its train state holds only the part that trains: load the rest again
    s = assemble(cfg, job.device, load_weights=state is None or cached, dist_env=env, precision=job.precision)
    if state is None:
        check_default_input_size(s)  # hours at a timm model's 224 px nobody asked for: refused
    if cfg.progress and env.is_main:
        say(f"run directory {rd.path} (tensorboard --logdir {rd.path})")
        if not cached:  # a cache is computed first: the loop estimates after a few steps
            say(projection_line(s, state))
    prep_seconds = time.perf_counter() - job.started
    val_fn = None
    if s.pipes["val"] is not None:
        val_fn = lambda m: loss_and_top1(*predict_logits(m, s.pipes["val"].ordered(), s.ctx, tta=0))
    with tracking(cfg, rd, env.is_main) as tracker:
        callbacks = tuple(job.callbacks) + ((tracker,) if tracker is not None else ())
        fitted = fit_strategy(s.model, s.pipes, cfg, rd, job.device, s.ctx, s.source.location, loss_and_top1, val_fn,
                              resume=state, resume_weights=weights, callbacks=callbacks, dist_env=env)
        if not env.is_main:  # rank 0 scores and writes; the others wait for it and leave
            distributed.shutdown(env)
            return Run(rd.path, cfg, [], {})
        results = _score(s, rd, fitted.result, job.started, prep_seconds, fitted.logits)
        results.feature_cache = fitted.cache
        if env.enabled:
            results.distributed = {"world_size": env.world, "backend": torch.distributed.get_backend()}
        rd.write_results(results)
        plot_curves(rd.file(CURVES_FILE), {rd.path.name: rd.read_metrics()})
        if tracker is not None:
            tracker.finish(results.to_dict(), rd)
    rd.set_status("complete")
    distributed.shutdown(env)
    return Run(rd.path, cfg, rd.read_metrics(), results.to_dict())


def _score(s: Setup, rd: RunDir, result, started: float, prep_seconds: float, cached: dict | None = None) -> Results:
    """Score the selected weights on the test set once, cache the predictions, gather the results.
    ``cached``: ``{"test": (logits, labels), "val": ...}`` already computed (a partial fine-tune's, from
    its cached trunk outputs), used instead of running the network again."""
    cfg, src = s.cfg, s.source
    eval_model = s.fresh_model()
    eval_model.load_state_dict(result.eval_state)
    t_eval = time.perf_counter()
    if cached and "test" in cached:
        logits, labels = cached["test"]
        eval_seconds = time.perf_counter() - t_eval
        # no network pass was timed: a separate probe (best of 3 forward passes of one batch)
        inference = inference_throughput(eval_model, next(iter(s.pipes["test"].ordered()))[0], s.ctx)
    else:
        logits, labels = predict_logits(eval_model, s.pipes["test"].ordered(), s.ctx, cfg.tta,
                                        "scoring test" if cfg.progress else None, cfg.tta_fraction)
        eval_seconds = time.perf_counter() - t_eval
        # the scoring pass is the throughput measurement: every TTA view is one forward pass of the
        # batch, so a separate probe (~9 s of fp32 CPU time per run at batch 2000) would only repeat it
        inference = len(labels) * tta_view_count(cfg.tta, cfg.tta_fraction) / max(eval_seconds, 1e-9)
    test = classification_metrics(logits, labels, src.classes, src.coarse_of_fine, src.coarse_classes)
    if not math.isfinite(test["loss"]):
        rd.set_status("diverged", reason=f"test loss {test['loss']}")
        raise TrainingDiverged(f"Training diverged: the test loss of the selected weights (epoch "
                               f"{result.best_epoch + 1}) is {test['loss']}, so {rd.path} is not recorded as "
                               "complete. Train again with a lower learning rate or precision fp32.")
    # cached for comparisons, ensembles and reports (val logits too, when a split exists)
    preds = predictions_of(eval_model, s, test=(logits, labels), val=(cached or {}).get("val"), progress=cfg.progress)
    calibration = None  # temperature scaling needs held-out predictions: the validation split's
    if preds.val_logits is not None:
        calibration = calibration_summary(preds.val_logits, preds.val_labels, preds.test_logits, preds.test_labels)
    # the checkpoints describe themselves (predict/load from the file alone); stamped before the
    # predictions are cached, whose key is the checkpoint file's size and time
    stamp_run_checkpoints(rd.path, checkpoint_metadata(
        cfg, src.classes, s.normalization, int(s.pipes["test"].loader.size[-1]), s.pipes["test"].side() or 32,
        calibration["temperature"] if calibration else 1.0))
    save_predictions(rd.path, preds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return Results(
        dataset=cfg.dataset, model=cfg.model, strategy=cfg.strategy, num_classes=src.num_classes,
        classes=src.classes, test=test, tta=cfg.tta, input_side=s.pipes["test"].side() or 32,
        data_side=int(s.pipes["test"].loader.size[-1]), train_images=s.pipes["train"].loader.num_images,
        best_epoch=result.best_epoch + 1, epochs_run=result.epochs_run, stopped_early=result.stopped_early,
        parameters=count_parameters(s.model),
        model_size_bytes=sum(t.numel() * t.element_size() for t in result.eval_state.values()),
        train_seconds=result.train_seconds, prep_seconds=prep_seconds, test_eval_seconds=eval_seconds,
        wall_seconds=time.perf_counter() - started,
        train_images_per_s=result.images_seen / max(result.train_seconds, 1e-9),
        inference_images_per_s=inference,
        peak_memory_bytes=peak if s.device.type == "cpu" else int(torch.cuda.max_memory_allocated(s.device)),
        peak_rss_bytes=peak, normalization=s.normalization, data_source=src.location, data_notes=src.notes,
        environment=environment(s.device), skipped_batches=result.skipped_batches, calibration=calibration,
        precision={"requested": cfg.precision, "used": s.ctx.name, "reason": s.ctx.reason,
                   "grad_scaler": s.ctx.grad_scaler, "muon_matmul": str(s.ctx.matmul_dtype).replace("torch.", "")})


def evaluate(run_dir: str | os.PathLike, checkpoint: str = "best", tta: int | None = None,
             data_dir: str | None = None) -> dict:
    """Rescore a run's checkpoint on the test set and write the interpretation files.

    Writes ``evaluation.json`` into the run directory, and ``confusion_matrix.csv``,
    ``confusion_matrix.png`` (row-normalized), ``per_class.csv`` and ``per_class.md`` into its
    ``interpretation/`` folder (where the report puts them too).

    Returns:
        The metrics dict (same keys as ``results.json['test']``, plus ``checkpoint`` and ``tta``).

    Raises:
        RunDirError: incomplete run.
        CheckpointError: the weights do not fit the model.
        DataError: the test set cannot be read.
    """
    tune_malloc()
    rd, s = assemble_run(run_dir, checkpoint, data_dir)
    level = s.cfg.tta if tta is None else tta
    logits, labels = predict_logits(s.model, s.pipes["test"].ordered(), s.ctx, tta=level)
    metrics = classification_metrics(logits, labels, s.source.classes, s.source.coarse_of_fine,
                                     s.source.coarse_classes)
    metrics["checkpoint"], metrics["tta"] = checkpoint, level
    rd.write_json(EVALUATION_FILE, metrics)
    out = rd.path / INTERPRETATION_DIR
    out.mkdir(exist_ok=True)
    write_confusion(out, np.array(metrics["confusion"]), s.source.classes)
    write_per_class(out, metrics, s.source.classes)
    return metrics
