"""WebDataset tar shards: writing them, and streaming training batches from them.

For data larger than memory. ``cifarlab data shard SOURCE OUT --shard-size N`` writes
``OUT/{train,val,test}-NNNNNN.tar`` in the WebDataset format (one sample = ``KEY.png`` lossless
image + ``KEY.cls`` class index; KEY is the image's index in its split) and ``OUT/dataset.json``
(classes, images per split, per-channel mean/std of the training images, shard lists).

`ShardLoader` streams a split with the ``webdataset`` library in worker processes (decoding
there), re-batches in the main process, and applies on the training device exactly the
augmentations of the in-memory `DeviceLoader` (flip, translate with
reflect padding, cutout, normalization), with every random draw from the per-epoch generator.
Differences from the in-memory path: the order within an epoch comes from shard shuffling and a
shuffle buffer (not a global permutation), so a mid-epoch resume restarts that epoch's stream and
skips batches rather than replaying the same images.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..files import storage_error, write_text
from .augment import augment_batch, normalize, reflect_pad
from .cifar import DataError, Dataset, superclass_meta
from .loader import batches_per_epoch, channel_stats, epoch_generator, epoch_seed

SHUFFLE_BUFFER = 5000  # samples held per worker for shuffling within shards


def write_shards(ds: Dataset, out: Path, shard_size: int = 10000, progress: bool = True) -> dict:
    """Write ``ds`` (train, optional val, test) as WebDataset shards in ``out``; returns dataset.json.

    Raises:
        DataError: ``shard_size`` < 1 or ``out`` not writable.
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be >= 1 images (got {shard_size}).")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write shards to {out}: {e.strerror}") from None
    splits = [("train", ds.train)] + ([("val", ds.val)] if ds.val is not None else []) + [("test", ds.test)]
    meta = {"format": "webdataset", "name": ds.name, "classes": list(ds.classes), "splits": {},
            "image_shape": list(ds.train.images.shape[1:]), "bytes": {}, **superclass_meta(ds.train)}
    meta["mean"], meta["std"] = channel_stats(ds.train.images)
    # written into a hidden folder, fsynced, then moved in; dataset.json (what readers open) comes last
    partial = out / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    (out / "dataset.json").unlink(missing_ok=True)
    try:
        _write_splits(splits, partial, shard_size, meta, progress)
        for shard in sorted(partial.iterdir()):
            os.replace(shard, out / shard.name)
    except OSError as e:
        raise storage_error(e, partial) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    write_text(out / "dataset.json", json.dumps(meta, indent=1))
    return meta


def _write_splits(splits, folder: Path, shard_size: int, meta: dict, progress: bool) -> None:
    import webdataset as wds
    from PIL import Image
    from tqdm import tqdm
    for split, arr in splits:
        with wds.ShardWriter(str(folder / f"{split}-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
            for i in tqdm(range(len(arr)), desc=f"sharding {split}", unit="img", disable=not progress):
                buf = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(arr.images[i].transpose(1, 2, 0))).save(buf, format="PNG",
                                                                                            compress_level=1)
                sink.write({"__key__": f"{i:09d}", "png": buf.getvalue(), "cls": int(arr.labels[i])})
        shards = sorted(folder.glob(f"{split}-*.tar"))
        for shard in shards:
            with open(shard, "rb") as f:
                os.fsync(f.fileno())
            meta["bytes"][shard.name] = shard.stat().st_size
        meta["splits"][split] = {"images": len(arr), "shards": [p.name for p in shards]}


def read_shard_meta(folder: Path) -> dict:
    p = Path(folder) / "dataset.json"
    if not p.is_file():
        raise DataError(f"{folder} holds no dataset.json; write shards with: cifarlab data shard SOURCE {folder}")
    meta = json.loads(p.read_text())
    for split, info in meta["splits"].items():
        missing = [s for s in info["shards"] if not (Path(folder) / s).is_file()]
        if missing:
            raise DataError(f"{folder}: shard(s) {', '.join(missing[:3])} of {split} are missing; rewrite the shards.")
    check_shard_sizes(folder, meta)
    return meta


def check_shard_sizes(folder: Path, meta: dict) -> None:
    """Raise `DataError` naming every shard whose size differs from ``dataset.json``'s record
    (cut short by a copy or a full disk, or changed since it was written)."""
    bad = [f"{name} is {(Path(folder) / name).stat().st_size} bytes, not {size}"
           for name, size in meta.get("bytes", {}).items()
           if (Path(folder) / name).is_file() and (Path(folder) / name).stat().st_size != size]
    if bad:
        raise DataError(f"{folder}: damaged shards: {'; '.join(bad[:3])}. Copy them again or rewrite them with: "
                        f"cifarlab data shard SOURCE {folder}")


def _decode_png(sample):
    from PIL import Image
    with Image.open(io.BytesIO(sample["png"])) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()
    return arr, int(sample["cls"]), int(sample["__key__"])


def _stack(samples):
    """Worker-side chunk: uint8 (k, 3, H, W), labels (k,), keys (k,)."""
    xs, ys, ks = zip(*samples)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys), torch.tensor(ks)


class ShardLoader:
    """Batches of one split streamed from shards; the interface of `DeviceLoader`.

    Args:
        folder: the shard folder; split: ``train``, ``val`` or ``test``.
        workers: DataLoader worker processes decoding PNGs (0 = in the main process).
        Other arguments as `DeviceLoader`.

    Yields ``(x, y)``: x float32 (B, 3, H, W) normalized on ``device``, y int64 (B,).
    """

    def __init__(self, folder, split: str, mean, std, batch_size: int, device="cpu", train: bool = False,
                 flip: str = "none", translate: int = 0, cutout: int = 0, seed: int = 0, workers: int = 2):
        self.folder, self.split = Path(folder), split
        self.meta = meta = read_shard_meta(self.folder)
        if split not in meta["splits"]:
            raise DataError(f"{folder} has no {split} shards.")
        self.urls = [str(self.folder / s) for s in meta["splits"][split]["shards"]]
        self.n = meta["splits"][split]["images"]
        self.size = tuple(meta["image_shape"][1:])
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.batch_size, self.train, self.seed, self.workers = batch_size, train, seed, workers
        self.flip, self.translate, self.cutout = (flip, translate, cutout) if train else ("none", 0, 0)
        # alternating flip: a fixed coin per image (by its key), inverted on odd epochs, as DeviceLoader
        self.base_flip = torch.rand(self.n, generator=epoch_generator(seed, -1)) < 0.5

    def __len__(self) -> int:
        return batches_per_epoch(self.n, self.batch_size, self.train)

    @property
    def num_images(self) -> int:
        return self.n

    def _stream(self, epoch: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Chunks (uint8 images, labels, keys) in stream order; shuffled per epoch when ``epoch`` is set."""
        import webdataset as wds
        urls = list(self.urls)
        if epoch is not None:
            random.Random(epoch_seed(self.seed, epoch)).shuffle(urls)
        pipe = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None)
        if epoch is not None:
            pipe = pipe.shuffle(SHUFFLE_BUFFER, rng=random.Random(self.seed * 7919 + epoch))
        pipe = pipe.map(_decode_png).batched(256, collation_fn=_stack, partial=True)
        workers = min(self.workers, len(urls))
        loader = torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=workers,
                                             persistent_workers=False)
        check_shard_sizes(self.folder, self.meta)  # every epoch: a shard can be cut while a run goes on
        try:
            yield from loader
        except (OSError, ValueError, RuntimeError, tarfile.TarError) as e:
            check_shard_sizes(self.folder, self.meta)
            raise DataError(f"{self.folder}: reading the {self.split} shards failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}). Rewrite them with: cifarlab data shard "
                            f"SOURCE {self.folder}") from None

    def _batches(self, epoch: int | None):
        """Re-batch the stream's chunks to exactly ``batch_size`` (the last partial kept unless training)."""
        bx, by, bk, have = [], [], [], 0
        for x, y, k in self._stream(epoch):
            bx.append(x), by.append(y), bk.append(k)
            have += len(y)
            while have >= self.batch_size:
                X, Y, K = torch.cat(bx), torch.cat(by), torch.cat(bk)
                yield X[:self.batch_size], Y[:self.batch_size], K[:self.batch_size]
                bx, by, bk = [X[self.batch_size:]], [Y[self.batch_size:]], [K[self.batch_size:]]
                have -= self.batch_size
        if have and not self.train:
            yield torch.cat(bx), torch.cat(by), torch.cat(bk)

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None):
        """Batches ``start`` .. ``stop`` of ``epoch``, augmented on the device."""
        if not self.train:
            yield from self.ordered()
            return
        stop = len(self) if stop is None else min(stop, len(self))
        g = epoch_generator(self.seed, epoch)
        done = 0
        for i, (x, y, k) in enumerate(self._batches(epoch)):
            if i >= stop:
                break
            done = i + 1
            b = len(y)
            # draw for every batch (also skipped ones) so batch i's draws do not depend on `start`
            shift = torch.randint(0, 2 * self.translate + 1, (b, 2), generator=g) if self.translate else None
            flip = (torch.rand(b, generator=g) < 0.5) if self.flip == "random" else None
            cut = torch.stack([torch.randint(0, self.size[0], (b,), generator=g),
                               torch.randint(0, self.size[1], (b,), generator=g)], 1) if self.cutout else None
            if i < start:
                continue
            if self.flip == "alternating":
                flip = self.base_flip[k] ^ bool(epoch % 2)
            dev = lambda t: None if t is None else t.to(self.device)
            x = augment_batch(reflect_pad(x.to(self.device), self.translate), self.mean, self.std, self.size,
                              shift=dev(shift), flip=dev(flip), cut=dev(cut), cutout=self.cutout)
            yield x, y.to(self.device)
        if done < stop:
            raise DataError(f"{self.folder}: the {self.split} shards gave {done} batches of {stop} (images missing "
                            f"from a shard). Rewrite them with: cifarlab data shard SOURCE {self.folder}")

    def ordered(self):
        """The split in stored order (shards in name order, no shuffling), normalized."""
        for x, y, _ in self._batches(None):
            yield normalize(x.to(self.device), self.mean, self.std), y.to(self.device)
