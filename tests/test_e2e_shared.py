"""End-to-end checks on the real CIFAR data from ../shared (skipped cleanly when absent)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import cifarlab
from cifarlab.data import ChecksumWarning, load_dataset

pytestmark = pytest.mark.e2e


def test_cifar100_is_byte_identical_to_the_official_release(shared_cifar):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)  # md5 must match: no warning
        ds = load_dataset("cifar100", shared_cifar, download=False)
    assert len(ds.train) == 50_000 and len(ds.test) == 10_000
    assert np.bincount(ds.train.labels).tolist() == [500] * 100
    assert ds.train.coarse_classes[0] == "aquatic_mammals" and ds.classes[0] == "apple"


def test_cifar10_loads_with_a_named_md5_warning(shared_cifar):
    with pytest.warns(ChecksumWarning, match="data_batch_1"):
        ds = load_dataset("cifar10", shared_cifar, download=False)
    assert len(ds.train) == 50_000 and np.bincount(ds.test.labels).tolist() == [1000] * 10


def test_short_recipe_run_on_real_cifar10(shared_cifar, tmp_path):
    """A few steps of the real recipe: the run directory is complete and the model learns."""
    run = cifarlab.train(dataset="cifar10", data_dir=str(shared_cifar), run_dir=tmp_path / "run",
                         epochs=0.4, progress=False, tta=0)   # 10 steps of batch 2000
    assert run.results["test"]["num_images"] == 10_000
    assert run.results["test"]["top1"] > 35  # chance is 10%
    assert run.path.joinpath("checkpoint-best.safetensors").is_file()
