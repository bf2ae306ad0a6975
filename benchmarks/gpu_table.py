"""The table of a GPU check (``benchmarks/gpu_check.sh``): one row per finished run directory with
test top-1, wall seconds, training images/s, peak GPU memory and the precision used, as Markdown on
stdout and, with ``--out FILE.json``, as a flat result file in ``benchmarks/tables.py``'s format: copy it
to ``benchmarks/results/`` and name it in BENCHMARKS.md to show it there.

    python benchmarks/gpu_table.py RUN_DIR [RUN_DIR ...] [--out gpu_check.json]

A run directory without ``results.json`` (a run that failed) gets a row that says so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

COLUMNS = [("run", "run"), ("test top-1 (%)", "top1"), ("wall (s)", "wall_seconds"),
           ("train images/s", "train_images_per_s"), ("peak GPU memory (GiB)", "peak_gib"),
           ("precision", "precision"), ("device", "device")]


def row(run_dir: Path) -> dict:
    """The table's values for one run directory (``status`` 'missing' when it has no results.json)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        status = Path(run_dir) / "status.json"
        why = json.loads(status.read_text()).get("status", "?") if status.is_file() else "not run"
        return {"run": Path(run_dir).name, "status": why}
    r = json.loads(path.read_text())
    env = r.get("environment", {})
    return {"run": Path(run_dir).name, "status": "complete", "top1": r["test"]["top1"],
            "wall_seconds": r["wall_seconds"], "train_images_per_s": r["train_images_per_s"],
            "peak_gib": r["peak_memory_bytes"] / 2 ** 30,
            "precision": (r.get("precision") or {}).get("used", "?"),
            "device": env.get("gpu") or env.get("cpu", "?")}


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (figures rounded for reading; the JSON keeps them whole)."""
    fmt = {"top1": "{:.2f}", "wall_seconds": "{:.1f}", "train_images_per_s": "{:.0f}", "peak_gib": "{:.2f}"}
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r["status"] != "complete":
            lines.append(f"| {r['run']} | {r['status']} |" + " |" * (len(COLUMNS) - 2))
            continue
        cells = [fmt[k].format(r[k]) if k in fmt else str(r[k]) for _, k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = [row(d) for d in args.runs]
    print(markdown(rows))
    if args.out:
        table = {"command": "bash benchmarks/gpu_check.sh", "machine": "per row",
                 "date": datetime.date.today().isoformat(),
                 "columns": [["run", "run"], ["status", "status"], ["top1", "test top-1 (%)", ".2f"],
                             ["wall_seconds", "wall (s)", ".1f"], ["train_images_per_s", "train images/s", ".0f"],
                             ["peak_gib", "peak GPU memory (GiB)", ".2f"], ["precision", "precision"],
                             ["device", "device"]],
                 "rows": rows}
        args.out.write_text(json.dumps(table, indent=2) + "\n")
    return 0 if all(r["status"] == "complete" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
