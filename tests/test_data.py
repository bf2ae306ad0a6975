"""Official-format loaders, the restricted unpickler, md5 and download paths, the split."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from cifarlab.data import (ChecksumWarning, DataError, UnsafePickleError, load_dataset, safe_loads,
                           stratified_split)
from cifarlab.data import cifar as cifar_mod
from conftest import make_cifar10, write_pickle


def test_cifar10_loads_shapes_labels_and_names(cifar10_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("cifar10", cifar10_dir, download=False)
    assert ds.train.images.shape == (200, 3, 32, 32) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (60, 3, 32, 32)
    assert ds.train.labels.dtype == np.int64 and set(ds.train.labels) == set(range(10))
    assert ds.classes[:2] == ["airplane", "automobile"]
    assert ds.train.coarse_labels is None
    # every file differs from the official md5: one warning that names them
    msgs = [str(w.message) for w in caught if issubclass(w.category, ChecksumWarning)]
    assert any("data_batch_1" in m and "test_batch" in m for m in msgs)


def test_images_round_trip_pixel_layout(tmp_path):
    """Row i of 'data' is R plane, G plane, B plane of 32x32: must land as (3, 32, 32)."""
    root = make_cifar10(tmp_path / "d")
    raw = pickle.loads((root / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")
    ds = load_dataset("cifar10", root, download=False)
    np.testing.assert_array_equal(ds.train.images[0, 1].ravel(), raw[b"data"][0, 1024:2048])


def test_accepts_the_official_folder_itself(cifar10_dir):
    ds = load_dataset("cifar10", cifar10_dir / "cifar-10-batches-py", download=False)
    assert len(ds.train) == 200


def test_cifar100_fine_coarse_and_names(cifar100_dir):
    ds = load_dataset("cifar100", cifar100_dir, download=False)
    assert ds.num_classes == 100 and len(ds.train.coarse_classes) == 20
    np.testing.assert_array_equal(ds.train.coarse_labels, ds.train.labels // 5)


def test_md5_match_gives_no_warning(cifar10_dir, monkeypatch):
    folder = cifar10_dir / "cifar-10-batches-py"
    spec = cifar_mod.SPECS["cifar10"]
    md5 = lambda f: hashlib.md5((folder / f).read_bytes()).hexdigest()
    patched = cifar_mod.CifarSpec(**{**spec.__dict__,
                                     "train_files": {f: md5(f) for f in spec.train_files},
                                     "test_files": {f: md5(f) for f in spec.test_files},
                                     "meta_file": (spec.meta_file[0], md5(spec.meta_file[0])),
                                     "train_count": 200, "test_count": 60})
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10", patched)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        ds = load_dataset("cifar10", cifar10_dir, download=False)
    assert ds.notes == []


class _Evil:
    """Unpickling this runs ``touch MARKER`` through os.system: a file that must never appear."""
    marker = "/nonexistent"

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(marker) -> _Evil:
    e = _Evil()
    e.marker = str(marker)
    return e


def test_the_payload_is_real(tmp_path):
    """The unrestricted unpickler does run it (so the tests below would see it if ours did)."""
    pickle.loads(pickle.dumps(_evil(tmp_path / "ran"), protocol=2))
    assert (tmp_path / "ran").exists()


def test_restricted_unpickler_refuses_foreign_global(tmp_path):
    payload = pickle.dumps({b"data": _evil(tmp_path / "pwned")}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"os\.system|posix\.system"):
        safe_loads(payload)
    assert not (tmp_path / "pwned").exists()


def test_restricted_unpickler_loads_numpy_arrays():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = safe_loads(pickle.dumps({b"data": arr, b"labels": [1, 2, 3]}, protocol=2))
    np.testing.assert_array_equal(out[b"data"], arr)


def test_foreign_global_in_batch_file_is_a_clear_error(cifar10_dir, tmp_path):
    write_pickle(cifar10_dir / "cifar-10-batches-py" / "data_batch_3",
                 {b"data": _evil(tmp_path / "pwned"), b"labels": []})
    with pytest.raises(DataError, match=r"data_batch_3 was refused.*system"):
        load_dataset("cifar10", cifar10_dir, download=False)
    assert not (tmp_path / "pwned").exists()


def test_truncated_batch_file(cifar10_dir):
    f = cifar10_dir / "cifar-10-batches-py" / "data_batch_2"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_2 is truncated or corrupt"):
        load_dataset("cifar10", cifar10_dir, download=False)


def test_wrong_shape_and_label_range(cifar10_dir):
    folder = cifar10_dir / "cifar-10-batches-py"
    write_pickle(folder / "data_batch_4", {b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10})
    with pytest.raises(DataError, match=r"data_batch_4.*\(N, 3072\)"):
        load_dataset("cifar10", cifar10_dir, download=False)
    write_pickle(folder / "data_batch_4", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(DataError, match=r"\[0, 10\)"):
        load_dataset("cifar10", cifar10_dir, download=False)


def test_missing_folder_offline_names_folder_and_url(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(e.value)
    assert "cifar-10-python.tar.gz" in str(e.value)


def test_unknown_dataset_suggests():
    with pytest.raises(DataError, match="cifar10"):
        load_dataset("cifar11")


def _tarball(src_root: Path, out: Path) -> str:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return hashlib.md5(out.read_bytes()).hexdigest()


def test_download_verifies_md5_and_extracts(tmp_path, monkeypatch):
    src = make_cifar10(tmp_path / "src")
    tgz = tmp_path / "cifar-10-python.tar.gz"
    md5 = _tarball(src, tgz)
    spec = cifar_mod.SPECS["cifar10"]
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10",
                        cifar_mod.CifarSpec(**{**spec.__dict__, "url": tgz.as_uri(), "tar_md5": md5}))
    ds = load_dataset("cifar10", tmp_path / "cache", download=True)
    assert len(ds.train) == 200 and (tmp_path / "cache" / "cifar-10-batches-py" / "test_batch").is_file()


def test_download_with_wrong_md5_is_refused(tmp_path, monkeypatch):
    src = make_cifar10(tmp_path / "src")
    tgz = tmp_path / "cifar-10-python.tar.gz"
    _tarball(src, tgz)
    spec = cifar_mod.SPECS["cifar10"]
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10",
                        cifar_mod.CifarSpec(**{**spec.__dict__, "url": tgz.as_uri(), "tar_md5": "0" * 32}))
    with pytest.raises(DataError, match="download is corrupt"):
        load_dataset("cifar10", tmp_path / "cache", download=True)


def test_offline_download_failure_names_url(tmp_path, monkeypatch):
    spec = cifar_mod.SPECS["cifar10"]
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10", cifar_mod.CifarSpec(
        **{**spec.__dict__, "url": (tmp_path / "absent.tar.gz").as_uri()}))
    with pytest.raises(DataError, match="could not be downloaded from file://"):
        load_dataset("cifar10", tmp_path / "cache", download=True)


def test_tar_path_traversal_is_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="outside"):
        cifar_mod.safe_extract(evil, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


def test_stratified_split_is_exact_seeded_and_disjoint():
    labels = np.repeat(np.arange(10), [100, 100, 100, 100, 100, 50, 50, 50, 50, 50])
    tr, va = stratified_split(labels, 150, seed=3)
    assert len(va) == 150 and len(tr) == len(labels) - 150
    assert not set(tr) & set(va)
    counts = np.bincount(labels[va], minlength=10)
    assert counts[:5].tolist() == [20] * 5 and counts[5:].tolist() == [10] * 5
    tr2, va2 = stratified_split(labels, 150, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 150, seed=4)[1])
    assert len(stratified_split(labels, 0, seed=0)[1]) == 0
    with pytest.raises(DataError):
        stratified_split(labels, len(labels), seed=0)
