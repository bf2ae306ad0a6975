"""The benchmark scripts run (on tiny data), so a refactor cannot silently break them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert 0 <= summary["mean_top1"] <= 100 and "| seed |" in p.stdout
