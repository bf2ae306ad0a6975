"""What a practitioner meets first: calibrated probabilities, visible progress, generated help,
errors that are one line only when they are ours, and models that travel (checkpoint metadata,
cifarlab.load, timm export)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab.cli import build_parser
from cifarlab.cli import main as cli_main
from cifarlab.config import TrainConfig
from cifarlab.config_help import config_keys
from cifarlab.data.augment import mix_images, mixed_targets
from cifarlab.evaluation.calibration import calibration_summary, fit_temperature, nll
from cifarlab.recipes import resolve_config
from cifarlab.training.progress import Console, epoch_line
from cifarlab.training import read_checkpoint_metadata
from cifarlab.workflow.setup import default_size_refusal

from helpers import tiny_config


# ---------------------------------------------------------------- probabilities
def _under_confident(n=4000, classes=10, true_t=3.0, seed=0):
    """Logits whose labels are drawn from softmax(z), then divided by ``true_t``: under-confident
    by a known factor, so the fitted temperature must come out near 1 / true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 2.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return z / true_t, y


def test_temperature_scaling_recovers_the_temperature_and_lowers_nll():
    logits, y = _under_confident()
    t = fit_temperature(logits[:2000], y[:2000])
    assert abs(t - 1 / 3) < 0.04
    s = calibration_summary(logits[:2000], y[:2000], logits[2000:], y[2000:])
    assert s["test_nll_after"] < s["test_nll_before"] - 0.05
    assert s["test_ece_after"] < s["test_ece_before"] / 3
    assert nll(logits, y, t) == pytest.approx(min(nll(logits, y, t * f) for f in (0.9, 1.0, 1.1)))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.full((3, 2), np.nan), np.zeros(3, dtype=int))


def test_training_with_validation_calibrates_and_predict_uses_it(cifar10_dir, tmp_path, capsys):
    run = cifarlab.train(tiny_config(cifar10_dir, val_size=40, tta=0), run_dir=tmp_path / "run")
    cal = run.results["calibration"]
    assert cal["fitted_on_images"] == 40 and cal["temperature"] > 0
    assert cal["test_nll_after"] <= cal["test_nll_before"] + 1e-9
    meta = read_checkpoint_metadata(run.path / "checkpoint-best.safetensors")
    assert float(meta["temperature"]) == pytest.approx(cal["temperature"])
    # predictions: the comparison row and the ensemble probabilities use the temperature
    row = cifarlab.workflow.comparison_row(run.path)
    assert row["temperature"] == cal["temperature"] and row["ece_scaled"] == cal["test_ece_after"]
    preds = cifarlab.run_predictions(run.path)
    assert preds.temperature == cal["temperature"]
    raw = torch.from_numpy(preds.test_logits).softmax(1).numpy()
    assert not np.allclose(preds.test_probs, raw) and (preds.test_probs.argmax(1) == raw.argmax(1)).all()
    # cifarlab calibrate re-fits and stores the same figure (same validation predictions)
    assert cli_main(["calibrate", str(run.path)]) == 0
    assert "temperature scaling T = " in capsys.readouterr().out
    assert json.loads((run.path / "results.json").read_text())["calibration"]["temperature"] == pytest.approx(
        cal["temperature"])


def test_calibrate_without_validation_split_is_refused(cifar10_dir, tmp_path, capsys):
    run = cifarlab.train(tiny_config(cifar10_dir, tta=0, epochs=1), run_dir=tmp_path / "run")
    assert "calibration" not in run.results
    assert cli_main(["calibrate", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert "no validation split" in err and "--val-size" in err and "Traceback" not in err


# ---------------------------------------------------------------- progress
def test_epoch_lines_curves_and_estimate(cifar10_dir, tmp_path, capsys):
    run = cifarlab.train(tiny_config(cifar10_dir, val_size=40, progress=True, tta=0), run_dir=tmp_path / "run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ") and "images/s" in line]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "val loss" in lines[0] and "train loss" in lines[0]
    assert "estimate:" in err and "per epoch" in err
    png = run.path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    row = {"epoch": 0, "train_loss": 1.5, "train_top1": 40.0, "seconds": 2.0, "images_per_s": 100.0}
    assert epoch_line(row, 10) == "epoch  1/10  train loss 1.5000  top-1 40.00%  2.0 s  100 images/s"


def test_a_long_projection_names_the_flags_that_shorten_it():
    cfg = TrainConfig(model="resnet50", img_size=224, strategy="fine-tune")
    console = Console(cfg, enabled=True, total_steps=1000, steps_per_epoch=100, n_epochs=10)
    long, short = console.estimate(per_step=10.0, steps_left=1000), console.estimate(per_step=0.1, steps_left=1000)
    assert "over an hour" in long and "--img-size" in long and "--strategy linear-probe" in long
    assert "over an hour" not in short and "10 s per epoch" in short


def test_timm_default_size_is_refused_when_it_would_take_hours():
    cfg = TrainConfig(model="resnet18", epochs=10)
    why = default_size_refusal(cfg, 224, 32, seconds_per_image=0.05, train_images=50000)
    assert why and "--img-size" in why and "224" in why and "h on this machine" in why
    assert default_size_refusal(cfg.update({"img_size": 224}), 224, 32, 0.05, 50000) is None  # asked for
    assert default_size_refusal(cfg, 224, 32, 0.0001, 50000) is None  # fast enough


def test_skipped_files_are_reported_when_the_folder_is_read(tmp_path):  # evaluate's folder: test_train
    from test_folder import make_folder
    root = make_folder(tmp_path / "f")
    (root / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = cifarlab.data.open_source(f"folder:{root}").dataset()
    msgs = [str(x.message) for x in w if "could not be read" in str(x.message)]
    assert len(msgs) == 1 and "broken.png" in msgs[0] and "manifest.json" in msgs[0]
    assert len(ds.train) == 18


# ---------------------------------------------------------------- help and errors
def test_train_help_lists_every_config_key_and_config_keys_too(capsys):
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    flat = " ".join(help_text.split())
    for k in config_keys():
        assert k.name in flat or "--" + k.name.replace("_", "-") in flat or (
            k.name == "early_stopping_patience" and "--early-stopping" in flat) or k.name == "progress", k.name
    for flag in ("--schedule", "--label-smoothing", "--ema", "--early-stopping", "--mixup", "--cutmix", "--cutout"):
        assert flag in flat
    assert ":mod:" not in build_parser().format_help() and "``" not in flat
    assert cli_main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {k.name} (" in out for k in config_keys())
    with pytest.raises(SystemExit):
        cli_main(["--version"])
    assert capsys.readouterr().out.strip() == f"cifarlab {cifarlab.__version__}"


def test_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--schedule", "cosine", "--label-smoothing", "0.1", "--ema",
                                      "--early-stopping", "3", "--mixup", "0.2", "--cutmix", "1.0", "--cutout", "8"])
    from cifarlab.cli.parser import config_overrides
    from cifarlab.recipes import resolve_config
    assert set(config_overrides(args)) == {"schedule", "label_smoothing", "ema", "early_stopping_patience", "mixup",
                                           "cutmix", "cutout"}
    cfg = resolve_config(None, {**config_overrides(args), "val_size": 5000}).to_dict()   # typed by the config
    assert {k: cfg[k] for k in config_overrides(args)} == {"schedule": "cosine", "label_smoothing": 0.1, "ema": True,
                                                            "early_stopping_patience": 3, "mixup": 0.2, "cutmix": 1.0,
                                                            "cutout": 8}


def test_keras_names_resolve_to_timm():
    with pytest.warns(UserWarning, match="Keras"):
        cfg = resolve_config(overrides={"model": "ResNet50"})
    assert cfg.model == "resnet50" and cfg.optimizer == resolve_config(overrides={"model": "resnet50"}).optimizer


def test_models_timm_lists_names(capsys):
    assert cli_main(["models", "--timm", "resnet1*"]) == 0
    names = capsys.readouterr().out.split()
    assert "resnet18" in names and "resnet101" in names and "resnet50" not in names
    assert cli_main(["models", "--timm", "resnet18", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "resnet18.a1_in1k" in out and ("[needs a download]" in out or "[works offline]" in out)
    assert cli_main(["models", "--timm", "no_such_net*"]) == 2


def test_only_our_errors_are_one_line(monkeypatch, capsys, tmp_path):
    import cifarlab.workflow as wf

    def bug(*a, **k):
        raise ValueError("an internal slip")
    monkeypatch.setattr(wf, "calibrate", bug)
    assert cli_main(["calibrate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "This is a bug in cifarlab" in err
    assert cli_main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert cli_main(["evaluate", str(tmp_path / "nope"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------- augmentation
def test_mixup_and_cutmix_targets():
    torch.manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()
    y = torch.tensor([0, 1, 2, 3])
    mixed, lam = mix_images(x, mixup=0.0, cutmix=1.0)
    own = (mixed[0] == 0).float().mean().item()  # image 0 keeps its pixels outside the pasted box
    assert own == pytest.approx(lam)
    t = mixed_targets(y, lam, 5, smoothing=0.1)
    assert torch.allclose(t.sum(1), torch.ones(4)) and t[0, 0] == pytest.approx(lam * 0.92 + 0.02 * (1 - lam))
    blended, lam2 = mix_images(x, mixup=0.4, cutmix=0.0)
    assert torch.allclose(blended[0], torch.full_like(blended[0], (1 - lam2) * 3.0))


def test_mixed_batches_yield_soft_targets_for_training_and_plain_ones_for_evaluation(cifar10_dir):
    from cifarlab.data import Batches, DeviceLoader, MixedBatches, load_dataset
    ds = load_dataset("cifar10", cifar10_dir, download=False)
    plain = Batches(DeviceLoader(ds.train, [0.5] * 3, [0.25] * 3, 20, seed=0), None, "bilinear", channels_last=False)
    mixed = MixedBatches(plain, mixup=0.4, cutmix=0.0, num_classes=10, smoothing=0.1)
    torch.manual_seed(0)
    (x, t), (x0, y0) = next(mixed.epoch(0)), next(plain.epoch(0))
    assert t.shape == (20, 10) and torch.allclose(t.sum(1), torch.ones(20))
    assert not torch.equal(x, x0) and t.argmax(1).tolist() != list(range(20))
    i = next(i for i in range(20) if y0[i] != y0[19 - i])  # an image whose partner has another class
    lam = (t[i, y0[i]] - 0.01) / 0.9  # own share: lam * 0.91 + (1 - lam) * 0.01
    assert torch.allclose(x[i], lam * x0[i] + (1 - lam) * x0[19 - i], atol=1e-5)
    ex, ey = next(mixed.ordered())
    assert ey.dtype == torch.int64 and torch.equal(ex, next(plain.ordered())[0])


def test_training_with_mixup_and_cutmix_runs_with_finite_losses(cifar10_dir, tmp_path):
    run = cifarlab.train(tiny_config(cifar10_dir, mixup=0.2, cutmix=1.0, tta=0, epochs=2), run_dir=tmp_path / "r")
    assert all(np.isfinite(m["train_loss"]) for m in run.rows) and run.results["test"]["top1"] > 10


# ---------------------------------------------------------------- models that travel
def test_checkpoint_alone_predicts_like_the_run(cifar10_dir, tmp_path, capsys):
    run = cifarlab.train(tiny_config(cifar10_dir, val_size=40, tta=1), run_dir=tmp_path / "run")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    ckpt = tmp_path / "alone.safetensors"
    ckpt.write_bytes((run.path / "checkpoint-best.safetensors").read_bytes())
    by_run = cifarlab.predict_images(run.path, [imgs])
    by_file = cifarlab.predict_images(ckpt, [imgs])
    for a, b in zip(by_run["predictions"], by_file["predictions"]):
        assert a["top"][0]["class"] == b["top"][0]["class"]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-6)
    clf = cifarlab.load(ckpt)
    assert clf.classes == run.results["classes"] and clf.temperature == run.results["calibration"]["temperature"]
    top = clf.predict(imgs / "0.png", top_k=3)
    assert len(top) == 3 and top[0][0] == by_run["predictions"][0]["top"][0]["class"]
    pil = clf.predict(Image.open(imgs / "0.png"))
    assert pil[0] == pytest.approx(top[0], abs=1e-6)
    arr = np.asarray(Image.open(imgs / "0.png").convert("RGB").resize((32, 32))).transpose(2, 0, 1).copy()
    assert len(clf.predict(torch.from_numpy(arr))) == 5
    with pytest.raises(cifarlab.ConfigError, match="uint8"):
        clf.predict(np.zeros((3, 5, 5), dtype=np.float32))
    assert cli_main(["predict", str(ckpt), str(imgs / "1.png")]) == 0
    assert "1.png:" in capsys.readouterr().out
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(bare))
    assert cli_main(["predict", str(bare), str(imgs)]) == 2
    assert "no cifarlab metadata" in capsys.readouterr().err


def test_export_timm_round_trip_gives_identical_logits(cifar10_dir, tmp_path, monkeypatch):
    import timm
    run = cifarlab.train(tiny_config(cifar10_dir, model="test_resnet", model_kwargs={}, optimizer="adamw", lr=1e-3,
                                     tta=0, epochs=1, img_size=48, precision="fp32"), run_dir=tmp_path / "run")
    out = tmp_path / "exported"
    pushed = {}

    class FakeApi:  # stands in for the hub: never the network
        def create_repo(self, repo, exist_ok=False):
            pushed["repo"] = repo
            return f"https://huggingface.co/{repo}"

        def upload_folder(self, repo_id, folder_path, commit_message):
            pushed["files"] = sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    info = cifarlab.export_timm(run.path, out, push_to_hub="me/cifar-test")
    assert info["max_abs_diff"] < 1e-5 and pushed == {"repo": "me/cifar-test",
                                                      "files": ["README.md", "config.json", "model.safetensors"]}
    card = (out / "README.md").read_text()   # the model card
    assert f"top-1 {run.results['test']['top1']:.2f}%" in card and 'create_model("hf-hub:me/cifar-test"' in card
    assert "library_name: timm" in card and ", ".join(run.results["classes"]) in card
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["label_names"] == run.results["classes"] and cfg["num_classes"] == 10
    assert model.pretrained_cfg["input_size"] == (3, 48, 48) or list(model.pretrained_cfg["input_size"]) == [3, 48, 48]
    assert list(model.pretrained_cfg["mean"]) == pytest.approx(run.results["normalization"]["mean"])
    _, ours, _ = cifarlab.workflow.load_run_model(run.path, device=torch.device("cpu"))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), ours(x), atol=1e-5)
    with pytest.raises(cifarlab.workflow.ExportError, match="not an empty folder"):
        cifarlab.export_timm(run.path, out)


def test_export_timm_refuses_builtin_models(cifar10_dir, tmp_path):
    run = cifarlab.train(tiny_config(cifar10_dir, tta=0, epochs=1), run_dir=tmp_path / "run")
    with pytest.raises(cifarlab.workflow.ExportError, match="--onnx"):
        cifarlab.export_timm(run.path, tmp_path / "x")


def test_cifar100_store_and_shards_keep_superclasses(cifar100_dir, tmp_path):
    from cifarlab.data import open_source
    from cifarlab.data.shards import write_shards
    from cifarlab.data.store import pack_dataset
    ds = open_source("cifar100", cifar100_dir, download=False).dataset()
    pack_dataset(ds, tmp_path / "store")
    packed = open_source(f"store:{tmp_path / 'store'}")
    assert packed.coarse_classes == ds.train.coarse_classes
    assert (packed.dataset().train.coarse_labels == ds.train.coarse_labels).all()
    write_shards(ds, tmp_path / "shards", 150, progress=False)
    sharded = open_source(f"shards:{tmp_path / 'shards'}")
    assert sharded.coarse_classes == ds.train.coarse_classes
    assert (sharded.coarse_of_fine[ds.train.labels] == ds.train.coarse_labels).all()
    run = cifarlab.train(tiny_config(cifar100_dir, f"store:{tmp_path / 'store'}", epochs=1,
                                     tta=0), run_dir=tmp_path / "run")
    assert "superclass_top1" in run.results["test"]


def test_data_describe_and_preview(cifar10_dir, tmp_path, capsys):
    assert cli_main(["data", "describe", "cifar10", "--data-dir", str(cifar10_dir), "--out",
                     str(tmp_path / "d")]) == 0
    info = json.loads((tmp_path / "d" / "describe.json").read_text())
    assert info["images"] == {"train": 200, "test": 60} and len(info["mean"]) == 3 and info["side"] == 32
    assert sum(info["counts"]["train"]) == 200
    for f in info["files"].values():
        assert (tmp_path / "d" / f.split("/")[-1]).is_file()
    assert cli_main(["data", "preview", "cifar10", "--data-dir", str(cifar10_dir), "--set", "mixup=0.4",
                     "--set", "batch_size=50", "--set", "model_kwargs={widths: [8, 16, 16]}", "--images", "16",
                     "--out", str(tmp_path / "p.png")]) == 0
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_train_accepts_an_own_module_and_a_folder_path(tmp_path):
    from test_folder import make_folder
    root = make_folder(tmp_path / "f")

    class TinyNet(torch.nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.head = torch.nn.Linear(8, classes)

        def forward(self, x):
            return self.head(self.conv(x).relu().mean((2, 3)))
    run = cifarlab.train(model=TinyNet(3), dataset=root, epochs=2, batch_size=6, tta=0, progress=False,
                         run_dir=tmp_path / "run", lr=0.05)
    assert run.config.model == "user_tinynet" and run.config.dataset == f"folder:{root}"
    assert run.results["classes"] == ["cat", "dog", "frog"] and 0 <= run.results["test"]["top1"] <= 100
    assert cifarlab.load(run.path).predict(root / "test" / "cat" / "0.png", top_k=1)[0][0] in ("cat", "dog", "frog")
    with pytest.raises(cifarlab.ConfigError, match=r"\(batch, 3\)"):
        cifarlab.train(model=TinyNet(10), dataset=root, epochs=1, progress=False, run_dir=tmp_path / "bad")
