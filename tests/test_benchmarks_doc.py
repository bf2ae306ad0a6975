"""BENCHMARKS.md is generated from its flat result files: the two agree, every file is shown, and the
results folder holds flat files only (no per-run folders)."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _tables():
    spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_md_agrees_with_its_files():
    tables = _tables()
    doc = (ROOT / "BENCHMARKS.md").read_text()
    assert tables.stale(doc) == [], "run: python benchmarks/tables.py"


def test_every_result_file_is_a_table_of_benchmarks_md_and_the_folder_is_flat():
    tables = _tables()
    named = {m["name"] for m in tables.BLOCK.finditer((ROOT / "BENCHMARKS.md").read_text())}
    files = {p.stem for p in RESULTS.glob("*.json")}
    assert files == named
    assert [p for p in RESULTS.iterdir() if p.is_dir()] == []
    assert sum(p.stat().st_size for p in RESULTS.iterdir()) < 1_000_000
    machines = {r["id"] for r in tables.load("machines")["rows"]}
    for name in files:
        table = tables.load(name)
        rows_machines = {r["machine"] for r in table["rows"] if "machine" in r}
        assert table["machine"] in machines | {"per row"} and rows_machines <= machines, name


def test_a_changed_figure_makes_the_table_stale(tmp_path):
    tables = _tables()
    shutil.copytree(RESULTS, tmp_path / "results")
    doc = (ROOT / "BENCHMARKS.md").read_text()
    path = tmp_path / "results" / "calibration.json"
    table = json.loads(path.read_text())
    table["rows"][1]["ece"] = 9.99
    path.write_text(json.dumps(table))
    assert tables.stale(doc, tmp_path / "results") == ["calibration"]
    assert "| 9.99 |" in tables.rendered(doc, tmp_path / "results")


def test_a_missing_or_incomplete_table_file_is_named(tmp_path):
    tables = _tables()
    (tmp_path / "broken.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(tables.TableError, match="lacks command, machine, date, columns"):
        tables.load("broken", tmp_path)
    with pytest.raises(tables.TableError, match="does not exist"):
        tables.load("absent", tmp_path)
