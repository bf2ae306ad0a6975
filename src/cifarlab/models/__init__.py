"""Models: the registry, the built-in airbench-style nets, and (later) the timm adapter.

Knows about datasets only through ``num_classes`` and the input size.
"""
from torch import nn

from .airbench import AirbenchNet
from .registry import ModelCfg, UnknownModelError, create_model, list_models, model_cfg, register_model


@register_model("airbench94", description="airbench94 CNN: whitened stem, 3 conv groups 64/256/256 (~2M params)",
                widths=(64, 256, 256), depth=1, residual=False)
def _airbench94(num_classes: int, **kw) -> nn.Module:
    return AirbenchNet(num_classes=num_classes, **kw)


@register_model("airbench_res", description="deeper residual airbench variant (3 convs per group, skip), for CIFAR-100",
                widths=(128, 384, 384), depth=2, residual=True)
def _airbench_res(num_classes: int, **kw) -> nn.Module:
    return AirbenchNet(num_classes=num_classes, **kw)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": n}`` parameter counts (elements, not bytes)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


__all__ = ["AirbenchNet", "ModelCfg", "UnknownModelError", "create_model", "list_models", "model_cfg",
           "register_model", "count_parameters"]
