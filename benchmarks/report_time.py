"""Time ``cifarlab report`` on real run directories (target: <= 30 s for a 10-run suite).

Builds the report twice: "cold" computes any missing cached predictions (``predictions.npz``,
once per run, as the first ``report``/``ensemble`` after an old run does) and "warm" is every later
build (runs trained by this version cache their predictions while training, so their first report
is already warm). Writes ``--results`` JSON with both times and the runs used.

    python benchmarks/report_time.py RUN_OR_SUITE... --data-dir DATA --out /tmp/report.html \\
        --results report-time.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="report.html")
    ap.add_argument("--results", default=None)
    args = ap.parse_args()
    import torch
    from cifarlab._malloc import tune_malloc
    from cifarlab.workflow import build_report, resolve_runs
    tune_malloc()
    runs = resolve_runs(args.paths)
    times = {}
    for label in ("cold", "warm"):
        t = time.perf_counter()
        out = build_report(args.paths, args.out, title=f"{len(runs)}-run report", data_dir=args.data_dir)
        times[label] = time.perf_counter() - t
        print(f"{label}: {times[label]:.1f} s ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    res = {"runs": [str(r) for r in runs], "num_runs": len(runs), "seconds": times,
           "html_bytes": Path(args.out).stat().st_size, "threads": torch.get_num_threads(),
           "machine": platform.platform(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    if args.results:
        Path(args.results).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
