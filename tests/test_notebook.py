"""examples/quickstart.ipynb runs top to bottom (nbclient, a real kernel) on tiny data the test makes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_executes(cifar10_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    monkeypatch.setenv("CIFARLAB_DATA", str(cifar10_dir))
    monkeypatch.setenv("QUICKSTART_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("QUICKSTART_TINY", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # samples, show_batch, curves, confusion matrix, top losses: figures shown inline
    shown = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("test top1" in h and "recipe" in h for h in shown)            # the Run's own view
    assert any("val_top1" in h for h in shown)                               # run.metrics, a DataFrame
    last = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    assert last.startswith("[(") and "'" in last  # [(class, probability), ...]
    assert os.path.isfile(tmp_path / "out" / "run" / "results.json")
