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


def _newton_schulz(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix (U S V^T -> ~U V^T) in bf16.

    Quintic Newton-Schulz iteration with coefficients (3.4445, -4.7750, 2.0315) from Keller
    Jordan's Muon (github.com/KellerJordan/Muon); 3 steps as in airbench94_muon.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(torch.bfloat16)
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

    Source: K. Jordan et al., "Muon: An optimizer for hidden layers" (2024);
    github.com/KellerJordan/cifar10-airbench, airbench94_muon.py.
    """

    def __init__(self, params, lr: float = 0.24, momentum: float = 0.6, nesterov: bool = True, ns_steps: int = 3):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"ConvMuon needs lr > 0 and 0 <= momentum < 1 (got {lr}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

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
                update = _newton_schulz(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
                p.add_(update, alpha=-group["lr"])


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters into ``filters`` (>= 2-D, not the head), ``head``, ``whiten`` (the
    airbench stem's bias, when the model has one) and ``bias`` (the rest: norms, biases)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    whiten = getattr(model, "whiten", None)
    whiten_ids = {id(whiten.bias)} if whiten is not None and whiten.bias is not None else set()
    groups = {"filters": [], "head": [], "whiten": [], "bias": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in whiten_ids:
            groups["whiten"].append(p)
        elif id(p) in head_ids:
            groups["head"].append(p)
        elif p.ndim >= 2:
            groups["filters"].append(p)
        else:
            groups["bias"].append(p)
    return groups


def build_optimizers(model: nn.Module, cfg) -> list[torch.optim.Optimizer]:
    """Optimizers for ``cfg.optimizer``; each param group carries a ``name`` used by the schedule.

    muon: ConvMuon on filters + Nesterov SGD on head and biases (airbench94_muon).
    sgd: Nesterov SGD, filters at ``lr``. adamw: AdamW, filters at ``lr``, betas (momentum, 0.999).
    """
    g = param_groups(model)

    def group(name, params, lr, wd=True):
        return dict(params=params, lr=lr, name=name, weight_decay=(cfg.weight_decay / lr) if wd else 0.0)

    side = [group("whiten", g["whiten"], cfg.bias_lr), group("bias", g["bias"], cfg.bias_lr),
            group("head", g["head"], cfg.head_lr)]
    side = [s for s in side if s["params"]]
    if cfg.optimizer == "muon":
        opts = [torch.optim.SGD(side, lr=cfg.bias_lr, momentum=cfg.momentum, nesterov=True)] if side else []
        if g["filters"]:
            opts.append(ConvMuon([dict(params=g["filters"], lr=cfg.lr, name="filters")],
                                 lr=cfg.lr, momentum=cfg.muon_momentum))
        return opts
    groups = [group("filters", g["filters"], cfg.lr)] + side if g["filters"] else side
    if cfg.optimizer == "sgd":
        return [torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)]
    for gr in groups:  # AdamW's decay is already lr-coupled in torch: keep it decoupled like SGD's
        gr["weight_decay"] = cfg.weight_decay / gr["lr"]
    return [torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))]


def lr_multiplier(step: int, total: int, warmup: int, schedule: str, final_frac: float) -> float:
    """Schedule multiplier in [0, 1] at optimizer step ``step`` of ``total``.

    linear / cosine: linear warmup from 0 over ``warmup`` steps, then linear or cosine decay to
    ``final_frac``. onecycle: Smith & Topin 2017 (arXiv:1708.07120) in its cosine form: cosine
    warmup from 1/25 (default 30% of steps when ``warmup`` is 0), cosine anneal to ``final_frac``.
    constant: 1 after warmup.
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
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1 - (1 - final_frac) * frac
    return final_frac + (1 - final_frac) * (1 + math.cos(math.pi * frac)) / 2


class Schedule:
    """Sets every group's lr each step: ``initial_lr * multiplier``.

    The whitening-stem bias (group ``whiten``, when present) decays linearly to zero over
    ``whiten_steps`` (airbench). State is just the step, which the training loop saves.
    """

    def __init__(self, optimizers, total_steps: int, warmup_steps: int, schedule: str, final_frac: float,
                 whiten_steps: int = 0):
        self.optimizers, self.total, self.warmup = optimizers, total_steps, warmup_steps
        self.whiten_steps = whiten_steps
        self.schedule, self.final_frac = schedule, final_frac
        for opt in optimizers:
            for gr in opt.param_groups:
                gr.setdefault("initial_lr", gr["lr"])

    def multiplier(self, step: int) -> float:
        return lr_multiplier(step, self.total, self.warmup, self.schedule, self.final_frac)

    def set(self, step: int) -> float:
        m = self.multiplier(step)
        for opt in self.optimizers:
            for gr in opt.param_groups:
                if gr.get("name") == "whiten":
                    gr["lr"] = gr["initial_lr"] * max(0.0, 1 - step / max(1, self.whiten_steps))
                else:
                    gr["lr"] = gr["initial_lr"] * m
        return m
