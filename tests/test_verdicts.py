"""The comparison of any runs: seeds grouped into one row, intervals, paired tests against a baseline."""
from __future__ import annotations

import shutil

import pytest

from cifarlab import ConfigError
from cifarlab.cli import main as cli_main
from cifarlab.workflow.verdicts import seed_groups, verdict_table


def test_seeds_form_one_row_with_a_t_interval_and_the_other_row_is_tested_against_it(runs):
    paths = [runs["ab-s0"], runs["ab-s1"], runs["lenet"]]
    assert [len(g) for g in seed_groups(paths)] == [2, 1]
    rows = verdict_table(paths, baseline="ab")
    ab, lenet = rows
    assert ab["n"] == 2 and ab["interval"] == "t over seeds" and ab["verdict"] == "baseline"
    assert ab["low"] <= ab["top1"] <= ab["high"] and ab["top1"] == pytest.approx(sum(ab["seeds_top1"]) / 2, abs=0.01)
    assert lenet["n"] == 1 and lenet["interval"] == "Clopper-Pearson on test images"
    assert (lenet["low"], lenet["high"]) == (lenet["test_low"], lenet["test_high"])
    assert ab["test_low"] < ab["top1"] < ab["test_high"] and {"top5", "loss", "ece", "train_seconds", "loss_sd"} <= set(ab)
    import json
    losses = [json.loads((runs[n] / "results.json").read_text())["test"]["loss"] for n in ("ab-s0", "ab-s1")]
    assert ab["loss"] == pytest.approx(sum(losses) / 2) and "loss_sd" not in lenet
    assert lenet["test"] == "paired t over images" and 0 <= lenet["p"] <= lenet["p_holm"] <= 1
    assert lenet["diff_low"] <= lenet["difference"] <= lenet["diff_high"]
    assert lenet["difference"] == pytest.approx(lenet["top1"] - ab["top1"], abs=1e-6)
    assert lenet["verdict"] in ("better", "worse", "not distinguishable at 95%")


def test_other_test_sets_and_unknown_baselines_are_refused(runs):
    with pytest.raises(ConfigError, match="different test sets or class lists"):
        verdict_table([runs["ab-s0"], runs["c100"]])
    with pytest.raises(ConfigError, match="names no row. Did you mean 'lenet'"):
        verdict_table([runs["ab-s0"], runs["lenet"]], baseline="lenat")


def test_compare_runs_on_the_command_line(runs, tmp_path, capsys):
    folder = tmp_path / "three"
    for name in ("ab-s0", "ab-s1", "lenet"):
        shutil.copytree(runs[name], folder / name)
    assert cli_main(["compare", str(folder), "--out", str(tmp_path / "out"), "--detect", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "(2 seeds)" in out and "baseline" in out and "Holm" in out
    assert "2 seeds a side tell apart" in out and "0.5 points need" in out
    assert (tmp_path / "out" / "verdicts.csv").is_file() and "| run | seeds |" in (tmp_path / "out" / "verdicts.md").read_text()


def test_a_folder_of_two_datasets_gives_one_table_each_and_runs_table_lists_every_run(runs, tmp_path, capsys):
    import cifarlab
    folder = tmp_path / "mixed"
    for name in ("ab-s0", "lenet", "c100"):
        shutil.copytree(runs[name], folder / name)
    assert cli_main(["compare", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "cifar10:\n" in out and "cifar100:\n" in out
    table = cifarlab.runs_table(folder)
    assert sorted(table["run"]) == ["ab-s0", "c100", "lenet"] and "top1" in table


def test_compare_runs_gives_a_row_per_seed_group_and_runs_table_a_row_per_run(runs, tmp_path):
    import cifarlab
    paths = [runs["ab-s0"], runs["ab-s1"], runs["lenet"], runs["c100"]]
    frame = cifarlab.compare_runs(paths, out_dir=tmp_path)
    assert list(frame["n"]) == [2, 1, 1] and list(frame["dataset"]) == ["cifar10", "cifar10", "cifar100"]
    assert frame["runs"].iloc[0] == ["ab-s0", "ab-s1"] and len(frame["seeds_top1"].iloc[0]) == 2
    per_run = cifarlab.runs_table(paths)
    assert list(per_run["run"]) == ["ab-s0", "ab-s1", "lenet", "c100"]
    assert frame["top1"].iloc[0] == pytest.approx(per_run["top1"].iloc[:2].mean(), abs=1e-4)
    assert frame["time_seconds"].iloc[0] == pytest.approx(per_run["time_seconds"].iloc[:2].mean())
    assert {p.name for p in tmp_path.iterdir()} == {"verdicts-cifar10.csv", "verdicts-cifar10.md",
                                                    "verdicts-cifar100.csv", "verdicts-cifar100.md"}
    two = cifarlab.compare_runs([runs["ab-s0"], runs["lenet"]])
    compared = two[two["verdict"] != "baseline"]
    assert list(compared["test"]) == ["exact McNemar"]          # one run a side


def test_a_single_run_gets_its_interval_and_no_pair(runs):
    (row,) = verdict_table([runs["lenet"]])
    assert row["verdict"] == "baseline" and row["interval"] == "Clopper-Pearson on test images"
    assert row["low"] < row["top1"] < row["high"] and "difference" not in row
