"""Batched augmentation: shapes, exactness and determinism of the device loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifarlab.data import DeviceLoader, ImageArrays
from cifarlab.data.augment import crop_batch, cutout_batch, flip_batch, reflect_pad, tta_views


def _arrays(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return ImageArrays(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), np.arange(n) % 10,
                       [str(i) for i in range(10)])


def test_reflect_pad_matches_torch_on_uint8():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    ours = reflect_pad(x, 2)
    ref = F.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    assert ours.dtype == torch.uint8 and torch.equal(ours, ref)


def test_crop_at_pad_offset_is_identity_and_shift_moves_pixels():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    p = reflect_pad(x, 2)
    same = crop_batch(p, torch.full((5,), 2), torch.full((5,), 2), (32, 32))
    assert torch.equal(same, x)
    shifted = crop_batch(p, torch.full((5,), 3), torch.full((5,), 2), (32, 32))
    assert torch.equal(shifted[:, :, :-1], x[:, :, 1:])  # one pixel down in the source


def test_flip_and_cutout():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = flip_batch(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    y = torch.ones(3, 3, 32, 32)
    cut = cutout_batch(y, torch.tensor([16, 0, 31]), torch.tensor([16, 0, 31]), 8)
    assert (cut[0] == 0).sum().item() == 3 * 64            # full square inside
    assert (cut[1] == 0).sum().item() == 3 * 16            # clipped at the corner (4x4 left)
    assert (cut[2] == 0).sum().item() == 3 * 25            # clipped at the far corner (5x5 left)


def test_tta_weights_sum_to_one_and_views_have_input_shape():
    x = torch.randn(2, 3, 32, 32)
    for level, n in ((0, 1), (1, 2), (2, 6)):
        views = tta_views(x, level)
        assert len(views) == n and sum(w for w, _ in views) == pytest.approx(1.0)
        assert all(v.shape == x.shape for _, v in views)


def test_train_batches_shape_dtype_and_normalization():
    loader = DeviceLoader(_arrays(), [0.5] * 3, [0.25] * 3, batch_size=16, train=True, flip="random",
                          translate=2, cutout=4, seed=0)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 4
    x, y = batches[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6  # (0-0.5)/0.25 .. (1-0.5)/0.25
    # each epoch covers distinct images (a permutation)
    labels = torch.cat([b[1] for b in batches])
    assert len(labels) == 64


def test_epochs_replay_exactly_and_differ_between_epochs():
    a = DeviceLoader(_arrays(), [0.5] * 3, [0.25] * 3, 16, train=True, flip="random", translate=2, seed=7)
    b = DeviceLoader(_arrays(), [0.5] * 3, [0.25] * 3, 16, train=True, flip="random", translate=2, seed=7)
    e1 = [x for x, _ in a.epoch(1)]
    assert all(torch.equal(p, q) for p, q in zip(e1, [x for x, _ in b.epoch(1)]))
    # resuming mid-epoch yields the same remaining batches
    tail = [x for x, _ in b.epoch(1, start=2)]
    assert all(torch.equal(p, q) for p, q in zip(e1[2:], tail))
    assert not torch.equal(e1[0], next(a.epoch(2))[0])
    c = DeviceLoader(_arrays(), [0.5] * 3, [0.25] * 3, 16, train=True, flip="random", translate=2, seed=8)
    assert not torch.equal(e1[0], next(c.epoch(1))[0])


def test_alternating_flip_inverts_every_other_epoch():
    arrays = _arrays()
    loader = DeviceLoader(arrays, [0.0] * 3, [1.0] * 3, 64, train=True, flip="alternating", seed=1)
    p0, p1 = loader._plan(0), loader._plan(1)
    assert torch.equal(p0["flip"], ~p1["flip"])
    assert torch.equal(p0["flip"], loader._plan(2)["flip"])


def test_eval_loader_is_ordered_and_unaugmented():
    arrays = _arrays(n=50)
    loader = DeviceLoader(arrays, [0.0] * 3, [1.0] * 3, 16, train=False, flip="random", translate=2)
    xs, ys = zip(*loader.epoch(0))
    x = torch.cat(xs)
    assert x.shape == (50, 3, 32, 32)
    assert torch.allclose(x, torch.from_numpy(arrays.images).float() / 255)
    assert torch.equal(torch.cat(ys), torch.from_numpy(arrays.labels))
