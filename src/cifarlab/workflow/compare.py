"""The comparison table of finished runs: one row per run from ``results.json`` (and, for runs
recorded before ECE was, the cached ``predictions.npz``); nothing is retrained."""
from __future__ import annotations

from pathlib import Path

from ..evaluation.calibration import expected_calibration_error
from ..render.table import to_markdown, write_csv
from ..runs import RunDir
from .predictions import run_predictions


def comparison_row(run_dir, data_dir: str | None = None) -> dict:
    """One comparison-table row for a complete run.

    Keys: run, path, model, strategy, dataset, top1/top5 (%), loss (nats), superclass_top1 (%),
    ece (%, before temperature scaling), temperature, ece_scaled (%) and nll_scaled (nats) after
    it (None when the run has no calibration), params_total/params_trainable (counts), size_mb (MB, 10^6 bytes), peak_memory_gib,
    train_seconds, cache_seconds (building or reading the feature cache of a linear probe or partial
    fine-tune, outside train_seconds; None without one), time_seconds (the two together: what the
    run's training cost), inference_images_per_s, epochs_run, best_epoch.

    Raises:
        RunDirError: the run is incomplete (names the missing files).
    """
    rd = RunDir(run_dir)
    rd.require_complete()
    r = rd.read_results()
    test = r["test"]
    ece = test.get("ece")
    if ece is None:  # runs from before ECE was recorded: from the cached predictions
        p = run_predictions(rd.path, data_dir=data_dir)
        ece = expected_calibration_error(p.test_probs, p.test_labels)
    params = r.get("parameters", {})
    cal = r.get("calibration") or {}
    cache_s = (r.get("feature_cache") or {}).get("extract_seconds")
    return {
        "run": rd.path.name, "path": str(rd.path), "model": r["model"], "strategy": r.get("strategy", "scratch"),
        "dataset": r["dataset"], "top1": test["top1"], "top5": test["top5"], "loss": test["loss"],
        "superclass_top1": test.get("superclass_top1"), "ece": ece,
        "params_total": params.get("total"), "params_trainable": params.get("trainable"),
        "size_mb": r["model_size_bytes"] / 1e6 if "model_size_bytes" in r else None,
        "peak_memory_gib": r["peak_memory_bytes"] / 2**30 if "peak_memory_bytes" in r else None,
        "train_seconds": r.get("train_seconds"), "cache_seconds": cache_s,
        "time_seconds": None if r.get("train_seconds") is None else r["train_seconds"] + (cache_s or 0.0),
        "inference_images_per_s": r.get("inference_images_per_s"),
        "epochs_run": r.get("epochs_run"), "best_epoch": r.get("best_epoch"),
        "temperature": cal.get("temperature"), "ece_scaled": cal.get("test_ece_after"),
        "nll_scaled": cal.get("test_nll_after"),
    }


def comparison_rows(run_dirs, out_dir=None, data_dir: str | None = None) -> list[dict]:
    """A row per run (`comparison_row` dicts, in order); with ``out_dir``, also writes
    ``comparison.csv`` / ``.md``."""
    rows = [comparison_row(p, data_dir) for p in run_dirs]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "comparison.csv", rows)
        (out / "comparison.md").write_text(to_markdown(rows))
    return rows


def runs_table(path, data_dir: str | None = None):
    """Every run under ``path`` (a run directory, a folder of runs, a suite file, or a list of any of
    these) as one ``pandas.DataFrame``, a row per run (`comparison_row`'s columns).

    Raises:
        RunDirError: a run is incomplete.
    """
    import pandas as pd
    from .suite_file import resolve_runs
    return pd.DataFrame(comparison_rows(resolve_runs(listed(path)), data_dir=data_dir))


def listed(paths) -> list:
    """One path (str, `Path`, `Run`) or several, as a list."""
    return list(paths) if isinstance(paths, (list, tuple)) else [paths]
