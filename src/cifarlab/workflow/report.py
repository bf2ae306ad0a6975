"""Interpretation of runs and the HTML report (``cifarlab report``), drawn by `cifarlab.render`.

``interpret_run`` writes a run's interpretation figures into ``RUN/interpretation/``;
``build_report`` gathers runs (run directories, suite folders or suite files), their comparison
table, curves, trade-off plots, interpretation, dataset analysis and ensembles into one
self-contained HTML file.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..evaluation import classification_metrics, confusion_matrix
from ..evaluation.analysis import most_confused, top_losses
from ..evaluation.calibration import expected_calibration_error, reliability_bins
from ..render import html as H
from ..render.figures import write_confusion, write_per_class
from ..render.interpret import plot_class_counts, plot_class_samples, plot_reliability, plot_top_losses
from ..render.plots import plot_curves, plot_forest, plot_tradeoff
from ..render.table import to_html
from ..runs import INTERPRETATION_DIR, RunDir, write_json
from .compare import comparison_rows
from .ensemble import ensemble_runs, overlap_summary
from .predictions import run_predictions
from .suite_file import resolve_runs
from .verdicts import METHODS, cells, tables_by_dataset


def dataset_of(cfg, data_dir: str | None = None):
    """The run's dataset as it was trained on (never downloads)."""
    return load_dataset(cfg.dataset, data_dir or cfg.data_dir, download=False, size=cfg.folder_size,
                        policy=cfg.resize_policy, progress=False)


def interpret_run(run_dir, test_images: np.ndarray | None = None, top_k: int = 16, data_dir: str | None = None) -> dict:
    """Write ``RUN/interpretation/``: confusion matrix (CSV + row-normalized PNG), per-class table,
    most-confused pairs, top-loss grid, reliability diagram, superclass confusion (CIFAR-100), and
    ``interpretation.json`` with the numbers behind them.

    Args:
        test_images: uint8 (N, 3, H, W) test images for the top-loss grid (loaded when None;
            the grid is skipped with a note if the data cannot be found).

    Returns:
        The ``interpretation.json`` dict plus ``files`` (name -> path).
    """
    rd = RunDir(run_dir)
    preds = run_predictions(rd.path, data_dir=data_dir)
    out = rd.path / INTERPRETATION_DIR
    out.mkdir(exist_ok=True)
    probs, labels, classes = preds.test_probs, preds.test_labels, preds.classes
    m = classification_metrics(torch.from_numpy(preds.test_logits), torch.from_numpy(labels), classes,
                               preds.coarse_of_fine, preds.coarse_classes)
    cm = np.array(m["confusion"])
    files = {}
    files["confusion_csv"], files["confusion_png"] = write_confusion(out, cm, classes)
    files["per_class_csv"], files["per_class_md"] = write_per_class(out, m, classes)
    bins = reliability_bins(probs, labels)  # of the temperature-scaled probabilities when the run has one
    ece = expected_calibration_error(probs, labels)
    title = f"Reliability: {rd.path.name}" + (
        f"\ntemperature-scaled, T = {preds.temperature:.2f} (ECE before: {m['ece']:.2f}%)"
        if preds.temperature != 1.0 else "")
    files["reliability_png"] = plot_reliability(out / "reliability.png", bins, ece, title)
    info = {"run": rd.path.name, "top1": m["top1"], "ece": ece, "ece_before_scaling": m["ece"],
            "temperature": preds.temperature, "reliability": bins,
            "most_confused": most_confused(cm, classes, k=10), "per_class_accuracy": m["per_class_accuracy"],
            "top_losses": top_losses(probs, labels, k=top_k), "notes": []}
    if test_images is None:
        try:
            test_images = dataset_of(rd.load_config(), data_dir).test.images
        except Exception as e:  # the figure is optional; the numbers above are not
            info["notes"].append(f"top-loss grid skipped: the test images could not be loaded ({e})")
    if test_images is not None:
        idx = [e["index"] for e in info["top_losses"]]
        files["top_losses_png"] = plot_top_losses(out / "top_losses.png", test_images[idx], info["top_losses"], classes)
    if preds.coarse_of_fine is not None:
        c = preds.coarse_of_fine
        ccm = confusion_matrix(c[labels], c[probs.argmax(1)], len(preds.coarse_classes))
        files["superclass_csv"], files["superclass_png"] = write_confusion(
            out, ccm, preds.coarse_classes, stem="superclass_confusion", title="Superclass confusion (row-normalized)")
        info["superclass_top1"] = m["superclass_top1"]
        info["superclass_most_confused"] = most_confused(ccm, preds.coarse_classes, k=5)
    write_json(out / "interpretation.json", info)
    info["files"] = {k: str(v) for k, v in files.items()}
    return info


def dataset_figures(ds, out_dir: Path, per_class: int = 8) -> dict:
    """Class counts (train/test) and a sample grid per class for a loaded dataset."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = ds.num_classes
    counts = {"train": np.bincount(ds.train.labels, minlength=n), "test": np.bincount(ds.test.labels, minlength=n)}
    return {"counts": {k: v.tolist() for k, v in counts.items()},
            "counts_png": plot_class_counts(out_dir / f"{ds.name}_class_counts.png", counts, ds.classes),
            "samples_png": plot_class_samples(out_dir / f"{ds.name}_samples.png", ds.train.images, ds.train.labels,
                                              ds.classes, per_class=per_class)}


def build_report(paths, out_file="report.html", title: str = "cifarlab report", ensemble: dict | None = None,
                 data_dir: str | None = None) -> Path:
    """Write the self-contained HTML report for the runs named by ``paths`` (see `resolve_runs`).

    Sections: comparison table; training curves overlaid; accuracy vs training time and vs
    parameters; ensemble result (``ensemble`` if given, else computed when two or more runs share
    a dataset: uniform, plus weighted and greedy when all have a validation split); per-run
    interpretation; dataset analysis. Figures also stay on disk next to the HTML
    (``<stem>_files/``) and in each run's ``interpretation/``.

    Raises:
        RunDirError: a path is not a run/suite, or a run is incomplete (names what is missing).
    """
    t0 = time.perf_counter()
    runs = resolve_runs(paths)
    for r in runs:
        RunDir(r).require_complete()
    out_file = Path(out_file)
    assets = out_file.with_name(out_file.stem + "_files")
    assets.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs, data_dir=data_dir)
    sections = [("Comparison", to_html(rows) + f"<p class='meta'>{len(rows)} runs. ECE: expected calibration "
                 "error, 15 bins (Guo et al. 2017); T, ECE (T), NLL (T): temperature scaling fitted on the run's "
                 "validation split, and the test ECE and NLL after it. Peak memory: process RSS on CPU, CUDA allocator peak on GPU.</p>")]
    sections.append(("Which differences are real", _verdicts_html(runs, assets, data_dir)))
    curves = {Path(r).name: RunDir(r).read_metrics() for r in runs}
    sections.append(("Training curves", H.img(plot_curves(assets / "curves.png", curves), "training curves")))
    trade = (H.img(plot_tradeoff(assets / "acc_vs_time.png", rows, "time_seconds",
                                 "training time, feature cache included (s)"),
                   "accuracy vs training time")
             + H.img(plot_tradeoff(assets / "acc_vs_params.png", rows, "params_total", "parameters (count)", log_x=True),
                     "accuracy vs parameters"))
    sections.append(("Accuracy vs cost", f"<div class='figs'>{trade}</div>"))

    by_dataset: dict[str, list[Path]] = {}
    for r, row in zip(runs, rows):
        by_dataset.setdefault(row["dataset"], []).append(Path(r))
    ens_html = []
    ensembles = [ensemble] if ensemble is not None else []
    if ensemble is None:
        for ds_name, members in by_dataset.items():
            if len(members) < 2:
                continue
            has_val = all(run_predictions(m, data_dir=data_dir).val_logits is not None for m in members)
            try:
                ensembles.append(ensemble_runs(members, ("uniform", "weighted", "greedy") if has_val else ("uniform",),
                                               data_dir=data_dir))
            except ValueError as e:  # e.g. different validation splits: report why instead
                ens_html.append(f"<p>{ds_name}: no ensemble ({e})</p>")
    for e in ensembles:
        ens_html.append(_ensemble_html(e))
    if ens_html:
        sections.append(("Ensembles", "".join(ens_html)))

    datasets = {}
    for ds_name, members in by_dataset.items():
        try:
            datasets[ds_name] = dataset_of(RunDir(members[0]).load_config(), data_dir)
        except Exception as e:  # the report still renders without the images
            datasets[ds_name] = None
            sections.append((f"Dataset {ds_name}", f"<p>not available: {e}</p>"))
    per_run = []
    for r, row in zip(runs, rows):
        ds = datasets.get(row["dataset"])
        info = interpret_run(r, test_images=ds.test.images if ds is not None else None, data_dir=data_dir)
        per_run.append(_run_html(row, info))
    sections.append(("Interpretation", "".join(per_run)))
    for ds_name, ds in datasets.items():
        if ds is None:
            continue
        figs = dataset_figures(ds, assets)
        counts = H.table(["class", "train", "test"], [[c, a, b] for c, a, b in
                                                     zip(ds.classes, figs["counts"]["train"], figs["counts"]["test"])])
        sections.append((f"Dataset {ds_name}", f"<div class='figs'>{H.img(figs['counts_png'], 'class counts')}"
                         f"{H.img(figs['samples_png'], 'samples per class', 700)}</div>"
                         f"<details><summary>class counts</summary>{counts}</details>"))
    meta = f"Built in {time.perf_counter() - t0:.1f} s from {len(runs)} run directories."
    out_file.write_text(H.page(title, sections, meta))
    return out_file


def _verdicts_html(runs, assets: Path, data_dir) -> str:
    """Per dataset: the verdict table (seeds grouped, intervals, each row against the best) and its forest plot."""
    parts = []
    for ds_name, table in tables_by_dataset(runs, data_dir=data_dir).items():
        body = []
        for v in table:
            c = cells(v)
            body.append([v["run"], v["n"], c["top1"], c["interval"], f"{c['difference']} {c['paired']}".strip(),
                         c["p"], c["verdict"]])
        parts.append(f"<h3>{ds_name}</h3>" + H.table(["run", "seeds", "top-1 %", "95% interval", "vs the best (points)",
                                                       "p (Holm)", "verdict"], body)
                     + H.img(plot_forest(assets / f"forest_{ds_name}.png", table), f"forest plot, {ds_name}", 900))
    return "".join(parts) + ("<p class='meta'>Runs that differ only in their seed form one row. Intervals: t over "
                             "seeds, or Clopper-Pearson on the test images for one run. " + html.escape(METHODS) + "</p>")


def _ensemble_html(e: dict) -> str:
    b = e["best_single"]
    rows = [[f"best single: {b['run']}", 1, f"{b['top1']:.2f}", f"{b['top5']:.2f}", f"{b['loss']:.3f}", f"{b['ece']:.2f}", ""]]
    for method, x in e["ensembles"].items():
        t = x["test"]
        rows.append([method, len(x["weights"]), f"{t['top1']:.2f}", f"{t['top5']:.2f}", f"{t['loss']:.3f}",
                     f"{t['ece']:.2f}", f"{x['gain_over_best_single']:+.2f}"])
    weights = "; ".join(f"{m}: " + ", ".join(f"{k} {w:.2f}" for k, w in x["weights"].items())
                        for m, x in e["ensembles"].items())
    overlap = f"<p class='meta'>{overlap_summary(e['diversity'])}</p>" if e.get("diversity") else ""
    return (f"<h3>{e['dataset']}: {len(e['members'])} runs</h3>"
            + H.table(["", "members", "top-1 %", "top-5 %", "loss", "ECE %", "gain (points)"], rows, "ensemble")
            + f"<p class='meta'>weights: {weights}</p>" + overlap)


def _run_html(row: dict, info: dict) -> str:
    f = info["files"]
    figs = [H.img(f["confusion_png"], f"confusion matrix {row['run']}", 520),
            H.img(f["reliability_png"], f"reliability diagram {row['run']}", 380)]
    if "superclass_png" in f:
        figs.append(H.img(f["superclass_png"], f"superclass confusion {row['run']}", 520))
    if "top_losses_png" in f:
        figs.append(H.img(f["top_losses_png"], f"top losses {row['run']}", 900))
    pairs = H.table(["true", "predicted as", "images", "% of true class"],
                    [[p["true"], p["predicted"], p["count"], f"{p['percent_of_true']:.1f}"] for p in info["most_confused"]])
    worst = sorted(info["per_class_accuracy"].items(), key=lambda kv: kv[1])
    per_class = H.table(["class", "top-1 %"], [[c, f"{a:.1f}"] for c, a in worst])
    notes = "".join(f"<p class='meta'>{n}</p>" for n in info["notes"])
    return (f"<details open><summary>{row['run']} ({row['model']}, test top-1 {row['top1']:.2f}%, "
            f"ECE {info['ece']:.2f}%)</summary><div class='figs'>{''.join(figs)}</div>"
            f"<div class='figs'><div><b>Most confused pairs</b>{pairs}</div>"
            f"<div><b>Per-class accuracy (worst first)</b>{per_class}</div></div>{notes}</details>")
