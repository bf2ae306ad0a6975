"""CIFAR-10 and CIFAR-100 in the official python formats: find, download, verify, load.

Source of the format, URLs and md5 sums: https://www.cs.toronto.edu/~kriz/cifar.html (the same
sums torchvision checks). Files are read with `cifarlab.data.safe_pickle`, never ``pickle.load``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .safe_pickle import UnsafePickleError, safe_loads


class DataError(RuntimeError):
    """A dataset is missing, corrupt or inconsistent. The message names the file and the fix."""


class ChecksumWarning(UserWarning):
    """A file's md5 differs from the official release (the data may still be usable)."""


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    url: str
    tar_md5: str
    train_files: dict[str, str]   # file name -> official md5
    test_files: dict[str, str]
    meta_file: tuple[str, str]
    num_classes: int
    train_count: int = 50_000
    test_count: int = 10_000


SPECS = {
    "cifar10": CifarSpec(
        name="cifar10", folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tar_md5="c58f30108f718f92721af3b95e74349a",
        train_files={"data_batch_1": "c99cafc152244af753f735de768cd75f",
                     "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                     "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                     "data_batch_4": "634d18415352ddfa80567beed471001a",
                     "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"},
        test_files={"test_batch": "40351d587109b95175f43aff81a1287e"},
        meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        num_classes=10),
    "cifar100": CifarSpec(
        name="cifar100", folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        tar_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files={"train": "16019d7e3df5f24257cddd939b257f8d"},
        test_files={"test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
        meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
        num_classes=100),
}


@dataclass
class ImageArrays:
    """One split held in memory.

    Attributes:
        images: uint8 array, shape (N, 3, H, W), RGB.
        labels: int64 array, shape (N,), values in [0, len(classes)).
        classes: class names, index = label.
        coarse_labels / coarse_classes: CIFAR-100 superclasses (20), else None.
    """
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    coarse_labels: np.ndarray | None = None
    coarse_classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[idx], self.labels[idx], self.classes,
                           None if self.coarse_labels is None else self.coarse_labels[idx],
                           self.coarse_classes)


def superclass_meta(arrays: "ImageArrays") -> dict:
    """``{"coarse_classes", "coarse_of_fine"}`` (the superclass of each class, a list) of arrays
    with coarse labels (CIFAR-100), for stores and shards to keep; {} without them."""
    if arrays.coarse_labels is None:
        return {}
    of_fine = np.full(len(arrays.classes), -1, dtype=np.int64)
    of_fine[arrays.labels] = arrays.coarse_labels
    return {"coarse_classes": list(arrays.coarse_classes), "coarse_of_fine": of_fine.tolist()}


@dataclass
class Dataset:
    """A dataset's train and test splits plus identity (name, class names)."""
    name: str
    train: ImageArrays
    test: ImageArrays
    source: str = ""
    notes: list[str] = field(default_factory=list)
    val: ImageArrays | None = None   # a fixed validation split shipped with the data (image folders' val/)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def default_data_dir() -> Path:
    """``$CIFARLAB_DATA``, else ``$XDG_CACHE_HOME/cifarlab``, else ``~/.cache/cifarlab``."""
    if os.environ.get("CIFARLAB_DATA"):
        return Path(os.environ["CIFARLAB_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cifarlab"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _resolve_folder(spec: CifarSpec, data_dir: Path) -> Path:
    """Accept DIR or DIR/<official folder>."""
    if data_dir.name == spec.folder:
        return data_dir
    return data_dir / spec.folder


def _read_pickle(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e.strerror}.") from None
    try:
        obj = safe_loads(raw)
    except UnsafePickleError as e:
        raise DataError(f"{path} was refused: {e}. Delete it and use the official release.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise DataError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}). Delete the folder "
            f"{path.parent} and run again to re-download, or copy an intact file there.") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a dict as the CIFAR format does (got {type(obj).__name__}).")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _decode_names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _batch_arrays(path: Path, d: dict, label_key: str, num_classes: int):
    if "data" not in d or label_key not in d:
        raise DataError(f"{path} lacks the '{'data' if 'data' not in d else label_key}' entry "
                        "of the official format; it is not a CIFAR batch file.")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072); got {dtype} {shape}.")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} '{label_key}' entries.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: '{label_key}' values must lie in [0, {num_classes}); "
                        f"found {labels.min()}..{labels.max()}.")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 from the official python format.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: folder holding ``cifar-10-batches-py/`` / ``cifar-100-python/`` (or that folder
            itself). Default `default_data_dir`.
        download: when the folder is missing, fetch and verify the official tarball.

    Returns:
        `Dataset` with uint8 images (N, 3, 32, 32); for CIFAR-100 also coarse labels.

    Raises:
        DataError: folder missing (offline), file truncated/corrupt, foreign pickle global,
            inconsistent shapes/labels. Warns `ChecksumWarning` naming files whose md5
            differs from the official release.
    """
    if name not in SPECS:
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(SPECS)}.")
    spec = SPECS[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = _resolve_folder(spec, root)
    if not folder.is_dir():
        if not download:
            raise DataError(f"{spec.name} not found: expected the folder {folder}. Download "
                            f"{spec.url} and extract it into {folder.parent}.")
        download_and_extract(spec, folder.parent)
    missing = [f for f in [*spec.train_files, *spec.test_files, spec.meta_file[0]] if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder} is incomplete: missing {', '.join(missing)}. Delete the folder and "
                        f"run again to re-download, or extract {spec.url} there.")

    mismatched = [f for f, m in [*spec.train_files.items(), *spec.test_files.items(), spec.meta_file]
                  if md5sum(folder / f) != m]
    notes = []
    if mismatched:
        msg = (f"{spec.name}: {len(mismatched)} files in {folder} ({', '.join(mismatched)}) differ from the official "
               "release (md5); loading anyway after validating shapes and labels.")
        warnings.warn(msg, ChecksumWarning, stacklevel=2)
        notes.append(msg)

    meta = _read_pickle(folder / spec.meta_file[0])
    if name == "cifar10":
        classes = _decode_names(meta.get("label_names", []))
        fine_key, coarse_classes = "labels", None
    else:
        classes = _decode_names(meta.get("fine_label_names", []))
        coarse_classes = _decode_names(meta.get("coarse_label_names", []))
        fine_key = "fine_labels"
    if len(classes) != spec.num_classes:
        raise DataError(f"{folder / spec.meta_file[0]} lists {len(classes)} class names; "
                        f"{spec.name} has {spec.num_classes}.")

    def read_split(files) -> ImageArrays:
        ims, labs, coarse = [], [], []
        for f in files:
            d = _read_pickle(folder / f)
            x, y = _batch_arrays(folder / f, d, fine_key, spec.num_classes)
            ims.append(x)
            labs.append(y)
            if coarse_classes is not None:
                _, c = _batch_arrays(folder / f, d, "coarse_labels", len(coarse_classes))
                coarse.append(c)
        return ImageArrays(np.concatenate(ims), np.concatenate(labs), classes,
                           np.concatenate(coarse) if coarse else None, coarse_classes)

    train, test = read_split(spec.train_files), read_split(spec.test_files)
    for split, n, want in (("train", len(train), spec.train_count), ("test", len(test), spec.test_count)):
        if n != want:
            msg = f"{spec.name} {split} split holds {n} images; the official release has {want}."
            warnings.warn(msg, ChecksumWarning, stacklevel=2)
            notes.append(msg)
    return Dataset(name=name, train=train, test=test, source=str(folder), notes=notes)


def download_and_extract(spec: CifarSpec, dest: Path) -> None:
    """Download ``spec.url`` into ``dest`` with a progress bar, check its md5, extract safely.

    Raises:
        DataError: offline / HTTP failure (names the URL and the folder), md5 mismatch, or an
            archive member that would land outside ``dest`` (path traversal).
    """
    from tqdm.auto import tqdm

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(spec.url).name
    if not archive.is_file() or md5sum(archive) != spec.tar_md5:
        partial = archive.with_suffix(archive.suffix + ".part")
        try:
            with urllib.request.urlopen(spec.url, timeout=30) as resp, open(partial, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0)
                with tqdm(total=total or None, unit="B", unit_scale=True, desc=archive.name) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            partial.unlink(missing_ok=True)
            raise DataError(
                f"{spec.name} is not in {dest / spec.folder} and could not be downloaded from "
                f"{spec.url} ({getattr(e, 'reason', e)}). Download it elsewhere and extract it into "
                f"{dest}, or pass --data-dir pointing at a folder that holds {spec.folder}/.") from None
        os.replace(partial, archive)
        if (got := md5sum(archive)) != spec.tar_md5:
            raise DataError(f"{archive} has md5 {got}, expected {spec.tar_md5}: the download is "
                            "corrupt. Delete it and try again.")
    safe_extract(archive, dest)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing links and members that escape ``dest``."""
    dest = dest.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            target = (dest / m.name).resolve()
            if not target.is_relative_to(dest) or m.issym() or m.islnk() or m.isdev():
                raise DataError(f"{archive} member {m.name!r} would be written outside {dest} "
                                "or is a link/device; refusing to extract.")
        tar.extractall(dest, members=members, filter="data")
