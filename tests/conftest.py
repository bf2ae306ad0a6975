"""Fixtures: tiny CIFAR-10/100 folders in the official python formats, made by the tests."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cifarlab
from helpers import tiny_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _images(n: int, labels: np.ndarray, rng, seed: int = 0) -> np.ndarray:
    """Learnable images: class k gets a distinct colour pattern (the same in every file of the
    dataset) plus noise, (n, 3072) uint8."""
    base = np.random.default_rng(10_000 + seed).integers(0, 256, size=(100, 3, 32, 32))
    noise = rng.integers(-40, 41, size=(n, 3, 32, 32))
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_pickle(path: Path, obj) -> None:
    # Protocol 2 with bytes keys: what Python 2 wrote for the official release.
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar10(root: Path, per_batch: int = 40, test: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch,
                                           b"num_vis": 3072})
    for i in range(1, 6):
        labels = np.arange(per_batch) % 10
        rng.shuffle(labels)
        write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"training batch", b"labels": labels.tolist(),
                                                  b"data": _images(per_batch, labels, rng)})
    labels = np.arange(test) % 10
    write_pickle(folder / "test_batch", {b"batch_label": b"testing batch", b"labels": labels.tolist(),
                                         b"data": _images(test, labels, rng)})
    return root


def make_cifar100(root: Path, train: int = 400, test: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine_names = [f"fine{i}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    write_pickle(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    for name, n in (("train", train), ("test", test)):
        fine = np.arange(n) % 100
        write_pickle(folder / name, {b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                                     b"data": _images(n, fine, rng), b"filenames": [b"x.png"] * n})
    return root


@pytest.fixture
def cifar10_dir(tmp_path) -> Path:
    return make_cifar10(tmp_path / "data")


@pytest.fixture
def cifar100_dir(tmp_path) -> Path:
    return make_cifar100(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_cifar(tmp_path_factory) -> Path:
    """The real CIFAR-10/100 from ../shared/data, materialized once; skipped when absent, and a
    failure instead when ``CIFARLAB_REQUIRE_E2E`` is set (``.ci/run`` sets it: CI always has the data).

    ``CIFARLAB_E2E_DATA`` names a folder already materialized (``.ci/run`` sets it).
    """
    folders = ("cifar-10-batches-py", "cifar-100-python")
    ready = os.environ.get("CIFARLAB_E2E_DATA")
    if ready and all((Path(ready) / f).is_dir() for f in folders):
        return Path(ready)
    if not (SHARED_DATA / "materialize.py").is_file():
        if os.environ.get("CIFARLAB_REQUIRE_E2E"):
            pytest.fail(f"CIFARLAB_REQUIRE_E2E is set but {SHARED_DATA} is missing and CIFARLAB_E2E_DATA "
                        f"({ready!r}) does not hold {' and '.join(folders)}")
        pytest.skip("../shared/data is not present")
    out = tmp_path_factory.mktemp("shared-cifar")
    subprocess.run([sys.executable, str(SHARED_DATA / "materialize.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Three CIFAR-10 runs with a validation split (two airbench seeds, one LeNet) and a CIFAR-100 run."""
    root = tmp_path_factory.mktemp("runs")
    d10, d100 = make_cifar10(root / "d10"), make_cifar100(root / "d100")
    out = {}
    for name, kw in (("ab-s0", {}), ("ab-s1", {"seed": 1}),
                     ("lenet", {"model": "lenet", "model_kwargs": {}, "optimizer": "sgd", "lr": 0.05,
                                "loss_reduction": "mean"})):
        out[name] = cifarlab.train(tiny_config(d10, val_size=50, **kw), run_dir=root / "runs" / name).path
    out["c100"] = cifarlab.train(tiny_config(d100, dataset="cifar100", epochs=1), run_dir=root / "runs" / "c100").path
    out["data10"], out["data100"], out["root"] = d10, d100, root
    return out
