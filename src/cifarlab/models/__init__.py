"""Models: the registry, the built-in nets (airbench-style CNNs, a LeNet-style baseline, a small ViT
for 32x32 built with timm), any timm model by name, and weight loading.

Knows about datasets only through ``num_classes`` and the input size.
"""
from torch import nn

from .airbench import AirbenchNet
from .registry import ModelCfg, UnknownModelError, create_model, list_models, model_cfg, register_model
from .simple import LeNet
from .timm_adapter import WeightsError, input_size_kwargs, is_timm_model, load_weights_file, read_state_dict


@register_model("airbench94", description="airbench94 CNN: whitened stem, 3 conv groups 64/256/256 (~2M params)",
                widths=(64, 256, 256), depth=1, residual=False)
def _airbench94(num_classes: int, **kw) -> nn.Module:
    return AirbenchNet(num_classes=num_classes, **kw)


@register_model("airbench_res", description="deeper residual airbench variant (3 convs per group, skip), for CIFAR-100",
                widths=(128, 384, 384), depth=2, residual=True)
def _airbench_res(num_classes: int, **kw) -> nn.Module:
    return AirbenchNet(num_classes=num_classes, **kw)


@register_model("lenet", description="LeNet-style simple CNN baseline (2 conv + 3 dense layers, ~62k params)")
def _lenet(num_classes: int, **kw) -> nn.Module:
    return LeNet(num_classes=num_classes, **kw)


@register_model("vit_cifar", description="small ViT for 32x32 from scratch (timm VisionTransformer, patch 4, dim 192)",
                img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=2.0)
def _vit_cifar(num_classes: int, **kw) -> nn.Module:
    # Patch 4 on 32x32 gives 64 tokens, as in the ViT-on-CIFAR literature (e.g. arXiv:2106.01548 uses
    # 4x4 patches); the architecture itself is timm's.
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(num_classes=num_classes, **kw)


def data_config(model: nn.Module) -> dict:
    """Input size (C, H, W), mean, std (in [0, 1] units) and interpolation the model expects.

    timm models: their pretrained config (``timm.data.resolve_data_config``). Built-ins: 32x32 and
    ``mean``/``std`` None, meaning "use the dataset's statistics".
    """
    if getattr(model, "pretrained_cfg", None) and not isinstance(model, (AirbenchNet, LeNet)):
        from timm.data import resolve_data_config
        cfg = resolve_data_config(model=model)
        return {"input_size": tuple(cfg["input_size"]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
                "interpolation": cfg.get("interpolation", "bilinear"),
                "fixed_input_size": bool(model.pretrained_cfg.get("fixed_input_size", False))}
    return {"input_size": (3, 32, 32), "mean": None, "std": None, "interpolation": "bilinear",
            "fixed_input_size": False}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "trainable": n}`` parameter counts (elements, not bytes)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


__all__ = ["AirbenchNet", "LeNet", "WeightsError", "input_size_kwargs", "is_timm_model", "load_weights_file", "read_state_dict",
           "data_config", "ModelCfg", "UnknownModelError", "create_model", "list_models", "model_cfg",
           "register_model", "count_parameters"]
