"""Optimizers, parameter groups and learning-rate schedules.

Parameter groups follow airbench: BatchNorm biases and the whitening bias get their own learning
rate; the classifier gets its own; conv filters get the main one. Weight decay is *decoupled from
the learning rate*: a group's ``weight_decay`` is set to ``cfg.weight_decay / group_lr`` so the
per-step shrink equals ``cfg.weight_decay`` times the schedule multiplier, whatever the lr.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models import head_of


def _newton_schulz(g: torch.Tensor, steps: int = 3, eps: float = 1e-7,
                   dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix (U S V^T -> ~U V^T), computing in ``dtype``.

    Quintic Newton-Schulz iteration with coefficients (3.4445, -4.7750, 2.0315) from Keller
    Jordan's Muon (github.com/KellerJordan/Muon); 3 steps as in airbench94_muon, which computes
    in bf16. Where bf16 is emulated, fp32 is ~40x faster (0.019 against 0.71 s for a 256x2304
    matrix on an AVX2 CPU) and at least as accurate.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if transposed else x).to(g.dtype)


class ConvMuon(torch.optim.Optimizer):
    """Muon for convolution filters, as in airbench94_muon.

    Each step: Nesterov momentum on the gradient, the filter tensor is renormalised to norm
    sqrt(out_channels), and the update is the orthogonalised momentum (reshaped to
    (out_channels, in*k*k)) times lr. ``torch.optim.Muon`` accepts only 2-D parameters and has no
    renormalisation, hence this class.

    ``matmul_dtype``: the dtype of the orthogonalisation's products (bf16 as in the source, where the
    device has it natively; fp32 elsewhere: `cifarlab.runtime.Precision.matmul_dtype`).

    Source: K. Jordan et al., "Muon: An optimizer for hidden layers" (2024);
    github.com/KellerJordan/cifar10-airbench, airbench94_muon.py.
    """

    def __init__(self, params, lr: float = 0.24, momentum: float = 0.6, nesterov: bool = True, ns_steps: int = 3,
                 matmul_dtype: torch.dtype = torch.bfloat16):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"ConvMuon needs lr > 0 and 0 <= momentum < 1 (got {lr}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))
        self.matmul_dtype = matmul_dtype

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(g)
                g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                update = _newton_schulz(g.reshape(len(g), -1), group["ns_steps"], dtype=self.matmul_dtype).view_as(p)
                p.add_(update, alpha=-group["lr"])


def param_groups(model: nn.Module, params: set | None = None) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split parameters into ``filters`` (>= 2-D, not the head), ``head``, ``whiten`` (the airbench
    stem's bias, when the model has one) and ``bias`` (the rest: norms, biases), as (name, param) pairs.

    ``params``: the ids of the parameters to include (default: those with ``requires_grad``).
    """
    head = head_of(model)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    whiten = getattr(model, "whiten", None)
    whiten_ids = {id(whiten.bias)} if isinstance(whiten, nn.Conv2d) and whiten.bias is not None else set()
    groups = {"filters": [], "head": [], "whiten": [], "bias": []}
    for name, p in model.named_parameters():
        if (id(p) not in params) if params is not None else not p.requires_grad:
            continue
        if id(p) in whiten_ids:
            groups["whiten"].append((name, p))
        elif id(p) in head_ids:
            groups["head"].append((name, p))
        elif p.ndim >= 2:
            groups["filters"].append((name, p))
        else:
            groups["bias"].append((name, p))
    return groups


def layer_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Discriminative learning rates: parameter name -> lr multiplier ``layer_decay ** depth_from_top``.

    Layers come from the model's ``group_matcher`` (timm), else timm's automatic grouping; the head
    is the top layer (multiplier 1). Idea: fastai's discriminative learning rates (Howard & Ruder
    2018, arXiv:1801.06146); grouping code: timm ``param_groups_layer_decay``.
    """
    if layer_decay >= 1.0:
        return {}
    from timm.models import group_parameters
    from timm.optim._param_groups import auto_group_layers
    if hasattr(model, "group_matcher"):
        layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    else:
        layer_map = auto_group_layers(model)
    top = max(layer_map.values()) if layer_map else 0
    head = head_of(model)
    head_names = {n for n, p in model.named_parameters()
                  if head is not None and any(p is q for q in head.parameters())}
    return {n: (1.0 if n in head_names else layer_decay ** (top - layer_map.get(n, top)))
            for n, _ in model.named_parameters()}


def build_optimizers(model: nn.Module, cfg, params: set | None = None, scales: dict[str, float] | None = None,
                     matmul_dtype: torch.dtype = torch.bfloat16) -> list[torch.optim.Optimizer]:
    """Optimizers for ``cfg.optimizer``; each param group carries a ``name`` used by the schedule.

    muon: ConvMuon on filters + Nesterov SGD on head and biases (airbench94_muon).
    sgd: Nesterov SGD, filters at ``lr``. adamw: AdamW, filters at ``lr``, betas (momentum, 0.999).
    ``params``: ids of the parameters to optimise (default: those with requires_grad).
    ``scales``: per-parameter-name lr multipliers (`layer_scales`); groups split by multiplier.
    ``matmul_dtype``: Muon's orthogonalisation dtype (`ConvMuon`).
    """
    g = param_groups(model, params)
    scales = scales or {}

    def groups(kind, base_lr, wd=True):
        by_scale: dict[float, list] = {}
        for name, p in g[kind]:
            by_scale.setdefault(round(scales.get(name, 1.0), 6), []).append(p)
        return [dict(params=ps, lr=base_lr * sc, name=kind, lr_scale=sc,
                     weight_decay=(cfg.weight_decay / (base_lr * sc)) if wd else 0.0)
                for sc, ps in sorted(by_scale.items(), reverse=True)]

    side = groups("whiten", cfg.bias_lr) + groups("bias", cfg.bias_lr) + groups("head", cfg.head_lr)
    if cfg.optimizer == "muon":
        opts = [torch.optim.SGD(side, lr=cfg.bias_lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)] if side else []
        filt = groups("filters", cfg.lr, wd=False)
        if filt:
            opts.append(ConvMuon(filt, lr=cfg.lr, momentum=cfg.muon_momentum, matmul_dtype=matmul_dtype))
        return opts
    all_groups = groups("filters", cfg.lr) + side
    if cfg.optimizer == "sgd":
        return [torch.optim.SGD(all_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)]
    # AdamW's decay is lr-coupled in torch; weight_decay / lr keeps it decoupled like SGD's
    return [torch.optim.AdamW(all_groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))]


def lr_multiplier(step: int, total: int, warmup: int, schedule: str, final_frac: float, decay: int = 0) -> float:
    """Schedule multiplier in [0, 1] at optimizer step ``step`` of ``total``.

    linear / cosine: linear warmup from 0 over ``warmup`` steps, then linear or cosine decay to
    ``final_frac``. With ``decay`` > 0 steps the peak is held until the last ``decay`` steps and the
    decay happens there: warmup-stable-decay (Hu et al. 2024, MiniCPM, arXiv:2404.06395; Hägele et al.
    2024, arXiv:2405.18392). onecycle: Smith & Topin 2017 (arXiv:1708.07120) in its cosine form:
    cosine warmup from 1/25 (default 30% of steps when ``warmup`` is 0), cosine anneal to
    ``final_frac``. constant: 1 after warmup.
    """
    if schedule == "onecycle":
        warm = warmup or max(1, int(0.3 * total))
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * step / warm)) / 2
        frac = (step - warm) / max(1, total - warm)
        return final_frac + (1 - final_frac) * (1 + math.cos(math.pi * min(frac, 1.0))) / 2
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    start = max(warmup, total - decay) if decay > 0 else warmup
    frac = min(1.0, max(0, step - start) / max(1, total - start))
    if schedule == "linear":
        return 1 - (1 - final_frac) * frac
    return final_frac + (1 - final_frac) * (1 + math.cos(math.pi * frac)) / 2


class Schedule:
    """Sets every group's lr each step: ``initial_lr * multiplier``.

    The whitening-stem bias (group ``whiten``, when present) decays linearly to zero over
    ``whiten_steps`` (airbench). State is just the step, which the training loop saves.
    """

    def __init__(self, optimizers, total_steps: int, warmup_steps: int, schedule: str, final_frac: float,
                 whiten_steps: int = 0, decay_steps: int = 0):
        self.optimizers, self.total, self.warmup, self.decay = optimizers, total_steps, warmup_steps, decay_steps
        self.whiten_steps = whiten_steps
        self.schedule, self.final_frac = schedule, final_frac
        for opt in optimizers:
            for gr in opt.param_groups:
                gr.setdefault("initial_lr", gr["lr"])

    def multiplier(self, step: int) -> float:
        return lr_multiplier(step, self.total, self.warmup, self.schedule, self.final_frac, self.decay)

    def set(self, step: int) -> float:
        m = self.multiplier(step)
        for opt in self.optimizers:
            for gr in opt.param_groups:
                if gr.get("name") == "whiten":
                    gr["lr"] = gr["initial_lr"] * max(0.0, 1 - step / max(1, self.whiten_steps))
                else:
                    gr["lr"] = gr["initial_lr"] * m
        return m
