"""The CUDA path, on a machine with an NVIDIA GPU (skipped elsewhere; ``benchmarks/gpu_check.sh``
runs them there): the precision auto picks, fp16 with a gradient scaler and its resume, bf16,
the device loader and augmentation, channels_last, a one-process nccl start under torchrun, and the
out-of-memory message with the CUDA allocator's figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import StopAt, tiny_config

import cifarlab
from cifarlab.training import TrainingInterrupted, TrainingOutOfMemory
from cifarlab.workflow.setup import assemble

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]

NATIVE_BF16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def gpu(data_dir, **kw):
    return tiny_config(data_dir, device="cuda", **kw)


def test_auto_trains_in_the_gpus_native_format_and_records_it(cifar10_dir, tmp_path):
    run = cifarlab.train(gpu(cifar10_dir), run_dir=tmp_path / "run")
    rec = run.results["precision"]
    assert rec["requested"] == "auto" and rec["used"] == ("bf16" if NATIVE_BF16 else "fp16")
    assert rec["grad_scaler"] == (not NATIVE_BF16)
    assert run.results["environment"]["gpu"] == torch.cuda.get_device_name()
    assert 0 < run.results["peak_memory_bytes"] < torch.cuda.get_device_properties(0).total_memory
    assert run.results["test"]["top1"] > 50


@pytest.mark.skipif(not NATIVE_BF16, reason="this GPU has no native bf16")
def test_bf16_on_cuda_learns(cifar10_dir, tmp_path):
    run = cifarlab.train(gpu(cifar10_dir, precision="bf16"), run_dir=tmp_path / "run")
    assert run.results["precision"]["muon_matmul"] == "bfloat16" and run.results["test"]["top1"] > 50


def test_fp16_with_the_scaler_resumes_to_the_uninterrupted_run(cifar10_dir, tmp_path):
    cfg = gpu(cifar10_dir, precision="fp16")
    full = cifarlab.train(cfg, run_dir=tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(6),))
    state = torch.load(tmp_path / "part" / "train-state-last.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] > 0
    resumed = cifarlab.train(resume=tmp_path / "part")
    assert resumed.results["precision"]["grad_scaler"] and full.results["test"]["top1"] > 50
    assert resumed.results["skipped_batches"] == full.results["skipped_batches"]
    # cuDNN picks kernels per process, so the two runs agree to float rounding, not bit for bit
    assert resumed.results["test"]["loss"] == pytest.approx(full.results["test"]["loss"], rel=2e-2)


def test_the_device_loader_and_augmentation_give_the_cpu_batches_on_the_gpu(cifar10_dir):
    on_gpu, on_cpu = assemble(gpu(cifar10_dir)), assemble(tiny_config(cifar10_dir))
    for split in ("train", "test"):
        a = next(iter(on_gpu.pipes[split].loader.epoch(1)))
        b = next(iter(on_cpu.pipes[split].loader.epoch(1)))
        assert a[0].device.type == "cuda" and a[0].dtype == torch.float32
        torch.testing.assert_close(a[0].cpu(), b[0], atol=1e-5, rtol=0)   # same flips, shifts and order
        assert torch.equal(a[1].cpu(), b[1])


def test_channels_last_on_cuda(cifar10_dir, tmp_path):
    run = cifarlab.train(gpu(cifar10_dir, channels_last=True), run_dir=tmp_path / "run")
    assert run.results["test"]["top1"] > 50


def test_one_process_nccl_start_under_torchrun(cifar10_dir, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "cifarlab",
           "train", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--device", "cuda", "--epochs", "2",
           "--set", "model_kwargs={widths: [8, 16, 16]}", "--batch-size", "50", "--no-progress",
           "--set", "whiten_bias_epochs=1", "--set", "download=false", "--run-dir", str(tmp_path / "run")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["distributed"] == {"world_size": 1, "backend": "nccl"}


def test_out_of_memory_names_the_gpu_figures_and_a_batch_that_fits(cifar10_dir, tmp_path):
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.01)   # ~0.8 GiB of an 80 GiB card
    try:
        with pytest.raises(TrainingOutOfMemory, match=r"Out of GPU memory at batch size 200.*GiB.*--batch-size"):
            cifarlab.train(gpu(cifar10_dir, batch_size=200, img_size=512, epochs=1), run_dir=tmp_path / "run")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
