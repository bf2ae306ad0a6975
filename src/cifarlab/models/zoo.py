"""timm's model zoo as a user browses it: names matching a pattern and, for pretrained ones, whether
the weights can be loaded without the network (already in the Hugging Face cache)."""
from __future__ import annotations

from .weight_packages import package_weights


def offline_weights(name: str) -> bool:
    """True when ``--pretrained`` works offline for ``name``: an installed weight package provides it
    (`.weight_packages`), or its default weights (its ``pretrained_cfg``'s hub repository) are
    in the local Hugging Face cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache
    if package_weights(name) is not None:
        return True
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        return False
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        return False
    return any(isinstance(try_to_load_from_cache(repo, f), str)
               for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))


def find_timm_models(pattern: str, pretrained: bool = False) -> list[dict]:
    """timm model names matching ``pattern`` (fnmatch, e.g. ``'resnet*'``).

    Returns:
        ``[{"name"}]``; with ``pretrained``, only names with ImageNet weights, as timm's
        ``name.tag`` for each weight set, plus ``"offline"``: weights cached locally (bool).
    """
    import timm
    if not pretrained:
        return [{"name": n} for n in timm.list_models(pattern)]
    return [{"name": n, "offline": offline_weights(n)} for n in timm.list_models(pattern, pretrained=True)]
