"""The benchmark scripts run (on tiny data), so a refactor cannot silently break them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert summary["mean_top1"] == pytest.approx(sum(tops) / 2) and tops[0] != tops[1]   # two seeds, their mean
    for r in summary["runs"]:   # each run's figure is its run directory's result
        assert r["test_top1"] == json.loads((Path(r["run_dir"]) / "results.json").read_text())["test"]["top1"]
    assert [c["epoch"] for c in summary["runs"][0]["curve"]] == [1, 2] and "| seed |" in p.stdout
