"""A comparison a reader can trust: runs that differ only in their seed form one row; every row's test
top-1 carries a 95% interval; every row is tested against a baseline row on the same test images, with
Holm's correction across the table, and gets a plain verdict. The statistics:
`cifarlab.evaluation.significance`."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import torch

from ..config import RESUME_SAFE_KEYS, ConfigError, config_diff
from ..evaluation import significance as sig
from ..evaluation.metrics import topk_hits
from ..runs import RunDir
from .compare import comparison_row, listed
from .predictions import run_predictions

METHODS = ("Differences: paired bootstrap over the test images (each image's mean correctness over its seeds); "
           "p: exact McNemar with one run a side, a paired t over the images with seeds on one side, Welch's t "
           "on per-seed top-1 with seeds on both; Holm-corrected across the table.")
SEED_KEYS = frozenset({"seed"}) | RESUME_SAFE_KEYS   # keys a row's runs may differ in


def seed_groups(run_dirs) -> list[list[RunDir]]:
    """Runs grouped by config: two runs share a group when `config_diff` of their configs, ignoring
    the seed and the keys that never change results (`RESUME_SAFE_KEYS`), is empty. Groups and the
    runs within them keep the order given."""
    groups: list[tuple[object, list[RunDir]]] = []   # (the group's config, its runs)
    for rd in map(RunDir, run_dirs):
        cfg = rd.load_config()
        same = next((g for first, g in groups if not config_diff(first, cfg, ignore=SEED_KEYS)), None)
        if same is None:
            groups.append((cfg, [rd]))
        else:
            same.append(rd)
    return [g for _, g in groups]


def _name(group: list[RunDir]) -> str:
    names = [rd.path.name for rd in group]
    if len(names) == 1:
        return names[0]
    return (os.path.commonprefix(names).rstrip("-_s") or names[0]) + f" ({len(names)} seeds)"


def _correctness(group: list[RunDir], data_dir: str | None, ref: dict) -> np.ndarray:
    """(S, N) bool per-image correctness of the group's runs. ``ref`` holds the first run's test labels,
    classes and path (filled by the first call); every run must match it.

    Raises:
        ConfigError: a run scored on other test images or classes than the first."""
    out = []
    for rd in group:
        p = run_predictions(rd.path, data_dir=data_dir)
        if not ref:
            ref.update(labels=p.test_labels, classes=p.classes, path=rd.path)
        elif p.classes != ref["classes"] or not np.array_equal(p.test_labels, ref["labels"]):
            raise ConfigError(f"{rd.path} and {ref['path']} were scored on different test sets or class lists; "
                              "compare runs of one dataset.")
        out.append(topk_hits(torch.from_numpy(p.test_logits), torch.from_numpy(p.test_labels)).numpy())
    return np.stack(out)


SPREAD = ("top5", "loss", "ece", "train_seconds", "time_seconds")   # a row's means (and sds) beside top-1


def _summary(group: list[RunDir], data_dir: str | None) -> dict:
    """What a row says beside its top-1: the runs' names, dataset, model and strategy, and the mean
    (with seeds, also the sample sd, ``*_sd``) of each `SPREAD` column of `comparison_row`."""
    runs = [comparison_row(rd.path, data_dir) for rd in group]
    out = {"runs": [r["run"] for r in runs], **{k: runs[0][k] for k in ("dataset", "model", "strategy")}}
    for key in SPREAD:
        values = [r[key] for r in runs]
        if all(isinstance(v, (int, float)) for v in values):
            out[key] = float(np.mean(values))
            if len(values) > 1:
                out[f"{key}_sd"] = float(np.std(values, ddof=1))
    return out


def verdict_table(run_dirs, baseline: str | None = None, data_dir: str | None = None) -> list[dict]:
    """One row per seed group: ``run``, ``n`` (seeds), ``top1`` (mean %), ``top1_sd``, ``low``/``high``
    (the 95% interval: t over seeds for n >= 2, else Clopper-Pearson on the test images: ``interval``
    says which), ``test_low``/``test_high`` (the test-set interval of the mean top-1, Clopper-Pearson,
    for every row), ``seeds_top1`` (each seed's), the means (and sds, ``*_sd``) of ``top5``, ``loss``,
    ``ece``, ``train_seconds`` and ``time_seconds`` (training plus feature caching), ``runs`` (the
    run names), ``dataset``, ``model`` and ``strategy``, and against the baseline row (``baseline``: a row's
    name or a prefix of it; default the best): ``difference`` with its paired bootstrap ``diff_low``/
    ``diff_high``, ``test`` (exact McNemar with one run a side, a paired t over the
    images with seeds on one side, Welch's t over seeds with seeds on both), ``p``, ``p_holm`` and ``verdict``.

    Raises:
        ConfigError: runs on different test sets or class lists, or a baseline that names no row.
    """
    groups, ref = seed_groups(run_dirs), {}
    data = [_correctness(g, data_dir, ref) for g in groups]
    rows = []
    for g, c in zip(groups, data):
        tops = 100 * c.mean(1)
        if len(g) >= 2:
            low, high, kind = *sig.seed_interval(tops), "t over seeds"
        else:
            low, high, kind = *sig.binomial_interval(int(c[0].sum()), c.shape[1]), "Clopper-Pearson on test images"
        test_low, test_high = sig.binomial_interval(int(round(c.sum(1).mean())), c.shape[1])
        rows.append({"run": _name(g), "n": len(g), "top1": float(tops.mean()),
                     "top1_sd": float(tops.std(ddof=1)) if len(g) > 1 else None, "low": low, "high": high,
                     "interval": kind, "test_low": test_low, "test_high": test_high,
                     "seeds_top1": [round(float(t), 2) for t in tops], **_summary(g, data_dir)})
    names = [r["run"] for r in rows]
    if baseline is None:
        base = int(np.argmax([r["top1"] for r in rows]))
    else:
        hits = [i for i, n in enumerate(names) if n == baseline or n.startswith(baseline)]
        if not hits:
            close = difflib.get_close_matches(baseline, names, n=1)
            raise ConfigError(f"--baseline {baseline!r} names no row." + (f" Did you mean {close[0]!r}?" if close else "")
                              + f" Rows: {', '.join(names)}.")
        base = hits[0]
    pairs = [i for i in range(len(rows)) if i != base]
    for i in pairs:
        a, b = data[i], data[base]
        d = sig.paired_difference(a, b)
        if len(a) >= 2 and len(b) >= 2:
            test, p = "Welch t over seeds", sig.welch(100 * a.mean(1), 100 * b.mean(1))
        elif len(a) >= 2 or len(b) >= 2:   # seeds on one side: the images, each a mean over its seeds
            test, p = "paired t over images", sig.paired_t(a, b)
        else:
            test, p = "exact McNemar", sig.mcnemar(a[0], b[0])["p"]
        rows[i].update(difference=d["difference"], diff_low=d["low"], diff_high=d["high"], test=test, p=p)
    for i, p_holm in zip(pairs, sig.holm([rows[i]["p"] for i in pairs])):
        rows[i].update(p_holm=p_holm, verdict=sig.verdict(rows[i]["diff_low"], rows[i]["diff_high"], p_holm))
    rows[base]["verdict"] = "baseline"
    return rows


def p_text(p: float) -> str:
    """A p-value for a table: three digits, or ``<0.0001``."""
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"


def cells(row: dict) -> dict:
    """A row's figures as table text: ``top1``, ``interval``, ``difference``, ``paired`` (its interval),
    ``p`` (Holm) and ``verdict`` (empty strings for the baseline's comparison)."""
    compared = "difference" in row
    return {"top1": f"{row['top1']:.2f}", "interval": f"[{row['low']:.2f}, {row['high']:.2f}]",
            "difference": f"{row['difference']:+.2f}" if compared else "",
            "paired": f"[{row['diff_low']:+.2f}, {row['diff_high']:+.2f}]" if compared else "",
            "p": p_text(row["p_holm"]) if compared else "", "verdict": row["verdict"]}


def verdict_text(rows: list[dict]) -> str:
    """The table as console text: top-1 with its interval, and each row against the baseline."""
    lines = [f"{'run':34s} {'n':>2s} {'top-1 % [95% interval]':>26s} {'vs baseline (points)':>24s} {'p (Holm)':>9s}  verdict"]
    for r in rows:
        c = cells(r)
        lines.append(f"{r['run'][:34]:34s} {r['n']:>2d} {c['top1'] + ' ' + c['interval']:>26s} "
                     f"{(c['difference'] + ' ' + c['paired']).strip():>24s} {c['p']:>9s}  {c['verdict']}")
    kinds = sorted({r["interval"] for r in rows})
    lines.append(f"intervals: {'; '.join(kinds)} (every row's test-set interval, and the means of top-5, loss, ECE "
                 f"and time: verdicts.csv). {METHODS}")
    return "\n".join(lines)


def verdict_markdown(rows: list[dict]) -> str:
    """The table as Markdown, with the same columns as `verdict_text`."""
    lines = ["| run | seeds | top-1 % | 95% interval | vs baseline (points) | paired 95% interval | p (Holm) | verdict |",
             "|---|---:|---:|---|---:|---|---:|---|"]
    for r in rows:
        c = cells(r)
        lines.append(f"| {r['run']} | {r['n']} | {c['top1']} | {c['interval']} | {c['difference']} | {c['paired']} | "
                     f"{c['p']} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def seeds_text(rows: list[dict], detect: float | None = None) -> str:
    """How many seeds tell which difference apart (95%, power 0.8), from the mean seed-to-seed standard
    deviation of the rows with seeds; with ``detect`` (points), the seeds that difference needs."""
    sds = [r["top1_sd"] for r in rows if r.get("top1_sd")]
    if not sds:
        return "seeds: no row has two or more seeds, so the seed-to-seed spread is unknown; train a config twice."
    sd, n = float(np.mean(sds)), max(r["n"] for r in rows)
    text = (f"seeds: with a seed-to-seed sd of {sd:.2f} points, {n} seeds a side tell apart "
            f"{sig.detectable_difference(sd, max(n, 2)):.2f} points (Welch, 95%, power 0.8)")
    if detect is not None:
        text += f"; {detect:g} points need {sig.seeds_needed(sd, detect)} seeds a side"
    return text + "."


def tables_by_dataset(run_dirs, baseline: str | None = None, data_dir: str | None = None) -> dict[str, list[dict]]:
    """`verdict_table` of the runs of each dataset, ``{dataset: rows}`` in the order the datasets come."""
    by_dataset: dict[str, list] = {}
    for path in run_dirs:
        by_dataset.setdefault(RunDir(path).load_config().dataset, []).append(path)
    return {ds: verdict_table(members, baseline, data_dir) for ds, members in by_dataset.items()}


def write_verdicts(tables: dict[str, list[dict]], out_dir) -> list[Path]:
    """Write each table of `tables_by_dataset` as ``verdicts.md``/``.csv`` into ``out_dir``
    (``verdicts-DATASET.*`` when there are several datasets); the files written."""
    import pandas as pd
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    for ds, rows in tables.items():
        stem = "verdicts" if len(tables) == 1 else f"verdicts-{ds}"
        pd.DataFrame(rows).to_csv(out / f"{stem}.csv", index=False)
        (out / f"{stem}.md").write_text(verdict_markdown(rows) + "\n" + seeds_text(rows) + "\n")
        written += [out / f"{stem}.csv", out / f"{stem}.md"]
    return written


def compare_runs(run_dirs, baseline: str | None = None, out_dir=None, data_dir: str | None = None):
    """The comparison of ``run_dirs`` (run directories, `Run` objects, folders of runs or suite
    files; one or a list) as a ``pandas.DataFrame``,
    one row per config: runs that differ only in their seed form one row (n, mean and sd over seeds,
    each seed's top-1 in ``seeds_top1``), with the 95% interval of its top-1 and, against the
    ``baseline`` row (a row's name or its start; default the best), the paired difference, the test,
    its Holm-corrected p and a verdict: the columns of `verdict_table`.
    Runs of several datasets give one table each, stacked in the order the datasets come (the
    ``dataset`` column tells them apart). With ``out_dir``, also writes ``verdicts.csv`` / ``.md``.
    A row per run instead: `runs_table`.

    Raises:
        ConfigError: runs of one dataset scored on different test sets or class lists, or a
            ``baseline`` that names no row.
        RunDirError: a run is incomplete.
    """
    import pandas as pd
    from .suite_file import resolve_runs
    tables = tables_by_dataset(resolve_runs(listed(run_dirs)), baseline, data_dir)
    if out_dir is not None:
        write_verdicts(tables, out_dir)
    return pd.DataFrame([row for rows in tables.values() for row in rows])
