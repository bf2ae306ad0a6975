"""torchrun + DistributedDataParallel on CPU (gloo): 2 processes against 1, and resume across them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import StopAt, tiny_config

import cifarlab
from cifarlab.recipes import resolve_config
from cifarlab.training import TrainingInterrupted

TINY = ["--set", "model_kwargs={widths: [8, 16, 16]}", "--batch-size", "50", "--no-progress", "--threads", "1",
        "--set", "whiten_bias_epochs=1", "--set", "channels_last=false", "--set", "eval_batch_size=64",
        "--set", "download=false"]


def _launch(target: list[str], nproc: int, timeout=300) -> subprocess.CompletedProcess:
    """``python TARGET`` (``["-m", "cifarlab", ...]`` or ``[script, ...]``) in one process, or under torchrun
    in ``nproc``, each of one thread; the exit status is the caller's to check."""
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run(launcher + target, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _run(args, nproc: int, timeout=300):
    p = _launch(["-m", "cifarlab", *args], nproc, timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def _losses(run_dir):
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_follow_the_one_process_loss_curve(cifar10_dir, tmp_path):
    common = ["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "4", *TINY]
    _run(common + ["--run-dir", str(tmp_path / "one")], 1)
    p = _run(common + ["--run-dir", str(tmp_path / "two")], 2)
    assert p.stdout.count("test top-1") == 1                      # only rank 0 reports
    assert p.stderr.count("train split holds 200 images") == 1    # and warns
    assert "find_unused_parameters" not in p.stderr               # DDP built without the search (no warning)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    # same global batch of 50 (25 per rank): BatchNorm statistics per rank make it close, not equal
    for a, b in zip(one, two):
        assert abs(a - b) / a < 0.1, (one, two)
    r = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r["distributed"] == {"world_size": 2, "backend": "gloo"} and r["train_images"] == 200
    writers = {f.name.split(".")[-2] for f in (tmp_path / "two").glob("events.out.tfevents.*")}  # their pids
    assert len(writers) == 1                                      # rank 0 alone wrote (scalars, then hparams)
    assert r["test"]["top1"] >= 90


CHILD = Path(__file__).with_name("ddp_child.py")   # ReplicatedForward under torchrun, on a small net

NO_BN = ["--model", "lenet", "--precision", "fp32", "--batch-size", "50", "--tta", "0", "--no-progress", "--threads",
         "1", "--set", "eval_batch_size=64", "--set", "download=false", "--set", "channels_last=false"]


def test_two_processes_equal_one_on_a_model_without_batchnorm(cifar10_dir, tmp_path):
    """LeNet in fp32: nothing is per rank, so two ranks of 25 images must train exactly like one
    process of 50 (up to float summation order): a rank training on the other's slice, a missing
    gradient average or unsummed metrics would show here."""
    common = ["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "3", *NO_BN]
    _run(common + ["--run-dir", str(tmp_path / "one")], 1)
    _run(common + ["--run-dir", str(tmp_path / "two")], 2)
    rows = {k: [json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()] for k in ("one", "two")}
    for a, b in zip(rows["one"], rows["two"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_top1"] == a["train_top1"]          # summed over ranks: the same counts
    r1, r2 = (json.loads((tmp_path / k / "results.json").read_text()) for k in ("one", "two"))
    assert r2["distributed"]["world_size"] == 2 and "distributed" not in r1
    assert r2["test"]["loss"] == pytest.approx(r1["test"]["loss"], rel=1e-4)


def test_resume_in_two_processes_matches_the_uninterrupted_run(cifar10_dir, tmp_path):
    """A one-process run interrupted at step 6 and resumed by two processes ends where one process,
    uninterrupted, ends (LeNet in fp32, so the world size itself changes nothing)."""
    common = ["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "3", *NO_BN]
    _run(common + ["--run-dir", str(tmp_path / "full")], 1)
    cfg = resolve_config(None, dict(  # what the CLI resolves for the same flags
        dataset="cifar10", data_dir=str(cifar10_dir), epochs=3, model="lenet", precision="fp32", batch_size=50,
        tta=0, progress=False, threads=1, eval_batch_size=64, download=False, channels_last=False))
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(6),))
    _run(["train", "--resume", str(tmp_path / "part"), "--no-progress"], 2)
    full, part = (json.loads((tmp_path / k / "results.json").read_text()) for k in ("full", "part"))
    assert part["test"]["loss"] == pytest.approx(full["test"]["loss"], rel=1e-4)
    assert _losses(tmp_path / "part") == pytest.approx(_losses(tmp_path / "full"), rel=1e-5)


def test_resume_with_two_processes(cifar10_dir, tmp_path):
    cfg = tiny_config(cifar10_dir, epochs=4, threads=1)
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(8),))
    _run(["train", "--resume", str(tmp_path / "part"), "--no-progress"], 2)
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "part" / "status.json").read_text())["status"] == "complete"


def test_distributed_refuses_freezing_strategies(cifar10_dir, tmp_path):
    args = ["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "2", *TINY,
            "--strategy", "fine-tune", "--run-dir", str(tmp_path / "x")]
    p = _launch(["-m", "cifarlab", *args], 2)
    assert p.returncode != 0 and "supports strategy scratch or full" in p.stderr


@pytest.mark.parametrize("spare", ["none", "spare"])
def test_ddp_is_rebuilt_when_a_parameter_stops_training_and_searches_only_for_unused_ones(tmp_path, spare):
    """Two ranks' averaged gradients equal one process's on the whole batch, before and after a
    parameter stops training (DDP built again over the rest); DDP searches for unused parameters only
    when the probe finds one, so torch's "did not find any unused parameters" warning is gone."""
    p = _launch([str(CHILD), spare, str(tmp_path)], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "find_unused_parameters" not in p.stderr
    assert p.stderr.count("2 parameters of the model get no gradient") == (spare == "spare")   # rank 0 says so
    from ddp_child import batch, net   # tests/ is on sys.path, as for helpers
    model, x = net(spare == "spare"), batch()
    (model(x).sum() / 2).backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["find_unused"] is (spare == "spare")
        assert got["unused"] == (["spare.weight", "spare.bias"] if spare == "spare" else [])
        for step, grads in enumerate(got["grads"]):
            assert set(grads) == set(want) - ({"a.bias"} if step == 2 else set()), step
            for n, g in grads.items():
                torch.testing.assert_close(g, want[n], rtol=1e-5, atol=1e-6)


def test_ddp_stops_with_a_clear_error_when_a_later_step_leaves_a_parameter_unused(tmp_path):
    """The probe sees the first step: a layer skipped on the third step alone stops the fourth with
    cifarlab's message (what happened, how to go on), not torch's reducer error."""
    p = _launch([str(CHILD), "skip", str(tmp_path)], 2)
    assert p.returncode != 0
    assert "ConfigError: Distributed training stopped: on the last step the model left parameters" in p.stderr
    assert "Expected to have finished reduction" not in p.stderr


def test_the_unused_parameter_probe_names_them_and_leaves_the_model_and_random_stream_alone():
    """The probe runs a training-mode pass with dropout and BatchNorm: it names the layer the forward
    pass skips, and the model's statistics, gradients and the random stream are as before."""
    from torch import nn
    from cifarlab.training.distributed import unused_parameters

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.drop = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)
            self.spare = nn.Linear(2, 2)

        def forward(self, x):
            return self.drop(self.bn(self.conv(x))).mean((2, 3))

    net = Net().train()
    stats = {k: v.clone() for k, v in net.bn.state_dict().items()}
    torch.manual_seed(3)
    assert unused_parameters(net, torch.randn(2, 3, 8, 8)) == ["spare.weight", "spare.bias"]
    after = torch.rand(4)
    torch.manual_seed(3)
    torch.randn(2, 3, 8, 8)
    assert torch.equal(after, torch.rand(4))                                 # the probe drew nothing
    assert all(torch.equal(v, net.bn.state_dict()[k]) for k, v in stats.items())
    assert all(p.grad is None for p in net.parameters())
