"""Training end to end on tiny data: run directory, resume equivalence, evaluate, error cases."""
from __future__ import annotations

import json
import math
import os

import numpy as np

import pytest
import torch

import cifarlab
from cifarlab import ConfigError, TrainConfig
from cifarlab.runs import Run
from cifarlab.cli import main as cli_main
from cifarlab.runs import RunDirError
from helpers import StopAt, tiny_config
from cifarlab.training import TrainingDiverged, TrainingInterrupted, load_train_state, load_weights, lr_multiplier
from cifarlab.models import list_models, model_cfg
from cifarlab.training import CheckpointError
from cifarlab.workflow import load_cached_predictions


def test_run_directory_is_complete(cifar10_dir, tmp_path):
    run = cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "run")
    d = run.path
    for name in ("config.yaml", "metrics.jsonl", "checkpoint-best.safetensors", "checkpoint-last.safetensors",
                 "train-state-last.pt", "results.json"):
        assert (d / name).is_file(), name
    assert list(d.glob("events.out.tfevents.*"))
    assert json.loads((d / "status.json").read_text())["status"] == "complete"
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for key in ("train_loss", "train_top1", "lr", "seconds", "images_per_s"):
        assert key in rows[0]
    r = json.loads((d / "results.json").read_text())
    for key in ("top1", "top5", "loss", "per_class_accuracy"):
        assert key in r["test"]
    assert r["test"]["num_images"] == 60
    assert r["parameters"]["total"] >= r["parameters"]["trainable"] > 0
    assert r["peak_memory_bytes"] > 0 and r["train_images_per_s"] > 0 and r["inference_images_per_s"] > 0
    assert r["environment"]["torch"] == torch.__version__
    assert TrainConfig.load_yaml(d / "config.yaml") == run.config
    # the synthetic classes are easy: training must actually learn
    assert r["test"]["top1"] > 50


def test_validation_split_and_early_stopping(cifar10_dir, tmp_path):
    cfg = tiny_config(cifar10_dir, val_size=50, epochs=30, early_stopping_patience=2,
                      early_stopping_min_delta=100.0)  # no epoch can improve by 100 points: stop after 3
    run = cifarlab.train(cfg, run_dir=tmp_path / "run")
    rows = run.rows
    assert len(rows) == 3 and all("val_top1" in r for r in rows)
    assert run.results["stopped_early"] and run.results["epochs_run"] == 3
    best = max(range(3), key=lambda i: rows[i]["val_top1"])
    assert run.results["best_epoch"] == best + 1


def test_cifar100_reports_superclass_accuracy(cifar100_dir, tmp_path):
    cfg = tiny_config(cifar100_dir, dataset="cifar100", epochs=1, batch_size=100)
    run = cifarlab.train(cfg, run_dir=tmp_path / "run")
    t = run.results["test"]
    # recomputed independently: the cached logits' predictions, mapped by the fixture's own pairing
    # (coarse label = fine label // 5, see conftest.make_cifar100)
    p = load_cached_predictions(run.path)
    pred, true = p.test_logits.argmax(1), p.test_labels
    assert t["superclass_top1"] == pytest.approx(100 * np.mean(pred // 5 == true // 5))
    assert t["top1"] == pytest.approx(100 * np.mean(pred == true))
    assert len(t["superclass_per_class_accuracy"]) == 20


@pytest.mark.parametrize("stop_step", [6, 8])  # mid-epoch (4 steps/epoch) and at an epoch boundary
def test_resume_matches_uninterrupted_run(cifar10_dir, tmp_path, stop_step):
    cfg = tiny_config(cifar10_dir, ema=True, ema_decay=0.9)
    full = cifarlab.train(cfg, run_dir=tmp_path / "full")
    with pytest.raises(TrainingInterrupted, match="--resume"):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(stop_step),))
    assert json.loads((tmp_path / "part" / "status.json").read_text())["status"] == "interrupted"
    assert load_train_state(tmp_path / "part" / "train-state-last.pt")["position"]["global_step"] == stop_step
    resumed = cifarlab.train(resume=tmp_path / "part")
    assert resumed.results["test"]["top1"] == full.results["test"]["top1"]
    assert resumed.results["test"]["loss"] == pytest.approx(full.results["test"]["loss"], abs=1e-6)
    for a, b in zip(full.rows, resumed.rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
    assert len(resumed.rows) == len(full.rows)


def test_resume_with_validation_and_early_stopping_restores_the_best(cifar10_dir, tmp_path):
    """Interrupted after the best epoch, resumed: the best checkpoint, the best value and the early
    stop are those of the uninterrupted run (min_delta 100 stops after 3 epochs)."""
    cfg = tiny_config(cifar10_dir, val_size=50, epochs=30, early_stopping_patience=2, early_stopping_min_delta=100.0)
    full = cifarlab.train(cfg, run_dir=tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(5),))   # 3 steps/epoch: in epoch 2
    resumed = cifarlab.train(resume=tmp_path / "part")
    for key in ("best_epoch", "epochs_run", "stopped_early"):
        assert resumed.results[key] == full.results[key], key
    assert resumed.results["test"]["top1"] == full.results["test"]["top1"]
    assert [r["val_top1"] for r in resumed.rows] == [r["val_top1"] for r in full.rows]
    a, b = (load_weights(tmp_path / d / "checkpoint-best.safetensors") for d in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tampered_train_state_is_refused_at_resume(cifar10_dir, tmp_path):
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "part", callbacks=(StopAt(2),))
    state = tmp_path / "part" / "train-state-last.pt"

    class Evil:
        marker = tmp_path / "pwned"

        def __reduce__(self):
            return (os.system, (f"touch {self.marker}",))
    probe = Evil()
    probe.marker = tmp_path / "ran"
    torch.save({"position": probe}, tmp_path / "probe.pt")   # a real torch file with a payload in it:
    torch.load(tmp_path / "probe.pt", weights_only=False)     # an unrestricted load does run it
    assert (tmp_path / "ran").exists()
    torch.save({"position": Evil()}, state)
    with pytest.raises(CheckpointError, match="train-state-last.pt is corrupt or unsafe"):
        cifarlab.train(resume=tmp_path / "part")
    assert not (tmp_path / "pwned").exists()
    state.write_bytes(b"\0" * 100)              # zeroed
    with pytest.raises(CheckpointError, match="train-state-last.pt"):
        cifarlab.train(resume=tmp_path / "part")


def test_train_size_keeps_a_stratified_subset(cifar10_dir, tmp_path):
    run = cifarlab.train(tiny_config(cifar10_dir, train_size=100, epochs=1), run_dir=tmp_path / "run")
    assert run.results["train_images"] == 100 and run.rows[0]["step"] == 2   # 100 images, batch 50


def test_cli_models_lists_the_registry(capsys):
    assert cli_main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list_models()
    assert all(model_cfg(ln.split()[0]).description in ln for ln in lines)


def test_resume_with_incompatible_config_is_refused(cifar10_dir, tmp_path):
    cfg = tiny_config(cifar10_dir)
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(2),))
    with pytest.raises(ConfigError, match=r"batch_size: 50 -> 40"):
        cifarlab.train(resume=tmp_path / "part", batch_size=40)
    # a harmless change (thread count, progress bar) is allowed
    run = cifarlab.train(resume=tmp_path / "part", progress=False)
    assert run.results["epochs_run"] == 3


def test_evaluate_reproduces_test_accuracy_and_writes_files(cifar10_dir, tmp_path):
    run = cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "run")
    m = cifarlab.evaluate(run)  # a Run works where its directory does
    assert m["top1"] == run.results["test"]["top1"]
    assert (run.path / "evaluation.json").is_file()
    out = run.path / "interpretation"  # the same place the report writes them
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "per_class.md"):
        assert (out / name).is_file(), name
    lines = (out / "confusion_matrix.csv").read_text().splitlines()
    assert len(lines) == 11 and sum(int(v) for line in lines[1:] for v in line.split(",")[1:]) == 60
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("nan_step, good_epochs", [(1, 0), (6, 1), (12, 2)])  # epoch 0, mid-run, the last step
def test_nan_loss_stops_and_keeps_last_good_checkpoint(cifar10_dir, tmp_path, monkeypatch, nan_step, good_epochs):
    """tiny_config: 4 steps per epoch, 3 epochs. A NaN loss at ``nan_step`` stops the run; the
    checkpoints on disk are finite and are the weights of the last finished epoch (none before one)."""
    import torch.nn.functional as F
    real = F.cross_entropy
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        out = real(*a, **kw)
        return out * float("nan") if calls["n"] == nan_step else out

    seen = {}
    remember = lambda event, info, model: seen.update(
        {info["epoch"]: {k: v.detach().clone() for k, v in model.state_dict().items()}}) if event == "epoch" else None
    monkeypatch.setattr(F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match=f"step {nan_step}"):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "run", callbacks=(remember,))
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"
    if good_epochs == 0:
        assert not (run / "checkpoint-last.safetensors").exists() and not (run / "checkpoint-best.safetensors").exists()
        return
    assert load_train_state(run / "train-state-last.pt")["position"]["epoch"] == good_epochs
    good = seen[good_epochs - 1]
    for name in ("last", "best"):
        saved = load_weights(run / f"checkpoint-{name}.safetensors")
        assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
        assert all(torch.equal(saved[k], good[k]) for k in good), name



def test_threads_key_does_not_leak_into_the_caller(cifar10_dir, tmp_path):
    before = torch.get_num_threads()
    seen = []
    cifarlab.train(tiny_config(cifar10_dir, epochs=1, threads=before + 1), run_dir=tmp_path / "run",
                   callbacks=(lambda ev, info, m: seen.append(torch.get_num_threads()),))
    assert seen and set(seen) == {before + 1} and torch.get_num_threads() == before


def test_unwritable_run_dir(cifar10_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match="Cannot write the run directory"):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=blocker / "run")


def test_existing_run_dir_is_not_overwritten(cifar10_dir, tmp_path):
    cifarlab.train(tiny_config(cifar10_dir, epochs=1), run_dir=tmp_path / "run")
    with pytest.raises(RunDirError, match="already holds a run"):
        cifarlab.train(tiny_config(cifar10_dir, epochs=1), run_dir=tmp_path / "run")


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "0"], "Bad value 0 for epochs in override: input should be greater than 0"),
    (["--batch-size", "-5"], "Bad value -5 for batch_size in override: input should be greater than 0"),
    (["--model", "airbench49"], "Did you mean airbench94"),
    (["--set", "colour=red"], "Unknown config key 'colour'"),
])
def test_cli_bad_input_is_one_clear_line(cifar10_dir, tmp_path, capsys, args, needle):
    code = cli_main(["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--run-dir",
                     str(tmp_path / "r"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_cli_missing_data_folder(tmp_path, capsys):
    code = cli_main(["train", "--data-dir", str(tmp_path / "none"), "--set", "download=false",
                     "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "cifar-10-batches-py" in err and "https://" in err


def test_cli_train_then_evaluate(cifar10_dir, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model_kwargs: {widths: [8, 16, 16]}\nbatch_size: 50\nchannels_last: false\n")
    code = cli_main(["train", "--data-dir", str(cifar10_dir), "--config", str(cfg), "--epochs", "1",
                     "--run-dir", str(tmp_path / "r"), "--no-progress", "--set", "download=false"])
    assert code == 0 and "test top-1" in capsys.readouterr().out
    saved = Run.load(tmp_path / "r").config
    assert saved.batch_size == 50 and saved.epochs == 1 and saved.label_smoothing == 0.2  # recipe kept
    assert cli_main(["evaluate", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out[:out.index("}") + 1])
    results = Run.load(tmp_path / "r").results["test"]
    assert shown == {k: results[k] for k in ("top1", "top5", "loss", "ece")}     # the best checkpoint rescored
    assert json.loads((tmp_path / "r" / "evaluation.json").read_text())["top1"] == results["top1"]


def test_evaluate_incomplete_run_says_what_is_missing(cifar10_dir, tmp_path):
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "part", callbacks=(StopAt(2),))
    with pytest.raises(RunDirError, match="results.json"):
        cifarlab.evaluate(tmp_path / "part")


def test_lr_schedules():
    assert lr_multiplier(0, 100, 0, "linear", 0.0) == 1.0
    assert lr_multiplier(50, 100, 0, "linear", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(4, 100, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(100, 100, 0, "cosine", 0.1) == pytest.approx(0.1)
    peak = max(lr_multiplier(s, 100, 0, "onecycle", 0.0) for s in range(100))
    assert peak == pytest.approx(1.0, abs=1e-3) and lr_multiplier(0, 100, 0, "onecycle", 0.0) == pytest.approx(0.04)
    assert math.isclose(lr_multiplier(99, 100, 0, "constant", 0.0), 1.0)


def test_warmup_stable_decay_holds_the_peak_then_decays_over_the_last_steps():
    # 100 steps, 10 of warmup, decay over the last 40: peak from step 9 to step 60, zero at the end
    m = [lr_multiplier(s, 100, 10, "linear", 0.0, decay=40) for s in range(101)]
    assert m[0] == pytest.approx(0.1) and m[9] == 1.0
    assert all(x == 1.0 for x in m[9:61]) and m[61] < 1.0
    assert m[80] == pytest.approx(0.5) and m[100] == 0.0
    assert lr_multiplier(80, 100, 0, "cosine", 0.0, decay=40) == pytest.approx(0.5)
    # decay=0 is the plain schedule; a decay longer than what follows warmup starts after warmup
    assert lr_multiplier(30, 100, 0, "linear", 0.0, decay=0) == pytest.approx(0.7)
    assert lr_multiplier(30, 100, 10, "linear", 0.0, decay=500) == lr_multiplier(30, 100, 10, "linear", 0.0)


def test_decay_epochs_holds_the_peak_lr_in_a_training_run(cifar10_dir, tmp_path):
    # 3 epochs, decay over the last 1: the lr set at the last step of epochs 1 and 2 is still the peak
    cifarlab.train(tiny_config(cifar10_dir, decay_epochs=1, tta=0), run_dir=tmp_path / "run")
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    spe = epochs[0]["step"]
    assert [e["lr_mult"] for e in epochs[:2]] == [1.0, 1.0]
    assert epochs[2]["lr_mult"] == pytest.approx(1 / spe)
    assert epochs[0]["lr"]["filters"] == pytest.approx(0.24)


def test_decay_epochs_is_checked_against_the_run_and_the_schedule():
    with pytest.raises(ConfigError, match=r"decay_epochs \(7.5\) must be in \[0, epochs - warmup_epochs = 7\]"):
        TrainConfig(epochs=8, warmup_epochs=1, decay_epochs=7.5).validate()
    assert TrainConfig(epochs=8, warmup_epochs=1, decay_epochs=7).validate().decay_epochs == 7   # the bound is inclusive
    with pytest.raises(ConfigError, match="linear and cosine"):
        TrainConfig(epochs=8, schedule="onecycle", decay_epochs=4).validate()
    assert TrainConfig(epochs=8, decay_epochs=4).validate().decay_epochs == 4


def test_progress_bar_shows_epoch_loss_accuracy_and_throughput(cifar10_dir, tmp_path, capsys):
    cifarlab.train(tiny_config(cifar10_dir, progress=True), run_dir=tmp_path / "run")
    err = capsys.readouterr().err
    assert "epoch 1/3" in err and "epoch 3/3" in err
    assert "loss=" in err and "acc=" in err and "img_s=" in err


def test_a_run_refused_while_being_assembled_is_marked_failed(cifar10_dir, tmp_path):
    """Bad model_kwargs surface only when the model is built, after the run directory exists: its
    status then says failed, and why, instead of staying 'running'."""
    with pytest.raises(ConfigError, match="widths must be three positive integers"):
        cifarlab.train(tiny_config(cifar10_dir, model_kwargs={"widths": [1]}), run_dir=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "widths" in status["reason"]


def test_a_run_that_fails_after_training_is_marked_failed(cifar10_dir, tmp_path, monkeypatch):
    """The status rule covers the whole run, scoring included: an error there leaves 'failed' with
    the reason, not 'running'."""
    import importlib
    wt = importlib.import_module("cifarlab.workflow.train")  # the module (the package's name is the function)

    def broken_score(*args, **kwargs):
        raise RuntimeError("scoring broke")
    monkeypatch.setattr(wt, "_score", broken_score)
    with pytest.raises(RuntimeError, match="scoring broke"):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status == {"status": "failed", "reason": "scoring broke"}


def test_whitening_bias_trains_for_its_epochs_then_stays(cifar10_dir, tmp_path):
    """airbench's stem bias trains for ``whiten_bias_epochs`` (4 steps here), then is frozen; a network
    handed over with the bias already frozen (as a finished run leaves it) trains it too: the loop
    decides, not the network's last run."""
    from cifarlab.models import create_model
    net = create_model("airbench94", num_classes=10, widths=[8, 16, 16])
    net.step_hook(4)(10)  # the hook freezes the bias after its steps, as a finished run leaves it
    assert not net.whiten.bias.requires_grad
    seen = []
    cifarlab.train(tiny_config(cifar10_dir, epochs=2, tta=0), run_dir=tmp_path / "run", model=net,
                   callbacks=(lambda ev, info, m: ev == "step" and seen.append(m.whiten.bias.detach().clone()),))
    assert len(seen) == 8
    assert all(not torch.equal(a, b) for a, b in zip(seen[:3], seen[1:4]))   # steps 2, 3 and 4 move it
    assert all(torch.equal(seen[3], b) for b in seen[4:])                     # steps 5-8 do not
