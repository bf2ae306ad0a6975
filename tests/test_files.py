"""Files a run writes get the permissions a plain open() would give them, so a teammate, a web
server or a second account can read a run: mkstemp's 0600 must not survive the rename."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import cifarlab
from cifarlab.files import atomic_write, new_file_mode, write_text
from helpers import tiny_config


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_open_gives(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert new_file_mode() == _mode(plain) == 0o666 & ~mask
    write_text(tmp_path / "a.json", "{}")
    atomic_write(tmp_path / "b.bin", lambda p: Path(p).write_bytes(b"1"))               # writer reopens the file
    atomic_write(tmp_path / "c.bin", lambda p: (os.unlink(p), Path(p).write_bytes(b"2")))  # writer recreates it
    assert {_mode(tmp_path / n) for n in ("a.json", "b.bin", "c.bin")} == {0o666 & ~mask}


def test_every_file_of_a_run_is_readable_by_others_under_umask_022(cifar10_dir, tmp_path, umask):
    umask(0o022)
    run = cifarlab.train(tiny_config(cifar10_dir, epochs=1), run_dir=tmp_path / "run")
    modes = {str(p.relative_to(run.path)): _mode(p) for p in run.path.rglob("*") if p.is_file()}
    assert {"results.json", "config.yaml", "checkpoint-best.safetensors", "status.json"} <= set(modes)
    assert {n: m for n, m in modes.items() if m != 0o644} == {}
