"""Dataset sources: the dataset string, parsed once (`cifarlab.config.parse_dataset`), becomes
an object that knows its classes, superclasses, own normalization statistics and how to give the
train/validation/test loaders. The rest of cifarlab asks the source; it never re-reads the string.

==========================  ==================================================================
``cifar10``, ``cifar100``   the official files, in memory (`load_cifar`)
``folder:PATH``             an image folder through its packed store (made on first use)
``store:PATH``              a store made by ``cifarlab data pack``
``shards:PATH``             WebDataset shards streamed by worker processes (never in memory)
==========================  ==================================================================
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, DatasetSpec, TrainConfig, parse_dataset
from .cifar import DataError, Dataset, load_cifar
from .folder import load_image_folder
from .loader import DeviceLoader, channel_stats
from .shards import ShardLoader, read_shard_meta
from .split import split_train_val, stratified_split
from .store import open_store


class DataSource:
    """What every dataset kind answers. Subclasses: `MemorySource`, `ShardSource`.

    Attributes:
        spec: the parsed dataset string; name: the dataset's name; classes: class names (index = label);
        coarse_classes / coarse_of_fine: CIFAR-100 superclass names and int64 (C,) superclass of
        each class, else None; location: the folder the data was read from; notes: warnings
        about the data (checksums, skipped files) for ``results.json``.
    """
    spec: DatasetSpec
    name: str
    classes: list[str]
    coarse_classes: list[str] | None = None
    coarse_of_fine: np.ndarray | None = None
    location: str = ""
    notes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, (3,) each, in [0, 1] units."""
        raise NotImplementedError

    def loaders(self, cfg: TrainConfig, device: torch.device, mean, std, rank: int = 0, world: int = 1) -> dict:
        """``{"train", "val", "test"}`` loaders (``val`` None without a validation split) with the
        interface of `DeviceLoader`, configured by ``cfg``'s data,
        augmentation, batch and seed keys. ``rank``/``world``: this process's share under torchrun.

        Raises:
            ConfigError: a setting this kind of source cannot honour (names the alternative).
        """
        raise NotImplementedError

    def dataset(self) -> Dataset:
        """The splits as uint8 arrays in memory. Raises `DataError` for streamed data."""
        raise NotImplementedError


class MemorySource(DataSource):
    """CIFAR, image folders and stores: every split as a uint8 (N, 3, H, W) array in memory."""

    def __init__(self, spec: DatasetSpec, ds: Dataset):
        self.spec, self._ds = spec, ds
        self.name, self.classes, self.location, self.notes = ds.name, list(ds.classes), ds.source, list(ds.notes)
        if ds.train.coarse_labels is not None:
            self.coarse_classes = list(ds.train.coarse_classes)
            self.coarse_of_fine = np.full(len(self.classes), -1, dtype=np.int64)
            self.coarse_of_fine[ds.train.labels] = ds.train.coarse_labels

    def dataset(self) -> Dataset:
        return self._ds

    def channel_stats(self):
        return channel_stats(self._ds.train.images)

    def splits(self, cfg: TrainConfig):
        """(train, val) arrays: the data's own ``val`` split (an image folder's ``val/``) or one
        carved from train by ``cfg.val_size``/``split_seed``; then ``cfg.train_size`` keeps a
        class-stratified subset of train (seeded by ``split_seed + 1``)."""
        ds = self._ds
        train, val = (ds.train, ds.val) if ds.val is not None else split_train_val(ds.train, cfg.val_size,
                                                                                    cfg.split_seed)
        if cfg.train_size:
            if cfg.train_size > len(train):
                raise ConfigError(f"train_size {cfg.train_size} exceeds the {len(train)} training images available.")
            if cfg.train_size < len(train):
                _, keep = stratified_split(train.labels, cfg.train_size, cfg.split_seed + 1)
                train = train.subset(keep)
        return train, val

    def loaders(self, cfg, device, mean, std, rank=0, world=1):
        train, val = self.splits(cfg)
        mk = lambda arrays, **kw: DeviceLoader(arrays, mean, std, device=device, seed=cfg.seed, **kw)
        return {"train": mk(train, batch_size=cfg.batch_size, train=True, flip=cfg.flip, translate=cfg.translate,
                            cutout=cfg.cutout, rank=rank, world=world),
                "val": mk(val, batch_size=cfg.eval_batch_size) if val is not None else None,
                "test": mk(self._ds.test, batch_size=cfg.eval_batch_size)}


class ShardSource(DataSource):
    """``shards:PATH``: splits streamed from WebDataset shards (`ShardLoader`)."""

    def __init__(self, spec: DatasetSpec):
        self.spec, self.folder = spec, Path(spec.path)
        self.meta = read_shard_meta(self.folder)
        self.name = self.meta.get("name", self.folder.name)
        self.classes, self.location, self.notes = list(self.meta["classes"]), str(self.folder), []
        if "coarse_of_fine" in self.meta:  # CIFAR-100 written as shards keeps its superclasses
            self.coarse_classes = list(self.meta["coarse_classes"])
            self.coarse_of_fine = np.asarray(self.meta["coarse_of_fine"], dtype=np.int64)

    def channel_stats(self):
        return self.meta["mean"], self.meta["std"]

    def dataset(self) -> Dataset:
        raise DataError(f"{self.spec} streams from shards and is not loaded into memory; train on it with "
                        f"--dataset {self.spec}, or pack the source into a store to load it.")

    def loaders(self, cfg, device, mean, std, rank=0, world=1):
        if world > 1:
            raise ConfigError("distributed training reads in-memory datasets; shards stream in one process.")
        has_val = "val" in self.meta["splits"]
        if cfg.val_size and not has_val:
            raise ConfigError("shards have no val split and cannot be split on the fly; write them from a source "
                              "with a val/ folder, or use --val-size 0.")
        if cfg.train_size:
            raise ConfigError("train_size is not supported with shards; pack a subset instead.")
        mk = lambda split, **kw: ShardLoader(self.folder, split, mean, std, device=device, seed=cfg.seed, **kw)
        return {"train": mk("train", batch_size=cfg.batch_size, train=True, flip=cfg.flip, translate=cfg.translate,
                            cutout=cfg.cutout),
                "val": mk("val", batch_size=cfg.eval_batch_size) if has_val else None,
                "test": mk("test", batch_size=cfg.eval_batch_size)}


def open_source(name: str | DatasetSpec, data_dir=None, download: bool = True, size: int = 32,
                policy: str = "center-crop", progress: bool = True, bare_path: str | None = None) -> DataSource:
    """Open a dataset by its string (or parsed spec).

    Args:
        data_dir: CIFAR's folder (default ``$CIFARLAB_DATA`` or ``~/.cache/cifarlab``); download: fetch
            the official tarball when missing; size, policy: how image folders are packed
            (`cifarlab.data.images`); bare_path: ``"folder"`` reads a bare path as an image folder.

    Raises:
        DataError: unknown name, missing or inconsistent data (the message says what and how to fix it).
    """
    try:
        spec = name if isinstance(name, DatasetSpec) else parse_dataset(name, bare_path)
    except ConfigError as e:
        raise DataError(str(e)) from None
    if spec.kind == "shards":
        return ShardSource(spec)
    if spec.kind == "folder":
        ds = load_image_folder(spec.path, size, policy, progress=progress)
    elif spec.kind == "store":
        ds = open_store(Path(spec.path))
    else:
        ds = load_cifar(spec.kind, data_dir, download)
    return MemorySource(spec, ds)


def source_for(cfg: TrainConfig, download: bool | None = None) -> DataSource:
    """The source of ``cfg.dataset`` with ``cfg``'s data keys (``download`` overrides ``cfg.download``)."""
    return open_source(cfg.dataset, cfg.data_dir, cfg.download if download is None else download,
                       cfg.folder_size, cfg.resize_policy, cfg.progress)
