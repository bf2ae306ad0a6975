"""The run directory format: what a run writes, atomic writes, reading a run back.

A complete run directory ``runs/<name>/`` holds:

========================================  =====================================================
``config.yaml``                           the resolved :class:`~cifarlab.config.TrainConfig`
``metrics.jsonl``                         one JSON object per epoch (see ``train.loop``)
``events.out.tfevents.*``                 TensorBoard scalars
``checkpoint-{best,last}.safetensors``    weights
``train-state-last.pt``                   optimizer/schedule/RNG state for resume
``results.json``                          final test metrics, timings, memory, environment
``status.json``                           running | interrupted | diverged | complete
========================================  =====================================================
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from pathlib import Path

from .config import TrainConfig

REQUIRED_FILES = ("config.yaml", "metrics.jsonl", "checkpoint-best.safetensors",
                  "checkpoint-last.safetensors", "results.json")


class RunDirError(RuntimeError):
    """A run directory cannot be created, is incomplete or does not exist."""


def generate_run_name(cfg: TrainConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.dataset}-{cfg.model}-{stamp}-{secrets.token_hex(2)}"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False))
    os.replace(tmp, path)


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ---- creation
    def create(self) -> "RunDir":
        """Make the folder (and parents). Raises :class:`RunDirError` if it cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"Cannot write the run directory {self.path}: {e.strerror}. "
                              "Choose another with --run-dir or fix its permissions.") from None
        return self

    # ---- files
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def save_config(self, cfg: TrainConfig) -> None:
        tmp = self.path / ".config.yaml.tmp"
        cfg.save_yaml(tmp)
        os.replace(tmp, self.config_path)

    def load_config(self) -> TrainConfig:
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} is not a run directory: it has no config.yaml.")
        return TrainConfig.load_yaml(self.config_path)

    def append_metrics(self, row: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep only rows of epochs < ``epochs_done`` (rows past a resume point are replayed)."""
        rows = [r for r in self.read_metrics() if r["epoch"] < epochs_done]
        tmp = self.path / ".metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.path / "metrics.jsonl")

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def write_json(self, name: str, obj) -> None:
        write_json(self.path / name, obj)

    def read_json(self, name: str) -> dict:
        p = self.path / name
        if not p.is_file():
            raise RunDirError(f"{self.path} has no {name}.")
        return json.loads(p.read_text())

    def set_status(self, status: str, **extra) -> None:
        self.write_json("status.json", {"status": status, **extra})

    def status(self) -> str:
        try:
            return self.read_json("status.json")["status"]
        except RunDirError:
            return "missing"

    def missing_files(self) -> list[str]:
        return [f for f in REQUIRED_FILES if not (self.path / f).is_file()]

    def is_complete(self) -> bool:
        return not self.missing_files() and self.status() == "complete"

    def require_complete(self) -> None:
        """Raise :class:`RunDirError` naming what is missing from an unfinished run."""
        if not self.path.is_dir():
            raise RunDirError(f"Run directory {self.path} does not exist.")
        missing = self.missing_files()
        if missing:
            raise RunDirError(f"Run {self.path} is incomplete (status: {self.status()}): missing "
                              f"{', '.join(missing)}. Resume it with: cifarlab train --resume {self.path}")
