"""torchrun + DistributedDataParallel on CPU (gloo): 2 processes against 1, and resume across them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import tiny_config

import cifarlab
from cifarlab.training import TrainingInterrupted

TINY = ["--set", "model_kwargs={widths: [8, 16, 16]}", "--batch-size", "50", "--no-progress", "--threads", "1",
        "--set", "whiten_bias_epochs=1", "--set", "channels_last=false", "--set", "eval_batch_size=64",
        "--set", "download=false"]


def _run(args, nproc: int, timeout=300):
    launcher = [sys.executable, "-m", "cifarlab"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "cifarlab"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(launcher + args, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def _losses(run_dir):
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_follow_the_one_process_loss_curve(cifar10_dir, tmp_path):
    common = ["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "4", *TINY]
    _run(common + ["--run-dir", str(tmp_path / "one")], 1)
    p = _run(common + ["--run-dir", str(tmp_path / "two")], 2)
    assert p.stdout.count("test top-1") == 1                      # only rank 0 reports
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    # same global batch of 50 (25 per rank): BatchNorm statistics per rank make it close, not equal
    for a, b in zip(one, two):
        assert abs(a - b) / a < 0.1, (one, two)
    r = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r["distributed"] == {"world_size": 2, "backend": "gloo"} and r["train_images"] == 200
    assert len(list((tmp_path / "two").glob("events.out.tfevents.*"))) == 1   # rank 0 alone wrote
    assert r["test"]["top1"] >= 90


def test_resume_with_two_processes(cifar10_dir, tmp_path):
    class Stop:
        def __call__(self, event, info, model):
            if event == "step" and info["global_step"] == 8:
                raise KeyboardInterrupt
    cfg = tiny_config(cifar10_dir, epochs=4, threads=1)
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(Stop(),))
    _run(["train", "--resume", str(tmp_path / "part"), "--no-progress"], 2)
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "part" / "status.json").read_text())["status"] == "complete"


def test_distributed_refuses_freezing_strategies(cifar10_dir, tmp_path):
    args = ["train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "2", *TINY,
            "--strategy", "fine-tune", "--run-dir", str(tmp_path / "x")]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cifarlab"]
    p = subprocess.run(launcher + args, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode != 0 and "supports strategy scratch or full" in p.stderr
