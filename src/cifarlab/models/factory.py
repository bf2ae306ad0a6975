"""The model factory (timm's ``_factory.py`` habit): the one place that decides whether a name is a
built-in or a timm model, which creation kwargs its input size needs, where its weights come from,
and whether it can take the input size asked for.

Every model it returns carries a ``pretrained_cfg`` dict (timm's own for timm models; for the
built-ins one made from the registry's `ModelCfg`, with ``mean``
and ``std`` None meaning "normalize with the dataset's statistics"). `data_config` reads it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError, TrainConfig
from .registry import is_registered, model_cfg, unknown_model
from .timm_adapter import WeightsError, create_timm_model, input_size_kwargs, is_timm_model, load_weights_file
from .weight_packages import package_weights

# sides tried, in pixels, to name the smallest input a model takes (common CNN/ViT input sizes)
_PROBE_SIDES = (16, 24, 32, 48, 64, 75, 96, 112, 128, 160, 192, 224, 256, 299, 320, 384)


def model_kind(name: str) -> str:
    """``"builtin"`` (registered here; wins over a timm model of the same name) or ``"timm"``.

    Raises:
        UnknownModelError: neither (close matches from both listed).
    """
    if is_registered(name):
        return "builtin"
    if is_timm_model(name):
        return "timm"
    raise unknown_model(name)


def create_model(name: str, num_classes: int, pretrained: bool = False, weights=None, **kwargs) -> nn.Module:
    """Build a built-in model or any timm model for ``num_classes`` outputs.

    Args:
        pretrained: ImageNet weights, from an installed weight package
            (`weight_packages`) or else timm's hub download; built-ins have none.
        weights: a local weights file (see `cifarlab.models.timm_adapter.load_weights_file`).
        kwargs: builder / ``timm.create_model`` keyword arguments (override registered defaults).

    Raises:
        UnknownModelError: unknown name (close matches listed).
        ConfigError: a keyword the builder does not accept (names it).
        WeightsError: weights unavailable (offline) or not fitting the model.
    """
    if model_kind(name) == "builtin":
        cfg = model_cfg(name)
        if pretrained:
            raise WeightsError(f"{name} is a built-in model without published pretrained weights; train it "
                               "from scratch or load your own file with --weights PATH.")
        try:
            model = cfg.builder(num_classes=num_classes, **{**cfg.defaults, **kwargs})
        except TypeError as e:
            raise ConfigError(f"Bad model_kwargs for {name}: {e}. Defaults are {cfg.defaults}.") from None
        model.pretrained_cfg = {"architecture": name, "input_size": cfg.input_size, "classifier": cfg.classifier,
                                "mean": None, "std": None, "interpolation": "bilinear", "fixed_input_size": False,
                                "source": "cifarlab"}
    else:
        # --pretrained looks at an installed weight package before timm's hub (after --weights)
        packaged = package_weights(name) if pretrained and not weights else None
        try:
            model = create_timm_model(name, num_classes, pretrained=pretrained and packaged is None, **kwargs)
        except TypeError as e:
            raise ConfigError(f"Bad model_kwargs for timm model {name}: {e}.") from None
        weights = weights or packaged
    if weights:
        load_weights_file(model, weights)
    return model


def creation_kwargs(cfg: TrainConfig) -> dict:
    """The keyword arguments `build_model` creates ``cfg.model`` with: ``cfg.model_kwargs``
    over, for fixed-input-size timm models, the input size the run feeds them."""
    kwargs = dict(cfg.model_kwargs)
    if model_kind(cfg.model) == "timm":
        side = cfg.img_size or (max(sz for _, sz in cfg.img_sizes) if cfg.img_sizes else None)
        for k, v in input_size_kwargs(cfg.model, side, progressive=bool(cfg.img_sizes)).items():
            kwargs.setdefault(k, v)
    return kwargs


def build_model(cfg: TrainConfig, num_classes: int, device: torch.device, load_weights: bool = True) -> nn.Module:
    """The model of a run config, seeded by ``cfg.seed``, on ``device`` (channels_last when asked).

    timm models of a fixed input size (ViTs) get the creation kwargs for the side the run feeds
    them (``img_size``, or the largest of ``img_sizes``); ``cfg.model_kwargs`` wins over those.
    Weights come from ``cfg.weights`` / ``cfg.pretrained`` when ``load_weights`` (a run that will
    load its own checkpoint passes False).

    Raises:
        UnknownModelError: as `create_model`; likewise ConfigError and WeightsError.
    """
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes, pretrained=cfg.pretrained and load_weights,
                         weights=cfg.weights if load_weights else None, **creation_kwargs(cfg))
    if cfg.head_hidden:
        attach_mlp_head(model, cfg.head_hidden, num_classes)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def head_of(model: nn.Module) -> nn.Module | None:
    """The model's classifier (timm's ``get_classifier()``; a module), or None for a model without one
    or whose ``get_classifier`` returns no module (timm's ``nn.Identity`` heads count as modules)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return head if isinstance(head, nn.Module) else None


def attach_mlp_head(model: nn.Module, hidden: int, num_classes: int, dropout: float = 0.2) -> nn.Module:
    """Replace ``model``'s linear classifier (D -> classes) by Linear(D, hidden) - ReLU - Dropout -
    Linear(hidden, classes), in place; ``model.get_classifier()`` then returns the MLP, so strategies
    and learning-rate groups treat all of it as the head. Returns the new head.

    Raises:
        ConfigError: the model has no linear classifier to replace (a built-in net without ``get_classifier``).
    """
    head = head_of(model)
    names = [n for n, m in model.named_modules() if m is head] if isinstance(head, nn.Linear) else []
    if not names:
        raise ConfigError(f"head_hidden needs a model with a linear classifier (timm models have one); "
                          f"{type(model).__name__} has none. Set head_hidden 0.")
    parent_name, _, attr = names[0].rpartition(".")
    mlp = nn.Sequential(nn.Linear(head.in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                        nn.Linear(hidden, num_classes))
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, mlp)
    return mlp


def data_config(model: nn.Module) -> dict:
    """Input size (C, H, W), mean, std (in [0, 1] units) and interpolation the model expects.

    timm models: their pretrained config (``timm.data.resolve_data_config``). Built-ins: their
    registered input size and ``mean``/``std`` None, meaning "use the dataset's statistics".
    """
    pc = getattr(model, "pretrained_cfg", None) or {}
    if pc.get("source") == "cifarlab":
        return {k: pc[k] for k in ("input_size", "mean", "std", "interpolation", "fixed_input_size")}
    from timm.data import resolve_data_config
    cfg = resolve_data_config(model=model)
    return {"input_size": tuple(cfg["input_size"]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "interpolation": cfg.get("interpolation", "bilinear"), "fixed_input_size": bool(pc.get("fixed_input_size"))}


def check_input_size(model: nn.Module, side: int, device: torch.device, name: str, num_classes: int | None = None) -> None:
    """Raise `ConfigError` when ``model`` cannot take ``side`` x ``side`` input, naming the
    smallest side that works (probed with one zero image per candidate side), or, given
    ``num_classes``, when its output is not float (B, num_classes) logits (a user's own module)."""
    def works(s: int) -> bool:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, 3, s, s, device=device))
            shapes.append(tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__)
            return True
        except (RuntimeError, ValueError, AssertionError):
            return False
        finally:
            model.train(was)
    shapes = []
    if works(side):
        if num_classes is not None and shapes[-1] != (1, num_classes):
            raise ConfigError(f"{name} must return logits of shape (batch, {num_classes}) for this dataset's "
                              f"{num_classes} classes; it returned {shapes[-1]}. Change its last layer.")
        return
    minimum = next((s for s in _PROBE_SIDES if s > side and works(s)), None)
    hint = f" The smallest side that works is {minimum} pixels: use --set img_size={minimum}." if minimum else ""
    raise ConfigError(f"Input size {side}x{side} is too small for {name}.{hint}")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": n}`` parameter counts (elements, not bytes)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
