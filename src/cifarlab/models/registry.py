"""Model registry (timm habit): one name -> one builder, each with a pretrained-style config.

Every registered builder takes ``num_classes`` plus its own keyword arguments and returns an
``nn.Module`` with timm's interface (``forward_features``, ``forward_head``, ``get_classifier``,
``reset_classifier``). ``model_cfg(name)`` gives the input size and the classifier's name that the
rest of the code reads instead of guessing.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from torch import nn


class UnknownModelError(KeyError):
    """No model of that name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class ModelCfg:
    """What the rest of cifarlab needs to know about a model (timm's ``pretrained_cfg`` analog)."""
    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int] = (3, 32, 32)
    classifier: str = "head"
    description: str = ""
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelCfg] = {}


def register_model(name: str, *, input_size=(3, 32, 32), classifier="head", description="", **defaults):
    """Decorator registering ``builder`` under ``name``."""
    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelCfg(name, builder, tuple(input_size), classifier, description, defaults)
        return builder
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_cfg(name: str) -> ModelCfg:
    """The :class:`ModelCfg` of ``name``. Raises :class:`UnknownModelError` with close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"Unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}.")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build ``name`` for ``num_classes`` outputs; ``kwargs`` override the registered defaults.

    Raises:
        UnknownModelError: unknown name.
        ValueError: a keyword the builder does not accept (names it).
    """
    cfg = model_cfg(name)
    args = {**cfg.defaults, **kwargs}
    try:
        return cfg.builder(num_classes=num_classes, **args)
    except TypeError as e:
        raise ValueError(f"Bad model_kwargs for {name}: {e}. Defaults are {cfg.defaults}.") from None
