"""Dataset sources (data/source.py) and assembly (workflow/setup.py): the dataset string parsed once
into a source that knows classes, superclasses, statistics and loaders; one setup for every command."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarlab import ConfigError
from cifarlab.data import DataError, MemorySource, ShardSource, load_dataset, open_source
from cifarlab.data.shards import write_shards
from cifarlab.workflow import assemble
from helpers import tiny_config


def test_cifar100_source_knows_its_superclasses(cifar100_dir):
    src = open_source("cifar100", cifar100_dir, download=False)
    assert isinstance(src, MemorySource) and src.num_classes == 100 and len(src.coarse_classes) == 20
    ds = load_dataset("cifar100", cifar100_dir, download=False)  # the fixture's own pairing, read independently
    for fine, coarse in zip(ds.train.labels, ds.train.coarse_labels):
        assert src.coarse_of_fine[fine] == coarse
    assert src.location.endswith("cifar-100-python")


def test_cifar10_source_has_no_superclasses_and_its_own_statistics(cifar10_dir):
    src = open_source("cifar10", cifar10_dir, download=False)
    assert src.coarse_of_fine is None and src.coarse_classes is None
    mean, std = src.channel_stats()
    pixels = src.dataset().train.images.astype(np.float64) / 255   # the definition, computed here
    assert np.allclose(mean, pixels.mean(axis=(0, 2, 3))) and np.allclose(std, pixels.std(axis=(0, 2, 3)))


def test_splits_from_val_size_and_train_size(cifar10_dir):
    src = open_source("cifar10", cifar10_dir, download=False)
    train, val = src.splits(tiny_config(cifar10_dir, val_size=50, train_size=100))
    assert len(val) == 50 and len(train) == 100
    assert np.bincount(train.labels, minlength=10).tolist() == [10] * 10  # class-stratified
    with pytest.raises(ConfigError, match="train_size 500 exceeds"):
        src.splits(tiny_config(cifar10_dir, train_size=500))


def test_unknown_and_streamed_datasets_are_clear_errors(cifar10_dir, tmp_path):
    with pytest.raises(DataError, match="Did you mean cifar10"):
        open_source("cifar1O")
    write_shards(load_dataset("cifar10", cifar10_dir, download=False), tmp_path / "s", 100, progress=False)
    src = open_source(f"shards:{tmp_path / 's'}")
    assert isinstance(src, ShardSource) and src.classes[0] == "airplane"
    with pytest.raises(DataError, match="not loaded into memory"):
        src.dataset()
    with pytest.raises(ConfigError, match="no val split"):
        src.loaders(tiny_config(cifar10_dir, val_size=20), torch.device("cpu"), [0.5] * 3, [0.2] * 3)


def test_assemble_gives_one_setup_for_every_command(cifar10_dir):
    s = assemble(tiny_config(cifar10_dir, val_size=20, precision="bf16"))
    assert s.device.type == "cpu" and set(s.pipes) == {"train", "val", "test"}
    assert s.normalization["mean"] == pytest.approx(s.source.channel_stats()[0])  # built-ins: the data's stats
    x, y = next(iter(s.pipes["test"].ordered()))
    assert x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
    with s.ctx():  # bf16 autocast, as the config asks
        assert s.model.eval()(x).dtype == torch.bfloat16
    fp32 = assemble(tiny_config(cifar10_dir, precision="fp32"))
    with fp32.ctx():
        assert fp32.model.eval()(x).dtype == torch.float32


def test_early_stopping_without_a_validation_split_is_refused_before_training(cifar10_dir, tmp_path, monkeypatch):
    """An image folder without val/ and val_size 0 has no validation split to stop on."""
    from PIL import Image
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "cache"))  # the folder's packed store goes here
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (200 if c == "a" else 10, i, 0)).save(tmp_path / "f" / split / c / f"{i}.png")
    cfg = tiny_config(cifar10_dir, dataset=f"folder:{tmp_path / 'f'}", early_stopping_patience=2, batch_size=2)
    with pytest.raises(ConfigError, match="early stopping needs a validation split"):
        assemble(cfg)
