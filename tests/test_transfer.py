"""Transfer learning: timm models, weight loading, strategies, resizing, feature cache, lr_find."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import cifarlab
from cifarlab import ConfigError
from cifarlab.data import Batches
from cifarlab.models import check_input_size
from cifarlab.models import UnknownModelError, WeightsError, create_model, data_config, load_weights_file
from cifarlab.training.lr_find import lr_range_test, suggest
from cifarlab.training.strategy import Strategy
from helpers import StopAt

SEED_MODELS = ["vgg16", "vgg19", "resnet34", "resnet50", "densenet121", "efficientnet_b0", "efficientnet_b7",
               "efficientnetv2_rw_t", "mobilenetv2_100", "xception41", "inception_v3", "vit_base_patch32_224",
               "convnext_small", "vit_cifar", "lenet"]


@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_models_forward_backward_at_configured_size(name):
    torch.manual_seed(0)
    model = create_model(name, 10)
    side = data_config(model)["input_size"][-1]
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, 10)
    out.float().logsumexp(1).sum().backward()
    head = model.get_classifier()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # the first trainable parameter of the backbone also gets a gradient
    first = next(p for n, p in model.named_parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_timm_pretrained_config_drives_normalization_and_size():
    cfg = data_config(create_model("resnet50", 10))
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert data_config(create_model("airbench94", 10))["mean"] is None  # dataset statistics instead


def test_unknown_timm_name_suggests_close_names():
    with pytest.raises(UnknownModelError, match="resnet50"):
        create_model("resnet5O", 10)


def test_timm_naming_weights_round_trip(tmp_path):
    src = create_model("resnet18", 10)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    dst = create_model("resnet18", 10, weights=tmp_path / "w.safetensors")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_torchvision_naming_resnet_drops_classifier(tmp_path, caplog):
    import torchvision
    tv = torchvision.models.resnet18(num_classes=1000)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    with caplog.at_level("WARNING", logger="cifarlab"):
        model = create_model("resnet18", 10, weights=tmp_path / "tv.pth")
    assert "Dropped the classifier" in caplog.text and "fc.weight" in caplog.text
    assert torch.equal(model.conv1.weight, tv.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)
    assert model.fc.weight.shape == (10, 512)


def test_torchvision_naming_densenet_is_converted(tmp_path):
    import torchvision
    tv = torchvision.models.densenet121(num_classes=1000)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = create_model("densenet121", 10)
    info = load_weights_file(model, tmp_path / "tv.pth")
    assert info["dropped_classifier"] == ["classifier.weight", "classifier.bias"]
    assert torch.equal(model.features.conv0.weight, tv.features.conv0.weight)


def test_weights_for_another_architecture_names_keys(tmp_path):
    save_file({k: v.contiguous() for k, v in create_model("resnet18", 10).state_dict().items()},
              tmp_path / "r18.safetensors")
    with pytest.raises(WeightsError, match=r"does not fit.*(missing|unknown|shape)"):
        create_model("resnet34", 10, weights=tmp_path / "r18.safetensors")
    with pytest.raises(WeightsError, match="layer"):
        create_model("efficientnet_b0", 10, weights=tmp_path / "r18.safetensors")


def test_corrupt_and_unsafe_weights_files(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(WeightsError, match="corrupt"):
        create_model("resnet18", 10, weights=tmp_path / "bad.safetensors")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))
    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="corrupt or not a weights file"):
        create_model("resnet18", 10, weights=tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18", 10, weights=tmp_path / "absent.pth")


def test_pretrained_offline_is_a_clear_cli_error(tmp_path, cifar10_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    p = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--model", "resnet18", "--pretrained",
                        "--data-dir", str(cifar10_dir), "--set", "download=false", "--run-dir", str(tmp_path / "r")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "--weights PATH" in p.stderr and "Traceback" not in p.stderr


def test_input_size_too_small_names_the_minimum():
    model = create_model("inception_v3", 10)
    with pytest.raises(ConfigError, match=r"too small for inception_v3.*smallest side that works is \d+"):
        check_input_size(model, 32, torch.device("cpu"), "inception_v3")


def test_freeze_epochs_must_be_below_epochs():
    cfg = cifarlab.recipe_config("cifar10", "resnet18").update({"strategy": "fine-tune", "epochs": 2,
                                                                 "freeze_epochs": 2})
    with pytest.raises(ConfigError, match="freeze_epochs"):
        cfg.validate()


def _bn_stats(model):
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n}


def test_linear_probe_trains_only_the_head_and_keeps_bn_frozen():
    model = create_model("resnet18", 10)
    cfg = cifarlab.recipe_config("cifar10", "resnet18").update({"strategy": "linear-probe"})
    strat = Strategy.from_config(model, cfg, steps_per_epoch=10)
    assert strat.optimized_ids == {id(p) for p in model.fc.parameters()}
    before = {n: p.clone() for n, p in model.named_parameters()}
    stats = _bn_stats(model)
    opt = torch.optim.SGD([p for p in model.parameters() if id(p) in strat.optimized_ids], lr=0.1)
    for step in range(3):
        model.train()
        strat.set_mode(model, step)
        assert not model.bn1.training and not model.layer1[0].bn1.training
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        opt.step()
        opt.zero_grad()
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"fc.weight", "fc.bias"}
    assert all(torch.equal(stats[n], b) for n, b in _bn_stats(model).items())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_fine_tune_unfreezes_after_freeze_epochs_with_discriminative_lrs():
    model = create_model("resnet18", 10)
    cfg = cifarlab.recipe_config("cifar10", "resnet18").update({"strategy": "fine-tune", "freeze_epochs": 1.0,
                                                                 "layer_decay": 0.5})
    strat = Strategy.from_config(model, cfg, steps_per_epoch=4)
    model.train()
    strat.set_mode(model, 3)
    assert not model.conv1.weight.requires_grad and model.fc.weight.requires_grad and not model.bn1.training
    model.train()
    strat.set_mode(model, 4)
    assert all(p.requires_grad for p in model.parameters()) and model.bn1.training
    s = strat.scales
    assert s["fc.weight"] == 1.0
    assert s["conv1.weight"] < s["layer1.0.conv1.weight"] < s["layer4.1.conv2.weight"] < 1.0


def test_batches_resize_on_device_and_progressive_schedule(cifar10_dir):
    from cifarlab.data import DeviceLoader, load_dataset
    ds = load_dataset("cifar10", cifar10_dir, download=False)
    loader = DeviceLoader(ds.train, [0.5] * 3, [0.25] * 3, 50, train=True, translate=2)
    b = Batches(loader, [(0, 48), (2, 64)], "bilinear", channels_last=False)
    assert next(b.epoch(0))[0].shape == (50, 3, 48, 48)
    assert next(b.epoch(1))[0].shape == (50, 3, 48, 48)
    assert next(b.epoch(2))[0].shape == (50, 3, 64, 64)
    assert next(b.ordered())[0].shape[-1] == 64  # evaluation at the final size


def test_downsize_crop_keeps_pixels_and_replays_its_draws(cifar10_dir):
    from cifarlab.data import DeviceLoader, load_dataset
    ds = load_dataset("cifar10", cifar10_dir, download=False)
    loader = DeviceLoader(ds.train, [0.5] * 3, [0.25] * 3, 50, train=True, translate=0, flip="none")
    full = next(loader.epoch(0))[0]
    b = Batches(loader, [(0, 24), (1, 32)], "bilinear", channels_last=False, downsize="crop", seed=3)
    x = next(b.epoch(0))[0]
    assert x.shape == (50, 3, 24, 24)
    # every image is a 24x24 window of its own 32x32 image, pixel for pixel (no resampling)
    windows = full.unfold(2, 24, 1).unfold(3, 24, 1)  # (B, C, 9, 9, 24, 24)
    hits = (windows == x[:, :, None, None]).flatten(4).all(-1).all(1)  # (B, 9, 9)
    assert hits.flatten(1).any(1).all()
    offsets = {tuple(h.nonzero()[0].tolist()) for h in hits}
    assert len(offsets) > 5  # positions are drawn per image
    assert torch.equal(next(b.epoch(0))[0], x)  # seeded by (seed, epoch, batch): a resumed epoch replays
    assert next(b.epoch(1))[0].shape[-1] == 32  # full size from epoch 1
    centre = Batches(loader, [(0, 24)], "bilinear", channels_last=False, downsize="crop")
    assert torch.equal(next(centre.ordered())[0], next(loader.ordered())[0][..., 4:28, 4:28])


def test_bicubic_interpolation_is_used_when_asked(cifar10_dir):
    from cifarlab.data import DeviceLoader, load_dataset
    ds = load_dataset("cifar10", cifar10_dir, download=False)
    loader = DeviceLoader(ds.test, [0.5] * 3, [0.25] * 3, 60)
    x = next(loader.ordered())[0]
    cubic = next(Batches(loader, [(0, 48)], "bicubic", channels_last=False).ordered())[0]
    linear = next(Batches(loader, [(0, 48)], "bilinear", channels_last=False).ordered())[0]
    assert torch.allclose(cubic, torch.nn.functional.interpolate(x, size=(48, 48), mode="bicubic", align_corners=False))
    assert not torch.allclose(cubic, linear, atol=1e-3)


def _probe_cfg(cifar10_dir, tmp_path, **kw):
    base = cifarlab.recipe_config("cifar10", "resnet18").update(dict(
        data_dir=str(cifar10_dir), download=False, strategy="linear-probe", epochs=3, batch_size=50,
        progress=False, cache_dir=str(tmp_path / "cache"), tta=0, img_size=32, channels_last=False))
    return base.update(kw)


def test_feature_key_depends_on_the_seed_only_through_random_weights(tmp_path):
    from cifarlab.training.trunk_cache import feature_key
    key = lambda **kw: feature_key(cifarlab.TrainConfig(model="resnet18", **kw), str(tmp_path), 32, {}, ("center",))
    assert key(pretrained=True, seed=0) == key(pretrained=True, seed=1)   # the same features for every seed
    assert key(seed=0) != key(seed=1)                                      # random weights differ per seed
    assert key(pretrained=True, split_seed=0) != key(pretrained=True, split_seed=1)  # another subset/split


def test_feature_cache_hit_miss_and_invalidation(cifar10_dir, tmp_path):
    src = create_model("resnet18", 10)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    cfg = _probe_cfg(cifar10_dir, tmp_path, weights=str(tmp_path / "w.safetensors"))
    first = cifarlab.train(cfg, run_dir=tmp_path / "a")
    second = cifarlab.train(cfg, run_dir=tmp_path / "b")
    assert not first.results["feature_cache"]["hit"] and second.results["feature_cache"]["hit"]
    assert first.results["test"]["top1"] == second.results["test"]["top1"]
    assert first.results["feature_cache"]["key"] == second.results["feature_cache"]["key"]
    # the comparison charges each run its extraction (outside train_seconds) in time_seconds
    row = cifarlab.runs_table(first).iloc[0]
    extract = first.results["feature_cache"]["extract_seconds"]
    assert row["cache_seconds"] == extract > 0 and row["time_seconds"] == pytest.approx(row["train_seconds"] + extract)
    # new weights content, or a new input size: a different key, so a miss
    changed = {k: v.contiguous() for k, v in src.state_dict().items()}
    changed["layer4.1.conv2.weight"] = changed["layer4.1.conv2.weight"] * 1.01  # any content change
    save_file(changed, tmp_path / "w.safetensors")
    third = cifarlab.train(cfg, run_dir=tmp_path / "c")
    fourth = cifarlab.train(cfg.update({"img_size": 40}), run_dir=tmp_path / "d")
    keys = {r.results["feature_cache"]["key"] for r in (first, third, fourth)}
    assert len(keys) == 3 and not third.results["feature_cache"]["hit"]
    # the probe changed only the classifier of the loaded weights
    from cifarlab.training import load_weights
    best = load_weights(tmp_path / "b" / "checkpoint-best.safetensors")
    assert torch.equal(best["conv1.weight"], src.state_dict()["conv1.weight"])
    assert not torch.equal(best["fc.weight"], src.state_dict()["fc.weight"])
    assert cifarlab.evaluate(tmp_path / "b")["top1"] == second.results["test"]["top1"]


def test_a_single_file_probe_cache_is_read_and_rewritten(cifar10_dir, tmp_path, monkeypatch):
    """A linear-probe cache in the single-file layout (train_x (V*N, D) with the views one after
    another) is read instead of extracting again, rewritten as the folder layout, and trains the same."""
    import numpy as np
    import cifarlab.training.cached as cached
    keys, real = [], cached.feature_key
    monkeypatch.setattr(cached, "feature_key", lambda *a, **k: keys.append(real(*a, **k)) or keys[-1])
    cfg = _probe_cfg(cifar10_dir, tmp_path, val_size=20, epochs=2)
    first = cifarlab.train(cfg, run_dir=tmp_path / "a")
    single, folder = tmp_path / "cache" / f"{keys[0]}.safetensors", tmp_path / "cache" / f"trunk-{keys[1]}"
    x, y = np.load(folder / "train_x.npy"), np.load(folder / "train_y.npy")
    assert x.shape[0] == 2 and first.results["feature_cache"]["views"] == ["center", "flip"]
    save_file({"train_x": torch.from_numpy(x.reshape(-1, x.shape[-1])), "train_y": torch.from_numpy(np.tile(y, 2)),
               "val_x": torch.from_numpy(np.load(folder / "val_x.npy")[0]),
               "val_y": torch.from_numpy(np.load(folder / "val_y.npy"))}, single)
    import shutil
    shutil.rmtree(folder)
    second = cifarlab.train(cfg, run_dir=tmp_path / "b")
    assert second.results["feature_cache"]["hit"] and not single.exists() and (folder / "train_x.npy").is_file()
    assert second.results["test"]["loss"] == first.results["test"]["loss"]
    from cifarlab.training import load_weights
    a, b = (load_weights(tmp_path / r / "checkpoint-best.safetensors") for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cached_and_uncached_probe_agree(cifar10_dir, tmp_path):
    cached = cifarlab.train(_probe_cfg(cifar10_dir, tmp_path, flip="none", translate=0), run_dir=tmp_path / "a")
    direct = cifarlab.train(_probe_cfg(cifar10_dir, tmp_path, flip="none", translate=0, feature_cache=False),
                            run_dir=tmp_path / "b")
    # same features (no augmentation), same head training: the same predictions up to bf16 rounding
    assert abs(cached.results["test"]["top1"] - direct.results["test"]["top1"]) <= 100 / 60 + 1e-6


def test_lr_suggestions_on_a_synthetic_problem():
    """Logistic regression on separable blobs with SGD: steps blow up past lr ~ 2/curvature."""
    torch.manual_seed(0)
    n, d = 512, 16
    centers = torch.randn(4, d) * 3
    y = torch.randint(0, 4, (n,))
    x = centers[y] + torch.randn(n, d)

    class Loader:
        def __len__(self):
            return 8

        def epoch(self, epoch, start=0, stop=None):
            g = torch.Generator().manual_seed(epoch)
            order = torch.randperm(n, generator=g)
            for i in range(8):
                idx = order[i * 64:(i + 1) * 64]
                yield x[idx], y[idx]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(d, 4)

        def get_classifier(self):
            return self.head

        def forward(self, v):
            return self.head(v)

    cfg = cifarlab.TrainConfig(optimizer="sgd", lr=1.0, head_lr=1.0, bias_lr=1.0, momentum=0.0,
                               weight_decay=0.0, label_smoothing=0.0, precision="fp32", strategy="scratch")
    r = lr_range_test(Net(), Loader(), cfg, start_lr=1e-5, end_lr=100, steps=120)
    assert 1e-3 < r["valley"] < 10 and 1e-3 < r["steepest"] < 10
    # the suggestion trains well: 40 steps at it beat 40 steps at the start of the range
    def train_at(lr):
        torch.manual_seed(1)
        net = Net()
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for _ in range(5):
            for xb, yb in Loader().epoch(0):
                loss = torch.nn.functional.cross_entropy(net(xb), yb)
                opt.zero_grad(); loss.backward(); opt.step()
        return torch.nn.functional.cross_entropy(net(x), y).item()
    assert train_at(r["valley"]) < 0.5 * train_at(1e-5)


def test_suggest_on_a_known_curve():
    lrs = [10 ** (-6 + 0.1 * i) for i in range(60)]            # 1e-6 .. ~1
    loss = [2.0 if lr < 1e-4 else max(0.2, 2.0 - 0.6 * (torch.tensor(lr).log10().item() + 4)) for lr in lrs]
    loss = [v if lr < 0.3 else 5.0 for v, lr in zip(loss, lrs)]  # divergence
    s = suggest(lrs, loss)
    assert 1e-4 < s["steepest"] < 0.1 and 1e-4 < s["valley"] < 0.1


def test_cli_lr_find_writes_plot(cifar10_dir, tmp_path, capsys):
    from cifarlab.cli import main
    code = main(["lr-find", "--data-dir", str(cifar10_dir), "--set", "download=false", "--batch-size", "50",
                 "--set", "model_kwargs={widths: [8, 16, 16]}", "--steps", "12", "--out", str(tmp_path / "lr")])
    assert code == 0
    out = capsys.readouterr().out
    assert "valley" in out and (tmp_path / "lr" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(data["lr"]) == 12 and data["lr"][0] < data["lr"][-1]


def test_linear_probe_resume_keeps_the_loaded_backbone(cifar10_dir, tmp_path):
    from cifarlab.training import TrainingInterrupted, load_weights
    src = create_model("resnet18", 10)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    cfg = _probe_cfg(cifar10_dir, tmp_path, weights=str(tmp_path / "w.safetensors"))
    full = cifarlab.train(cfg, run_dir=tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        cifarlab.train(cfg, run_dir=tmp_path / "part", callbacks=(StopAt(5),))
    import shutil
    shutil.rmtree(tmp_path / "cache")  # force re-extraction from the reloaded backbone
    resumed = cifarlab.train(resume=tmp_path / "part")
    assert resumed.results["test"]["top1"] == full.results["test"]["top1"]
    best = load_weights(tmp_path / "part" / "checkpoint-best.safetensors")
    assert torch.equal(best["layer3.0.conv1.weight"], src.state_dict()["layer3.0.conv1.weight"])


def test_vit_input_size_follows_the_config():
    from cifarlab.models import input_size_kwargs
    assert input_size_kwargs("resnet50", 64) == {}
    assert input_size_kwargs("vit_small_patch16_224", 64) == {"img_size": 64}
    kw = input_size_kwargs("vit_small_patch16_224", 64, progressive=True)
    model = create_model("vit_small_patch16_224", 10, **kw)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)  # an earlier, smaller stage of the schedule
