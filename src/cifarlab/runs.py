"""The run directory format: what a run writes, and reading a run back.

A complete run directory ``runs/<name>/`` holds:

========================================  =====================================================
``config.yaml``                           the resolved `TrainConfig`
``metrics.jsonl``                         one JSON object per epoch (see ``train.loop``)
``events.out.tfevents.*``                 TensorBoard scalars
``checkpoint-{best,last}.safetensors``    weights
``train-state-{last,prev}.pt``            weights + optimizer/schedule/RNG state for resume (prev:
                                          the one before last, the fallback when last is damaged)
``results.json``                          final test metrics, timings, memory, environment
``status.json``                           running | interrupted | diverged | failed | complete
``.lock``                                 pid, host and start of the process using the directory
``predictions.npz``                       cached test/validation TTA logits (comparisons, ensembles)
``evaluation.json``, ``interpretation/``  written by ``cifarlab evaluate`` / the report
========================================  =====================================================

Every file name is a constant of this module and ``results.json`` has one schema,
`Results`; the rest of cifarlab writes and reads them through here. Every write is atomic
(`cifarlab.files`), and one process at a time uses a directory (`RunDir.lock`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import TrainConfig
from .files import append_line, lock_folder, write_text

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
STATUS_FILE = "status.json"
PREDICTIONS_FILE = "predictions.npz"
EVALUATION_FILE = "evaluation.json"
INTERPRETATION_DIR = "interpretation"
CURVES_FILE = "curves.png"                 # loss and top-1 per epoch, train and validation


def checkpoint_file(name: str) -> str:
    """``checkpoint-{name}.safetensors``: the weights of checkpoint ``name`` (``best`` or ``last``)."""
    return f"checkpoint-{name}.safetensors"


def train_state_file(name: str) -> str:
    """``train-state-{name}.pt``: optimizer, schedule position and RNG state for ``--resume``."""
    return f"train-state-{name}.pt"


REQUIRED_FILES = (CONFIG_FILE, METRICS_FILE, checkpoint_file("best"), checkpoint_file("last"), RESULTS_FILE)


@dataclass
class Results:
    """The schema of ``results.json``: what a finished run reports.

    Units: accuracies in %, losses in nats per image, seconds, bytes, images/s. ``test`` holds
    `cifarlab.evaluation.classification_metrics`' keys (top1, top5, loss, ece, per-class,
    confusion, superclass_top1 for CIFAR-100).
    """
    dataset: str
    model: str
    strategy: str
    num_classes: int
    classes: list[str]
    test: dict
    tta: int
    input_side: int               # pixels the model sees (after on-device resizing)
    data_side: int                # pixels of the stored images
    train_images: int
    best_epoch: int               # 1-based
    epochs_run: int
    stopped_early: bool
    parameters: dict              # {"total": n, "trainable": n}
    model_size_bytes: int
    train_seconds: float
    prep_seconds: float
    test_eval_seconds: float
    wall_seconds: float
    train_images_per_s: float
    inference_images_per_s: float  # forward passes of single images per second, from the timed test scoring
    peak_memory_bytes: int        # process RSS on CPU, CUDA allocator peak on GPU
    peak_rss_bytes: int
    normalization: dict           # {"mean": [3], "std": [3]} in [0, 1] units
    data_source: str
    data_notes: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    feature_cache: dict | None = None   # linear probes on cached features
    distributed: dict | None = None     # torchrun: world_size, backend
    skipped_batches: int = 0            # on_nan=skip-batch: batches skipped for a non-finite loss/gradient
    calibration: dict | None = None     # temperature scaling fitted on validation; test ECE/NLL before/after
    precision: dict | None = None       # {"requested", "used", "reason", "grad_scaler", "muon_matmul"}: what ran

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class RunDirError(RuntimeError):
    """A run directory cannot be created, is incomplete or does not exist."""


@dataclass
class Run:
    """A run directory read back: its config, per-epoch metrics (``rows``: the ``metrics.jsonl``
    records; ``metrics``: the same as a pandas DataFrame) and final results (``results.json``).

    Usable wherever a run directory's path is (``os.PathLike``): ``cifarlab.evaluate(run)``,
    ``compare_runs([run_a, run_b])``.
    """
    path: Path
    config: TrainConfig
    rows: list[dict] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    @property
    def metrics(self):
        """One row per epoch (``epoch`` from 1), the columns of ``metrics.jsonl``: a ``pandas.DataFrame``."""
        import pandas as pd
        frame = pd.DataFrame(self.rows)
        if "epoch" in frame:
            frame["epoch"] += 1
            frame = frame.set_index("epoch")
        return frame

    @property
    def test_top1(self) -> float | None:
        return self.results.get("test", {}).get("top1")

    def __fspath__(self) -> str:
        return str(self.path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Run":
        rd = RunDir(path)
        cfg = rd.load_config()
        results = rd.read_results() if rd.file(RESULTS_FILE).is_file() else {}
        return cls(rd.path, cfg, rd.read_metrics(), results)

    def __repr__(self) -> str:
        top1 = f"{self.test_top1:.2f}%" if self.test_top1 is not None else "n/a"
        return f"Run({str(self.path)!r}, model={self.config.model}, test_top1={top1})"


def generate_run_name(cfg: TrainConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.dataset}-{cfg.model}-{stamp}-{secrets.token_hex(2)}"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (`cifarlab.files.write_text`; raises its `StorageError`)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False))


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ---- creation
    def create(self) -> "RunDir":
        """Make the folder (and parents). Raises `RunDirError` if it cannot be written."""
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
        return self.path / CONFIG_FILE

    def checkpoint(self, name: str) -> Path:
        return self.path / checkpoint_file(name)

    def train_state(self, name: str = "last") -> Path:
        return self.path / train_state_file(name)

    def has_run(self) -> bool:
        """True when a run was started here (a training state or results exist)."""
        return any(self.train_state(n).is_file() for n in ("last", "prev")) or self.file(RESULTS_FILE).is_file()

    def lock(self, what: str = "train"):
        """`lock_folder` on this directory (a context manager)."""
        return lock_folder(self.path, what)

    def save_config(self, cfg: TrainConfig) -> None:
        write_text(self.config_path, cfg.to_yaml())

    def load_config(self) -> TrainConfig:
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} is not a run directory: it has no config.yaml.")
        return TrainConfig.load_yaml(self.config_path)

    def append_metrics(self, row: dict) -> None:
        append_line(self.path / METRICS_FILE, json.dumps(row))

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep only rows of epochs < ``epochs_done`` (rows past a resume point are replayed)."""
        rows = [r for r in self.read_metrics() if r["epoch"] < epochs_done]
        write_text(self.path / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))

    def read_metrics(self) -> list[dict]:
        """The rows of ``metrics.jsonl``; a last line cut short by a crash (no newline) is left out."""
        p = self.path / METRICS_FILE
        if not p.is_file():
            return []
        text = p.read_text()
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines = lines[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def write_json(self, name: str, obj) -> None:
        write_json(self.path / name, obj)

    def read_json(self, name: str) -> dict:
        p = self.path / name
        if not p.is_file():
            raise RunDirError(f"{self.path} has no {name}.")
        return json.loads(p.read_text())

    def write_results(self, results: Results) -> None:
        self.write_json(RESULTS_FILE, results.to_dict())

    def read_results(self) -> dict:
        """``results.json`` as a dict (the keys of `Results`; older runs may lack some)."""
        return self.read_json(RESULTS_FILE)

    def set_status(self, status: str, **extra) -> None:
        self.write_json(STATUS_FILE, {"status": status, **extra})

    def status(self) -> str:
        try:
            return self.read_json(STATUS_FILE)["status"]
        except RunDirError:
            return "missing"

    def missing_files(self) -> list[str]:
        return [f for f in REQUIRED_FILES if not (self.path / f).is_file()]

    def is_complete(self) -> bool:
        return not self.missing_files() and self.status() == "complete"

    def require_complete(self) -> None:
        """Raise `RunDirError` naming what is missing from an unfinished run."""
        if not self.path.is_dir():
            raise RunDirError(f"Run directory {self.path} does not exist.")
        missing = self.missing_files()
        if missing and not (self.path / CONFIG_FILE).is_file():
            raise RunDirError(f"{self.path} is not a run directory (no {CONFIG_FILE}): give the folder a "
                              "'cifarlab train' run wrote, e.g. runs/<name>.")
        if missing:
            raise RunDirError(f"Run {self.path} is incomplete (status: {self.status()}): missing "
                              f"{', '.join(missing)}. Resume it with: cifarlab train --resume {self.path}")
