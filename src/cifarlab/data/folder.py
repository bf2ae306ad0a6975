"""Image folders: ``ROOT/{train,test[,val]}/<class>/<image>``, decoded once into a packed store.

Classes are the sorted folder names of ``train/``; ``test/`` (and ``val/``) must have the same
ones. Files with an image extension (`IMAGE_EXTENSIONS`) are decoded in
any mode to RGB and brought to ``size`` x ``size`` by the resize policy; unreadable or corrupt ones
are skipped and listed; other files are ignored and counted. Decoding runs in a process pool over
all cores with a progress bar, and the result is a packed store (`cifarlab.data.store`) in the
cache folder, reused while the folder's listing (paths, sizes, mtimes) is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .cifar import DataError, Dataset, default_data_dir
from .images import IMAGE_EXTENSIONS, ImageDecodeError, load_image
from .store import open_store, read_manifest, write_store

SPLITS = ("train", "val", "test")


def scan_folder(root: Path) -> dict:
    """List ``root``'s splits, classes and files (no decoding).

    Returns:
        ``{"classes", "files": [(split, relpath, label, size, mtime_ns)], "ignored": n}``.

    Raises:
        DataError: not a folder, no train/ or test/, no class subfolders, an empty class,
            class names equal up to case, or splits with different classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder. An image folder holds train/<class>/* and test/<class>/*.")
    present = [s for s in SPLITS if (root / s).is_dir()]
    for need in ("train", "test"):
        if need not in present:
            raise DataError(f"{root} has no {need}/ folder. Expected {root}/train/<class>/* and {root}/test/<class>/*.")
    classes_of = {}
    for split in present:
        try:
            names = sorted(d.name for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith("."))
        except PermissionError:
            raise DataError(f"cannot list {root / split}: permission denied.") from None
        if not names:
            raise DataError(f"{root / split} has no class subfolders; put each class's images in {split}/<class>/.")
        lower = {}
        for n in names:
            if n.lower() in lower:
                raise DataError(f"{root / split} has classes {lower[n.lower()]!r} and {n!r} that differ only in "
                                "case; rename one so they are distinct on every file system.")
            lower[n.lower()] = n
        classes_of[split] = names
    classes = classes_of["train"]
    for split in present[1:]:
        if classes_of[split] != classes:
            missing = sorted(set(classes) - set(classes_of[split]))
            extra = sorted(set(classes_of[split]) - set(classes))
            raise DataError(f"{split}/ and train/ have different classes"
                            + (f"; missing from {split}/: {', '.join(missing)}" if missing else "")
                            + (f"; only in {split}/: {', '.join(extra)}" if extra else "") + ".")
    files, ignored = [], 0
    for split in present:
        for label, c in enumerate(classes):
            n_class, stack = 0, [f"{split}/{c}"]
            while stack:  # os.scandir with string paths: about twice as fast as os.walk + pathlib here
                rel_dir = stack.pop()
                with os.scandir(root / rel_dir) as it:
                    entries = sorted(it, key=lambda e: e.name)
                for e in entries:
                    rel = f"{rel_dir}/{e.name}"
                    if e.is_dir():
                        stack.append(rel)
                    elif os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
                        ignored += 1
                    else:
                        try:
                            st = e.stat()
                            files.append((split, rel, label, st.st_size, st.st_mtime_ns))
                        except OSError:
                            files.append((split, rel, label, -1, -1))
                        n_class += 1
            if n_class == 0:
                raise DataError(f"class {c!r} has no images in {root / split / c}.")
    return {"classes": classes, "files": files, "ignored": ignored, "splits": present}


def _decode(job):
    root, rel, size, policy = job
    path = Path(root) / rel
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, f"{rel}: unreadable ({e.strerror})"
    try:
        import io
        arr = load_image(io.BytesIO(data), size, policy)
    except ImageDecodeError as e:
        return None, None, f"{rel}: {e.reason}"
    return arr, hashlib.sha1(data).hexdigest(), None


def pack_folder(root: Path, out: Path, size: int = 32, policy: str = "center-crop", workers: int | None = None,
                progress: bool = True, scan: dict | None = None) -> dict:
    """Decode an image folder into a packed store at ``out``; returns the store's manifest.

    Raises:
        DataError: see `scan_folder`; also when every image of a class failed to decode.
    """
    root = Path(root).resolve()
    scan = scan or scan_folder(root)  # a caller that already listed the folder passes its scan
    jobs = [(str(root), rel, size, policy) for _, rel, _, _, _ in scan["files"]]
    workers = workers or os.cpu_count() or 1
    results = []
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc=f"packing {root.name}", unit="img", disable=not progress, file=sys.stderr)
    chunk = max(1, min(256, len(jobs) // (workers * 8) or 1))
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_decode, jobs, chunksize=chunk):
                results.append(r)
                bar.update()
    else:
        for j in jobs:
            results.append(_decode(j))
            bar.update()
    bar.close()
    images, labels, records, skipped, splits = [], [], [], [], {}
    for split in scan["splits"]:
        start = len(labels)
        for (s, rel, label, fsize, mtime), (arr, sha1, err) in zip(scan["files"], results):
            if s != split:
                continue
            if err:
                skipped.append(err)
                continue
            images.append(arr)
            labels.append(label)
            records.append([s, rel, fsize, mtime, sha1])
        splits[split] = [start, len(labels)]
        counts = np.bincount(np.asarray(labels[start:], dtype=np.int64), minlength=len(scan["classes"]))
        empty = [c for c, k in zip(scan["classes"], counts) if k == 0]
        if empty:
            raise DataError(f"no readable image left in {split}/ for class(es) {', '.join(empty)} "
                            f"({len(skipped)} files skipped: {'; '.join(skipped[:3])}).")
    manifest = {"name": root.name, "source": str(root), "classes": scan["classes"], "splits": splits,
                "resize": {"size": size, "policy": policy}, "files": records, "skipped": skipped,
                "listing": _listing(scan),
                "ignored_non_images": scan["ignored"],
                "notes": [f"{len(skipped)} unreadable or corrupt files skipped: " + "; ".join(skipped[:5])
                          + (" ..." if len(skipped) > 5 else "")] if skipped else []}
    write_store(out, np.stack(images), np.asarray(labels, dtype=np.int64), manifest)
    return manifest


def _listing(scan: dict) -> list:
    return sorted([rel, size, mtime] for _, rel, _, size, mtime in scan["files"])


def listing_matches(manifest: dict, root: Path, scan: dict | None = None) -> bool:
    """True when ``root``'s image files (paths, sizes, mtimes) are those the store was packed from."""
    return manifest.get("listing") == _listing(scan or scan_folder(root))


def store_path_for(root: Path, size: int, policy: str) -> Path:
    """The cache location of ``root``'s store: ``<data cache>/stores/<name>-<hash>``."""
    root = Path(root).resolve()
    key = hashlib.sha1(json.dumps([str(root), size, policy]).encode()).hexdigest()[:12]
    return default_data_dir() / "stores" / f"{root.name}-{size}-{key}"


def load_image_folder(root, size: int = 32, policy: str = "center-crop", store: Path | None = None,
                      progress: bool = True) -> Dataset:
    """Open ``root`` as a `Dataset` via its packed store, packing it first when missing or stale."""
    root = Path(root)
    scan = scan_folder(root)  # the clear errors come before any packing
    out = Path(store) if store else store_path_for(root, size, policy)
    if (out / "manifest.json").is_file():
        try:
            m = read_manifest(out)
            if m["resize"] == {"size": size, "policy": policy} and listing_matches(m, root, scan):
                ds = open_store(out)
                report_skipped(root, out, m)
                return ds
        except DataError:
            pass  # an unreadable or stale store is rebuilt below
    m = pack_folder(root, out, size, policy, progress=progress, scan=scan)
    report_skipped(root, out, m)
    return open_store(out)


def report_skipped(root: Path, store: Path, manifest: dict, show: int = 3) -> None:
    """Warn on the console (each time the folder is read, packed or cached) about files that were
    skipped as unreadable: how many, the first ``show``, and where the full list is."""
    skipped = manifest.get("skipped") or []
    if skipped:
        more = f" and {len(skipped) - show} more" if len(skipped) > show else ""
        warnings.warn(f"{len(skipped)} file(s) in {root} could not be read and were skipped: "
                      f"{'; '.join(skipped[:show])}{more}. Full list: 'skipped' in {store / 'manifest.json'}.",
                      stacklevel=3)
