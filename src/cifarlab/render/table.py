"""The comparison table: one row per run, written as CSV, Markdown, HTML and a terminal table."""
from __future__ import annotations

import csv
import html
from pathlib import Path

# (row key, header, format); a row may lack a key (e.g. superclass on CIFAR-10): shown as "-"
COLUMNS = [
    ("run", "run", "{}"),
    ("model", "model", "{}"),
    ("strategy", "strategy", "{}"),
    ("top1", "top-1 %", "{:.2f}"),
    ("top5", "top-5 %", "{:.2f}"),
    ("loss", "loss", "{:.3f}"),
    ("superclass_top1", "superclass %", "{:.2f}"),
    ("ece", "ECE %", "{:.2f}"),
    ("temperature", "T", "{:.2f}"),
    ("ece_scaled", "ECE % (T)", "{:.2f}"),
    ("nll_scaled", "NLL (T)", "{:.3f}"),
    ("params_total", "params (M)", "{:.2f}"),
    ("params_trainable", "trainable (M)", "{:.2f}"),
    ("size_mb", "size (MB)", "{:.1f}"),
    ("peak_memory_gib", "peak mem (GiB)", "{:.2f}"),
    ("train_seconds", "train (s)", "{:.0f}"),
    ("cache_seconds", "feature cache (s)", "{:.0f}"),
    ("inference_images_per_s", "infer (img/s)", "{:.0f}"),
    ("epochs_run", "epochs", "{:g}"),
    ("best_epoch", "best epoch", "{}"),
]


def _columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    """Drop columns no row has (superclass on CIFAR-10 suites)."""
    return [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]


def cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key in ("params_total", "params_trainable"):
        v = v / 1e6
    return fmt.format(v)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Raw values (parameters as counts, not millions) under the row keys as headers."""
    cols = _columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([k for k, _, _ in cols])
        for r in rows:
            w.writerow(["" if r.get(k) is None else r[k] for k, _, _ in cols])
    return Path(path)


def to_markdown(rows: list[dict]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "|".join("---" if k in ("run", "model", "strategy") else "---:" for k, _, _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r, k, f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_text(rows: list[dict]) -> str:
    """A fixed-width table for the terminal."""
    cols = _columns(rows)
    table = [[h for _, h, _ in cols]] + [[cell(r, k, f) for k, _, f in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    left = {i for i, (k, _, _) in enumerate(cols) if k in ("run", "model", "strategy")}
    fmt = lambda line: "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
    return "\n".join([fmt(table[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in table[1:]])


def to_html(rows: list[dict], best_key: str = "top1") -> str:
    """An HTML ``<table class="comparison">``; the best value of ``best_key`` is bold."""
    cols = _columns(rows)
    best = max((r.get(best_key) for r in rows if r.get(best_key) is not None), default=None)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols)
    body = []
    for r in rows:
        tds = []
        for k, _, f in cols:
            v = html.escape(cell(r, k, f))
            tds.append(f"<td><b>{v}</b></td>" if k == best_key and r.get(k) == best else f"<td>{v}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="comparison"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
