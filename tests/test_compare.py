"""Comparison, ensembles and suites on tiny trained runs (trained once per module)."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from cifarlab.cli import main as cli_main
from cifarlab.evaluation.ensemble import EnsembleError, greedy_selection
from cifarlab.render.table import to_text
from cifarlab.runs import Run, RunDirError
from cifarlab.workflow import (SuiteError, compare_runs, comparison_rows, ensemble_runs, load_cached_predictions, load_suite,
                               run_predictions, run_suite, runs_table)


def _ece_by_definition(probs, labels, bins=15):
    """Guo et al. 2017: sum over 15 equal-width confidence bins of (share of images) x |accuracy - confidence|, in %."""
    conf, right = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    return 100 * sum(((conf > lo) & (conf <= hi)).mean() * abs(right[m].mean() - conf[m].mean())
                     for lo, hi in zip(edges[:-1], edges[1:]) if (m := (conf > lo) & (conf <= hi)).any())


def test_training_caches_predictions_matching_results(runs):
    p = load_cached_predictions(runs["ab-s0"])
    assert p is not None and p.val_logits is not None and p.val_logits.shape == (50, 10)
    r = json.loads((runs["ab-s0"] / "results.json").read_text())
    assert 100 * (p.test_logits.argmax(1) == p.test_labels).mean() == pytest.approx(r["test"]["top1"], abs=1e-4)
    # float32 probabilities summed in another order (thread count): agreement to 1e-4 points of ECE
    assert r["test"]["ece"] == pytest.approx(_ece_by_definition(p.test_probs, p.test_labels), abs=1e-4)
    assert r["data_side"] == 32


def test_prediction_cache_is_invalidated_by_a_new_checkpoint(runs, tmp_path):
    import shutil
    run = shutil.copytree(runs["ab-s1"], tmp_path / "copy")
    before = run_predictions(run)
    ckpt = run / "checkpoint-best.safetensors"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    assert load_cached_predictions(run) is None
    again = run_predictions(run)  # recomputed from the checkpoint: same weights, same logits
    np.testing.assert_allclose(again.test_logits, before.test_logits, atol=1e-4)
    assert load_cached_predictions(run) is not None


def test_comparison_rows_and_tables(runs, tmp_path):
    paths = [runs["ab-s0"], runs["lenet"], runs["c100"]]
    rows = comparison_rows(paths, tmp_path)
    frame = runs_table(paths)                        # the same rows as a DataFrame
    assert list(frame["run"]) == ["ab-s0", "lenet", "c100"] and frame["top1"].tolist() == [r["top1"] for r in rows]
    results = [json.loads((p / "results.json").read_text()) for p in paths]
    for row, r in zip(rows, results):
        assert row["top1"] == r["test"]["top1"] and row["params_total"] == r["parameters"]["total"]
        assert row["train_seconds"] == r["train_seconds"] and row["epochs_run"] == r["epochs_run"]
        assert row["size_mb"] == pytest.approx(r["model_size_bytes"] / 1e6)
    assert rows[2]["superclass_top1"] is not None and rows[0]["superclass_top1"] is None
    with open(tmp_path / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["run"] for t in table] == ["ab-s0", "lenet", "c100"]
    assert float(table[1]["top1"]) == pytest.approx(rows[1]["top1"])
    md = (tmp_path / "comparison.md").read_text()
    assert md.count("\n") == 5 and "| lenet | lenet |" in md and "ECE %" in md
    text = to_text(rows)
    assert len(text.splitlines()) == 5 and "superclass %" in text


def test_run_objects_work_where_run_directories_do(runs):
    """The package docstring's use: cifarlab.train returns Run objects; compare and ensemble take them."""
    a, b = Run.load(runs["ab-s0"]), Run.load(runs["ab-s1"])
    assert compare_runs([a, b]).equals(compare_runs([runs["ab-s0"], runs["ab-s1"]]))
    assert runs_table([a, b]).equals(runs_table([runs["ab-s0"], runs["ab-s1"]]))
    by_run, by_path = ensemble_runs([a, b], ["uniform"]), ensemble_runs([runs["ab-s0"], runs["ab-s1"]], ["uniform"])
    assert by_run["ensembles"]["uniform"]["test"] == by_path["ensembles"]["uniform"]["test"]
    assert [m["run"] for m in by_run["members"]] == ["ab-s0", "ab-s1"]


def test_ensemble_methods_match_manual_average(runs, tmp_path):
    members = [runs["ab-s0"], runs["ab-s1"], runs["lenet"]]
    res = ensemble_runs(members, ["uniform", "weighted", "greedy"], out_dir=tmp_path)
    preds = [run_predictions(p) for p in members]
    avg = np.mean([p.test_probs for p in preds], axis=0)
    labels = preds[0].test_labels
    assert res["ensembles"]["uniform"]["test"]["top1"] == pytest.approx(100 * (avg.argmax(1) == labels).mean())
    wrong = np.stack([p.test_probs.argmax(1) != labels for p in preds])
    assert res["diversity"]["wrong_for_all"] == int(wrong.all(0).sum())
    assert res["diversity"]["wrong_for_any"] == int(wrong.any(0).sum())
    assert "wrong for every member" in (tmp_path / "ensemble.md").read_text()
    val_acc = np.array([(p.val_logits.argmax(1) == p.val_labels).mean() for p in preds])
    w = res["ensembles"]["weighted"]["weights"]
    assert [w[n] for n in ("ab-s0", "ab-s1", "lenet")] == pytest.approx(list(val_acc / val_acc.sum()))
    weighted = sum(w[n] * p.test_probs for n, p in zip(("ab-s0", "ab-s1", "lenet"), preds))
    assert res["ensembles"]["weighted"]["test"]["top1"] == pytest.approx(100 * (weighted.argmax(1) == labels).mean())
    g = res["ensembles"]["greedy"]
    counts = greedy_selection([p.val_probs for p in preds], preds[0].val_labels)
    want = {n: c / counts.sum() for n, c in zip(("ab-s0", "ab-s1", "lenet"), counts) if c}
    assert g["weights"] == pytest.approx(want)
    greedy = sum(want.get(n, 0) * p.test_probs for n, p in zip(("ab-s0", "ab-s1", "lenet"), preds))
    assert g["test"]["top1"] == pytest.approx(100 * (greedy.argmax(1) == labels).mean())
    # each ensemble against the best member on the same images, Holm-corrected across the three methods
    for e in res["ensembles"].values():
        v = e["vs_best_single"]
        assert v["difference"] == pytest.approx(e["gain_over_best_single"], abs=1e-4)   # float32 top-1s
        assert v["low"] <= v["difference"] <= v["high"] and v["p"] <= v["p_holm"] <= 1
        assert v["verdict"] in ("better", "worse", "not distinguishable at 95%")
    assert "| verdict |" in (tmp_path / "ensemble.md").read_text()
    assert g["test"]["ece"] == pytest.approx(_ece_by_definition(greedy, labels), abs=1e-4)
    best = max(100 * (p.test_logits.argmax(1) == labels).mean() for p in preds)
    assert res["best_single"]["top1"] == pytest.approx(best)
    assert g["gain_over_best_single"] == pytest.approx(g["test"]["top1"] - best, abs=1e-4)  # float32 top-1s
    saved = json.loads((tmp_path / "ensemble.json").read_text())
    assert saved["ensembles"].keys() == {"uniform", "weighted", "greedy"}
    assert "best single" in (tmp_path / "ensemble.md").read_text()


def test_ensemble_refuses_mixed_datasets_and_bad_requests(runs, tmp_path):
    with pytest.raises(EnsembleError, match="different datasets.*ab-s0 is cifar10.*c100 is cifar100"):
        ensemble_runs([runs["ab-s0"], runs["c100"]])
    with pytest.raises(EnsembleError, match="at least two"):
        ensemble_runs([runs["ab-s0"]])
    with pytest.raises(EnsembleError, match="unknown ensemble method"):
        ensemble_runs([runs["ab-s0"], runs["ab-s1"]], ["median"])
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.yaml").write_text((runs["ab-s0"] / "config.yaml").read_text())
    with pytest.raises(RunDirError, match="incomplete.*missing.*results.json"):
        ensemble_runs([runs["ab-s0"], incomplete])


def _copy_with_predictions(run, dest, **change):
    """A copy of ``run`` whose cached predictions differ as ``change`` says (classes or test_labels)."""
    import shutil
    shutil.copytree(run, dest)
    p = load_cached_predictions(dest)
    for k, v in change.items():
        setattr(p, k, v)
    from cifarlab.workflow import save_predictions
    save_predictions(dest, p)
    return dest


def test_ensemble_refuses_other_classes_or_test_sets(runs, tmp_path):
    p = load_cached_predictions(runs["ab-s0"])
    renamed = _copy_with_predictions(runs["ab-s1"], tmp_path / "renamed", classes=["plane"] + p.classes[1:])
    with pytest.raises(EnsembleError, match="different class lists.*plane"):
        ensemble_runs([runs["ab-s0"], renamed])
    reordered = _copy_with_predictions(runs["ab-s1"], tmp_path / "reordered", classes=p.classes[::-1])
    with pytest.raises(EnsembleError, match="different class lists.*in class order"):
        ensemble_runs([runs["ab-s0"], reordered])
    other = _copy_with_predictions(runs["ab-s1"], tmp_path / "other", test_labels=np.roll(p.test_labels, 1))
    with pytest.raises(EnsembleError, match="different test sets"):
        ensemble_runs([runs["ab-s0"], other])


def test_cli_ensemble_errors_are_one_line(runs, capsys):
    assert cli_main(["ensemble", str(runs["ab-s0"]), str(runs["c100"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot ensemble runs on different datasets") and "Traceback" not in err
    assert cli_main(["ensemble", str(runs["ab-s0"]), str(runs["ab-s1"]), "--method", "all"]) == 0
    assert "greedy" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ suites
def _write(path, text):
    path.write_text(text)
    return path


SUITE_ERRORS = [  # (suite text, what the error must say: file:line, the problem, the valid choices)
    ("name: x\nruns:\n  - name: a\n    epochs: 1\n    learning_rate: 0.1\n",
     r"s.yaml:5: unknown run key 'learning_rate'.*Valid keys:.*\blr\b"),
    ("runs:\n  - name: a\n  - name: b\n    model: resnet181\n", r"s.yaml:4: .*resnet181.*resnet18"),
    ("runs:\n  - name: a\nensembel: {}\n", r"s.yaml:3: unknown suite key 'ensembel'.*Did you mean ensemble"),
    ("runs:\n  - name: a\n    seeds: [0, 1]\n  - name: a-s1\n", "used twice"),
    ("runs:\n  - name: a\n    epochs: -3\n", r"s.yaml:2 \(run a\): .*epochs"),
    ("runs:\n  - name: a\n    seeds: [0, 1]\nensemble: {runs: [a-s2]}\n",
     r"s.yaml:4: no run or entry named 'a-s2'.*Did you mean"),
    ("runs:\n  - name: a\n    seeds: 0\n", r"s.yaml:3: seeds is a count >= 1"),
    ("runs:\n  - name: a\n    seeds: three\n", r"s.yaml:3: seeds is a count \(3: seeds 0, 1, 2\)"),
]


@pytest.mark.parametrize("text,message", SUITE_ERRORS)
def test_suite_errors_name_line_and_valid_keys(tmp_path, text, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(_write(tmp_path / "s.yaml", text))


def test_a_seed_count_stands_for_that_many_seeds_from_0(tmp_path):
    s = load_suite(_write(tmp_path / "s.yaml", "runs:\n  - name: a\n    seeds: 3\n"))
    assert [r.name for r in s.runs] == ["a-s0", "a-s1", "a-s2"] and [r.config.seed for r in s.runs] == [0, 1, 2]


def test_suite_ensemble_members_by_run_or_entry_name(tmp_path):
    text = ("runs:\n  - name: a\n    seeds: [0, 1]\n  - name: b\n  - name: c\n    seeds: [3]\n"
            "ensemble: {runs: [a, c-s3, a-s1]}\n")
    s = load_suite(_write(tmp_path / "s.yaml", text))
    assert s.ensemble["runs"] == ["a-s0", "a-s1", "c-s3"]       # entry expanded, duplicates dropped, b left out


def test_suite_trains_skips_resumes_and_refuses_changed_runs(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = ("name: tiny\ndefaults:\n  val_size: 50\n  model_kwargs: {widths: [8, 16, 16]}\n  batch_size: 50\n"
            "  eval_batch_size: 64\n  epochs: 2\n  whiten_bias_epochs: 1\n  channels_last: false\n"
            "runs:\n  - name: ab\n    seeds: [0, 1]\nensemble: {methods: [uniform, greedy]}\nreport: false\n")
    s = load_suite(_write(tmp_path / "tiny.yaml", text), {"data_dir": str(runs["data10"]), "download": False})
    res = run_suite(s, progress=False, log=lambda m: None)
    assert [p.name for p in res.completed] == ["ab-s0", "ab-s1"] and not res.failed
    assert (tmp_path / "runs/tiny/comparison.csv").is_file() and res.ensemble["ensembles"]["greedy"]
    ckpt = tmp_path / "runs/tiny/ab-s0/checkpoint-best.safetensors"
    stamp = ckpt.stat().st_mtime_ns
    # interrupt ab-s1 half-way (as a killed job would), then run the suite again
    os.remove(tmp_path / "runs/tiny/ab-s1/results.json")
    (tmp_path / "runs/tiny/ab-s1/status.json").write_text('{"status": "interrupted"}')
    logs = []
    res = run_suite(s, progress=False, log=logs.append)
    assert ckpt.stat().st_mtime_ns == stamp                   # complete run not retrained
    assert any("ab-s0: complete, skipped" in m for m in logs)
    assert any("ab-s1: resuming" in m for m in logs) and len(res.completed) == 2
    from cifarlab.files import FolderInUse, lock_folder
    with lock_folder(tmp_path / "runs/tiny", "compare tiny.yaml"):  # another compare of this suite is running
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()} .*'compare tiny.yaml'"):
            run_suite(s, progress=False, log=lambda m: None)
    s2 = load_suite(_write(tmp_path / "tiny.yaml", text.replace("epochs: 2", "epochs: 3")),
                    {"data_dir": str(runs["data10"]), "download": False})
    with pytest.raises(SuiteError, match="different config.*epochs"):
        run_suite(s2, progress=False, log=lambda m: None)


EXAMPLES = sorted((__import__("pathlib").Path(__file__).parents[1] / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_suites_are_valid(path):
    s = load_suite(path)
    assert len(s.runs) >= 2 and len({r.name for r in s.runs}) == len(s.runs)


def test_offline_example_suite_runs_shrunk(runs, tmp_path, monkeypatch):
    """cifar100-offline.yaml end to end on tiny data (every model, a fraction of an epoch)."""
    monkeypatch.chdir(tmp_path)
    path = [p for p in EXAMPLES if p.stem == "cifar100-offline"][0]
    s = load_suite(path, {"data_dir": str(runs["data100"]), "download": False, "epochs": 1, "val_size": 100,
                          "batch_size": 100, "eval_batch_size": 100, "img_size": 32})
    s.ensemble["min_val_acc"] = 0
    s.report = False
    s.runs = [r for r in s.runs if r.name.endswith("-s0")]   # one seed of each: the suite's runs, shrunk
    res = run_suite(s, progress=False, log=lambda m: None)
    assert not res.failed, res.failed
    assert len(res.rows) == 4 and res.ensemble is not None
    assert len(res.verdicts["cifar100"]) == 4 and "| verdict |" in (s.out / "verdicts.md").read_text()
