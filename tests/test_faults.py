"""Fault injection: the faults that end long runs on shared machines, planted on purpose.

SIGKILL anywhere (a step, a checkpoint write half done, between two renames), disk full at each
kind of write, a second process on one run directory, NaN at a chosen step, damaged checkpoint
and train-state files, a shard cut while streaming, out of memory. Each must end with a clear
message, nothing already written lost, and (where it applies) a resume identical to the
uninterrupted run. The table of these faults is RELIABILITY.md.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cifarlab
from cifarlab.cli import main as cli_main
from cifarlab.files import FolderInUse, StorageError
from cifarlab.runs import RunDir
from cifarlab.training import CheckpointError, TrainingDiverged, TrainingOutOfMemory, load_weights
from helpers import tiny_config

CHILD = Path(__file__).with_name("fault_child.py")
TRAIN_MODULE = importlib.import_module("cifarlab.workflow.train")  # the module; cifarlab.workflow.train is the function


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted run every faulted run is compared with: the CIFAR-10 recipe (tiny widths)
    with a validation split and EMA, 4 epochs of 3 steps, from a YAML config file. One CPU thread,
    so the child processes and this one sum in the same order whatever the machine's core count."""
    from conftest import make_cifar10
    root = tmp_path_factory.mktemp("faults")
    data = make_cifar10(root / "data")
    cfg = tiny_config(data, val_size=50, epochs=4, ema=True, ema_decay=0.9, threads=1)
    config = root / "config.yaml"
    config.write_text(cfg.to_yaml())
    run = cifarlab.train(config, run_dir=root / "reference")
    return {"config": config, "run": run, "data": data, "root": root}


def assert_same_as_reference(run_dir: Path, ref, released: bool | None = True) -> None:
    """Bit-identical to the uninterrupted run: test metrics, every metrics row, final weights; no
    temporary file left, and the lock given back (``released`` True), left stale (False), or either
    (None: a process killed while exiting may die just before or just after giving it back)."""
    got = json.loads((run_dir / "results.json").read_text())
    want = ref["run"].results
    assert got["test"]["top1"] == want["test"]["top1"] and got["test"]["loss"] == want["test"]["loss"]
    assert got["best_epoch"] == want["best_epoch"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in ref["run"].rows]
    for name in ("best", "last"):
        a = load_weights(run_dir / f"checkpoint-{name}.safetensors")
        b = load_weights(ref["run"].path / f"checkpoint-{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    assert not list(run_dir.glob(".*.tmp-*"))
    assert released is None or (run_dir / ".lock").exists() != released


def run_child(mode: str, arg, config: Path, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHILD), mode, str(arg), str(config), str(run_dir)],
                          capture_output=True, text=True, timeout=300, cwd=CHILD.parent)


def resume(run_dir: Path, config: Path):
    """What a user does after a crash: --resume; or, killed before the config was saved, the same
    command again."""
    if (run_dir / "config.yaml").is_file():
        return cifarlab.train(resume=run_dir)
    return cifarlab.train(config, run_dir=run_dir)


def fsync_failing(match: str, code: int = errno.ENOSPC):
    """An ``os.fsync`` that fails with ``code`` for files whose path contains ``match`` (a full disk
    often shows first at fsync, when delayed allocation finds no block)."""
    real = os.fsync

    def fsync(fd):
        if match in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)
    return fsync


# ---------------------------------------------------------------------------------------------- SIGKILL
TRIALS = 24


def test_sigkill_anywhere_then_resume_is_bit_identical(ref, tmp_path):
    """24 trials, each killed at a random point of one kind: after a random step, at a random time,
    half-way through a random temporary-file write, before or just after a random checkpoint rename.
    Every resumed run ends bit-identical to the uninterrupted one."""
    rng = random.Random(2026)
    kinds = [("step", lambda: rng.randint(1, 12)), ("timer", lambda: round(rng.uniform(0.0, 0.8), 2)),
             ("fsync", lambda: rng.randint(1, 14)), ("prerename", lambda: rng.randint(1, 14)),
             ("rename", lambda: rng.randint(1, 14))]
    killed, outcomes = 0, []
    for trial in range(TRIALS):
        mode, pick = kinds[trial % len(kinds)]
        arg = pick()
        run_dir = tmp_path / f"trial{trial}"
        child = run_child(mode, arg, ref["config"], run_dir)
        if child.returncode == 0:  # the fault point lay past the end of this short run
            outcomes.append(f"{mode} {arg}: finished first")
            assert_same_as_reference(run_dir, ref)
            continue
        assert child.returncode == -9, child.stderr[-2000:]
        if RunDir(run_dir).status() == "complete":  # killed while exiting
            outcomes.append(f"{mode} {arg}: killed after the run was complete")
            assert_same_as_reference(run_dir, ref, released=None)  # its lock stale, or given back just before
            continue
        killed += 1
        resumed = resume(run_dir, ref["config"])
        assert_same_as_reference(resumed.path, ref)
        outcomes.append(f"{mode} {arg}: killed, resumed identical")
    print("\n".join(outcomes))
    assert killed >= 20, outcomes


def test_damaged_last_train_state_falls_back_to_the_previous(ref, tmp_path):
    child = run_child("step", 10, ref["config"], tmp_path / "run")  # epoch 4 (3 steps an epoch)
    assert child.returncode == -9
    run_dir = tmp_path / "run"
    last, prev = run_dir / "train-state-last.pt", run_dir / "train-state-prev.pt"
    assert last.is_file() and prev.is_file()
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated
    with pytest.warns(UserWarning, match="Resuming from train-state-prev.pt"):
        resumed = cifarlab.train(resume=run_dir)
    assert_same_as_reference(resumed.path, ref)


def test_both_train_states_damaged_names_them_and_the_way_out(ref, tmp_path, capsys):
    assert run_child("step", 10, ref["config"], tmp_path / "run").returncode == -9
    run_dir = tmp_path / "run"
    for name in ("last", "prev"):
        (run_dir / f"train-state-{name}.pt").write_bytes(b"\0" * 4096)  # zeroed
    code = cli_main(["train", "--resume", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "train-state-last.pt" in err and "train-state-prev.pt" in err and "rm " in err
    for name in ("last", "prev"):  # the way out it gives: delete both, resume = train from the start
        (run_dir / f"train-state-{name}.pt").unlink()
    with pytest.warns(UserWarning, match="before its first checkpoint"):
        resumed = cifarlab.train(resume=run_dir)
    assert_same_as_reference(resumed.path, ref)


def test_evaluate_on_a_damaged_checkpoint_names_it(ref, tmp_path, capsys):
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(ref["run"].path, run_dir)
    best = run_dir / "checkpoint-best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    code = cli_main(["evaluate", str(run_dir), "--data-dir", str(ref["data"])])
    err = capsys.readouterr().err
    assert code == 2 and str(best) in err and "damaged" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- disk full
@pytest.mark.parametrize("target", ["checkpoint-best.safetensors", "train-state-last.pt", "checkpoint-last.safetensors",
                                    "metrics.jsonl"])
def test_disk_full_during_training_keeps_the_last_checkpoint_and_resumes(ref, tmp_path, monkeypatch, target):
    """The write of ``target`` fails with ENOSPC from epoch 3 on: the run stops with a StorageError
    naming the file, the free bytes and the way on; once space is back, --resume ends identical."""
    run_dir = tmp_path / "run"
    real, writes = os.fsync, {"n": 0}

    def fsync(fd):  # the first two epochs' writes of target succeed
        if target in os.readlink(f"/proc/self/fd/{fd}"):
            writes["n"] += 1
            if writes["n"] > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageError, match="Out of space") as e:
        cifarlab.train(ref["config"], run_dir=run_dir)
    msg = str(e.value)
    assert target in msg and "free" in msg and f"cifarlab train --resume {run_dir}" in msg
    assert "last good epoch (2)" in msg
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    monkeypatch.setattr(os, "fsync", real)  # space freed
    assert_same_as_reference(cifarlab.train(resume=run_dir).path, ref)


@pytest.mark.parametrize("target", ["results.json", "predictions.npz", "config.yaml"])
def test_disk_full_at_the_other_run_files_is_one_clear_line(ref, tmp_path, monkeypatch, capsys, target):
    monkeypatch.setattr(os, "fsync", fsync_failing(target))
    code = cli_main(["train", "--config", str(ref["config"]), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 4 and target in err and "Out of space" in err and "Traceback" not in err
    assert not (tmp_path / "run" / target).exists()  # nothing half-written under the real name


def test_read_only_run_directory_is_one_clear_line(ref, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "fsync", fsync_failing("train-state-last", errno.EROFS))
    code = cli_main(["train", "--config", str(ref["config"]), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 4 and "Read-only file system" in err and "train-state-last.pt" in err and "Traceback" not in err


def test_a_real_file_size_limit_ends_with_exit_4_not_a_traceback(ref, tmp_path):
    """Not monkeypatched: the kernel refuses writes past RLIMIT_FSIZE (EFBIG) in a child process."""
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000)); "
              "from cifarlab.cli import main; sys.exit(main(sys.argv[1:]))")
    child = subprocess.run([sys.executable, "-c", script, "train", "--config", str(ref["config"]),
                            "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert child.returncode == 4, child.stderr[-3000:]
    assert "Out of space" in child.stderr and "File too large" in child.stderr
    assert "Traceback" not in child.stderr


@pytest.mark.parametrize("kind", ["store", "shards"])
def test_disk_full_while_packing_data(ref, tmp_path, monkeypatch, capsys, kind):
    match = "images.u8" if kind == "store" else ".tar"
    monkeypatch.setattr(os, "fsync", fsync_failing(match))
    out = tmp_path / "out"
    code = cli_main(["data", "pack" if kind == "store" else "shard", "cifar10", str(out), "--data-dir",
                     str(ref["data"])])
    err = capsys.readouterr().err
    assert code == 4 and "Out of space" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists() and not (out / "dataset.json").exists()


# ---------------------------------------------------------------------------------------------- two processes
def test_second_process_on_a_live_run_is_refused_then_a_stale_lock_is_taken_over(ref, tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, str(CHILD), "hold", "0.5", str(ref["config"]), str(run_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CHILD.parent)
    try:
        assert holder.stdout.readline().strip() == "training"
        for args in (["train", "--resume", str(run_dir)],
                     ["train", "--config", str(ref["config"]), "--run-dir", str(run_dir)]):
            code = cli_main(args)
            err = capsys.readouterr().err
            assert code == 2 and f"pid {holder.pid}" in err and "in use" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    lock = json.loads((run_dir / ".lock").read_text())
    assert lock["pid"] == holder.pid and lock["command"] == "train"
    with pytest.warns(UserWarning, match=f"taking over the lock left by pid {holder.pid}"):
        resumed = cifarlab.train(resume=run_dir)
    assert_same_as_reference(resumed.path, ref)


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    from cifarlab.files import lock_folder
    with lock_folder(tmp_path, "first"):
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
            with lock_folder(tmp_path, "second"):
                pass
    with lock_folder(tmp_path, "third") as info:  # released: free again, no takeover note
        assert info["command"] == "third"
    assert not (tmp_path / ".lock").exists()


# ---------------------------------------------------------------------------------------------- NaN
def _poison_step(monkeypatch, steps: set[int]):
    """The training loss (the calls with label smoothing, not validation's) is NaN at ``steps`` (1-based)."""
    import torch.nn.functional as F
    real, calls = F.cross_entropy, {"n": 0}

    def poisoned(*a, **kw):
        out = real(*a, **kw)
        if "label_smoothing" not in kw:
            return out
        calls["n"] += 1
        return out * float("nan") if calls["n"] in steps else out
    monkeypatch.setattr(F, "cross_entropy", poisoned)


def test_nan_gradient_stops_the_run_naming_the_step(ref, tmp_path):
    def poison_grad(event, info, model):
        if event == "step" and info["global_step"] == 4:
            p = [p for p in model.parameters() if p.requires_grad][-1]  # the head: always trained
            p.register_hook(lambda g: g * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"a gradient became NaN/inf at epoch 2 \(step 5\)"):
        cifarlab.train(ref["config"], run_dir=tmp_path / "run", callbacks=(poison_grad,))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "diverged" and status["step"] == 4
    assert not (tmp_path / "run" / "results.json").exists()


def test_nan_weight_stops_the_run_and_nothing_non_finite_is_saved(ref, tmp_path):
    def poison_buffer(event, info, model):  # BatchNorm statistics: the loss stays finite, the weights are not
        if event == "step" and info["global_step"] == 7:
            bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="step 8|end of epoch 3"):
        cifarlab.train(ref["config"], run_dir=tmp_path / "run", callbacks=(poison_buffer,))
    for f in (tmp_path / "run").glob("checkpoint-*.safetensors"):
        assert all(torch.isfinite(v).all() for v in load_weights(f).values() if v.is_floating_point()), f.name


def test_nan_validation_loss_stops_the_run(ref, tmp_path, monkeypatch):
    real = TRAIN_MODULE.loss_and_top1
    calls = {"n": 0}

    def val(*a):
        calls["n"] += 1
        out = real(*a)
        return {**out, "loss": float("nan")} if calls["n"] == 2 else out
    monkeypatch.setattr(TRAIN_MODULE, "loss_and_top1", val)
    with pytest.raises(TrainingDiverged, match="validation loss became nan at the end of epoch 2"):
        cifarlab.train(ref["config"], run_dir=tmp_path / "run")
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_test_loss_is_not_recorded_as_complete(ref, tmp_path, monkeypatch):
    real = TRAIN_MODULE.classification_metrics
    monkeypatch.setattr(TRAIN_MODULE, "classification_metrics", lambda *a: {**real(*a), "loss": float("inf")})
    with pytest.raises(TrainingDiverged, match="test loss"):
        cifarlab.train(ref["config"], run_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_issues_lr_1e9_run_exits_3_without_results(ref, tmp_path, capsys):
    code = cli_main(["train", "--model", "resnet18", "--lr", "1e9", "--train-size", "200", "--epochs", "1",
                     "--batch-size", "100", "--set", "img_size=32", "--data-dir", str(ref["data"]),
                     "--set", "download=false", "--no-progress", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3 and "diverged" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "run" / "checkpoint-best.safetensors").exists()


def test_skip_batch_skips_and_counts_then_gives_up_on_a_streak(ref, tmp_path, monkeypatch):
    _poison_step(monkeypatch, {3, 8})
    run = cifarlab.train(ref["config"], run_dir=tmp_path / "skip", on_nan="skip-batch")
    assert run.results["skipped_batches"] == 2 and run.rows[-1]["skipped_batches"] == 2
    assert np.isfinite(run.results["test"]["loss"])
    _poison_step(monkeypatch, set(range(2, 40)))
    with pytest.raises(TrainingDiverged, match="after 10 skipped batches in a row"):
        cifarlab.train(ref["config"], run_dir=tmp_path / "streak", on_nan="skip-batch")


# ---------------------------------------------------------------------------------------------- memory
def test_out_of_memory_suggests_a_batch_size(ref, tmp_path, monkeypatch, capsys):
    """The forward pass of step 5 (epoch 2) fails as the CPU allocator does for a 64 GiB request."""
    import cifarlab.training.loop as loop
    calls = {"n": 0}

    def exploding_step(self, x, y, epoch, _real=loop.Trainer.step):
        calls["n"] += 1
        if calls["n"] == 5:
            def boom(*a, **kw):
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate "
                                   "memory: you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate "
                                   "memory)")
            self.fwd, saved = boom, self.fwd
            try:
                return _real(self, x, y, epoch)
            finally:
                self.fwd = saved
        return _real(self, x, y, epoch)
    monkeypatch.setattr(loop.Trainer, "step", exploding_step)
    code = cli_main(["train", "--config", str(ref["config"]), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 4 and "Out of host memory at batch size 50" in err and "Traceback" not in err
    suggested = int(err.split("start a new run with --batch-size ")[1].split()[0])
    assert 1 <= suggested < 50
    assert "last good epoch (1)" in err


def test_a_real_bug_is_not_mistaken_for_out_of_memory(ref, tmp_path, monkeypatch):
    import cifarlab.training.loop as loop

    def broken(self, x, y, epoch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    monkeypatch.setattr(loop.Trainer, "step", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        cifarlab.train(ref["config"], run_dir=tmp_path / "run")


# ---------------------------------------------------------------------------------------------- shards
def test_a_shard_cut_in_half_while_streaming(ref, tmp_path, capsys):
    from cifarlab.data import DataError
    out = tmp_path / "shards"
    assert cli_main(["data", "shard", "cifar10", str(out), "--data-dir", str(ref["data"]), "--shard-size", "50"]) == 0
    shard = out / "train-000002.tar"

    def cut(event, info, model):
        if event == "step" and info["global_step"] == 2:
            shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cfg = tiny_config(ref["data"], dataset=f"shards:{out}", epochs=3, batch_size=50)
    with pytest.raises(DataError, match="train-000002.tar is .* bytes, not"):
        cifarlab.train(cfg, run_dir=tmp_path / "run", callbacks=(cut,))


# ---------------------------------------------------------------------------------------------- images from strangers
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A 60-byte PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


def hostile_images(folder: Path) -> dict[str, str]:
    """Files a stranger's folder holds; returns name -> what decoding must give ("red", "skip: reason"...)."""
    import io
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    _png_header_only(folder / "bomb.png", 40_000, 40_000)
    # EXIF orientation 6: stored landscape (left red, right blue), shown rotated 90 degrees clockwise
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(folder / "rotated.jpg", exif=exif, quality=95)
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "one-pixel.png")
    Image.new("RGB", (1, 60_000), (255, 0, 0)).save(folder / "strip.png")   # a 1 x 60000 line
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (255, 0, 0)).save(buf, format="PNG")
    (folder / "really-a-png.jpg").write_bytes(buf.getvalue())                # lies about its extension
    (folder / "not-an-image.png").write_text("hello")
    return {"bomb.png": "skip: over the 144 Mpixel limit", "rotated.jpg": "red over blue", "animated.webp": "red",
            "animated.gif": "red", "one-pixel.png": "red", "strip.png": "red", "really-a-png.jpg": "red",
            "not-an-image.png": "skip: not an image"}


def _check_decoded(arr: np.ndarray, want: str, name: str) -> None:
    r, g, b = (arr[c].astype(int) for c in range(3))
    if want == "red":
        assert r.mean() > 200 and g.mean() < 40 and b.mean() < 40, name
    else:  # red over blue: the EXIF rotation applied as a viewer shows it
        assert r[:12].mean() > 200 and b[:12].mean() < 60, name
        assert b[-12:].mean() > 200 and r[-12:].mean() < 60, name


def test_images_from_strangers_in_a_folder_a_store_and_predict(ref, tmp_path):
    from PIL import Image
    from cifarlab.data.folder import pack_folder
    from cifarlab.data.images import load_image
    from cifarlab.data.store import open_store
    from cifarlab.workflow import predict_images
    expect = hostile_images(tmp_path / "strangers")
    for name, want in expect.items():
        if want.startswith("skip"):
            with pytest.raises(ValueError, match=want.split(": ")[1]):
                load_image(tmp_path / "strangers" / name, 32)
        else:
            _check_decoded(load_image(tmp_path / "strangers" / name, 32), want, name)
    # the same files as one class of an image folder, packed into a store
    root = tmp_path / "folder"
    for split in ("train", "test"):
        hostile_images(root / split / "odd")
        (root / split / "plain").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (0, 255, 0)).save(root / split / "plain" / f"{i}.png")
    m = pack_folder(root, tmp_path / "store", progress=False, workers=1)
    skipped = {s.split(":")[0]: s for s in m["skipped"]}
    assert set(skipped) == {f"{s}/odd/{n}" for s in ("train", "test") for n in expect if expect[n].startswith("skip")}
    assert "Mpixel limit" in skipped["train/odd/bomb.png"]
    ds = open_store(tmp_path / "store")
    decoded = sorted(n for n in expect if not expect[n].startswith("skip"))
    odd = ds.train.images[ds.train.labels == ds.classes.index("odd")]
    assert len(odd) == len(decoded)
    for arr, name in zip(odd, decoded):  # packed in sorted file order
        _check_decoded(arr, expect[name], name)
    # predict: the decodable ones predicted, the others listed with the reason
    res = predict_images(ref["run"].path, [tmp_path / "strangers"])
    assert sorted(Path(p["file"]).name for p in res["predictions"]) == decoded
    assert {Path(e["file"]).name: e["error"] for e in res["errors"]}.keys() == {"bomb.png", "not-an-image.png"}
