"""Models: the registry, the built-in nets (airbench-style CNNs, a LeNet-style baseline, a small ViT
for 32x32 built with timm), any timm model by name, weight loading, and the one factory
(`factory`) that decides between them.

Knows about datasets only through ``num_classes`` and the input size.
"""
from torch import nn

from .airbench import AirbenchNet, step_hook
from .factory import (build_model, head_of, check_input_size, count_parameters, create_model, creation_kwargs, data_config,
                      model_kind)
from .registry import (ModelCfg, UnknownModelError, is_user_module, list_models, model_cfg, register_model,
                       register_module, unknown_model)
from .simple import LeNet
from .timm_adapter import (WeightsError, classifier_names, input_size_kwargs, is_timm_model, load_weights_file,
                           read_state_dict, timm_names)


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


__all__ = ["AirbenchNet", "step_hook", "head_of", "LeNet", "WeightsError", "input_size_kwargs", "is_timm_model", "load_weights_file",
           "read_state_dict", "classifier_names", "timm_names", "data_config", "ModelCfg", "UnknownModelError",
           "create_model", "creation_kwargs", "build_model", "check_input_size", "model_kind", "list_models", "model_cfg",
           "register_model", "register_module", "is_user_module", "unknown_model", "count_parameters"]
