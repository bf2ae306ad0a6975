"""Model registry (timm habit): one name -> one builder, each with a pretrained-style config.

Every registered builder takes ``num_classes`` plus its own keyword arguments and returns an
``nn.Module`` with timm's interface (``forward_features``, ``forward_head``, ``get_classifier``,
``reset_classifier``). ``model_cfg(name)`` gives the input size and the classifier's name; the
factory (`cifarlab.models.factory`) attaches them to each built model as its
``pretrained_cfg``, which the rest of the code reads instead of guessing.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .timm_adapter import timm_names


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


def register_module(module: nn.Module, name: str | None = None) -> str:
    """Register a user's own ``nn.Module`` instance for training in this process; returns its name
    (default ``user_<classname>``). Each build is a deep copy of the module as it is now, so a run
    and its rescoring start from the same weights; registering the name again replaces it (a
    notebook cell run twice). The module must map float (B, 3, H, W) to (B, num_classes) logits;
    ``num_classes`` is not passed to it. Runs of such a model can be rescored and used
    (``cifarlab.load``) only in a process that registered it under the same name.

    Raises:
        ValueError: the name is a built-in model's.
    """
    import copy
    name = name or f"user_{type(module).__name__.lower()}"
    if name in _REGISTRY and not _REGISTRY[name].description.startswith("user module"):
        raise ValueError(f"{name!r} is a built-in model's name; pass another name")
    pristine = copy.deepcopy(module)
    _REGISTRY[name] = ModelCfg(name, lambda num_classes, **kw: copy.deepcopy(pristine), (3, 32, 32), "head",
                               f"user module {type(module).__name__}")
    return name


def is_user_module(name: str) -> bool:
    """True for a name registered by `register_module`."""
    return name in _REGISTRY and _REGISTRY[name].description.startswith("user module")


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    """True for a built-in (registered) model name."""
    return name in _REGISTRY


def unknown_model(name: str) -> UnknownModelError:
    """The error for a name neither registered here nor known to timm, with close matches from both."""
    pool = list(_REGISTRY) + timm_names()
    close = difflib.get_close_matches(name, pool, n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(f"Unknown model {name!r}.{hint} Built-in models: {', '.join(list_models())}; "
                             "any timm model name also works (timm.list_models() lists them).")


def model_cfg(name: str) -> ModelCfg:
    """The `ModelCfg` of a built-in ``name``. Raises `UnknownModelError` with close matches."""
    if name not in _REGISTRY:
        raise unknown_model(name)
    return _REGISTRY[name]
