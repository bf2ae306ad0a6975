"""Printing results on the terminal: predictions as text, CSV or JSON; a finished run's summary."""
from __future__ import annotations

import csv
import json
import sys


def print_predictions(res: dict, fmt: str) -> None:
    """``res`` from `cifarlab.workflow.predict_images`, in ``fmt`` text | csv | json."""
    if fmt == "json":
        print(json.dumps(res, indent=2))
        return
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["file", "rank", "class", "probability"])
        for p in res["predictions"]:
            for rank, t in enumerate(p["top"], 1):
                w.writerow([p["file"], rank, t["class"], f"{t['probability']:.6f}"])
        return
    for p in res["predictions"]:
        print(f"{p['file']}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in p["top"]))


def print_run(run) -> None:
    """The lines ``cifarlab train`` ends with: test metrics, calibration, time, memory, where."""
    r = run.results
    line = f"test top-1 {r['test']['top1']:.2f}%  top-5 {r['test']['top5']:.2f}%  loss {r['test']['loss']:.3f}"
    if "superclass_top1" in r["test"]:
        line += f"  superclass top-1 {r['test']['superclass_top1']:.2f}%"
    print(line)
    if r.get("calibration"):
        print(calibration_line(r["calibration"]))
    print(f"train {r['train_seconds']:.1f} s ({r['train_images_per_s']:.0f} images/s), wall "
          f"{r['wall_seconds']:.1f} s, peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB")
    print(f"run directory: {run.path}")


def calibration_line(c: dict) -> str:
    """One line: the temperature and the test ECE/NLL it gives (before -> after)."""
    return (f"temperature scaling T = {c['temperature']:.3f} (fitted on {c['fitted_on_images']} validation images): "
            f"test ECE {c['test_ece_before']:.2f}% -> {c['test_ece_after']:.2f}%, "
            f"NLL {c['test_nll_before']:.4f} -> {c['test_nll_after']:.4f}")
