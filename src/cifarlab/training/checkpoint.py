"""Checkpoints: weights as safetensors, training state as a weights-only torch file, both atomic.

A checkpoint ``NAME`` is two files in the run directory:

* ``checkpoint-NAME.safetensors``: the model's state dict (plus ``ema.``-prefixed EMA weights);
* ``train-state-NAME.pt``: optimizer and schedule state, epoch/step, RNG states, metrics so far.
  Loaded with ``torch.load(weights_only=True)``, which refuses anything but tensors and
  plain containers, so a tampered file cannot execute code.

Each file is written to a temporary name and renamed into place (atomic on POSIX), weights first,
so a crash never leaves a half-written checkpoint under the real name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..runs import checkpoint_file, train_state_file


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model. The message says which."""


def atomic_write(path: Path, writer) -> None:
    """Call ``writer(tmp_path)`` then rename the temp file to ``path`` (same folder, atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, name: str, model_state: dict, train_state: dict | None = None) -> None:
    """Write ``checkpoint-{name}.safetensors`` (+ ``train-state-{name}.pt`` when given)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    atomic_write(Path(run_dir) / checkpoint_file(name), lambda p: save_file(tensors, p))
    if train_state is not None:
        atomic_write(Path(run_dir) / train_state_file(name), lambda p: torch.save(train_state, p))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file. Raises :class:`CheckpointError` when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint {path} is corrupt or not a safetensors file ({e}).") from None


def load_train_state(path: Path) -> dict:
    """Read a training-state file without executing code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Training state {path} does not exist; the run cannot be resumed.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals
        raise CheckpointError(f"Training state {path} is corrupt or unsafe ({type(e).__name__}: {e}).") from None


def load_model_checkpoint(model: torch.nn.Module, path: Path, model_name: str = "the model") -> torch.nn.Module:
    """Load a run checkpoint's model weights (the ``ema.`` copies left out) into ``model``, strictly.

    Raises:
        CheckpointError: missing/corrupt file, or weights that do not fit ``model`` (shapes, keys).
    """
    state = load_weights(path)
    try:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("ema.")})
    except RuntimeError as e:
        raise CheckpointError(f"{Path(path).name} does not fit {model_name}: {e}") from None
    return model
