"""Export a finished run's timm model in timm's own folder format (``config.json`` with the
architecture, ``num_classes``, creation arguments, class names and ``pretrained_cfg``, plus
``model.safetensors``), written with ``timm.models.save_for_hf``:
``timm.create_model("local-dir:DIR", pretrained=True)`` then rebuilds it with the run's classes, input size and normalization, and ``--push-to-hub`` uploads
the same folder with ``huggingface_hub``."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..models import creation_kwargs, model_kind
from .export import ExportError
from .predict import load_run_model
from .setup import model_sizes


def export_timm(run_dir, out_dir, push_to_hub: str | None = None, check: bool = True) -> dict:
    """Write ``out_dir`` (must not hold files) from a finished run (or stamped checkpoint) of a timm model.

    The folder's ``pretrained_cfg`` gets the run's input size (the side the model saw), its
    interpolation, mean/std (the [0, 1] units timm uses) and ``crop_pct`` 1.0; ``label_names``
    the run's classes. With ``check``, the folder is loaded back with timm and its logits
    compared with the run's model on random inputs (``max_abs_diff``).

    Returns:
        ``{"path", "architecture", "num_classes", "input_size", "max_abs_diff", "hub_url"}``.

    Raises:
        ExportError: not a timm model (cifarlab's own nets: use ONNX), ``out_dir`` not empty, or
            the upload failed; RunDirError, CheckpointError: as `load_run_model`.
    """
    import timm
    cfg, model, results = load_run_model(run_dir, device=torch.device("cpu"))
    if model_kind(cfg.model) != "timm":
        raise ExportError(f"--timm exports timm architectures; {cfg.model} is one of cifarlab's own models, which "
                          "timm cannot rebuild. Export it with --onnx instead.")
    if cfg.head_hidden:
        raise ExportError(f"this run's classifier is an MLP (head_hidden {cfg.head_hidden}), which timm's {cfg.model} "
                          "cannot rebuild. Export it with --onnx instead.")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty folder; choose another --timm DIR.")
    sizes = model_sizes(cfg, model)
    side = sizes[-1][1] if sizes else int(results.get("data_side", 32))
    norm = results["normalization"]
    data_cfg = {"input_size": (3, side, side), "interpolation": cfg.interpolation, "crop_pct": 1.0,
                "crop_mode": "center", "mean": tuple(norm["mean"]), "std": tuple(norm["std"])}
    model = model.float().to(memory_format=torch.contiguous_format)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        timm.models.save_for_hf(model, tmp, model_config={"label_names": list(results["classes"])},
                                model_args=creation_kwargs(cfg), safe_serialization=True, data_config=data_cfg)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), str(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = {"path": str(out), "architecture": model.pretrained_cfg.get("architecture", cfg.model),
            "num_classes": len(results["classes"]), "input_size": [3, side, side]}
    (out / "README.md").write_text(model_card(cfg, results, info, push_to_hub))
    if check:
        info["max_abs_diff"] = _parity(model, out, side)
    if push_to_hub:
        info["hub_url"] = push_folder(out, push_to_hub)
    return info


def model_card(cfg, results: dict, info: dict, repo: str | None = None) -> str:
    """The folder's ``README.md`` (a Hugging Face model card): what was trained on what, the test
    figures, and how to load it with timm."""
    test, calib = results.get("test", {}), results.get("calibration") or {}
    where = f"hf-hub:{repo}" if repo else "local-dir:PATH/TO/THIS/FOLDER"
    figures = ", ".join(f"{name} {test[key]:.2f}%" for key, name in (("top1", "top-1"), ("top5", "top-5"), ("ece", "ECE"))
                        if test.get(key) is not None)
    lines = ["---", "library_name: timm", "tags: [image-classification, timm, cifarlab]", "---", "",
             f"# {info['architecture']} on {cfg.dataset}", "",
             f"Trained with cifarlab: `{cfg.model}`, strategy `{cfg.strategy}`"
             + (f" (recipe `{cfg.recipe}`)" if cfg.recipe else "") + f", {cfg.epochs:g} epochs"
             + (f", {cfg.train_size} training images" if cfg.train_size else "") + f", input {info['input_size'][-1]} px.",
             "", f"Test set: {figures or 'not scored'}"
             + (f"; temperature scaling T = {calib['temperature']:.3f} (test ECE after it "
                f"{calib['test_ece_after']:.2f}%)." if calib.get("temperature") and "test_ece_after" in calib else "."),
             "", "Classes: " + ", ".join(results["classes"]) + ".", "", "```python", "import timm",
             f'model = timm.create_model("{where}", pretrained=True).eval()',
             "cfg = timm.data.resolve_data_config({}, model=model)   # the run's input size and normalization",
             "transform = timm.data.create_transform(**cfg)", "```", ""]
    return "\n".join(lines)


@torch.no_grad()
def _parity(model: torch.nn.Module, folder: Path, side: int) -> float:
    import timm
    again = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 3, side, side)).astype(np.float32))
    return float((again(x) - model.eval()(x)).abs().max())


def push_folder(folder: Path, repo: str) -> str:
    """Upload ``folder`` to the Hugging Face model repository ``repo`` (created when missing);
    returns its URL. Needs a login (``huggingface-cli login`` or ``HF_TOKEN``).

    Raises:
        ExportError: the hub refused or could not be reached (the local folder is kept).
    """
    from huggingface_hub import HfApi
    api = HfApi()
    try:
        url = api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="cifarlab export")
    except Exception as e:  # noqa: BLE001 -- network, auth and hub errors come in many types
        raise ExportError(f"Uploading {folder} to the Hugging Face hub as {repo} failed ({type(e).__name__}: {e}). "
                          "The folder is complete on disk; log in (huggingface-cli login) and push again.") from None
    return str(url)
