"""Experiment trackers: TensorBoard's grouped tags and HParams, an MLflow round trip through a local
store, and a one-line error naming the package when an optional tracker is missing."""
from __future__ import annotations

import sys

import pytest

import cifarlab
from cifarlab import ConfigError
from helpers import tiny_config


def test_tensorboard_overlays_train_and_val_and_records_hparams_with_test_metrics(cifar10_dir, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    run = cifarlab.train(tiny_config(cifar10_dir, epochs=2, val_size=50), run_dir=tmp_path / "run")
    mux = EventMultiplexer().AddRunsFromDirectory(str(run.path))
    mux.Reload()
    scalars = {tag for r in mux.Runs().values() for tag in r.get("scalars", [])}
    assert {"loss/train", "loss/val", "top1/train", "top1/val", "lr/multiplier"} <= scalars
    top1 = [e.value for r in mux.Runs() for e in (mux.Scalars(r, "top1/val") if "top1/val" in
            mux.Runs()[r].get("scalars", []) else [])]
    assert len(top1) == 2 and top1[-1] == pytest.approx(run.rows[-1]["val_top1"])
    hparams = mux.PluginRunToTagToContent("hparams")
    assert hparams and any("_hparams_/session_start_info" in tags for tags in hparams.values())
    test = [e.value for r in mux.Runs() if "test_top1" in mux.Runs()[r].get("scalars", [])
            for e in mux.Scalars(r, "test_top1")]
    assert test == [pytest.approx(run.results["test"]["top1"])]


def test_mlflow_round_trip_through_a_local_store(cifar10_dir, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("pandas")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
    try:
        run = cifarlab.train(tiny_config(cifar10_dir, epochs=2, logger="mlflow"), run_dir=tmp_path / "run")
        found = mlflow.search_runs(experiment_ids=["0"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(found) == 1
    row = found.iloc[0]
    assert row["tags.mlflow.runName"] == "run" and row["params.epochs"] == "2.0"
    assert row["metrics.test_top1"] == pytest.approx(run.results["test"]["top1"])
    assert "metrics.loss_train" in found.columns
    artifacts = {f.path for f in mlflow.MlflowClient(f"file:{tmp_path / 'mlruns'}").list_artifacts(row["run_id"])}
    assert {"config.yaml", "results.json", "metrics.jsonl"} <= artifacts


@pytest.mark.parametrize("logger", ["mlflow", "wandb"])
def test_a_missing_tracker_package_is_named_with_its_install(cifar10_dir, tmp_path, monkeypatch, logger):
    monkeypatch.setitem(sys.modules, logger, None)   # import fails as if not installed
    with pytest.raises(ConfigError, match=f"pip install {logger}"):
        cifarlab.train(tiny_config(cifar10_dir, epochs=1, logger=logger), run_dir=tmp_path / "run")


def test_wandb_offline_records_the_config_and_the_test_metrics(cifar10_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = cifarlab.train(tiny_config(cifar10_dir, epochs=2, logger="wandb"), run_dir=tmp_path / "run")
    logs = list((run.path / "wandb").glob("offline-run-*/run-*.wandb"))   # what `wandb sync` would upload
    assert len(logs) == 1
    data = logs[0].read_bytes()
    assert all(key in data for key in (b"test_top1", b"loss/train", b"top1/train", b"label_smoothing"))
