"""Checkpoints: weights as safetensors, training state as a weights-only torch file; every write
atomic and fsynced, and checked (safetensors header read back, train state size compared) before it replaces the old file (`cifarlab.files.atomic_write`).

A checkpoint ``NAME`` is, in the run directory:

* ``checkpoint-NAME.safetensors``: the model's state dict (plus ``ema.``-prefixed EMA weights);
* ``train-state-NAME.pt`` (``last`` only): the same weights under ``model``, plus the optimizer
  and schedule state, epoch/step, RNG states. One file, so weights and position always match
  (two files could be caught half-updated by a crash). The one it replaces is kept as
  ``train-state-prev.pt``: `load_resume_point` falls back to it when ``last`` is damaged.
  Loaded with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
  containers, so a tampered file cannot execute code.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..files import atomic_write
from ..runs import checkpoint_file, train_state_file


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model. The message says which."""


def _nbytes(tensors: dict) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))


def _check_safetensors(keys: int):
    def verify(tmp: str) -> None:
        with safe_open(tmp, framework="pt") as f:
            if len(list(f.keys())) != keys:
                raise CheckpointError(f"{tmp} read back with the wrong number of tensors")
    return verify


def save_checkpoint(run_dir: Path, name: str, model_state: dict, train_state: dict | None = None) -> None:
    """Write ``checkpoint-{name}.safetensors``, then, with ``train_state``, ``train-state-{name}.pt``
    holding ``train_state`` plus the weights under ``model`` (the previous one kept as
    ``train-state-prev.pt``). A training state is always the last file of a checkpoint written, so
    every file a resumed run does not rewrite is at least as new as the state it resumes from.

    Raises:
        cifarlab.files.StorageError: disk full or not writable (the files on disk are unchanged).
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    run_dir = Path(run_dir)
    atomic_write(run_dir / checkpoint_file(name), lambda p: save_file(tensors, p), needed=_nbytes(tensors),
                 verify=_check_safetensors(len(tensors)))
    if train_state is not None:  # last: the train state is the commit point (a crash before it replays the epoch)
        # serialized in memory: torch's own file writer hides the OSError of a full disk; the check
        # compares the size on disk with the bytes serialized (no second parse of the whole state)
        buf = io.BytesIO()
        torch.save({**train_state, "model": tensors}, buf)

        def verify(tmp: str) -> None:
            if Path(tmp).stat().st_size != buf.getbuffer().nbytes:
                raise CheckpointError(f"{tmp} read back with the wrong size")
        atomic_write(run_dir / train_state_file(name), lambda p: Path(p).write_bytes(buf.getbuffer()),
                     needed=buf.getbuffer().nbytes, verify=verify, previous=run_dir / train_state_file("prev"))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file. Raises `CheckpointError` when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint {path} is damaged or not a safetensors file ({e}).") from None


def stamp_checkpoint(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite the safetensors file ``path`` with ``metadata`` (its header's ``__metadata__``,
    string to string) and the same tensors, atomically.

    Raises:
        CheckpointError: missing or damaged; cifarlab.files.StorageError: not writable.
    """
    tensors = load_weights(path)
    atomic_write(Path(path), lambda p: save_file(tensors, p, metadata=metadata), needed=_nbytes(tensors),
                 verify=_check_safetensors(len(tensors)))


def read_checkpoint_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header ({} when it has none); reads no tensor.

    Raises:
        CheckpointError: missing, or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({e}).") from None


def load_train_state(path: Path) -> dict:
    """Read a training-state file without executing code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Training state {path} does not exist; the run cannot be resumed.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals
        raise CheckpointError(f"Training state {path} is corrupt or unsafe ({type(e).__name__}: {e}).") from None


@dataclass
class ResumePoint:
    """What `load_resume_point` found: the train state, its weights and the file they came from."""
    state: dict
    weights: dict
    path: Path


def load_resume_point(run_dir: Path) -> ResumePoint | None:
    """The newest readable training state of a run: ``train-state-last.pt``, else (damaged, or gone
    because a crash fell between two renames) ``train-state-prev.pt`` with a warning. None when
    the run never saved one (it was stopped before its first checkpoint: it restarts from step 0).

    Raises:
        CheckpointError: both files are damaged; the message names them and how to restart.
    """
    run_dir = Path(run_dir)
    problems = []
    for name in ("last", "prev"):
        path = run_dir / train_state_file(name)
        if not path.is_file():
            continue
        try:
            state = load_train_state(path)
            weights = state.pop("model", None)
            if weights is None:  # written before the weights moved into the train state
                weights = load_weights(run_dir / checkpoint_file("last")) if name == "last" else None
            if weights is None:
                raise CheckpointError(f"Training state {path} holds no weights.")
        except CheckpointError as e:
            problems.append((path, str(e)))
            continue
        if problems:
            warnings.warn(f"{problems[0][1]} Resuming from {path.name} instead (epoch "
                          f"{state['position']['epoch'] + 1}, step {state['position']['global_step']}); the steps "
                          "after it are trained again.", stacklevel=2)
        return ResumePoint(state, weights, path)
    if not problems:
        return None
    files = " ".join(str(p) for p, _ in problems)
    raise CheckpointError(f"Cannot resume {run_dir}: " + " ".join(why for _, why in problems)
                          + f" To train the run again from the beginning with the same config, delete them "
                            f"(rm {files}) and run: cifarlab train --resume {run_dir}")


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
