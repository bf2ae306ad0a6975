"""Data: dataset sources (CIFAR, image folders, stores, shards), the restricted unpickler, splits,
the on-device loader and batched augmentation, and the resizing pipeline.

Knows nothing about models or training. Entry points: `open_source` (the dataset string ->
a `DataSource` that gives loaders) and `load_dataset` (the splits as arrays).
"""
from .cifar import SPECS, ChecksumWarning, DataError, Dataset, ImageArrays, default_data_dir, load_cifar
from .loader import DeviceLoader, batches_per_epoch, channel_stats, epoch_generator
from .pipeline import Batches, MixedBatches, size_schedule, take
from .safe_pickle import RestrictedUnpickler, UnsafePickleError, safe_loads
from .source import DataSource, MemorySource, ShardSource, open_source, source_for
from .split import split_train_val, stratified_split

DATASETS = tuple(SPECS)


def load_dataset(name: str, data_dir=None, download: bool = True, size: int = 32, policy: str = "center-crop",
                 progress: bool = True) -> Dataset:
    """The splits of dataset ``name`` as uint8 arrays in memory (see `open_source`).

    Raises:
        DataError: unknown name, shards (never held in memory), missing or inconsistent data.
    """
    return open_source(name, data_dir, download, size, policy, progress).dataset()


__all__ = ["load_dataset", "open_source", "source_for", "DataSource", "MemorySource", "ShardSource", "load_cifar",
           "Dataset", "ImageArrays", "DataError", "ChecksumWarning", "DeviceLoader", "Batches", "MixedBatches", "size_schedule",
           "take", "batches_per_epoch", "channel_stats", "epoch_generator", "split_train_val", "stratified_split",
           "RestrictedUnpickler", "UnsafePickleError", "safe_loads", "default_data_dir", "DATASETS", "SPECS"]
