"""Export a finished run's model to ONNX, with normalization and resizing inside the graph.

The exported graph takes ``images``: float32 (B, 3, S, S) RGB pixel values in [0, 255] (uint8
pixels cast to float), S = the run's data side (32 for CIFAR), any batch size; and returns
``logits``: float32 (B, num_classes), without TTA. Class names, normalization and input layout are
stored in the model's metadata. Export uses ``torch.onnx.export(dynamo=True)``; parity is checked
with onnxruntime against the same module in PyTorch (float32).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runs import RunDirError
from .predict import load_run_model
from .setup import model_sizes


class ExportError(RuntimeError):
    """An export cannot be made as asked (exporter failure, a model the format cannot hold, an
    occupied output folder, a refused upload). The message says why and what to do."""


class ExportWrapper(nn.Module):
    """(B, 3, S, S) float pixels in [0, 255] -> normalize -> resize to the model's side -> logits."""

    def __init__(self, model: nn.Module, mean, std, side: int | None, interpolation: str = "bilinear"):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.side, self.interpolation = side, interpolation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.side is not None and self.side != x.shape[-1]:
            kw = {"align_corners": False} if self.interpolation in ("bilinear", "bicubic") else {}
            x = nn.functional.interpolate(x, size=(self.side, self.side), mode=self.interpolation, **kw)
        return self.model(x).float()


def export_onnx(run_dir, out_path=None, opset: int = 18, check: bool = True, check_images: np.ndarray | None = None) -> dict:
    """Write ``RUN/model.onnx`` (or ``out_path``) and check it against PyTorch with onnxruntime.

    Args:
        check_images: uint8 (N, 3, S, S) images for the parity check (default: 64 seeded random images).

    Returns:
        ``{"path", "bytes", "max_abs_diff", "argmax_agreement" (%), "input", "output", "opset"}``.

    Raises:
        RunDirError: the run is incomplete.
        CheckpointError: the weights do not fit the model.
        RuntimeError: the exporter or onnxruntime failed (its message kept).
    """
    cfg, model, results = load_run_model(run_dir, device=torch.device("cpu"))
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    sizes = model_sizes(cfg, model)
    side = int(results.get("data_side", 32))
    wrapper = ExportWrapper(model, results["normalization"]["mean"], results["normalization"]["std"],
                            sizes[-1][1] if sizes else None, cfg.interpolation).eval()
    out = Path(out_path) if out_path else Path(run_dir) / "model.onnx"
    example = torch.rand(2, 3, side, side) * 255
    try:
        prog = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                 output_names=["logits"], verbose=False,
                                 dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=65536)}})
        prog.save(str(out))
    except Exception as e:  # exporter errors are deep; keep their message, not their traceback
        raise ExportError(f"ONNX export of {cfg.model} failed: {type(e).__name__}: {str(e)[:500]}") from None
    _add_metadata(out, {"classes": json.dumps(results["classes"]), "dataset": results["dataset"],
                        "model": cfg.model, "input": f"images: float32 (B, 3, {side}, {side}) RGB in [0, 255]",
                        "normalization": json.dumps(results["normalization"]), "source_run": str(run_dir)})
    info = {"path": str(out), "bytes": out.stat().st_size, "input": [None, 3, side, side], "output": "logits",
            "opset": opset}
    if check:
        if check_images is None:
            check_images = np.random.default_rng(0).integers(0, 256, size=(64, 3, side, side), dtype=np.uint8)
        info.update(onnx_parity(out, wrapper, check_images))
    return info


def _add_metadata(path: Path, meta: dict) -> None:
    import onnx
    m = onnx.load(str(path))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))


@torch.no_grad()
def onnx_parity(path, wrapper: nn.Module, images_u8: np.ndarray) -> dict:
    """Max |ORT - PyTorch| over the logits of ``images_u8`` (uint8 (N, 3, S, S)), and argmax agreement in %."""
    got = run_onnx(path, images_u8)
    ref = wrapper(torch.from_numpy(images_u8.astype(np.float32))).numpy()
    return {"max_abs_diff": float(np.abs(got - ref).max()),
            "argmax_agreement": float(100.0 * (got.argmax(1) == ref.argmax(1)).mean()),
            "checked_images": len(images_u8)}


def run_onnx(path, images_u8: np.ndarray) -> np.ndarray:
    """Logits float32 (N, C) of an exported model on uint8 (N, 3, S, S) images, with onnxruntime."""
    import onnxruntime as ort
    if not Path(path).is_file():
        raise RunDirError(f"{path} does not exist; run cifarlab export RUN --onnx first.")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images_u8.astype(np.float32)})[0]
