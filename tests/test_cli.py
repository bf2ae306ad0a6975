"""The command line never guesses: no flag prefixes, one-line errors with a close flag of the
command typed, wrong choices in one line, CIFAR names in any case."""
from __future__ import annotations

import pytest

from cifarlab import ConfigError
from cifarlab.cli import main as cli_main
from cifarlab.cli.parser import build_parser, config_overrides
from cifarlab.recipes import resolve_config


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err   # one line, exit 2
    return err


def test_a_flag_prefix_is_not_taken_for_the_flag(capsys, tmp_path):
    err = _refused(["train", "--epoch", "1", "--run-dir", str(tmp_path / "r")], capsys)
    assert "cifarlab train: unrecognized argument --epoch (did you mean --epochs?)" in err
    assert not (tmp_path / "r").exists()


def test_a_mistyped_flag_gets_the_commands_own_close_flag(capsys):
    assert "(did you mean --epochs?)" in _refused(["train", "--epohcs", "1"], capsys)
    assert "cifarlab evaluate: unrecognized argument --chekpoint (did you mean --checkpoint?)" in \
        _refused(["evaluate", "runs/x", "--chekpoint", "last"], capsys)
    err = _refused(["data", "preview", "cifar10", "--nmber", "3"], capsys)
    assert "cifarlab data preview: unrecognized argument --nmber" in err


def test_a_wrong_choice_is_one_line_naming_the_choices(capsys):
    err = _refused(["train", "--schedule", "cosin"], capsys)
    assert "--schedule" in err and "'cosine'" in err


def test_cifar_names_in_any_case():
    args = build_parser().parse_args(["train", "--dataset", "CIFAR10"])
    assert resolve_config(None, config_overrides(args)).dataset == "cifar10"
    assert resolve_config(None, {"dataset": "Cifar100"}).model == "airbench_res"   # the CIFAR-100 recipe
    with pytest.raises(ConfigError, match="Did you mean cifar10"):
        resolve_config(None, {"dataset": "CIFAR-10"})


def test_config_alone_says_what_it_can_list(capsys):
    assert cli_main(["config"]) == 2
    err = capsys.readouterr().err
    assert "cifarlab config keys" in err and "cifarlab config recipes" in err and err.count("\n") == 1


def test_an_unknown_model_or_missing_weights_is_refused_before_any_data_or_directory(capsys, tmp_path):
    empty = tmp_path / "no-data"   # reading data first would fail on this folder instead
    empty.mkdir()
    for flags, says in ((["--model", "resnet1800"], "resnet18"), (["--weights", str(tmp_path / "w.safetensors")],
                                                                   "does not exist")):
        code = cli_main(["train", "--data-dir", str(empty), "--run-dir", str(tmp_path / "run"), *flags])
        err = capsys.readouterr().err
        assert code == 2 and says in err and err.count("\n") == 1, err
        assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_dir_of_the_package_lists_the_lazy_names_without_importing_torch():
    import subprocess
    import sys
    code = "import cifarlab, sys; n = dir(cifarlab); print('train' in n, 'evaluate' in n, 'load' in n, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True", "False"]


def test_a_missing_checkpoint_file_and_a_folder_without_runs_say_what_would_work(capsys, tmp_path):
    assert cli_main(["predict", str(tmp_path / "missing.safetensors"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Checkpoint file" in err and "does not exist" in err and "run directory or a checkpoint" in err
    (tmp_path / "runs").mkdir()
    assert cli_main(["compare", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "holds no run directories" in err and err.count("\n") == 1
