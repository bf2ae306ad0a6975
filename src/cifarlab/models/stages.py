"""A network cut in two: a frozen *trunk* and the trainable *rest*, for training on cached trunk
outputs. `split_at_stage` cuts at a stage boundary (partial fine-tuning: the rest is the last
stages and the head); `split_at_head` cuts before the classifier (a linear probe: the trunk
gives pooled pre-logit features, the rest is the classifier alone).

Most CNN families in timm compute ``forward_features`` as their top-level children in order, with
the stages in a ``blocks`` / ``stages`` container (EfficientNet, MobileNet, ConvNeXt, RegNet) or as
``layer1..4`` (ResNet). `split_at_stage` reads that order and *checks* it: the trunk followed
by the rest must reproduce ``forward_features`` on a random input, or the model is refused (a ViT,
whose token and position embeddings are not children, is one such).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError

# children that belong to forward_head, never to the feature path
HEAD_CHILDREN = frozenset({"global_pool", "classifier", "fc", "head", "head_drop", "fc_norm", "pre_logits",
                           "flatten", "drop"})
STAGE_CONTAINERS = ("blocks", "stages")


def feature_units(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[int]]:
    """``(units, stage_positions)``: the feature path as ``(dotted name, module)`` pairs in
    execution order, and the positions of the units that are stages."""
    units, stages = [], []
    for name, child in model.named_children():
        if name in HEAD_CHILDREN:
            continue
        if name in STAGE_CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            for i, block in enumerate(child):
                stages.append(len(units))
                units.append((f"{name}.{i}", block))
        else:
            if name.startswith("layer") and name[5:].isdigit():
                stages.append(len(units))
            units.append((name, child))
    return units, stages


class Rest(nn.Module):
    """The part of a network after its trunk: float (B, C, h, w) trunk output -> logits (B, classes).

    Holds the model's own modules (the same parameters: training it trains the model) and calls the
    model's ``forward_head``. `model_keys` maps its state-dict keys to the model's.
    """

    def __init__(self, model: nn.Module, units: list[tuple[str, nn.Module]]):
        super().__init__()
        self.units = nn.Sequential(*[m for _, m in units])
        self.head = nn.ModuleDict({n: m for n, m in model.named_children() if n in HEAD_CHILDREN})
        object.__setattr__(self, "_model", model)  # not a submodule: its trunk must stay out of parameters()

    def get_classifier(self) -> nn.Module:
        return self._model.get_classifier()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self._model.forward_head(self.units(h))

    def model_keys(self) -> dict[str, str]:
        """``{key in this module's state dict: key in the model's}`` (matched by tensor identity)."""
        return _model_keys(self, self._model)


def _model_keys(part: nn.Module, model: nn.Module) -> dict[str, str]:
    owner = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    return {k: owner[id(t)] for k, t in part.state_dict(keep_vars=True).items()}


class PooledFeatures(nn.Module):
    """A linear probe's trunk: float (B, 3, H, W) images -> float (B, D) pooled pre-logit features,
    ``model.forward_head(model.forward_features(x), pre_logits=True)`` (timm's interface)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class Head(nn.Module):
    """A linear probe's rest: the model's classifier alone, float (B, D) features -> logits (B, classes).
    Its state-dict keys are ``classifier.*``; `model_keys` maps them to the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.classifier = model.get_classifier()
        object.__setattr__(self, "_model", model)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)

    def model_keys(self) -> dict[str, str]:
        """``{key in this module's state dict: key in the model's}`` (matched by tensor identity)."""
        return _model_keys(self, self._model)


def split_at_head(model: nn.Module) -> tuple[PooledFeatures, Head]:
    """``(trunk, rest)`` of a linear probe: ``rest(trunk(x))`` equals ``model(x)`` in evaluation mode.

    Raises:
        ConfigError: the model has no ``forward_head`` / ``get_classifier`` (timm's interface).
    """
    if not (hasattr(model, "forward_head") and hasattr(model, "get_classifier")):
        raise ConfigError(f"a cached linear probe needs timm's forward_head and get_classifier; "
                          f"{type(model).__name__} has not both. Use --set feature_cache=false.")
    return PooledFeatures(model), Head(model)


def split_at_stage(model: nn.Module, trainable_stages: int, side: int = 64) -> tuple[nn.Sequential, Rest]:
    """Cut ``model`` before its last ``trainable_stages`` stages.

    Args:
        model: a timm-style network (``forward_features`` / ``forward_head``).
        trainable_stages: how many stages, counted from the last, go to the rest (0: only the
            modules after the last stage, e.g. EfficientNet's ``conv_head``, and the head).
        side: the check input's side in pixels.

    Returns:
        ``(trunk, rest)``: ``rest(trunk(x))`` equals ``model(x)`` for x float (B, 3, H, W).

    Raises:
        ConfigError: the model has no recognisable stages, ``trainable_stages`` is out of range, or
            the units in order do not reproduce ``forward_features`` (the fix named).
    """
    name = type(model).__name__
    units, stages = feature_units(model)
    if not stages or not hasattr(model, "forward_head"):
        raise ConfigError(f"partial-fine-tune needs a network built of stages (timm's EfficientNet, MobileNet, "
                          f"ResNet, ConvNeXt, RegNet...); {name} has none that cifarlab recognises. Use --strategy "
                          "fine-tune.")
    if not 0 <= trainable_stages <= len(stages):
        raise ConfigError(f"trainable_stages must be between 0 and {len(stages)} for {name} (it has {len(stages)} "
                          f"stages: {', '.join(units[i][0] for i in stages)}); got {trainable_stages}.")
    cut = stages[len(stages) - trainable_stages] if trainable_stages else stages[-1] + 1
    trunk = nn.Sequential(*[m for _, m in units[:cut]])
    rest = Rest(model, units[cut:])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
            same = torch.allclose(nn.Sequential(*[m for _, m in units])(x), model.forward_features(x),
                                  rtol=1e-4, atol=1e-4)
    except Exception:  # noqa: BLE001 - any failure means the order is not the feature path
        same = False
    model.train(was_training)
    if not same:
        raise ConfigError(f"partial-fine-tune cannot cut {name}: its children in order do not compute its "
                          "forward_features (extra steps such as position embeddings happen between them). "
                          "Use --strategy fine-tune.")
    return trunk, rest
