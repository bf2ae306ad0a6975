"""Partial fine-tuning on a cached trunk, the MLP head, and the batched RandomResizedCrop."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import cifarlab
from cifarlab.config import ConfigError
from cifarlab.data.augment import resized_crop_batch
from cifarlab.models import classifier_names, create_model
from cifarlab.models.factory import attach_mlp_head
from cifarlab.models.stages import split_at_stage
from cifarlab.training.trunk_cache import TrunkLoader, view_names
from helpers import StopAt


@pytest.mark.parametrize("name,k", [("tf_efficientnet_lite0", 3), ("resnet18", 1), ("convnext_atto", 2),
                                    ("tf_efficientnet_lite0", 0)])
def test_trunk_then_rest_is_the_whole_network(name, k):
    model = timm.create_model(name, num_classes=7).eval()
    trunk, rest = split_at_stage(model, k)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rest(trunk(x)), model(x), atol=1e-5)
    trunk_ids = {id(p) for p in trunk.parameters()}
    rest_ids = {id(p) for p in rest.parameters()}
    assert not trunk_ids & rest_ids and len(trunk_ids | rest_ids) == len(list(model.parameters()))
    assert rest.get_classifier() is model.get_classifier()
    keys, full, own = rest.model_keys(), model.state_dict(), rest.state_dict()
    assert len(set(keys.values())) == len(keys) == len(own)  # one model key per rest key
    assert all(torch.equal(own[k], full[v]) for k, v in keys.items())
    assert {f"{n}.weight" for n in classifier_names(model)} <= set(keys.values())  # the head travels with the rest


def test_models_that_cannot_be_cut_are_refused_with_the_way_out():
    with pytest.raises(ConfigError, match="fine-tune"):
        split_at_stage(timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32), 1, side=32)
    with pytest.raises(ConfigError, match=r"between 0 and 4 .*layer1, layer2, layer3, layer4.*got 9"):
        split_at_stage(timm.create_model("resnet18", num_classes=3), 9)


def test_trunk_loader_shows_each_image_once_per_epoch_in_varying_views():
    n, views = 40, 3
    x = np.zeros((views, n, 2, 1, 1), np.float32)
    for v in range(views):
        x[v, :, 0, 0, 0] = np.arange(n)  # which image
        x[v, :, 1, 0, 0] = v             # which view
    loader = TrunkLoader(x, np.arange(n), batch_size=8, train=True, seed=0, device="cpu")
    batches = list(loader.epoch(0))
    ids = torch.cat([b[0][:, 0, 0, 0] for b in batches]).long()
    assert sorted(ids.tolist()) == list(range(n)) and all(torch.equal(b[0][:, 0, 0, 0].long(), b[1]) for b in batches)
    seen = torch.cat([b[0][:, 1, 0, 0] for b in batches])
    assert set(seen.long().tolist()) == {0, 1, 2}
    again = list(loader.epoch(0, start=2))  # resume mid-epoch: the same batches
    assert torch.equal(again[0][0], batches[2][0])
    bits = torch.randn(1, 4, 2, 2, 2).bfloat16()  # bf16 storage: read back bit for bit
    back = TrunkLoader(bits.view(torch.uint16).numpy(), np.arange(4), 4, train=False, seed=0, device="cpu")
    assert torch.equal(next(back.ordered())[0], bits[0].float())
    back.channels_last = True
    assert next(back.ordered())[0].is_contiguous(memory_format=torch.channels_last)


def test_every_view_mode_shows_each_view_of_each_image_once_per_epoch():
    n, views = 30, 2
    x = np.stack([np.stack([np.arange(n), np.full(n, v)], 1) for v in range(views)]).astype(np.float32)  # (V, N, 2)
    loader = TrunkLoader(x, np.arange(n), batch_size=6, train=True, seed=3, device="cpu", every_view=True)
    assert loader.num_images == 60 and len(loader) == 10
    batches = list(loader.epoch(1))
    rows = torch.cat([b[0] for b in batches]).long()
    assert sorted(map(tuple, rows.tolist())) == [(i, v) for i in range(n) for v in range(views)]
    assert all(torch.equal(b[0][:, 0].long(), b[1]) for b in batches)   # labels follow their rows
    assert not torch.equal(torch.cat([b[0] for b in loader.epoch(2)]), torch.cat([b[0] for b in batches]))


def test_view_names_follow_the_config():
    cfg = cifarlab.TrainConfig(cached_views=4)
    assert view_names(cfg) == ["center", "flip", "crop1", "crop2"]
    assert view_names(cfg.update({"flip": "none", "cached_views": 2})) == ["center", "crop1"]
    assert view_names(cfg.update({"cached_views": 1})) == ["center"]


def test_resized_crop_batch_full_box_is_identity_and_flip_mirrors():
    x = torch.randn(3, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    same = resized_crop_batch(x, 16, 1.0, g, ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    flipped = resized_crop_batch(x, 16, 1.0, g, flip=torch.tensor([True, False, True]), ratio=(1.0, 1.0))
    assert torch.allclose(flipped[0], x[0].flip(-1), atol=1e-5) and torch.allclose(flipped[1], x[1], atol=1e-5)
    small = resized_crop_batch(x, 24, 0.2, g)
    assert small.shape == (3, 3, 24, 24) and not torch.allclose(small, torch.nn.functional.interpolate(x, 24))


def _partial_cfg(cifar10_dir, tmp_path, **kw):
    src = create_model("resnet18", 10)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    base = cifarlab.recipe_config("cifar10", "resnet18").update(dict(
        data_dir=str(cifar10_dir), download=False, strategy="partial-fine-tune", trainable_stages=1, epochs=3,
        batch_size=50, progress=False, cache_dir=str(tmp_path / "cache"), tta=1, img_size=32, channels_last=False,
        weights=str(tmp_path / "w.safetensors"), val_size=40, freeze_epochs=1, precision="fp32"))
    return base.update(kw), src.state_dict()


def test_partial_fine_tune_trains_only_the_last_stages_and_scores_like_the_full_network(cifar10_dir, tmp_path):
    from cifarlab.training import load_weights
    cfg, start = _partial_cfg(cifar10_dir, tmp_path)
    run = cifarlab.train(cfg, run_dir=tmp_path / "a")
    info = run.results["feature_cache"]
    assert not info["hit"] and info["views"] == ["center", "flip", "crop1", "crop2"]
    assert info["trunk_shape"] == [256, 2, 2]  # resnet18's layer3 output at 32 px
    best = load_weights(tmp_path / "a" / "checkpoint-best.safetensors")
    assert torch.equal(best["layer3.1.conv2.weight"], start["layer3.1.conv2.weight"])  # frozen trunk
    assert torch.equal(best["bn1.running_mean"], start["bn1.running_mean"])
    assert not torch.equal(best["layer4.1.conv2.weight"], start["layer4.1.conv2.weight"])  # trained rest
    # the test score from the cached (float32) trunk outputs is the full network's own
    again = cifarlab.evaluate(tmp_path / "a", tta=1)
    assert again["top1"] == run.results["test"]["top1"] and again["loss"] == pytest.approx(run.results["test"]["loss"],
                                                                                          rel=1e-4)
    second = cifarlab.train(cfg, run_dir=tmp_path / "b")
    assert second.results["feature_cache"]["hit"] and second.results["test"] == run.results["test"]
    reseeded = cifarlab.train(cfg.update({"seed": 1}), run_dir=tmp_path / "d")  # another seed: the same trunk
    assert reseeded.results["feature_cache"]["hit"]
    assert reseeded.results["feature_cache"]["key"] == info["key"]
    third = cifarlab.train(cfg.update({"trainable_stages": 2}), run_dir=tmp_path / "c")  # another cut: a miss
    assert not third.results["feature_cache"]["hit"] and third.results["feature_cache"]["trunk_shape"] == [128, 4, 4]


def test_partial_fine_tune_resumes_exactly(cifar10_dir, tmp_path):
    from cifarlab.training import TrainingInterrupted
    cfg, _ = _partial_cfg(cifar10_dir, tmp_path, cache_dtype="bf16")
    full = cifarlab.train(cfg, run_dir=tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(4),))
    resumed = cifarlab.train(resume=tmp_path / "part")
    assert resumed.results["test"] == full.results["test"]


def test_mlp_head_replaces_the_classifier_and_travels_with_the_checkpoint(cifar10_dir, tmp_path):
    model = timm.create_model("resnet18", num_classes=10)
    head = attach_mlp_head(model, 32, 10)
    assert model.get_classifier() is head and model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="head_hidden"):
        attach_mlp_head(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)), 32, 10)
    cfg, _ = _partial_cfg(cifar10_dir, tmp_path, strategy="linear-probe", head_hidden=32, val_size=0, tta=0)
    run = cifarlab.train(cfg, run_dir=tmp_path / "mlp")
    clf = cifarlab.load(tmp_path / "mlp")
    probs = clf.predict_proba([np.zeros((3, 32, 32), np.uint8), np.full((3, 32, 32), 200, np.uint8)])
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert run.results["parameters"]["total"] > 11_000_000


def test_trivial_augment_draws_per_image_and_replays():
    from cifarlab.data.autoaugment import _colour, _geometric, trivial_augment_batch
    x = torch.rand(64, 3, 16, 16)
    a = trivial_augment_batch(x, torch.Generator().manual_seed(3))
    b = trivial_augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    changed = (a - x).abs().flatten(1).amax(1) > 1e-6
    assert 0 < changed.sum() < 64  # identity (and zero magnitudes) leave some images alone
    one = torch.ones(1)
    assert torch.allclose(_colour(x[:2], "solarize", one, torch.full((2,), 30.0)), 1 - x[:2])  # threshold 0
    assert torch.equal(_colour(x[:2], "posterize", one, torch.zeros(2)), torch.floor(x[:2] * 255) / 255)  # 8 bits
    assert torch.allclose(_colour(x[:1], "brightness", -one, one), x[:1] * 0.01, atol=1e-6)
    flat = torch.linspace(0.2, 0.4, 256).view(1, 1, 16, 16).repeat(1, 3, 1, 1)
    eq = _colour(flat, "equalize", one, one)
    assert eq.min() == 0 and eq.max() == 1  # stretched over the whole range
    shifted = _geometric(x[:1], "translate_x", torch.tensor([4 / 32]))  # content 4 pixels to the left
    assert torch.allclose(shifted[..., :-4], x[:1, ..., 4:], atol=1e-5) and shifted[..., -4:].abs().max() == 0


def test_a_damaged_trunk_cache_is_recomputed(cifar10_dir, tmp_path):
    cfg, _ = _partial_cfg(cifar10_dir, tmp_path, val_size=0, epochs=2)
    first = cifarlab.train(cfg, run_dir=tmp_path / "a")
    folder = tmp_path / "cache" / f"trunk-{first.results['feature_cache']['key']}"
    (folder / "train_x.npy").write_bytes((folder / "train_x.npy").read_bytes()[:100])  # truncated
    second = cifarlab.train(cfg, run_dir=tmp_path / "b")
    assert not second.results["feature_cache"]["hit"] and second.results["test"] == first.results["test"]


def test_fine_tuning_augmentations_replay_mid_epoch_and_stay_off_at_evaluation(cifar10_dir):
    from cifarlab.data import Batches, DeviceLoader, load_dataset
    ds = load_dataset("cifar10", cifar10_dir, download=False)
    loader = DeviceLoader(ds.train, [0.5] * 3, [0.25] * 3, 40, train=True, flip="random", seed=1)
    b = Batches(loader, [(0, 48)], "bilinear", False, random_resized_crop=0.35, seed=1, auto_augment="trivialaugment")
    plain = Batches(loader, [(0, 48)], "bilinear", False)
    whole = list(b.epoch(0))
    assert whole[0][0].shape == (40, 3, 48, 48)
    assert torch.equal(next(b.epoch(0, start=2))[0], whole[2][0])  # a resumed epoch replays its draws
    assert not torch.allclose(whole[0][0], next(plain.epoch(0))[0])  # the same images, augmented
    assert torch.equal(next(b.ordered())[0], next(plain.ordered())[0])  # evaluation untouched
