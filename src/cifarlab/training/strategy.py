"""Transfer-learning strategies: which parameters train, and when.

==============  ============================================================================
scratch / full  every trainable parameter, one learning rate per group kind
linear-probe    only the classifier trains; the backbone is frozen and its BatchNorm layers stay
                in inference mode (running statistics untouched)
fine-tune       the classifier alone for ``freeze_epochs``, then everything, with discriminative
                learning rates (``layer_decay`` per layer group below the head), as fastai's
                ``fine_tune`` (Howard & Ruder 2018, arXiv:1801.06146)
partial-fine-   as fine-tune, for the stages after a frozen, cached trunk (the model given is
tune            the rest, `cifarlab.models.stages.Rest`; see `.cached`)
==============  ============================================================================

The phase is a function of the optimizer step, so a resumed run freezes and unfreezes exactly
where the uninterrupted one did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..config import ConfigError
from ..models import head_of
from .optim import layer_scales

TUNED = ("fine-tune", "partial-fine-tune")  # head first, then the rest with discriminative learning rates
DISTRIBUTABLE = ("scratch", "full")         # freezing would change which parameters DDP synchronizes


def caches_trunk(cfg) -> bool:
    """Whether ``cfg``'s strategy trains on cached outputs of a frozen trunk (a linear probe with
    ``feature_cache``, a partial fine-tune): its train state then holds only the part that trains."""
    return (cfg.strategy == "linear-probe" and cfg.feature_cache) or cfg.strategy == "partial-fine-tune"


def projected_passes(cfg, train_images: int) -> float:
    """Training passes (forward and backward, in images) the strategy of ``cfg`` costs over a run:
    epochs x images, except a cached linear probe (one forward pass, a third of a training pass) and a
    partial fine-tune (a forward pass per cached view, then about a fifth of the network per epoch)."""
    if cfg.strategy == "linear-probe" and cfg.feature_cache:
        return train_images / 3
    if cfg.strategy == "partial-fine-tune":
        return train_images * (cfg.cached_views / 3 + cfg.epochs / 5)
    return train_images * cfg.epochs


def check_distributable(cfg, world: int) -> None:
    """Raise `ConfigError` when ``cfg`` cannot train in ``world`` DDP processes."""
    if cfg.strategy not in DISTRIBUTABLE:
        raise ConfigError(f"distributed training supports strategy scratch or full, not {cfg.strategy!r}: "
                          "freezing changes which parameters DDP synchronizes. Run it in one process.")
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes.")


@dataclass
class Strategy:
    name: str
    head_ids: set
    trainable_ids: set             # parameters trainable before any freezing
    freeze_steps: int = 0
    scales: dict = field(default_factory=dict)
    _frozen: bool | None = None

    @classmethod
    def from_config(cls, model: nn.Module, cfg, steps_per_epoch: int) -> "Strategy":
        head = head_of(model)
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        tuned = cfg.strategy in TUNED
        freeze = math.ceil(cfg.freeze_epochs * steps_per_epoch) if tuned else 0
        scales = layer_scales(model, cfg.layer_decay) if tuned else {}
        return cls(cfg.strategy, head_ids, trainable, freeze, scales)

    @property
    def optimized_ids(self) -> set:
        """Parameters the optimizers hold: only the head for a linear probe."""
        return self.head_ids & self.trainable_ids if self.name == "linear-probe" else self.trainable_ids

    def frozen_at(self, step: int) -> bool:
        return self.name == "linear-probe" or (self.name in TUNED and step < self.freeze_steps)

    def set_mode(self, model: nn.Module, step: int) -> None:
        """Apply the phase of ``step``: requires_grad flags, and frozen BatchNorm in eval mode.

        Call after ``model.train()``.
        """
        frozen = self.frozen_at(step)
        if frozen != self._frozen:
            for p in model.parameters():
                if id(p) in self.trainable_ids:
                    p.requires_grad_(not frozen or id(p) in self.head_ids)
            self._frozen = frozen
        if frozen:
            head = head_of(model)
            head_modules = set(head.modules()) if head is not None else set()
            for m in model.modules():
                if isinstance(m, _BatchNorm) and m not in head_modules:
                    m.eval()
