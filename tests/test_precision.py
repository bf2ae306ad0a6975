"""Precision and threads chosen from the hardware: the resolver's choices on each kind of CPU (the
CPU flags are faked, so every branch runs on any machine), what a run records and prints, fp16
with a gradient scaler (run on the CPU, where torch has fp16 autocast and a CPU GradScaler, so
the scaler's bookkeeping and resume are tested without a GPU), and the one-line errors."""
from __future__ import annotations

import json

import pytest
import torch

import cifarlab
from cifarlab import runtime
from cifarlab.cli import main as cli_main
from cifarlab.config import ConfigError, TrainConfig
from cifarlab.runtime import Precision, resolve_precision
from cifarlab.training import TrainingInterrupted
from cifarlab.workflow import setup as wsetup
from helpers import StopAt, tiny_config

CPU = torch.device("cpu")


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma", "f16c"})


@pytest.fixture
def amx_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


def test_auto_is_fp32_on_a_cpu_without_native_bf16(no_bf16_cpu):
    p = resolve_precision("auto", CPU)
    assert p.name == "fp32" and p.matmul_dtype == torch.float32 and not p.grad_scaler
    assert "no native bf16" in p.reason
    with p():
        assert not torch.is_autocast_enabled("cpu")


def test_auto_is_bf16_where_the_cpu_has_it(amx_cpu):
    p = resolve_precision("auto", CPU)
    assert p.name == "bf16" and p.matmul_dtype == torch.bfloat16
    assert "avx512_bf16" in p.reason
    with p():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_explicit_bf16_on_a_cpu_without_it_is_honoured_and_says_it_is_emulated(no_bf16_cpu):
    p = resolve_precision("bf16", CPU)
    assert p.name == "bf16" and "emulated" in p.reason
    assert p.matmul_dtype == torch.float32  # Muon's products stay fast whatever autocast does


def test_fp16_off_cuda_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU.*auto, bf16 or fp32"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="precision .*'auto', 'bf16', 'fp16' or 'fp32'"):
        TrainConfig().update({"precision": "bfloat16"}).validate()
    assert TrainConfig().precision == "auto"


def test_a_gpu_run_in_fp16_is_scored_elsewhere_in_auto(no_bf16_cpu):
    assert wsetup.precision_context(CPU, "fp16", scoring=True).name == "fp32"
    with pytest.raises(ConfigError):
        wsetup.precision_context(CPU, "fp16")


def test_auto_run_equals_the_explicit_precision_it_chose(cifar10_dir, tmp_path, amx_cpu):
    """On a native-bf16 CPU the default run is the explicit bf16 run, bit for bit, and records it."""
    auto = cifarlab.train(tiny_config(cifar10_dir, epochs=2), run_dir=tmp_path / "auto")
    bf16 = cifarlab.train(tiny_config(cifar10_dir, epochs=2, precision="bf16"), run_dir=tmp_path / "bf16")
    assert auto.results["test"]["loss"] == bf16.results["test"]["loss"]
    assert [r["train_loss"] for r in auto.rows] == [r["train_loss"] for r in bf16.rows]
    rec = auto.results["precision"]
    assert rec["requested"] == "auto" and rec["used"] == "bf16" and rec["muon_matmul"] == "bfloat16"
    assert auto.results["environment"]["cpu_native_bf16"] == "avx512_bf16"
    assert auto.config.precision == "auto"  # config.yaml stays portable: auto again on the next machine


def test_the_run_prints_precision_first_then_its_directory_and_an_estimate(cifar10_dir, tmp_path, capsys,
                                                                             no_bf16_cpu):
    run = cifarlab.train(tiny_config(cifar10_dir, epochs=1, progress=True), run_dir=tmp_path / "run")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[0].startswith("precision fp32: this CPU has no native bf16")
    at = next(i for i, line in enumerate(lines) if line.startswith(f"run directory {run.path}"))
    assert lines[at + 1].startswith("estimate: ") and "for 200 images" in lines[at + 1]
    assert not any(line.startswith("epoch 1/1  train loss") for line in lines[:at])  # printed before training
    assert run.results["precision"]["used"] == "fp32"


def _fp16_on_cpu(monkeypatch, scale: float | None = None):
    """Route the run's precision to fp16 + GradScaler on the CPU (users get fp16 on CUDA only)."""
    monkeypatch.setattr(wsetup, "resolve_precision",
                        lambda name, device: Precision("fp16", "precision fp16 (test, CPU)", "cpu", torch.float32))
    if scale is not None:
        real = torch.amp.GradScaler

        def scaler(device, **kw):
            return real(device, **{**kw, "init_scale": scale})
        monkeypatch.setattr(torch.amp, "GradScaler", scaler)


def test_fp16_overflow_steps_are_skipped_and_counted_not_divergence(cifar10_dir, tmp_path, monkeypatch):
    """A loss scale far too large makes the first steps' scaled gradients overflow: the scaler skips
    them and lowers its scale, the run goes on, learns, and counts the skipped steps."""
    _fp16_on_cpu(monkeypatch, scale=2.0 ** 15)
    run = cifarlab.train(tiny_config(cifar10_dir, epochs=6), run_dir=tmp_path / "run")
    assert run.results["precision"]["used"] == "fp16" and run.results["precision"]["grad_scaler"]
    assert 1 <= run.results["skipped_batches"] < 24
    assert json.loads((run.path / "status.json").read_text())["status"] == "complete"
    assert run.results["test"]["top1"] > 50


def test_fp16_resume_restores_the_scaler_and_matches_the_uninterrupted_run(cifar10_dir, tmp_path, monkeypatch):
    _fp16_on_cpu(monkeypatch, scale=2.0 ** 15)  # a few overflow skips early: the scale must be resumed too
    full = cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "part", callbacks=(StopAt(10),))
    state = torch.load(tmp_path / "part" / "train-state-last.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] < 2.0 ** 15
    resumed = cifarlab.train(resume=tmp_path / "part")
    assert resumed.results["skipped_batches"] == full.results["skipped_batches"] >= 1
    assert resumed.results["test"]["loss"] == pytest.approx(full.results["test"]["loss"], abs=1e-6)
    assert [r["train_loss"] for r in resumed.rows] == pytest.approx([r["train_loss"] for r in full.rows])


@pytest.mark.parametrize("args,needle", [
    (["--precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--precision", "bfloat16"], "invalid choice: 'bfloat16' (choose from 'auto', 'bf16', 'fp16', 'fp32')"),
    (["--threads", "0"], "Bad value 0 for threads in override: input should be greater than 0"),
])
def test_cli_precision_and_thread_mistakes_are_one_line(cifar10_dir, tmp_path, capsys, no_bf16_cpu, args, needle):
    try:
        code = cli_main(["train", "--data-dir", str(cifar10_dir), "--run-dir", str(tmp_path / "r"), *args])
    except SystemExit as e:  # argparse's own refusals exit from inside the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before a run directory is made


def test_the_loss_scale_starts_lower_for_a_summed_batch():
    fp16 = Precision("fp16", "", "cpu")
    assert runtime.grad_scaler_for(fp16).get_scale() == 2.0 ** 16
    assert runtime.grad_scaler_for(fp16, 2000).get_scale() == 2.0 ** 5
    assert runtime.grad_scaler_for(Precision("bf16", "", "cpu"), 2000) is None


def test_threads_default_is_capped_at_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(runtime, "physical_cores", lambda: 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert runtime.default_threads(None) == 1
    assert runtime.default_threads(3) == 3
    monkeypatch.setattr(runtime, "physical_cores", lambda: 8)
    assert runtime.default_threads(None) is None  # torch's own setting kept


def test_a_cuda_failure_in_a_step_is_a_device_error_not_a_bug():
    from cifarlab.workflow.errors import USER_ERRORS, exit_code
    cuda = torch.device("cuda")
    err = runtime.device_failure(RuntimeError("CUDA error: no kernel image is available for execution on the "
                                              "device\nCUDA kernel errors might be asynchronously reported"), cuda)
    assert isinstance(err, runtime.DeviceError) and isinstance(err, USER_ERRORS) and exit_code(err) == 2
    assert "no kernel image" in str(err) and "--device cpu" in str(err) and "asynchronously" not in str(err)
    assert runtime.device_failure(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), cuda) is None
    assert runtime.device_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), cuda) is None
    assert runtime.device_failure(RuntimeError("CUDA error: no kernel image"), CPU) is None


def test_resuming_on_a_machine_that_picks_another_precision_says_so(cifar10_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512_bf16"})
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(tiny_config(cifar10_dir), run_dir=tmp_path / "part", callbacks=(StopAt(5),))
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2"})
    with pytest.warns(UserWarning, match="trained in bf16 until now and goes on in fp32"):
        run = cifarlab.train(resume=tmp_path / "part")
    assert run.results["precision"]["used"] == "fp32"
