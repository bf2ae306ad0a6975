"""Any timm model by name, with its classifier sized for our classes, and weight loading.

* ``pretrained=True`` goes through timm's own loader (Hugging Face hub, honouring ``HF_HOME`` and
  ``HF_HUB_OFFLINE``); a failed download becomes `WeightsError` saying how to use a local file.
* ``load_weights_file`` reads a local safetensors / PyTorch file without executing code, in
  timm's key naming or the original (e.g. torchvision) naming -- converted by the model family's
  own ``checkpoint_filter_fn`` from timm where one exists -- and drops a classifier whose shape
  does not fit, saying so. Any other mismatch is an error naming the keys.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
from torch import nn

from .errors import WeightsError
from .weight_packages import convert_efficientnet_pytorch, is_efficientnet_pytorch, package_hint

log = logging.getLogger("cifarlab")


def timm_names() -> list[str]:
    import timm
    return timm.list_models()


def is_timm_model(name: str) -> bool:
    import timm
    return timm.is_model(name.split(".")[0])


def create_timm_model(name: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with ``num_classes``; pretrained download errors become `WeightsError`."""
    import timm
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:  # hub errors subclass OSError/HTTPError; offline: LocalEntryNotFound
        if not pretrained:
            raise
        package = package_hint(name)
        raise WeightsError(
            f"Could not obtain the pretrained weights of {name}: --pretrained looked for (1) a local file: none given "
            f"(--weights PATH); (2) an installed weight package: " + (f"not installed ({package})" if package else
            "none provides this model (cifarlab.models.weight_packages lists those that exist)") + f"; (3) timm's hub "
            f"download: failed ({type(e).__name__}: {str(e)[:200]}). Provide one: pass a weights file with --weights "
            f"PATH (e.g. saved elsewhere with timm.create_model('{name}', pretrained=True))"
            + (f", install the package ({package})" if package else "") + ", or go online."
        ) from None


def input_size_kwargs(name: str, side: int | None, progressive: bool = False) -> dict:
    """Creation kwargs that let a fixed-input-size timm model (ViT family) take ``side`` pixels:
    ``img_size`` (timm resamples pretrained position embeddings), plus ``dynamic_img_size`` when a
    progressive schedule feeds several sizes. Empty for models that accept any size (CNNs)."""
    import timm
    if not side:
        return {}
    pc = timm.models.get_pretrained_cfg(name.split(".")[0])
    if pc is None or not getattr(pc, "fixed_input_size", False):
        return {}
    return {"img_size": side, **({"dynamic_img_size": True} if progressive else {})}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without executing code: safetensors, or torch files with ``weights_only=True``.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and DataParallel's ``module.`` prefix.
    Raises `WeightsError` for a missing, corrupt or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors errors, zip/pickle errors, refused globals
        raise WeightsError(f"Weights file {path} is corrupt or not a weights file "
                           f"({type(e).__name__}: {str(e)[:200]}).") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"Weights file {path} does not hold a state dict of tensors.")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _family_filter(model: nn.Module):
    """The model family's ``checkpoint_filter_fn`` from timm (converts original/torchvision names)."""
    module = importlib.import_module(type(model).__module__)
    for name in ("checkpoint_filter_fn", "_filter_fn", "_filter_torchvision_pretrained"):
        if callable(getattr(module, name, None)):
            return getattr(module, name)
    return None


def classifier_names(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or []
    names = [names] if isinstance(names, str) else list(names)
    if not names and hasattr(model, "get_classifier"):
        head = model.get_classifier()
        names = [n for n, m in model.named_modules() if m is head]
    return names


def load_weights_file(model: nn.Module, path: str | Path) -> dict:
    """Load a local weights file into ``model``.

    Returns ``{"loaded": n, "dropped_classifier": [keys], "converted": bool}``.

    Raises:
        WeightsError: file unreadable, or keys/shapes other than the classifier's do not match
            (the message lists the first mismatching keys: a file for another architecture).
    """
    sd = read_state_dict(path)
    target = model.state_dict()
    converted = False
    if not set(target) & set(sd) and is_efficientnet_pytorch(sd) and hasattr(model, "blocks"):
        sd, converted = convert_efficientnet_pytorch(sd, model, keep=tuple(classifier_names(model))), True
    if not set(target) & set(sd):
        fn = _family_filter(model)
        if fn is not None:
            try:
                try:
                    out = fn(dict(sd), model)
                except TypeError:  # filters that take the state dict alone
                    out = fn(dict(sd))
                sd, converted = out, True
            except Exception as e:  # not convertible: the key comparison below reports the mismatch
                log.debug("%s could not convert %s: %s", getattr(fn, "__name__", fn), path, e)
    heads = tuple(f"{n}." for n in classifier_names(model))
    dropped = [k for k in list(sd) if k.startswith(heads) and (k not in target or sd[k].shape != target[k].shape)]
    for k in dropped:
        del sd[k]
    missing = [k for k in target if k not in sd and not k.startswith(heads)]
    unexpected = [k for k in sd if k not in target]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sd
             if k in target and sd[k].shape != target[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model keys missing from the file (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} file keys unknown to the model (e.g. {', '.join(unexpected[:4])})")
        if shape:
            parts.append(f"{len(shape)} shape mismatches (e.g. {'; '.join(shape[:3])})")
        raise WeightsError(f"Weights file {path} does not fit {type(model).__name__}: " + "; ".join(parts)
                           + ". Is it for another architecture or model size?")
    model.load_state_dict(sd, strict=False)
    if dropped:
        log.warning("Dropped the classifier from %s (%s): its shape does not fit %d classes; it is trained anew.",
                    path, ", ".join(dropped), getattr(model, "num_classes", -1))
    return {"loaded": len(sd), "dropped_classifier": dropped, "converted": converted}
