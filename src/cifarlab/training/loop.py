"""The one training loop (nanoGPT habit: plain Python, no framework magic), in three pieces:
`TrainState` (the position and running sums, saved for resume), `Trainer.step` (one
optimizer step) and `Trainer.end_epoch` (validation, metrics row, checkpoints, early stopping).

Per step: forward under the precision context it is given (bf16 or fp16 autocast with fp32 master
weights, or plain fp32), cross-entropy with label smoothing, backward (fp16: loss-scaled, `.amp`),
schedule, optimizer steps, optional EMA. Per epoch: optional validation, a metrics row (``metrics.jsonl`` + TensorBoard),
``checkpoint-last`` (+ ``checkpoint-best``) written atomically, early stopping. Ctrl-C saves the
exact position (mid-epoch included) so ``--resume`` continues to the same result as an
uninterrupted run with the same seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import TrainConfig
from ..files import StorageError
from ..runs import RunDir
from ..models import step_hook
from ..runtime import grad_scaler_for, matmul_dtype_of
from .checkpoint import load_weights, save_checkpoint
from .distributed import DistEnv, ReplicatedForward, sum_across
from .amp import LossScaling, warn_if_precision_changed
from .health import StepGuard, all_finite, outputs_finite, weights_of, write_failed
from .optim import Schedule, build_optimizers
from .progress import Console
from .state import FitResult, TrainingInterrupted, TrainState, rng_state
from .strategy import Strategy


def _clone(state: dict) -> dict:
    return {k: t.detach().clone() for k, t in state.items()}


class Trainer:
    """One training run's moving parts: model, optimizers, schedule, EMA, strategy and state.

    See `fit` for the arguments; ``ctx`` is a zero-argument callable returning the precision
    context of a forward pass: a `cifarlab.runtime.Precision`, whose fp16 brings a
    ``torch.amp.GradScaler`` (its state saved with the train state) and whose ``matmul_dtype`` is Muon's.
    """

    def __init__(self, model, loader, cfg: TrainConfig, run: RunDir, device: torch.device, ctx, val_fn=None,
                 callbacks: tuple = (), dist_env: DistEnv | None = None):
        self.model, self.loader, self.cfg, self.run, self.device, self.ctx = model, loader, cfg, run, device, ctx
        self.val_fn, self.callbacks = val_fn, callbacks
        self.env = dist_env or DistEnv()
        self.main = self.env.is_main
        self.spe = len(loader)
        self.total_steps = max(1, math.ceil(cfg.epochs * self.spe))
        self.n_epochs = math.ceil(self.total_steps / self.spe)
        whiten_steps = math.ceil(cfg.whiten_bias_epochs * self.spe)
        self.hook = step_hook(model, whiten_steps)  # the model's own per-step schedule (airbench's stem bias)
        self.hook.start()  # before the optimizers are built, so they hold what the hook may freeze later
        self.strategy = Strategy.from_config(model, cfg, self.spe)
        self.optimizers = build_optimizers(model, cfg, params=self.strategy.optimized_ids, scales=self.strategy.scales,
                                           matmul_dtype=matmul_dtype_of(ctx))
        self.scaling = LossScaling(grad_scaler_for(ctx, cfg.batch_size // self.env.world if cfg.loss_reduction == "sum" else 1))
        # DDP averages gradients over ranks; a summed loss must count the whole global batch
        self.loss_world = self.env.world if self.env.enabled and cfg.loss_reduction == "sum" else 1
        self.guard = StepGuard(run, self.env, device, cfg.on_nan, self.scaling, cfg.batch_size)
        self.schedule = Schedule(self.optimizers, self.total_steps, round(cfg.warmup_epochs * self.spe), cfg.schedule,
                                 cfg.final_lr_frac, whiten_steps=whiten_steps,
                                 decay_steps=round(cfg.decay_epochs * self.spe))
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                    if cfg.ema else None)
        self.eval_model = self.ema.module if self.ema is not None else model
        self.fwd = ReplicatedForward(model, self.env) if self.env.enabled else model
        self.st = TrainState()
        self.best_state = None
        self.history: list[dict] = []
        self.console = self.last_x = None

    # ------------------------------------------------------------------ state in and out
    def restore(self, resume: dict, weights: dict) -> None:
        """Continue from a saved train state and the matching ``checkpoint-last`` tensors."""
        self.model.load_state_dict({k: v for k, v in weights.items() if not k.startswith("ema.")})
        if self.ema is not None:
            self.ema.module.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("ema.")})
            self.ema.n_averaged.fill_(resume["ema_n_averaged"])
        for opt, sd in zip(self.optimizers, resume["optimizers"]):
            opt.load_state_dict(sd)
        self.st = TrainState.from_dict(resume["position"])
        if not self.main:  # the saved sums of an unfinished epoch cover all ranks: count them once, on rank 0
            self.st.acc_loss, self.st.acc_correct, self.st.acc_seen = 0.0, 0, 0
        torch.set_rng_state(resume["rng"]["torch"])
        self.scaling.load_state_dict(resume.get("grad_scaler"))
        if self.main:
            warn_if_precision_changed(resume.get("precision"), getattr(self.ctx, "name", None), self.run.path)
        best_file = self.run.checkpoint("best")
        if self.st.best_epoch >= 0 and best_file.is_file():
            self.best_state = load_weights(best_file)
        if self.main:
            self.run.truncate_metrics(self.st.epoch)

    def save_last(self) -> None:
        if not self.main:
            return
        weights = dict(self.model.state_dict())
        if self.ema is not None:
            weights.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        save_checkpoint(self.run.path, "last", weights, {
            "optimizers": [o.state_dict() for o in self.optimizers], "position": asdict(self.st),
            "rng": rng_state(), "ema_n_averaged": int(self.ema.n_averaged) if self.ema is not None else 0,
            "total_steps": self.total_steps,
            "grad_scaler": self.scaling.state_dict(),
            "precision": getattr(self.ctx, "name", None)})

    # ------------------------------------------------------------------ one step
    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One optimizer step on batch ``(x, y)`` (``y``: int64 labels, or float soft targets from
        mixup/CutMix, which carry their own label smoothing); returns the lr multiplier it used.

        Raises (through `StepGuard`, the run's status written first):
            TrainingDiverged: a non-finite loss or gradient (``on_nan=stop``, or too many skipped in
                a row), or weights after the step; an fp16 overflow is skipped and counted instead.
            TrainingOutOfMemory: the step ran out of memory. DeviceError: the GPU could not run it.
        """
        st, cfg = self.st, self.cfg
        self.model.train()  # every step: the strategy then re-freezes BatchNorm where it must
        self.strategy.set_mode(self.model, st.global_step)
        self.hook(st.global_step)
        with self.guard.failures(self.model, st, epoch):
            with self.ctx():
                out = self.fwd(x)
                smoothing = 0.0 if y.is_floating_point() else cfg.label_smoothing
                loss = F.cross_entropy(out.float(), y, label_smoothing=smoothing, reduction=cfg.loss_reduction)
            loss_value = loss.item()
            problem = self.guard.loss_problem(loss_value)
            if problem is None:
                self.scaling.backward(loss if self.loss_world == 1 else loss * self.loss_world, self.optimizers)
                problem = self.guard.gradient_problem(self.model)
        if problem is not None:
            self.guard.settle(problem, self.model, self.optimizers, st, epoch)
            return self._skip_batch()
        st.skipped_in_a_row = 0
        lr_mult = self.schedule.set(st.global_step)
        self.scaling.step(self.optimizers)
        self.model.zero_grad(set_to_none=True)
        self.guard.check_weights(self.model, st, epoch)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self._count(x, y, out, loss_value, epoch)
        return lr_mult

    def _count(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, loss_value: float, epoch: int) -> None:
        """Add a taken step to the epoch's running sums and position, and tell the callbacks."""
        st, n = self.st, len(y)
        self.last_x = x
        per_image = loss_value / n if self.cfg.loss_reduction == "sum" else loss_value
        labels = y.argmax(1) if y.is_floating_point() else y  # soft targets: the larger share's label
        st.acc_loss += per_image * n
        st.acc_correct += int((out.argmax(1) == labels).sum())
        st.acc_seen += n
        st.global_step += 1
        st.step_in_epoch += 1
        for cb in self.callbacks:
            cb("step", {"epoch": epoch, "global_step": st.global_step, "loss": per_image}, self.model)

    def _skip_batch(self) -> float:
        """Count the batch as skipped and move the position on, as ``on_nan=skip-batch`` does."""
        st = self.st
        st.skipped_batches, st.skipped_in_a_row = st.skipped_batches + 1, st.skipped_in_a_row + 1
        st.global_step, st.step_in_epoch = st.global_step + 1, st.step_in_epoch + 1
        return self.schedule.multiplier(st.global_step - 1)

    def _diverged(self, what: str, epoch: int):
        self.guard.diverged(what, self.st, epoch)

    # ------------------------------------------------------------------ end of an epoch
    def end_epoch(self, epoch: int, seconds: float, lr_mult: float) -> bool:
        """Validation, metrics row, checkpoints; returns True when early stopping ends the run.

        Raises:
            TrainingDiverged: non-finite weights, eval-mode outputs or validation loss (nothing of
                this epoch saved).
            StorageError: a write failed (the previous checkpoints kept).
        """
        st, cfg = self.st, self.cfg
        loss_sum, correct, seen = sum_across([st.acc_loss, st.acc_correct, st.acc_seen], self.env)
        st.images_seen += int(seen)  # counted once per completed epoch, all ranks
        row = {"epoch": epoch, "step": st.global_step, "train_loss": loss_sum / max(1, seen),
               "train_top1": 100.0 * correct / max(1, seen), "lr_mult": lr_mult,
               "lr": {g.get("name", str(i)): g["lr"] for o in self.optimizers for i, g in enumerate(o.param_groups)},
               "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}
        if st.skipped_batches:
            row["skipped_batches"] = st.skipped_batches
        bad = not all_finite(weights_of(self.eval_model)) or (  # with no validation, one batch in eval mode
            self.val_fn is None and self.last_x is not None and not outputs_finite(self.eval_model, self.last_x, self.ctx))
        if sum_across([float(bad)], self.env)[0]:
            self._diverged(f"the model's weights or evaluation-mode outputs are not finite at the end of epoch "
                           f"{epoch + 1}", epoch)
        if self.val_fn is not None:
            v = self.val_fn(self.eval_model)
            if not math.isfinite(v["loss"]):
                self._diverged(f"the validation loss became {v['loss']} at the end of epoch {epoch + 1}", epoch)
            row.update(val_loss=v["loss"], val_top1=v["top1"])
            improved = v["top1"] > st.best_val + cfg.early_stopping_min_delta
            if v["top1"] > st.best_val:
                st.best_val, st.best_epoch = v["top1"], epoch
                self.best_state = _clone(self.eval_model.state_dict())
            st.bad_epochs = 0 if improved else st.bad_epochs + 1
        else:
            st.best_epoch = epoch
            self.best_state = _clone(self.eval_model.state_dict())
        self.history.append(row)
        try:
            if self.main:
                self.run.append_metrics(row)
            st.next_epoch(epoch + 1)
            if st.best_epoch == epoch and self.main:
                save_checkpoint(self.run.path, "best", self.best_state)
            self.save_last()
        except (OSError, StorageError) as e:
            raise write_failed(e, self.run, epoch) from None
        self.console.end_epoch(row)
        for cb in self.callbacks:
            cb("epoch", row, self.eval_model)
        return bool(cfg.early_stopping_patience and st.bad_epochs >= cfg.early_stopping_patience)

    # ------------------------------------------------------------------ the whole run
    def run_epochs(self) -> FitResult:
        """Train from the current position to the end (or early stop). See `fit` for errors."""
        st = self.st
        self.history = self.run.read_metrics() if self.main else []
        self.console = Console(self.cfg, self.cfg.progress and self.main, self.total_steps, self.spe, self.n_epochs)
        t_start = None
        try:
            for epoch in range(st.epoch, self.n_epochs):
                steps_here = min(self.spe, self.total_steps - epoch * self.spe)
                self.console.start_epoch(epoch, st.step_in_epoch, steps_here)
                # the multiplier of the last step taken (an interrupt can fall between an epoch's last step
                # and its bookkeeping, in which case the resumed epoch runs no step)
                lr_mult = self.schedule.multiplier(max(0, st.global_step - 1))
                t_start = time.perf_counter()
                for x, y in self.loader.epoch(epoch, start=st.step_in_epoch, stop=steps_here):
                    lr_mult = self.step(x, y, epoch)
                    elapsed = st.acc_seconds + time.perf_counter() - t_start
                    self.console.step(st.acc_loss / max(st.acc_seen, 1), 100 * st.acc_correct / max(st.acc_seen, 1),
                                      st.acc_seen / max(elapsed, 1e-9), st.global_step)
                seconds = st.acc_seconds + time.perf_counter() - t_start
                st.train_seconds += time.perf_counter() - t_start
                t_start = None
                if self.end_epoch(epoch, seconds, lr_mult):
                    return FitResult(self.best_state, st.best_epoch, epoch + 1, self.history, st.train_seconds,
                                     st.images_seen, True, st.skipped_batches)
        except KeyboardInterrupt:
            # save the exact position: the partial epoch's counters and the time spent in it
            if t_start is not None and st.step_in_epoch:
                st.acc_seconds += time.perf_counter() - t_start
                st.train_seconds += time.perf_counter() - t_start
            try:
                self.save_last()
            except (OSError, StorageError) as e:
                raise write_failed(e, self.run, st.epoch) from None
            if self.main:
                self.run.set_status("interrupted", epoch=st.epoch, step=st.global_step)
            raise TrainingInterrupted(
                f"Interrupted at epoch {st.epoch + 1}, step {st.global_step}/{self.total_steps}; progress "
                f"saved. Continue with: cifarlab train --resume {self.run.path}") from None
        finally:
            self.console.close()
        return FitResult(self.best_state, st.best_epoch, self.n_epochs, self.history, st.train_seconds,
                         st.images_seen, False, st.skipped_batches)

