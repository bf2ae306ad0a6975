"""The packed store: a folder of images decoded once into memory-mappable arrays.

The PyTorch-world analog of the TFRecord files the seed notebook 004 wrote. Layout of a store::

    OUT/images.u8       uint8 (N, 3, H, W), C order, raw bytes (np.memmap-able)
    OUT/labels.i64      int64 (N,)
    OUT/manifest.json   format version, shape, classes, split ranges, resize policy, and per source
                        file: split, relative path, size (bytes), mtime (ns), sha1 of its bytes

Opening a store maps the arrays (no copy, well under a second for CIFAR-10's 184 MB) after
checking that their sizes match the manifest; a mismatch is refused with the command to rebuild.
Whether the source folder changed is decided from the listing (paths, sizes, mtimes).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..files import fsync_dir, storage_error
from .cifar import DataError, Dataset, ImageArrays, superclass_meta

FORMAT_VERSION = 1


def write_store(out: Path, images: np.ndarray, labels: np.ndarray, manifest: dict) -> Path:
    """Write a store atomically: into ``OUT.tmp-*`` (each file fsynced) then renamed over ``OUT``.

    Raises:
        cifarlab.files.StorageError: disk full or not writable (``OUT`` is left as it was).
    """
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    manifest = {"format": FORMAT_VERSION, "shape": list(images.shape), **manifest}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, data in (("images.u8", np.ascontiguousarray(images, dtype=np.uint8)),
                           ("labels.i64", np.ascontiguousarray(labels, dtype=np.int64)),
                           ("manifest.json", json.dumps(manifest).encode())):
            with open(tmp / name, "wb") as f:
                f.write(memoryview(data) if isinstance(data, np.ndarray) else data)
                f.flush()
                os.fsync(f.fileno())
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(e, out, images.nbytes + labels.nbytes) from None
    fsync_dir(out.parent)
    return out


def read_manifest(store: Path) -> dict:
    p = Path(store) / "manifest.json"
    if not p.is_file():
        raise DataError(f"{store} is not a packed store (no manifest.json). Make one with: cifarlab data pack SOURCE {store}")
    try:
        m = json.loads(p.read_text())
    except ValueError:
        raise DataError(f"{p} is corrupt. Rebuild the store with: cifarlab data pack {_source(None)} {store} --force") from None
    if m.get("format") != FORMAT_VERSION:
        raise DataError(f"{store} has store format {m.get('format')}, this cifarlab reads {FORMAT_VERSION}. "
                        f"Rebuild it with: cifarlab data pack {_source(m)} {store} --force")
    return m


def _source(m: dict | None) -> str:
    return (m or {}).get("source") or "SOURCE"


def open_store(store: Path, name: str | None = None) -> Dataset:
    """Map a store's arrays as a `Dataset` (train/test, plus ``val`` when the source had one).

    Raises:
        DataError: missing files, or arrays whose sizes disagree with the manifest (says how to rebuild).
    """
    store = Path(store)
    m = read_manifest(store)
    n, shape = m["shape"][0], tuple(m["shape"])
    rebuild = f"Rebuild it with: cifarlab data pack {_source(m)} {store} --force"
    for fname, nbytes in (("images.u8", int(np.prod(shape))), ("labels.i64", 8 * n)):
        f = store / fname
        if not f.is_file() or f.stat().st_size != nbytes:
            have = f.stat().st_size if f.is_file() else "missing"
            raise DataError(f"{store}: {fname} does not match its manifest (expected {nbytes} bytes, found {have}). "
                            + rebuild)
    images = np.memmap(store / "images.u8", dtype=np.uint8, mode="r", shape=shape)
    labels = np.fromfile(store / "labels.i64", dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(m["classes"])):
        raise DataError(f"{store}: labels outside the {len(m['classes'])} classes of the manifest. " + rebuild)
    splits = {}
    for split, (a, b) in m["splits"].items():
        coarse = np.asarray(m["coarse_of_fine"])[labels[a:b]] if "coarse_of_fine" in m else None
        splits[split] = ImageArrays(images[a:b], labels[a:b], list(m["classes"]), coarse, m.get("coarse_classes"))
    return Dataset(name or m.get("name", store.name), splits["train"], splits["test"], source=str(store),
                   notes=list(m.get("notes", [])), val=splits.get("val"))


def store_info(store: Path) -> dict:
    """Summary of a store: images per split and class, shape, bytes, policy, source, skipped files."""
    m = read_manifest(store)
    labels = np.fromfile(Path(store) / "labels.i64", dtype=np.int64)
    per_split = {s: np.bincount(labels[a:b], minlength=len(m["classes"])).tolist() for s, (a, b) in m["splits"].items()}
    return {"store": str(store), "source": m.get("source"), "shape": m["shape"], "classes": m["classes"],
            "images_per_split": {s: b - a for s, (a, b) in m["splits"].items()}, "images_per_class": per_split,
            "bytes": (Path(store) / "images.u8").stat().st_size, "resize": m.get("resize"),
            "skipped": len(m.get("skipped", [])), "ignored_non_images": m.get("ignored_non_images", 0)}


def pack_dataset(ds: Dataset, out: Path) -> dict:
    """Pack an already loaded dataset (e.g. official CIFAR) into a store; returns the manifest."""
    parts = [("train", ds.train)] + ([("val", ds.val)] if ds.val is not None else []) + [("test", ds.test)]
    splits, start = {}, 0
    for name, arr in parts:
        splits[name] = [start, start + len(arr)]
        start += len(arr)
    src = Path(ds.source)
    listing = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in src.iterdir() if p.is_file()) \
        if src.is_dir() else []
    manifest = {"name": ds.name, "source": ds.name, "classes": list(ds.classes), "splits": splits,
                "resize": {"size": int(ds.train.images.shape[-1]), "policy": "none"}, "files": [], "skipped": [],
                "listing": listing, "notes": list(ds.notes), **superclass_meta(ds.train)}
    write_store(out, np.concatenate([a.images for _, a in parts]), np.concatenate([a.labels for _, a in parts]),
                manifest)
    return manifest
