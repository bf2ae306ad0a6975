"""Data: official CIFAR files (restricted unpickler, md5, safe download), splits, device loader.

Knows nothing about models or training. Entry point: :func:`load_dataset`.
"""
from pathlib import Path

from .cifar import SPECS, ChecksumWarning, DataError, Dataset, ImageArrays, default_data_dir, load_cifar
from .loader import DeviceLoader, channel_stats
from .safe_pickle import RestrictedUnpickler, UnsafePickleError, safe_loads
from .split import split_train_val, stratified_split

DATASETS = tuple(SPECS)


def load_dataset(name: str, data_dir=None, download: bool = True, size: int = 32, policy: str = "center-crop",
                 progress: bool = True) -> Dataset:
    """Load a dataset by name.

    ``cifar10`` / ``cifar100``: the official files in ``data_dir`` (downloaded when allowed);
    ``folder:PATH``: an image folder, through its packed store (made on first use, ``size`` and
    ``policy`` as in :mod:`cifarlab.data.images`); ``store:PATH``: a store made by ``cifarlab data pack``.

    Raises:
        DataError: unknown name, missing or inconsistent data (the message says what and how to fix it).
    """
    if name.startswith("folder:"):
        from .folder import load_image_folder
        return load_image_folder(name[len("folder:"):], size, policy, progress=progress)
    if name.startswith("shards:"):
        raise DataError(f"{name} streams from shards and is not loaded into memory; train on it with "
                        f"--dataset {name}, or pack the source into a store to load it.")
    if name.startswith("store:"):
        from .store import open_store
        return open_store(Path(name[len("store:"):]))
    if name not in SPECS:
        import difflib
        close = difflib.get_close_matches(name, SPECS, n=2)
        raise DataError(f"Unknown dataset {name!r}." + (f" Did you mean {', '.join(close)}?" if close else "")
                        + f" Available: {', '.join(SPECS)}, folder:PATH (an image folder), store:PATH (a packed store).")
    return load_cifar(name, data_dir, download)


__all__ = ["load_dataset", "load_cifar", "Dataset", "ImageArrays", "DataError", "ChecksumWarning",
           "DeviceLoader", "channel_stats", "split_train_val", "stratified_split", "RestrictedUnpickler",
           "UnsafePickleError", "safe_loads", "default_data_dir", "DATASETS", "SPECS"]
