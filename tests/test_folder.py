"""Image folders and the packed store: mode conversion, bad files, invalidation, training from a folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cifarlab
from cifarlab.cli import main as cli_main
from cifarlab.data import DataError, load_dataset
from cifarlab.data.folder import pack_folder, scan_folder
from cifarlab.data.images import load_image
from cifarlab.data.store import open_store, store_info

COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "frog": (40, 40, 200)}


def make_folder(root, per_class=(6, 3), size=(40, 30)):
    """train/ and test/ with one solid colour (+ noise) per class, as PNG."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c, rgb in COLORS.items():
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(np.array(rgb) + rng.integers(-20, 21, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "RGB"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    a = np.zeros((20, 30, 3), np.uint8)
    a[..., 0] = 255                      # pure red
    img = Image.fromarray(a)
    if mode == "I;16":
        img = Image.fromarray((np.full((20, 30), 65535, np.uint16)))
    elif mode != "RGB":
        img = img.convert(mode)
    ext = ".tiff" if mode in ("CMYK", "I;16", "LA") else ".png"
    img.save(tmp_path / f"x{ext}")
    out = load_image(tmp_path / f"x{ext}", size=16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    if mode in ("RGB", "RGBA", "P", "CMYK"):
        assert out[0].mean() > 240 and out[1].mean() < 15      # still red
    if mode == "I;16":
        assert out.min() == 255                               # 16-bit white scaled, not clipped to black
    if mode in ("L", "LA", "1", "I;16"):
        assert (out[0] == out[1]).all() and (out[1] == out[2]).all()   # grey stays grey in all three channels
    if mode in ("L", "LA"):
        assert abs(int(out[0].mean().round()) - 76) <= 1   # red's luma, 0.299 x 255 (ITU-R 601), not black or white
    if mode == "1":
        assert 50 < out.mean() < 100   # red dithered to black and white, then resized: about its luma on average


def test_gif_first_frame_and_extreme_sizes(tmp_path):
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "a.gif", 8)[0].mean() > 200  # red first frame
    Image.new("RGB", (1, 1), (0, 255, 0)).save(tmp_path / "tiny.png")
    assert load_image(tmp_path / "tiny.png", 32)[1].min() == 255
    Image.new("L", (10000, 10000), 128).save(tmp_path / "huge.png")
    out = load_image(tmp_path / "huge.png", 32, policy="pad")
    assert out.shape == (3, 32, 32) and abs(int(out.mean()) - 128) <= 1


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "a" / "train").mkdir(parents=True)
    (tmp_path / "a" / "test").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        scan_folder(tmp_path / "a")
    root = make_folder(tmp_path / "b")
    (root / "train" / "bird").mkdir()
    with pytest.raises(DataError, match="test/ and train/ have different classes; missing from test/: bird"):
        scan_folder(root)
    (root / "test" / "bird").mkdir()
    with pytest.raises(DataError, match="class 'bird' has no images"):
        scan_folder(root)
    root = make_folder(tmp_path / "c")
    os.rename(root / "train" / "dog", root / "train" / "Cat")
    with pytest.raises(DataError, match="differ only in case"):
        scan_folder(root)
    with pytest.raises(DataError, match="no train/ folder"):
        scan_folder(tmp_path / "a" / "train")


def test_corrupt_and_non_image_files_are_skipped_and_listed(tmp_path):
    root = make_folder(tmp_path / "f")
    good = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "train" / "cat" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "dog" / "fake.jpg").write_text("not a jpeg")
    (root / "train" / "dog" / "notes.txt").write_text("ignored")
    import io
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format="JPEG")
    (root / "train" / "frog" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    m = pack_folder(root, tmp_path / "store", progress=False, workers=1)
    assert sorted(s.split(":")[0] for s in m["skipped"]) == ["train/cat/broken.png", "train/dog/fake.jpg",
                                                             "train/frog/cut.jpg"]
    assert m["ignored_non_images"] == 1
    ds = open_store(tmp_path / "store")
    assert ds.classes == ["cat", "dog", "frog"] and len(ds.train) == 18 and len(ds.test) == 9
    assert ds.train.images.shape == (18, 3, 32, 32)
    assert any("3 unreadable or corrupt" in n for n in ds.notes)
    # content: class colour survives decoding (cat is red)
    cat = ds.train.images[ds.train.labels == 0]
    assert cat[:, 0].mean() > 150 and cat[:, 1].mean() < 90


def test_store_is_reused_invalidated_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "f")
    ds = load_dataset(f"folder:{root}", progress=False)
    manifest = next((tmp_path / "cache" / "stores").glob("*/manifest.json"))
    stamp = manifest.stat().st_mtime_ns
    ds2 = load_dataset(f"folder:{root}", progress=False)              # reopened, not repacked
    assert manifest.stat().st_mtime_ns == stamp and len(ds2.train) == len(ds.train) == 18
    Image.new("RGB", (32, 32), COLORS["dog"]).save(root / "train" / "dog" / "new.png")
    ds3 = load_dataset(f"folder:{root}", progress=False)              # the folder changed: repacked
    assert len(ds3.train) == 19
    cat = root / "train" / "cat" / "0.png"                            # changed in place: same name, new pixels
    Image.new("RGB", (32, 32), (0, 0, 255)).save(cat)
    os.utime(cat, ns=(cat.stat().st_atime_ns, cat.stat().st_mtime_ns + 10**9))
    ds4 = load_dataset(f"folder:{root}", progress=False)
    blue = ds4.train.images[(ds4.train.labels == 0)]
    assert (blue[:, 2].reshape(len(blue), -1).mean(1) > 200).sum() == 1   # exactly one blue cat now
    (root / "train" / "dog" / "new.png").unlink()                     # deleted after packing
    assert len(load_dataset(f"folder:{root}", progress=False).train) == 18
    store = manifest.parent
    with open(store / "images.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="does not match its manifest.*Rebuild it with: cifarlab data pack"):
        open_store(store)
    assert len(load_dataset(f"folder:{root}", progress=False).train) == 18   # a broken store is rebuilt


def test_val_folder_is_used_and_training_from_a_folder(tmp_path):
    root = make_folder(tmp_path / "f", per_class=(8, 4))
    for c in COLORS:
        (root / "val" / c).mkdir(parents=True)
        for i in range(2):
            os.rename(root / "train" / c / f"{i}.png", root / "val" / c / f"{i}.png")
    cfg = cifarlab.recipe_config(f"folder:{root}").update(dict(
        model_kwargs={"widths": [8, 16, 16]}, batch_size=6, eval_batch_size=6, epochs=4, progress=False,
        whiten_bias_epochs=1, channels_last=False, cache_dir=str(tmp_path / "c")))
    os.environ["CIFARLAB_DATA"] = str(tmp_path / "cache")
    try:
        run = cifarlab.train(cfg, run_dir=tmp_path / "run")
    finally:
        del os.environ["CIFARLAB_DATA"]
    r = run.results
    assert r["classes"] == ["cat", "dog", "frog"] and r["train_images"] == 18
    assert r["test"]["num_images"] == 12
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert "val_top1" in rows[-1]                                      # val/ became the validation split
    assert r["test"]["top1"] > 50                                      # learned: chance is 33.3% (3 solid colours)


def test_cli_data_pack_and_info(tmp_path, capsys, cifar10_dir):
    root = make_folder(tmp_path / "f")
    assert cli_main(["data", "pack", str(root), str(tmp_path / "s"), "--workers", "2"]) == 0
    assert "packed 27 images" in capsys.readouterr().out
    assert cli_main(["data", "pack", str(root), str(tmp_path / "s")]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main(["data", "info", str(tmp_path / "s")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images_per_split"] == {"train": 18, "test": 9} and info["shape"] == [27, 3, 32, 32]
    assert cli_main(["data", "pack", "cifar10", str(tmp_path / "c10"), "--data-dir", str(cifar10_dir)]) == 0
    ds = open_store(tmp_path / "c10")
    ref = load_dataset("cifar10", cifar10_dir, download=False)
    assert np.array_equal(ds.train.images, ref.train.images) and np.array_equal(ds.test.labels, ref.test.labels)
    assert store_info(tmp_path / "c10")["classes"][0] == "airplane"


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    """A file the process may not read (simulated: root, as in CI, reads files whatever their mode)."""
    root = make_folder(tmp_path / "f")
    locked = (root / "train" / "cat" / "1.png").resolve()
    real = Path.read_bytes

    def read_bytes(self):
        if self.resolve() == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    m = pack_folder(root, tmp_path / "store", progress=False, workers=1)   # in this process: the patch applies
    assert [s for s in m["skipped"] if s.startswith("train/cat/1.png")] == ["train/cat/1.png: unreadable (Permission denied)"]
    packed = [f[1] for f in m["files"]]
    assert len(m["skipped"]) == 1 and "train/cat/1.png" not in packed and "train/cat/0.png" in packed
