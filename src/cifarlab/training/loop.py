"""The one training loop (nanoGPT habit: plain Python, no framework magic).

Per step: forward under bf16 autocast (fp32 master weights), cross-entropy with label smoothing,
backward, schedule, optimizer steps, optional EMA. Per epoch: optional validation, a metrics row
(``metrics.jsonl`` + TensorBoard), ``checkpoint-last`` (+ ``checkpoint-best``) written atomically,
early stopping. Ctrl-C saves the exact position (mid-epoch included) so ``--resume`` continues
to the same result as an uninterrupted run with the same seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import TrainConfig
from ..runs import RunDir
from .checkpoint import save_checkpoint
from .optim import Schedule, build_optimizers
from .strategy import Strategy


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf. The last good checkpoint is kept; the message names the epoch."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C (or a callback) stopped training; the position was saved for ``--resume``."""


@dataclass
class FitResult:
    """What :func:`fit` hands back: the weights to score and the history."""
    eval_state: dict                 # state dict of the selected weights (best on val, else last)
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0       # seconds inside training steps, all sessions of the run
    images_seen: int = 0
    stopped_early: bool = False


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def fit(model: torch.nn.Module, loader, cfg: TrainConfig, run: RunDir, device: torch.device,
        val_fn: Callable[[torch.nn.Module], dict] | None = None, resume: dict | None = None,
        resume_weights: dict | None = None, callbacks: tuple = (), dist_env=None) -> FitResult:
    """Train ``model`` on ``loader`` (a :class:`~cifarlab.data.DeviceLoader`) as ``cfg`` says.

    Args:
        val_fn: model -> ``{"loss": float, "top1": float (%)}`` on the validation split, or None.
        resume / resume_weights: a saved training state and the matching ``checkpoint-last`` tensors.
        callbacks: callables ``cb(event, info, model)`` with event ``"step"`` or ``"epoch"`` (info: the
            step's numbers, or the epoch's metrics row; model: the weights being evaluated); raising
            :class:`KeyboardInterrupt` from one behaves like Ctrl-C (used by tests).
        dist_env: a :class:`~cifarlab.training.distributed.DistEnv` under torchrun: the model is
            wrapped in DistributedDataParallel, epoch metrics are summed across ranks, and only
            rank 0 writes the run directory.

    Raises:
        TrainingDiverged: non-finite loss (status ``diverged``; checkpoints of the last good epoch kept).
        TrainingInterrupted: Ctrl-C (status ``interrupted``; position saved).
    """
    from .distributed import DistEnv, sum_across
    env = dist_env or DistEnv()
    main = env.is_main
    spe = len(loader)
    total_steps = max(1, math.ceil(cfg.epochs * spe))
    n_epochs = math.ceil(total_steps / spe)
    strategy = Strategy.from_config(model, cfg, spe)
    optimizers = build_optimizers(model, cfg, params=strategy.optimized_ids, scales=strategy.scales)
    schedule = Schedule(optimizers, total_steps, round(cfg.warmup_epochs * spe), cfg.schedule,
                        cfg.final_lr_frac, whiten_steps=math.ceil(cfg.whiten_bias_epochs * spe))
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
           if cfg.ema else None)

    # position and running state
    st = dict(epoch=0, step_in_epoch=0, global_step=0, best_val=-math.inf, best_epoch=-1, bad_epochs=0,
              train_seconds=0.0, images_seen=0, acc_loss=0.0, acc_correct=0, acc_seen=0, acc_seconds=0.0)
    best_state = None
    if resume is not None:
        model.load_state_dict({k: v for k, v in resume_weights.items() if not k.startswith("ema.")})
        if ema is not None:
            ema.module.load_state_dict({k[4:]: v for k, v in resume_weights.items() if k.startswith("ema.")})
            ema.n_averaged.fill_(resume["ema_n_averaged"])
        for opt, sd in zip(optimizers, resume["optimizers"]):
            opt.load_state_dict(sd)
        st.update(resume["position"])
        torch.set_rng_state(resume["rng"]["torch"])
        best_file = run.file("checkpoint-best.safetensors")
        if st["best_epoch"] >= 0 and best_file.is_file():
            from .checkpoint import load_weights
            best_state = load_weights(best_file)
        if main:
            run.truncate_metrics(st["epoch"])
    history = run.read_metrics() if main else []

    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(run.path)) if main else None
    fwd = model
    if env.enabled:  # unused: the whitening bias stops receiving gradients after whiten_bias_epochs
        from torch.nn.parallel import DistributedDataParallel
        fwd = DistributedDataParallel(model, find_unused_parameters=True)
    eval_model = ema.module if ema is not None else model

    def weights_with_ema() -> dict:
        sd = dict(model.state_dict())
        if ema is not None:
            sd.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        return sd

    def save_last():
        if not main:
            return
        save_checkpoint(run.path, "last", weights_with_ema(), {
            "optimizers": [o.state_dict() for o in optimizers], "position": dict(st), "rng": _rng_state(),
            "ema_n_averaged": int(ema.n_averaged) if ema is not None else 0, "total_steps": total_steps})

    progress = None
    try:
        from tqdm.auto import tqdm
        for epoch in range(st["epoch"], n_epochs):
            steps_here = min(spe, total_steps - epoch * spe)
            if progress is None and cfg.progress and main:
                progress = tqdm(total=total_steps, initial=st["global_step"], unit="step", dynamic_ncols=True)
            if progress is not None:
                progress.set_description(f"epoch {epoch + 1}/{n_epochs}")
            # the multiplier of the last step taken (an interrupt can fall between an epoch's last step
            # and its bookkeeping, in which case the resumed epoch runs no step)
            lr_mult = schedule.multiplier(max(0, st["global_step"] - 1))
            t_start = time.perf_counter()
            for x, y in loader.epoch(epoch, start=st["step_in_epoch"], stop=steps_here):
                model.train()  # every step: the strategy then re-freezes BatchNorm where it must
                strategy.set_mode(model, st["global_step"])
                if hasattr(model, "whiten_bias_trainable"):
                    model.whiten_bias_trainable = st["global_step"] < schedule.whiten_steps
                with _autocast(device, cfg.precision):
                    out = fwd(x)
                    loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing,
                                           reduction=cfg.loss_reduction)
                loss_value = loss.item()
                finite = math.isfinite(loss_value)
                if env.enabled:  # every rank must stop together
                    finite = sum_across([0.0 if finite else 1.0], env)[0] == 0
                if not finite:
                    if main:
                        run.set_status("diverged", epoch=epoch + 1, step=st["global_step"])
                    raise TrainingDiverged(
                        f"The training loss became {loss_value} at epoch {epoch + 1} (step "
                        f"{st['global_step'] + 1}); training stopped. The checkpoints of the last good "
                        f"epoch ({epoch}) are kept in {run.path}. Lower the learning rate (lr, bias_lr, "
                        "head_lr) or use precision fp32, then start a new run.")
                # DDP averages gradients over ranks; a summed loss must count the whole global batch
                (loss * env.world if env.enabled and cfg.loss_reduction == "sum" else loss).backward()
                lr_mult = schedule.set(st["global_step"])
                for opt in optimizers:
                    opt.step()
                model.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update_parameters(model)
                n = len(y)
                per_image = loss_value / n if cfg.loss_reduction == "sum" else loss_value
                st["acc_loss"] += per_image * n
                st["acc_correct"] += int((out.argmax(1) == y).sum())
                st["acc_seen"] += n
                st["global_step"] += 1
                st["step_in_epoch"] += 1
                elapsed = st["acc_seconds"] + time.perf_counter() - t_start
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{st['acc_loss'] / st['acc_seen']:.3f}",
                                         acc=f"{100 * st['acc_correct'] / st['acc_seen']:.1f}%",
                                         img_s=f"{st['acc_seen'] / max(elapsed, 1e-9):.0f}")
                for cb in callbacks:
                    cb("step", {"epoch": epoch, "global_step": st["global_step"], "loss": per_image}, model)

            # ---- end of epoch
            seconds = st["acc_seconds"] + time.perf_counter() - t_start
            st["train_seconds"] += time.perf_counter() - t_start
            loss_sum, correct, seen = sum_across([st["acc_loss"], st["acc_correct"], st["acc_seen"]], env)
            st["images_seen"] += int(seen)  # counted once per completed epoch, all ranks
            row = {"epoch": epoch, "step": st["global_step"],
                   "train_loss": loss_sum / max(1, seen),
                   "train_top1": 100.0 * correct / max(1, seen),
                   "lr_mult": lr_mult, "lr": {g.get("name", str(i)): g["lr"] for o in optimizers
                                              for i, g in enumerate(o.param_groups)},
                   "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}
            improved = True
            if val_fn is not None:
                v = val_fn(eval_model)
                row.update(val_loss=v["loss"], val_top1=v["top1"])
                improved = v["top1"] > st["best_val"] + cfg.early_stopping_min_delta
                if v["top1"] > st["best_val"]:
                    st["best_val"], st["best_epoch"] = v["top1"], epoch
                    best_state = {k: t.detach().clone() for k, t in eval_model.state_dict().items()}
                st["bad_epochs"] = 0 if improved else st["bad_epochs"] + 1
            else:
                st["best_epoch"] = epoch
                best_state = {k: t.detach().clone() for k, t in eval_model.state_dict().items()}
            history.append(row)
            if main:
                run.append_metrics(row)
                for k in ("train_loss", "train_top1", "val_loss", "val_top1", "images_per_s", "lr_mult"):
                    if k in row:
                        writer.add_scalar(k, row[k], epoch + 1)
                writer.flush()
            st.update(epoch=epoch + 1, step_in_epoch=0, acc_loss=0.0, acc_correct=0, acc_seen=0, acc_seconds=0.0)
            if st["best_epoch"] == epoch and main:
                save_checkpoint(run.path, "best", best_state)
            save_last()
            for cb in callbacks:
                cb("epoch", row, eval_model)
            if cfg.early_stopping_patience and st["bad_epochs"] >= cfg.early_stopping_patience:
                return FitResult(best_state, st["best_epoch"], epoch + 1, history, st["train_seconds"],
                                 st["images_seen"], stopped_early=True)
    except KeyboardInterrupt:
        # save the exact position: the partial epoch's counters and the time spent in it
        if "t_start" in locals() and st["step_in_epoch"]:
            st["acc_seconds"] += time.perf_counter() - t_start
            st["train_seconds"] += time.perf_counter() - t_start
        save_last()
        if main:
            run.set_status("interrupted", epoch=st["epoch"], step=st["global_step"])
        raise TrainingInterrupted(
            f"Interrupted at epoch {st['epoch'] + 1}, step {st['global_step']}/{total_steps}; progress "
            f"saved. Continue with: cifarlab train --resume {run.path}") from None
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    return FitResult(best_state, st["best_epoch"], n_epochs, history, st["train_seconds"], st["images_seen"])
