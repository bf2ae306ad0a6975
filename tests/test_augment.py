"""Batched augmentation: shapes, exactness and determinism of the device loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifarlab.data import DeviceLoader, ImageArrays
from cifarlab.data.augment import crop_batch, cutout_batch, flip_batch, reflect_pad, tta_view_count, tta_views


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


def test_tta_view_count_with_a_fraction_is_the_average_forward_passes():
    assert [tta_view_count(level) for level in (0, 1, 2, 3)] == [1, 2, 6, 10]
    assert tta_view_count(2, 0.25) == 2.25 and tta_view_count(0, 0.25) == 1 and tta_view_count(3, 0.5) == 5.5


def test_tta_weights_sum_to_one_and_views_have_input_shape():
    x = torch.randn(2, 3, 32, 32)
    for level, n in ((0, 1), (1, 2), (2, 6), (3, 10)):
        views = tta_views(x, level)
        assert len(views) == n and sum(w for w, _ in views) == pytest.approx(1.0)
        assert all(v.shape == x.shape for _, v in views)


def test_tta_views_are_the_image_its_mirror_and_one_pixel_shifts():
    x = torch.randn(2, 3, 8, 8)
    (w0, v0), = tta_views(x, 0)
    assert w0 == 1.0 and torch.equal(v0, x)
    (_, a), (_, m) = tta_views(x, 1)
    assert torch.equal(a, x) and torch.equal(m, x[..., torch.arange(7, -1, -1)])  # the mirror, column by column
    views = tta_views(x, 2)
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    down_right, down_right_mirror, up_left, up_left_mirror = (v for _, v in views[2:])
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])    # content moved one pixel down and right
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])       # content moved one pixel up and left
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])       # the new edge is reflected, not zero
    assert torch.equal(down_right_mirror, down_right.flip(-1)) and torch.equal(up_left_mirror, up_left.flip(-1))


def test_tta_level_3_adds_the_other_two_diagonal_shifts_to_level_2():
    x = torch.randn(2, 3, 8, 8)
    two, three = tta_views(x, 2), tta_views(x, 3)
    assert [w for w, _ in three] == [0.25, 0.25] + [0.0625] * 8
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(two, three))   # the same views, in the same order
    down_left, down_left_mirror, up_right, up_right_mirror = (v for _, v in three[6:])
    assert torch.equal(down_left[..., 1:, :-1], x[..., :-1, 1:])     # content moved one pixel down and left
    assert torch.equal(up_right[..., :-1, 1:], x[..., 1:, :-1])      # content moved one pixel up and right
    assert torch.equal(down_left_mirror, down_left.flip(-1)) and torch.equal(up_right_mirror, up_right.flip(-1))


def test_train_batches_shape_dtype_and_augmentation_range():
    loader = DeviceLoader(_arrays(), [0.5] * 3, [0.25] * 3, batch_size=16, train=True, flip="random",
                          translate=2, cutout=4, seed=0)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 4
    x, y = batches[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6  # (0-0.5)/0.25 .. (1-0.5)/0.25


def test_an_epoch_is_a_permutation_normalized_per_channel():
    """Unaugmented training batches: undoing (x - mean) / std gives back every image exactly once,
    and the epoch's per-channel mean and std are the hand-computed ones."""
    arrays = _arrays()
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.3, 0.25]   # different per channel: a swap or a missing step shows
    loader = DeviceLoader(arrays, mean, std, batch_size=16, train=True, seed=3)
    x = torch.cat([b for b, _ in loader.epoch(0)])
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = ((x * s + m) * 255).round().to(torch.uint8).numpy()
    index = {img.tobytes(): i for i, img in enumerate(arrays.images)}
    order = [index[p.tobytes()] for p in pixels]
    assert sorted(order) == list(range(64)) and order != list(range(64))  # every image once, shuffled
    ref = arrays.images.astype(np.float64) / 255
    want_mean = (ref.mean(axis=(0, 2, 3)) - mean) / std
    want_std = ref.std(axis=(0, 2, 3)) / std
    assert np.allclose(x.mean(dim=(0, 2, 3)).numpy(), want_mean, atol=1e-5)
    assert np.allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy(), want_std, atol=1e-5)


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


