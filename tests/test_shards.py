"""WebDataset shards: round trip, the streaming loader's batches, and training from shards."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from helpers import tiny_config

import cifarlab
from cifarlab.cli import main as cli_main
from cifarlab.data import DataError, load_dataset
from cifarlab.data.augment import normalize
from cifarlab.data.shards import ShardLoader, read_shard_meta, write_shards

import webdataset  # noqa: F401,E402  (a required dependency: a broken install fails here, not skips)


@pytest.fixture
def shards(cifar10_dir, tmp_path):
    ds = load_dataset("cifar10", cifar10_dir, download=False)
    meta = write_shards(ds, tmp_path / "sh", shard_size=70, progress=False)
    return ds, meta, tmp_path / "sh"


def test_shard_round_trip(shards):
    ds, meta, folder = shards
    assert meta["splits"]["train"] == {"images": 200, "shards": [f"train-00000{i}.tar" for i in range(3)]}
    with tarfile.open(folder / "train-000000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:2]) == ["000000000.cls", "000000000.png"] and len(names) == 140   # 70 samples x 2 files
    test = ShardLoader(folder, "test", meta["mean"], meta["std"], batch_size=25)
    xs, ys = zip(*test.ordered())
    assert [len(y) for y in ys] == [25, 25, 10]
    ref = normalize(torch.from_numpy(ds.test.images), torch.tensor(meta["mean"]), torch.tensor(meta["std"]))
    assert torch.equal(torch.cat(xs), ref) and np.array_equal(torch.cat(ys).numpy(), ds.test.labels)   # lossless


def test_training_stream_covers_each_image_once_per_epoch(shards):
    ds, meta, folder = shards
    loader = ShardLoader(folder, "train", [0, 0, 0], [1, 1, 1], batch_size=40, train=True, flip="alternating",
                         translate=2, seed=3, workers=2)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 5 and all(x.shape == (40, 3, 32, 32) for x, _ in batches)
    labels = torch.cat([y for _, y in batches]).numpy()
    assert np.array_equal(np.bincount(labels, minlength=10), np.bincount(ds.train.labels, minlength=10))
    # without augmentation (mean 0, std 1/255 -> raw pixels) the epoch holds exactly the dataset's images
    plain = ShardLoader(folder, "train", [0, 0, 0], [1 / 255] * 3, batch_size=40, train=True, seed=3, workers=2)
    seen = torch.cat([x for x, _ in plain.epoch(0)]).round().to(torch.uint8).numpy()
    key = lambda imgs: sorted(im.tobytes() for im in imgs)
    assert key(seen) == key(ds.train.images)
    again = list(loader.epoch(0))          # same epoch -> same order and augmentation
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    other = list(loader.epoch(1))
    assert not torch.equal(batches[0][1], other[0][1])      # epochs are shuffled differently
    resumed = list(loader.epoch(0, start=2))                # a resume skips batches of the same stream
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[2:], resumed))


def test_train_from_shards_learns_like_in_memory(shards, cifar10_dir, tmp_path):
    _, _, folder = shards
    run = cifarlab.train(tiny_config(cifar10_dir, dataset=f"shards:{folder}", epochs=4), run_dir=tmp_path / "run")
    r = run.results
    assert r["train_images"] == 200 and r["test"]["num_images"] == 60 and r["classes"][0] == "airplane"
    mem = cifarlab.train(tiny_config(cifar10_dir, epochs=4), run_dir=tmp_path / "mem")
    # same model, same data, different order: both learn the (easy) task
    assert r["test"]["top1"] >= 90 and mem.results["test"]["top1"] >= 90
    assert abs(r["test"]["top1"] - mem.results["test"]["top1"]) <= 5


def test_shard_errors_and_cli(shards, cifar10_dir, tmp_path, capsys):
    _, _, folder = shards
    (folder / "train-000001.tar").unlink()
    with pytest.raises(DataError, match="train-000001.tar of train are missing"):
        read_shard_meta(folder)
    with pytest.raises(DataError, match="no dataset.json"):
        read_shard_meta(tmp_path)
    assert cli_main(["data", "shard", "cifar10", str(tmp_path / "s2"), "--data-dir", str(cifar10_dir),
                     "--shard-size", "100"]) == 0
    assert "wrote 3 shards (train 200, test 60 images)" in capsys.readouterr().out
    assert cli_main(["data", "shard", "cifar10", str(tmp_path / "s3"), "--data-dir", str(cifar10_dir),
                     "--shard-size", "0"]) == 2
    with pytest.raises(cifarlab.ConfigError, match="no val split"):
        cifarlab.train(tiny_config(cifar10_dir, dataset=f"shards:{tmp_path / 's2'}", val_size=20),
                       run_dir=tmp_path / "bad")
