"""The benchmark scripts run (on tiny data), so a refactor cannot silently break them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

import cifarlab

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_benchmark_runs_and_records_a_curve(cifar10_dir, tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cifar_recipe.py"), "--dataset", "cifar10",
                        "--data-dir", str(cifar10_dir), "--seeds", "0", "1", "--out", str(tmp_path / "runs"),
                        "--results", str(tmp_path / "results"), "--set", "epochs=2", "--set", "batch_size=50",
                        "--set", "model_kwargs={widths: [8, 16, 16]}", "--set", "download=false"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((tmp_path / "results" / "cifar10-recipe.json").read_text())
    assert len(summary["runs"]) == 2 and len(summary["runs"][0]["curve"]) == 2
    tops = [r["test_top1"] for r in summary["runs"]]
    assert summary["mean_top1"] == pytest.approx(sum(tops) / 2)   # two seeds, their mean
    losses = []
    for r in summary["runs"]:   # each run's figure is its run directory's result
        assert r["test_top1"] == json.loads((Path(r["run_dir"]) / "results.json").read_text())["test"]["top1"]
        losses.append([json.loads(x)["train_loss"] for x in (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()])
    assert losses[0] != losses[1]   # the seeds trained differently (their test top-1 may both be 100% on this data)
    assert [c["epoch"] for c in summary["runs"][0]["curve"]] == [1, 2] and "| seed |" in p.stdout


def test_recipe_search_and_tta_levels_read_tiny_runs(cifar10_dir, tmp_path):
    """Two candidates, one progressively resized (16 then 32 px): the search table gives each one's
    validation curve, its compute in 32-px epochs from the side costs, the ratio to the reference,
    and test top-1 only for the reference and the chosen; tta_levels scores every level. A third
    candidate, priced by --network-costs and stopped inside its second epoch, counts twice its steps."""
    import cifarlab
    from helpers import tiny_config
    runs = tmp_path / "search"
    cifarlab.train(tiny_config(cifar10_dir, val_size=50, epochs=2, tta=1), run_dir=runs / "ref-s0")
    cifarlab.train(tiny_config(cifar10_dir, val_size=50, epochs=3, tta=1, img_sizes=[[0, 16], [2, 32]]),
                   run_dir=runs / "prog-s0")
    cifarlab.train(tiny_config(cifar10_dir, val_size=50, epochs=1.5, tta=1), run_dir=runs / "wide-s0")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recipe_search.py"), str(runs), "--reference", "ref",
                        "--side-costs", "16=0.25", "32=1", "--network-costs", "wide=2", "--chosen",
                        "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    found = json.loads((tmp_path / "out" / "search.json").read_text())
    rows = {r["candidate"]: r for r in found["candidates"]}
    assert rows["ref"]["compute"] == 2.0 and rows["prog"]["compute"] == 1.5 and rows["prog"]["compute_ratio"] == 0.75
    steps = [json.loads(line)["step"] for line in (runs / "wide-s0" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 5]   # 3 steps an epoch on the tiny set: 1.5 epochs round up to 5 steps
    assert rows["wide"]["epochs"] == 2 and rows["wide"]["compute"] == pytest.approx(2 * (1 + 2 / 3))
    assert rows["wide"]["schedule"] == "1.67x32"   # the steps that ran, as the compute counts them
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recipe_search.py"), str(runs), "--reference", "ref",
                          "--side-costs", "32=1", "--network-costs", "wdie=2", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--network-costs names wdie, which no run here is a seed of" in bad.stderr
    prog = [r for r in found["runs"] if r["candidate"] == "prog"][0]
    assert prog["sides"] == [16, 16, 32] and len(prog["curve"]) == 3 and prog["seed"] == 0
    assert rows["prog"]["schedule"] == "2x16 + 1x32" and "| 2x16 + 1x32 |" in p.stdout
    assert prog["val_top1_tta"] is not None and prog["curve"][-1][0] < prog["cost_s"]
    assert "not read" in p.stdout and "**ref** (reference)" in p.stdout   # test top-1: the reference's only
    assert (tmp_path / "out" / "time_to_accuracy.png").stat().st_size > 10_000
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tta_levels.py"), str(runs / "prog-s0"),
                        "--fractions", "1", "0.5"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith("| prog-s0")]
    assert len(lines) == 10   # 2 splits x (level 0 once, levels 1 and 2 at both fractions)
    assert "| val | 2 | 1 | 6 |" in lines[3] and "| val | 2 | 0.5 | 3.5 |" in lines[4]


@pytest.fixture
def rs(monkeypatch):
    """benchmarks/recipe_search.py, imported as a module."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("recipe_search")


def fake_run(candidate, test, cost, *, dataset="cifar10", seed=0, val=None, superclass=None):
    """One run's summary as ``recipe_search.read_run`` gives it, without training (``val``: test's when None)."""
    val = test if val is None else val
    return {"candidate": candidate, "seed": seed, "dataset": dataset, "epochs": 8, "tta": 2, "schedule": "8x32",
            "batch_size": 2000, "val_top1_no_tta": val - 1, "val_top1_tta": val, "test_top1_tta": test,
            "superclass_top1": superclass, "cost_s": cost, "wall_s": cost + 50, "peak_rss_gib": 5.0, "compute": 8.0}


def test_recipe_search_gives_the_seeds_mean_and_spread(rs):
    """Three seeds of a candidate: the row holds their mean and sample standard deviation (n - 1) of
    validation and test top-1 with TTA, the table prints them as ``mean ± sd``; one seed has no spread."""
    rows = {r["candidate"]: r for r in rs.summarize(
        [fake_run("ref", 93.5, 1000, seed=0, val=93.0), fake_run("ref", 93.7, 1100, seed=1, val=94.0),
         fake_run("ref", 93.9, 1200, seed=2, val=93.5), fake_run("cand", 93.0, 800, val=92.0)], ["ref"])}
    assert rows["ref"]["val_top1_tta"] == pytest.approx(93.5) and rows["ref"]["val_top1_tta_sd"] == pytest.approx(0.5)
    assert rows["ref"]["test_top1_tta_sd"] == pytest.approx(0.2) and rows["ref"]["seeds"] == [0, 1, 2]
    assert rows["cand"]["val_top1_tta_sd"] is None and rows["cand"]["cost_ratio"] == pytest.approx(800 / 1100)
    text = rs.table(list(rows.values()), chosen=[])
    assert "| 93.50 ± 0.50 | 93.70 ± 0.20 |" in text and "| 92.00 | not read |" in text


def test_recipe_search_shows_a_partial_last_epoch_as_its_fraction(rs):
    """``--epochs 12.4`` with 32 px from epoch 6 ran 13 epochs, the last 0.4 of one: the schedule reads
    ``6x24 + 6.4x32``, not 7x32; whole epochs and a schedule of one side read as before (read_run's
    share, from the steps that ran, is checked on real runs above)."""
    sides = [24] * 6 + [32] * 7
    assert rs.schedule_text(sides, 32, "crop", 0.4) == "6x24 + 6.4x32 crop"
    assert rs.schedule_text(sides, 32, "crop") == "6x24 + 7x32 crop"
    assert rs.schedule_text([32] * 11, 32, None, 0.15) == "10.15x32"
    assert rs.schedule_text([24] * 3, 32, "resize", 0.8) == "2.8x24"


def test_recipe_search_has_a_reference_per_dataset(rs):
    """CIFAR-10 and CIFAR-100 runs in one search: each row's ratio is to its own dataset's reference,
    a reference of one dataset is not one of the other, and superclass top-1 gets a column that
    CIFAR-10 rows leave empty."""
    runs = [fake_run("ref10", 93.0, 1000), fake_run("cand", 92.0, 500),
            fake_run("ref100", 74.0, 4000, dataset="cifar100", superclass=84.0),
            fake_run("cand", 75.0, 3000, dataset="cifar100", superclass=85.5)]
    rows = {(r["dataset"], r["candidate"]): r for r in rs.summarize(runs, ["ref10", "ref100"])}
    assert rows["cifar10", "cand"]["cost_ratio"] == pytest.approx(0.5)
    assert rows["cifar100", "cand"]["cost_ratio"] == pytest.approx(0.75)
    assert rows["cifar100", "ref100"]["is_reference"] and not rows["cifar100", "cand"]["is_reference"]
    text = rs.table(list(rows.values()), chosen=[])
    assert "superclass top-1" in text and "| **ref100** (reference) |" in text
    assert "| 74.00 | 84.00 |" in text and "| not read |  |" in text and "| 93.00 |  |" in text
    assert "superclass" not in rs.table([rows["cifar10", "ref10"]], chosen=None)


def test_recipe_search_plots_test_top1_for_runs_without_validation(rs, tmp_path, monkeypatch):
    """Runs trained on every training image (no validation split, the chosen recipe's final scoring)
    have no per-epoch curve: the plot's stars are their test top-1 at their cost (and the axis says
    so), and the plot is still written; one run with a validation split brings the validation stars back."""
    def full(candidate, test, cost, seed=0):
        return {**fake_run(candidate, test, cost, seed=seed), "val_top1_no_tta": None, "val_top1_tta": None,
                "curve": [], "compute_curve": []}
    runs = [full("ref", 93.9, 900), full("ref", 94.1, 950, seed=1), full("cand", 93.7, 700)]
    assert rs.star_key(runs) == "test_top1_tta"
    with_val = {**fake_run("cand", 93.0, 700), "curve": [(100.0, 90.0)], "compute_curve": [(1.0, 90.0)]}
    assert rs.star_key(runs + [with_val]) == "val_top1_tta"
    rows = rs.summarize(runs, ["ref"])
    assert [r["val_top1_tta"] for r in rows] == [None, None] and "| 94.00 ± 0.14 |" in rs.table(rows)
    from cifarlab.render.mpl import pyplot
    plt = pyplot()
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)   # keep the figure to read its stars back
    rs.plot(runs, rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000
    ax = plt.gcf().axes[0]
    stars = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets())
    assert stars == [(700, 93.7), (900, 93.9), (950, 94.1)] and ax.get_ylabel().startswith("test top-1")
    vertical = lambda a: [ln.get_xdata()[0] for ln in a.lines if len(set(ln.get_xdata())) == 1]
    assert vertical(ax) == [pytest.approx(0.8 * 925)]   # the target's budget: 0.8x the reference's mean cost
    rs.plot(runs, rows, tmp_path / "screen.png", budget_line=False)   # a screen against another candidate
    assert vertical(plt.gcf().axes[0]) == []
    monkeypatch.undo()
    plt.close("all")


@pytest.mark.parametrize("script,args,expect", [
    ("conv_weight_grad.py", ["--channels", "4", "--sides", "3", "2", "--batches", "2", "--repeats", "1"],
     "| matrix product (ms) |"),
    ("profile_step.py", ["--batch-size", "8", "--steps", "1", "--side", "24"], "| operator family |"),
    ("precision_probe.py", ["--batch", "8", "--steps", "2", "--precision", "auto", "fp32", "--no-matmul"],
     "channels_last, precision auto: "),
])
def test_step_benchmarks_run_on_tiny_inputs(script, args, expect):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert expect in p.stdout
    if script == "conv_weight_grad.py":   # the two gradients agree on every row (last column: max rel. diff)
        rows = [r for r in p.stdout.splitlines() if r.startswith("| bf16") or r.startswith("| fp32")]
        assert len(rows) == 4 and all(float(r.split("|")[-2]) < 2e-2 for r in rows)


GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"


def _gpu_check(*args):
    return subprocess.run(["bash", str(GPU_CHECK), *args], capture_output=True, text=True, timeout=60)


def test_gpu_check_arguments_and_plan(tmp_path):
    """The GPU check's CPU side: help, one-line refusals, no GPU named as such, and the plan it runs."""
    h = _gpu_check("--help")
    assert h.returncode == 0 and "usage: bash benchmarks/gpu_check.sh" in h.stdout and "--dry-run" in h.stdout
    for args, needle in ((["--bogus"], "unknown argument '--bogus'"), (["--data"], "--data needs a value")):
        p = _gpu_check(*args)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
    plan = _gpu_check("--dry-run", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"))
    assert plan.returncode == 0, plan.stderr
    steps = [line for line in plan.stderr.splitlines() if line.startswith("+ ")]
    assert any("pip install -q --no-index --no-deps --no-build-isolation -e ." in s for s in steps)
    assert any("-m pytest -q -m cuda tests/test_cuda.py" in s for s in steps)
    trains = [s for s in steps if " -m cifarlab train " in s]
    assert len(trains) == 3 and all("--device cuda" in s for s in trains)
    assert "--recipe airbench94_muon" in trains[1] and "partial-fine-tune" in trains[2]
    assert "gpu_table.py" in steps[-1] and not (tmp_path / "o").exists()   # a plan only: nothing ran
    assert not any("pytest" in s for s in _gpu_check("--dry-run", "--no-tests").stderr.splitlines())
    if not torch.cuda.is_available():
        p = _gpu_check("--no-tests")
        assert p.returncode == 3 and "no CUDA GPU" in p.stderr


def test_gpu_table_rows_and_json(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_table
    sys.path.pop(0)
    done = tmp_path / "cifar10-recipe"
    done.mkdir()
    (done / "results.json").write_text(json.dumps({
        "test": {"top1": 94.123}, "wall_seconds": 61.04, "train_images_per_s": 31234.6,
        "peak_memory_bytes": 3 * 2 ** 30, "precision": {"used": "bf16"}, "environment": {"gpu": "NVIDIA H100"}}))
    failed = tmp_path / "lite0"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps({"status": "failed"}))
    code = gpu_table.main([str(done), str(failed), "--out", str(tmp_path / "t.json")])
    table = json.loads((tmp_path / "t.json").read_text())
    rows = table["rows"]
    assert table["machine"] == "per row" and {"command", "date", "columns"} <= set(table)
    assert code == 1 and rows[0]["top1"] == 94.123 and rows[1] == {"run": "lite0", "status": "failed"}
    text = gpu_table.markdown(rows).splitlines()
    assert text[2] == "| cifar10-recipe | 94.12 | 61.0 | 31235 | 3.00 | bf16 | NVIDIA H100 |"
    assert text[3].startswith("| lite0 | failed |") and text[3].count("|") == text[2].count("|")
