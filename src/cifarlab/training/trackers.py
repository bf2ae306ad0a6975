"""Experiment trackers: TensorBoard (installed with cifarlab), MLflow and Weights & Biases (optional).

A tracker is a training callback (it hears every epoch's metrics row) with a start and an end: at the
start it records the resolved config as parameters, at the end the test metrics and the run
directory's result files. Per-epoch train and validation values of one quantity share a tag group
(``loss/train`` and ``loss/val``), so the two curves overlay. Chosen with the ``logger`` config key
(``--logger``); only the process that writes the run directory (rank 0) tracks.
"""
from __future__ import annotations

import contextlib
import importlib
import json

from ..config import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb", "none")
# metrics-row key -> tag: one group per quantity, train and validation side by side
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_top1": "top1/train", "val_top1": "top1/val",
        "images_per_s": "speed/images_per_s", "lr_mult": "lr/multiplier"}
TEST_KEYS = ("top1", "top5", "loss", "ece")
ARTIFACTS = ("config.yaml", "results.json", "metrics.jsonl", "curves.png")


def _params(cfg) -> dict:
    """The config as flat scalar parameters (lists and mappings as JSON text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in cfg.to_dict().items()
            if v is not None}


def _test(results: dict) -> dict:
    return {f"test_{k}": results["test"][k] for k in TEST_KEYS if results.get("test", {}).get(k) is not None}


class TensorBoard:
    """Scalars per epoch under ``loss/``, ``top1/``, ``speed/``, ``lr/``; at the end ``add_hparams`` with
    the config and the test metrics (TensorBoard's HParams tab)."""

    def __init__(self, cfg, run):
        from torch.utils.tensorboard import SummaryWriter
        self.cfg, self.writer = cfg, SummaryWriter(str(run.path))

    def __call__(self, event: str, row: dict, model=None) -> None:
        if event == "epoch":
            for key, tag in TAGS.items():
                if key in row:
                    self.writer.add_scalar(tag, row[key], row["epoch"] + 1)
            self.writer.flush()

    def finish(self, results: dict, run) -> None:
        self.writer.add_hparams(_params(self.cfg), _test(results), run_name=".")

    def close(self) -> None:
        self.writer.close()


class MLflow:
    """An MLflow run (``MLFLOW_TRACKING_URI``, default ``./mlruns``) named after the run directory: the
    config as params, per-epoch metrics under the same names as TensorBoard's tags, the test metrics,
    and the run's result files as artifacts. A resumed run goes on in the same MLflow run."""

    def __init__(self, cfg, run):
        import mlflow
        self.mlflow, self.state = mlflow, run.path / "mlflow-run.json"
        known = json.loads(self.state.read_text())["run_id"] if self.state.is_file() else None
        try:
            self.active = mlflow.start_run(run_id=known, run_name=None if known else run.path.name)
        except (mlflow.exceptions.MlflowException, ModuleNotFoundError) as e:  # a store it cannot open
            raise ConfigError(f"MLflow could not start a run at {mlflow.get_tracking_uri()}: "
                              f"{str(e).splitlines()[0]} Set MLFLOW_TRACKING_URI to a server (http://...), or to "
                              "sqlite:///mlflow.db with the full mlflow package installed.") from None
        if known is None:
            mlflow.log_params(_params(cfg))
            self.state.write_text(json.dumps({"run_id": self.active.info.run_id}))

    def __call__(self, event: str, row: dict, model=None) -> None:
        if event == "epoch":
            self.mlflow.log_metrics({tag.replace("/", "_"): row[key] for key, tag in TAGS.items() if key in row},
                                    step=row["epoch"] + 1)

    def finish(self, results: dict, run) -> None:
        self.mlflow.log_metrics(_test(results))
        for name in ARTIFACTS:
            if (run.path / name).is_file():
                self.mlflow.log_artifact(str(run.path / name))

    def close(self) -> None:
        self.mlflow.end_run()


class Wandb:
    """A Weights & Biases run (``WANDB_MODE=offline`` to log without an account) named after the run
    directory: the config, per-epoch metrics, the test metrics in the summary."""

    def __init__(self, cfg, run):
        import wandb
        self.wandb = wandb
        self.active = wandb.init(name=run.path.name, dir=str(run.path), config=_params(cfg), resume="allow",
                                 id=run.path.name)

    def __call__(self, event: str, row: dict, model=None) -> None:
        if event == "epoch":
            self.active.log({tag: row[key] for key, tag in TAGS.items() if key in row}, step=row["epoch"] + 1)

    def finish(self, results: dict, run) -> None:
        self.active.summary.update(_test(results))

    def close(self) -> None:
        self.active.finish()


_KINDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": Wandb}


def check_available(cfg) -> None:
    """Import the package ``cfg.logger`` needs, before any data is read or directory made.

    Raises:
        ConfigError: MLflow or W&B chosen but not installed (the ``pip install`` named).
    """
    if cfg.logger in ("mlflow", "wandb"):
        try:
            importlib.import_module(cfg.logger)
        except ModuleNotFoundError as e:
            if e.name != cfg.logger:
                raise
            raise ConfigError(f"--logger {cfg.logger} needs the {cfg.logger} package: pip install {cfg.logger} "
                              f"(or pip install 'cifarlab[{cfg.logger}]'), or use --logger tensorboard.") from None


def open_tracker(cfg, run, main: bool = True):
    """The tracker ``cfg.logger`` names for ``run`` (a `cifarlab.runs.RunDir`), or None (``none``, or
    not the main process).

    Raises:
        ConfigError: MLflow or W&B chosen but not installed, or MLflow's store cannot be opened.
    """
    if not main or cfg.logger == "none":
        return None
    check_available(cfg)
    return _KINDS[cfg.logger](cfg, run)


@contextlib.contextmanager
def tracking(cfg, run, main: bool = True):
    """``with tracking(cfg, run) as tracker:`` the open tracker (or None), closed however the block ends."""
    tracker = open_tracker(cfg, run, main)
    try:
        yield tracker
    finally:
        if tracker is not None:
            tracker.close()
