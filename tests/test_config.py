"""Config resolution (recipes.resolve_config): defaults < recipe < config file < overrides, the
same for the CLI, the Python API, suites and lr-find; a run's saved config.yaml re-runs it exactly."""
from __future__ import annotations

import pytest
import yaml

import cifarlab
from cifarlab import ConfigError, TrainConfig
from cifarlab.cli import main as cli_main
from cifarlab.config import RESUME_SAFE_KEYS, config_diff, parse_dataset, read_config_file
from cifarlab.recipes import GENERIC, RECIPES, recipe_config, resolve_config
from cifarlab.runs import Run
from cifarlab.workflow import load_suite


def test_no_file_no_overrides_is_the_cifar10_recipe():
    cfg = resolve_config()
    assert cfg == recipe_config("cifar10")
    assert cfg.epochs == RECIPES["cifar10"]["epochs"] != TrainConfig().epochs


def test_every_key_of_a_file_wins_over_the_recipe_even_at_its_default_value():
    """The bug this resolution fixes: `epochs: 8.0` (the dataclass default) came back as the recipe's 11."""
    file = {"epochs": TrainConfig().epochs, "channels_last": False, "label_smoothing": 0.0}
    cfg = resolve_config(file)
    assert cfg.epochs == 8.0 and cfg.channels_last is False and cfg.label_smoothing == 0.0
    assert cfg.batch_size == RECIPES["cifar10"]["batch_size"]  # keys the file lacks keep the recipe's


def test_a_timm_model_file_keeps_its_optimizer_tta_and_memory_format():
    """A resnet18 run saved with muon, TTA 2 and channels_last false came back as SGD, TTA 1, channels_last."""
    cfg = resolve_config({"model": "resnet18", "optimizer": "muon", "tta": 2, "channels_last": False})
    assert (cfg.optimizer, cfg.tta, cfg.channels_last) == ("muon", 2, False)
    assert cfg.schedule == GENERIC["schedule"]  # the rest is the generic (non-airbench) recipe


@pytest.mark.parametrize("file, overrides, key, want", [
    ({}, {}, "model", "airbench94"),                                          # recipe
    ({"dataset": "cifar100"}, {}, "model", "airbench_res"),                   # the file's dataset picks the recipe
    ({"dataset": "cifar100"}, {"dataset": "cifar10"}, "model", "airbench94"),  # the override's dataset wins
    ({"model": "resnet18"}, {}, "optimizer", "sgd"),                           # the file's model picks GENERIC
    ({"model": "resnet18"}, {"model": "airbench94"}, "optimizer", "muon"),     # the override's model wins
    ({"epochs": 3}, {"epochs": 5}, "epochs", 5.0),                             # overrides over the file
    ({"lr": 0.1}, {}, "lr", 0.1),                                              # the file over the recipe
    ({"folder_size": 32}, {"dataset": "folder:x"}, "epochs", RECIPES["cifar10"]["epochs"]),  # folders: cifar10 recipe
])
def test_precedence_table(file, overrides, key, want):
    assert getattr(resolve_config(file, overrides), key) == want


def test_a_file_path_is_read_and_named_in_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 2\nseed: 4\n")
    assert resolve_config(good).seed == 4
    bad = tmp_path / "typo.yaml"
    bad.write_text("epoch: 2\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*Did you mean epochs"):
        resolve_config(bad)
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x80\x81\x82 not text")
    with pytest.raises(ConfigError, match="weights.yaml"):
        read_config_file(binary)


def test_dataset_strings_are_parsed_in_one_place():
    assert parse_dataset("cifar100").kind == "cifar100" and parse_dataset("cifar100").path is None
    spec = parse_dataset("shards:/x/y")
    assert (spec.kind, spec.path, str(spec)) == ("shards", "/x/y", "shards:/x/y")
    assert parse_dataset("photos", bare_path="folder").kind == "folder"
    with pytest.raises(ConfigError, match="Did you mean cifar10"):
        parse_dataset("cifar-10")
    with pytest.raises(ConfigError, match="names no path"):
        parse_dataset("store:")


def test_config_diff_ignores_only_the_resume_safe_keys():
    a = recipe_config("cifar10")
    b = a.update({"device": "cpu", "progress": False, "epochs": 2})
    assert config_diff(a, b) == {"epochs": (a.epochs, 2.0)}
    assert {"device", "progress"} <= RESUME_SAFE_KEYS


def test_suites_resolve_like_the_cli(tmp_path):
    """A suite's run = resolve_config(defaults + the run's keys, command-line overrides)."""
    suite = tmp_path / "s.yaml"
    suite.write_text("defaults: {dataset: cifar100, epochs: 8.0}\nruns:\n  - name: a\n    model: resnet18\n"
                     "    tta: 2\n  - name: b\n")
    s = load_suite(suite, {"seed": 7})
    a, b = (r.config for r in s.runs)
    assert a == resolve_config({"dataset": "cifar100", "epochs": 8.0, "model": "resnet18", "tta": 2}, {"seed": 7})
    assert (a.optimizer, a.tta, a.epochs, a.seed) == ("sgd", 2, 8.0, 7)
    assert (b.model, b.epochs) == ("airbench_res", 8.0)  # cifar100 recipe, the suite's epochs


def test_the_python_api_takes_a_mapping_or_a_file_like_the_cli(cifar10_dir, tmp_path):
    keys = {"data_dir": str(cifar10_dir), "download": False, "model_kwargs": {"widths": [8, 16, 16]},
            "batch_size": 50, "eval_batch_size": 64, "whiten_bias_epochs": 1, "progress": False, "tta": 0}
    run = cifarlab.train(keys, run_dir=tmp_path / "a", epochs=1)
    assert run.config == resolve_config(keys, {"epochs": 1})
    assert run.config.epochs == 1 and run.config.optimizer == "muon" and run.config.channels_last is True


def test_a_saved_config_reproduces_its_run_exactly(cifar10_dir, tmp_path, capsys):
    """Train with default-valued keys that differ from the recipe (epochs 8.0, channels_last false,
    label smoothing 0.2 is both) and non-default ones; re-run config.yaml through the CLI; the two
    resolved configs agree key by key and the two runs' metrics agree."""
    first_cfg = tmp_path / "first.yaml"
    first_cfg.write_text(yaml.safe_dump({
        "data_dir": str(cifar10_dir), "download": False, "model_kwargs": {"widths": [8, 16, 16]}, "batch_size": 100,
        "eval_batch_size": 64, "epochs": 8.0, "channels_last": False, "whiten_bias_epochs": 1, "seed": 3,
        "tta": 1, "progress": False}))
    assert cli_main(["train", "--config", str(first_cfg), "--run-dir", str(tmp_path / "a")]) == 0
    first = Run.load(tmp_path / "a")
    assert first.config.epochs == 8.0 and first.config.channels_last is False and first.config.seed == 3
    assert cli_main(["train", "--config", str(tmp_path / "a" / "config.yaml"), "--run-dir", str(tmp_path / "b")]) == 0
    second = Run.load(tmp_path / "b")
    for key, value in first.config.to_dict().items():
        assert getattr(second.config, key) == value, key
    assert len(first.rows) == len(second.rows) == 8
    for r1, r2 in zip(first.rows, second.rows):
        assert (r1["train_loss"], r1["train_top1"], r1["step"]) == (r2["train_loss"], r2["train_top1"], r2["step"])
    assert first.results["test"]["top1"] == second.results["test"]["top1"]
    assert first.results["test"]["loss"] == second.results["test"]["loss"]


def test_a_named_recipe_changes_its_keys_and_is_saved_and_overridable():
    cfg = resolve_config(None, {"recipe": "airbench94_muon"})
    assert cfg.recipe == "airbench94_muon" and cfg.dataset == "cifar10"  # the recipe's dataset by default
    assert cfg.epochs == 8.0 != RECIPES["cifar10"]["epochs"]
    assert cfg.lr == RECIPES["cifar10"]["lr"] and cfg.model == "airbench94"  # everything else: the base recipe's
    assert resolve_config(None, {"recipe": "airbench94_muon", "epochs": 5}).epochs == 5  # flags still win
    # a saved config names its recipe and re-resolves to itself (file level picks the recipe)
    assert resolve_config(cfg.to_dict()) == cfg
    assert resolve_config().recipe is None


@pytest.mark.parametrize("overrides, message", [
    ({"recipe": "airbench94-muon"}, "Did you mean airbench94_muon"),
    ({"recipe": "airbench94_muon", "dataset": "cifar100"}, "changes the cifar10 recipe"),
    ({"recipe": "airbench94_muon", "model": "resnet18"}, "recipe of the airbench nets"),
])
def test_a_named_recipe_that_cannot_apply_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, overrides)


def test_a_progressive_schedule_changes_side_at_whole_epochs_only():
    """The side changes between epochs, so a fractional epoch such as [3.5, 32] and a text epoch are
    refused with the format instead of being rounded or failing deep inside."""
    from cifarlab.config import TrainConfig
    assert TrainConfig(img_sizes=[[0, 24], [3.0, 32]]).validate().img_sizes == [[0, 24], [3.0, 32]]
    for bad in ([[0, 24], [3.5, 32]], [[0, 4]], [[0]], [], [["a", 24]], [[0, "24"]]):
        with pytest.raises(ConfigError, match="img_sizes must be a list of \\[epoch, size\\] pairs, whole epochs"):
            TrainConfig(img_sizes=bad).validate()


def test_every_named_recipe_resolves_and_is_listed(capsys):
    from cifarlab.recipes import NAMED_RECIPES
    for name, entry in NAMED_RECIPES.items():
        cfg = resolve_config(None, {"recipe": name})
        assert all(getattr(cfg, k) == v for k, v in entry["values"].items()), name
        assert entry["reason"] and entry["measured"]
    assert cli_main(["config", "recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMED_RECIPES) and "epochs=8.0" in out


def test_the_recipe_flag_reaches_the_config(cifar10_dir, tmp_path):
    assert cli_main(["train", "--recipe", "airbench94_muon", "--data-dir", str(cifar10_dir), "--epochs", "1",
                     "--set", "model_kwargs={widths: [8, 16, 16]}", "--batch-size", "100", "--tta", "0",
                     "--set", "download=false", "--no-progress", "--run-dir", str(tmp_path / "r")]) == 0
    run = Run.load(tmp_path / "r")
    assert run.config.recipe == "airbench94_muon" and run.config.epochs == 1.0
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["recipe"] == "airbench94_muon"


def test_a_retired_key_is_accepted_off_and_refused_on(tmp_path):
    """A saved config.yaml holds every key, so a retired one at its off value (0) must still load; any
    other value names the key, why it went and what to use instead, rather than training another run."""
    import yaml
    from cifarlab.recipes import resolve_config
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump({"dataset": "cifar10", "epochs": 2, "brightness": 0.0, "contrast": 0.0}))
    cfg = resolve_config(saved)
    assert cfg.epochs == 2 and not hasattr(cfg, "brightness")
    saved.write_text(yaml.safe_dump({"dataset": "cifar10", "brightness": 0.15}))
    with pytest.raises(ConfigError, match=r"'brightness' is retired \(set to 0.15 in .*config.yaml\): .*trivialaugment"):
        resolve_config(saved)
    with pytest.raises(ConfigError, match="'contrast'.*retired"):
        resolve_config(None, {"contrast": "0.2"})


@pytest.mark.parametrize("line,says", [("lr: [0.1]", "lr"), ("seed: 1.5", "seed"), ("batch_size: 1.5", "batch_size"),
                                       ("model_kwargs: 3", "model_kwargs"), ("epochs: true", "epochs"),
                                       ("schedule: cosin", "Did you mean cosine"), ("tta: 7", "0, 1, 2 or 3")])
def test_a_mistyped_yaml_value_is_refused_in_one_line(tmp_path, capsys, line, says):
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    assert cli_main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert says in err and str(path) in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_none_and_yaml_from_the_command_line():
    cfg = resolve_config(None, {"img_size": "None", "img_sizes": "[[0, 24], [4, 32]]", "epochs": "8", "lr": "1e-3"})
    assert cfg.img_size is None and cfg.img_sizes == [[0, 24], [4, 32]] and cfg.epochs == 8.0 and cfg.lr == 0.001
    assert isinstance(cfg.epochs, float) and resolve_config(None, {"model": "123"}).model == "123"   # text stays text


@pytest.mark.parametrize("name", ["cifar100", "partial", "crop"])
def test_a_config_saved_by_the_previous_release_loads_to_the_same_values(name):
    """config.yaml files written by cifarlab 0.2.0 (dataclass config; brightness and contrast at 0), and
    the values that release read from them."""
    import json
    from pathlib import Path
    fixtures = Path(__file__).parent / "fixtures"
    loaded = TrainConfig.load_yaml(fixtures / f"config-{name}.yaml").validate().to_dict()
    then = json.loads((fixtures / f"config-{name}.json").read_text())
    assert {k: loaded[k] for k in then} == then
    added = {k: v for k, v in loaded.items() if k not in then}    # keys newer than the file: their defaults
    assert added == {k: getattr(TrainConfig(), k) for k in added} and set(added) <= {"logger"}
    assert TrainConfig.from_dict(loaded) == TrainConfig.load_yaml(fixtures / f"config-{name}.yaml")
