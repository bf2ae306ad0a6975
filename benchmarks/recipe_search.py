"""Recipe search: time-to-accuracy curves of finished runs of candidate recipes, side by side with a
reference run made on the same machine in the same session (issue 14).

    cifarlab compare suites/cifar10-recipe-search.yaml --data-dir DATA --out search/
    python benchmarks/recipe_search.py search/ --reference airbench94_muon cifar100-recipe \
        --out search/recipe-search

Candidates are chosen on the validation split (train with ``--val-size 5000``); the test set is
scored by every run but read here only for the reference and the chosen candidates.

For each run (a run directory; seeds of one candidate are the runs whose names differ only by a
trailing ``-s<seed>`` / ``-seed<seed>``):

* the curve: validation top-1 without TTA after each epoch, at ``prep + training seconds so far``;
* the end: validation top-1 with the run's TTA (from its cached predictions) and test top-1 with TTA;
* ``compute`` (with ``--side-costs``): the training work in full-side epochs, each epoch weighted by
  its side's measured step time (a last, partial epoch by its fraction: ``--epochs 11.8``); the
  machine's speed drifts between runs (up to 1.5x here), this does not. ``--network-costs`` prices a
  candidate whose network differs from the reference's (a widths/depth sweep): its full-side step
  time relative to the reference network's, from ``benchmarks/side_cost.py --set model_kwargs=...``;
* ``cost``: prep + training + test scoring seconds, what the recipe costs without a validation split
  (per-epoch validation and the validation TTA pass are selection costs, left out of the ratio, and
  the same for every candidate up to its number of epochs). ``wall`` is also given as measured.

Each dataset has its own reference (``--reference`` names one candidate per dataset: CIFAR-10's is
the published airbench94_muon configuration, CIFAR-100's the cifar100 recipe as it stood before
the search). Writes ``search.json``, ``time_to_accuracy.png`` (one row of panels per dataset) and
prints the Markdown table for BENCHMARKS.md. Ratios are each candidate's mean cost over its
dataset's reference's mean cost. CIFAR-100 rows add superclass top-1 (20 superclasses) with TTA.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import numpy as np
import yaml

from cifarlab.render.mpl import pyplot
from cifarlab.workflow.predictions import load_cached_predictions
from time_to_accuracy import finished_run_dirs  # benchmarks/, beside this script

SEED_SUFFIX = re.compile(r"-(?:s|seed)(\d+)$")


def split_run_name(run_name: str) -> tuple[str, int | None]:
    """(candidate, seed) of a run directory's name: ``prog-8ep-s1`` -> ``("prog-8ep", 1)``; a name
    without a trailing ``-s<seed>`` / ``-seed<seed>`` is its own candidate, seed None."""
    m = SEED_SUFFIX.search(run_name)
    return (run_name[:m.start()], int(m.group(1))) if m else (run_name, None)


# issue 14's targets per dataset: (test top-1 with TTA, %, mean of 3 seeds; the most cost allowed, as a
# fraction of the dataset's reference run side by side). Drawn on the plot.
TARGETS = {"cifar10": (94.0, 0.8), "cifar100": (78.0, 1.0)}


def epoch_sides(cfg: dict, epochs: int, data_side: int = 32) -> list[int]:
    """The side each epoch trained at, from the run's ``img_sizes`` / ``img_size`` config."""
    sizes = sorted((int(e), int(sz)) for e, sz in cfg.get("img_sizes") or []) or [(0, cfg.get("img_size") or data_side)]
    return [([sz for e0, sz in sizes if e0 <= e] or [sizes[0][1]])[-1] for e in range(epochs)]


def schedule_text(sides: list[int], data_side: int, downsize: str | None, last_fraction: float = 1.0) -> str:
    """Epochs per side in training order, e.g. ``4x24 + 4x32`` (``crop`` added when the smaller
    sides were crops rather than resized images). ``last_fraction``: the share of the last epoch that
    ran (its steps over a whole epoch's: ``--epochs 12.4`` at 22 steps an epoch ran 9 of 22, ``6x24 + 6.41x32``)."""
    parts = []
    for i, sd in enumerate(sides):
        n = last_fraction if i == len(sides) - 1 else 1.0
        if parts and sd == parts[-1][1]:
            parts[-1][0] += n
        else:
            parts.append([n, sd])
    text = " + ".join(f"{round(n, 2):g}x{sd}" for n, sd in parts)
    return text + (" crop" if downsize == "crop" and any(sd < data_side for sd in sides) else "")


def read_run(path: Path, side_costs: dict[int, float] | None = None, network_cost: float = 1.0) -> dict:
    """One finished run: its name, candidate, seed, per-epoch curve, costs and end accuracies.
    ``side_costs``: a training step's time at each side relative to the full side (measured on the
    machine); gives ``compute``, the run's training work in full-side epochs of the reference's network.
    ``network_cost``: a full-side step of this run's network relative to one of the reference's."""
    r = json.loads((path / "results.json").read_text())
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    epochs = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    t, curve = r["prep_seconds"], []
    for e in epochs:
        t += e["seconds"]
        if "val_top1" in e:
            curve.append((t, e["val_top1"]))
    preds = load_cached_predictions(path)
    val_tta = None
    if preds is not None and preds.val_logits is not None:
        val_tta = 100.0 * float(np.mean(preds.val_logits.argmax(1) == preds.val_labels))
    sides = epoch_sides(cfg, len(epochs), r["data_side"])
    steps = [e.get("step") for e in epochs]   # cumulative optimizer steps at each epoch's end
    last_fraction = 1.0                       # the share of the last epoch that ran: its steps over a whole one's
    if len(steps) > 1 and None not in steps and steps[-1] - steps[-2] < steps[0]:
        last_fraction = (steps[-1] - steps[-2]) / steps[0]
    units = [network_cost * side_costs.get(sd, float("nan")) for sd in sides] if side_costs else None
    if units:
        units[-1] *= last_fraction   # a last, partial epoch counts its fraction
    compute = sum(units) if units else None
    compute_curve = [(sum(units[:i + 1]), e["val_top1"]) for i, e in enumerate(epochs) if "val_top1" in e] if units else []
    candidate, seed = split_run_name(path.name)
    return {"run": path.name, "candidate": candidate, "seed": seed, "dataset": r["dataset"], "epochs": len(epochs),
            "tta": r["tta"], "train_images": r["train_images"], "curve": curve, "sides": sides, "compute": compute,
            "schedule": schedule_text(sides, r["data_side"], cfg.get("downsize"), last_fraction),
            "batch_size": cfg["batch_size"],
            "compute_curve": compute_curve,
            "val_top1_no_tta": curve[-1][1] if curve else None, "val_top1_tta": val_tta,
            "test_top1_tta": r["test"]["top1"], "superclass_top1": r["test"].get("superclass_top1"),
            "cost_s": r["prep_seconds"] + r["train_seconds"] + r["test_eval_seconds"],
            "wall_s": r["wall_seconds"], "train_s": r["train_seconds"], "test_eval_s": r["test_eval_seconds"],
            "peak_rss_gib": r["peak_rss_bytes"] / 2**30}


def read_runs(paths: list[str], side_costs: dict[int, float] | None = None,
              network_costs: dict[str, float] | None = None) -> list[dict]:
    """Every finished run directory under ``paths`` (a run, or a folder of runs); ``network_costs``:
    candidate name -> its network's step time relative to the reference's (1 when not named)."""
    network_costs = network_costs or {}
    dirs = finished_run_dirs(paths)
    candidates = [split_run_name(q.name)[0] for q in dirs]
    unknown = set(network_costs) - set(candidates)
    if unknown:
        raise SystemExit(f"--network-costs names {', '.join(sorted(unknown))}, which no run here is a seed of.")
    return [read_run(q, side_costs, network_costs.get(c, 1.0)) for q, c in zip(dirs, candidates)]


def summarize(runs: list[dict], references: list[str]) -> list[dict]:
    """One row per (dataset, candidate): means over its seeds, the seeds' sample standard deviation
    (``*_sd``, n - 1; None for one seed) of the TTA top-1s, and the cost ratio to the dataset's
    reference (the first of ``references`` that ran on it; one name per dataset), marked ``is_reference``."""
    rows = []
    for key in sorted({(r["dataset"], r["candidate"]) for r in runs}):
        mine = [r for r in runs if (r["dataset"], r["candidate"]) == key]
        known = lambda k: all(r[k] is not None for r in mine)
        mean = lambda k: statistics.fmean(r[k] for r in mine) if known(k) else None
        sd = lambda k: statistics.stdev(r[k] for r in mine) if len(mine) > 1 and known(k) else None  # n - 1
        rows.append({"dataset": key[0], "candidate": key[1], "seeds": sorted(r["seed"] for r in mine if r["seed"] is not None),
                     "epochs": mine[0]["epochs"], "tta": mine[0]["tta"], "schedule": mine[0]["schedule"],
                     "batch_size": mine[0]["batch_size"],
                     **{k: mean(k) for k in ("val_top1_no_tta", "val_top1_tta", "test_top1_tta", "superclass_top1",
                                             "cost_s", "wall_s", "peak_rss_gib", "compute")},
                     **{f"{k}_sd": sd(k) for k in ("val_top1_tta", "test_top1_tta")}})
    for row in rows:
        ref = next((r for name in references for r in rows
                    if r["dataset"] == row["dataset"] and r["candidate"] == name), None)
        row["is_reference"] = ref is row
        row["cost_ratio"] = row["cost_s"] / ref["cost_s"] if ref else None
        row["compute_ratio"] = row["compute"] / ref["compute"] if ref and row["compute"] is not None else None
    return rows


def table(rows: list[dict], chosen: list[str] | None = None) -> str:
    """The Markdown table: candidate, seeds, epochs per side, batch size, val top-1 (no TTA / TTA), test top-1, cost, ratio.
    Several seeds: the TTA top-1s read ``mean ± sample standard deviation``. Test top-1 (and superclass
    top-1, a column only when some row has it) is shown for the references (rows from :func:`summarize`
    know theirs) and the ``chosen`` candidates only (all when None)."""
    fmt = lambda v, f="{:.2f}": "" if v is None else f.format(v)
    spread = lambda r, k: fmt(r[k]) + ("" if r[f"{k}_sd"] is None else f" ± {r[f'{k}_sd']:.2f}")
    shown = lambda r: chosen is None or r["is_reference"] or r["candidate"] in chosen
    superclass = any(r["superclass_top1"] is not None for r in rows)
    out = ["| dataset | candidate | seeds | epochs x side (px) | batch | val top-1, no TTA (%) | val top-1, TTA (%) "
           "| test top-1, TTA (%) |" + (" test superclass top-1, TTA (%) |" if superclass else "")
           + " cost (s) | wall (s) | cost / reference | compute (full-side epochs) | compute / reference | peak RSS (GiB) |",
           "|---|---|---|---|---:|---:|---:|---:|" + ("---:|" if superclass else "") + "---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = f"**{r['candidate']}** (reference)" if r["is_reference"] else r["candidate"]
        test = spread(r, 'test_top1_tta') if shown(r) else 'not read'
        if superclass:
            test += f" | {fmt(r['superclass_top1']) if shown(r) else ''}"
        out.append(f"| {r['dataset']} | {name} | {','.join(map(str, r['seeds']))} | {r['schedule']} | {r['batch_size']} | "
                   f"{fmt(r['val_top1_no_tta'])} | {spread(r, 'val_top1_tta')} | {test} | "
                   f"{fmt(r['cost_s'], '{:.0f}')} | {fmt(r['wall_s'], '{:.0f}')} | {fmt(r['cost_ratio'], '{:.2f}')} | "
                   f"{fmt(r['compute'])} | {fmt(r['compute_ratio'], '{:.2f}')} | "
                   f"{fmt(r['peak_rss_gib'], '{:.2f}')} |")
    return "\n".join(out)


# the two x axes of the plot: (curve key, end-point key, axis label)
AXES = {"wall": ("curve", "cost_s", "seconds: prep + training so far (star: + test scoring, TTA, at the end)"),
        "compute": ("compute_curve", "compute", "training compute so far, in full-side (32 px) epochs")}


def star_key(runs: list[dict]) -> str:
    """What the plot's end-of-run stars show for one dataset's runs: validation top-1 with TTA when
    any run has a validation split, else (every run trained on all training images) test top-1 with TTA."""
    return "val_top1_tta" if any(r["val_top1_tta"] is not None or r["curve"] for r in runs) else "test_top1_tta"


def plot(runs: list[dict], rows: list[dict], out: Path, budget_line: bool = True) -> None:
    """Validation top-1 (no TTA) after each epoch against cost seconds (left) and, when the side
    costs are known, against training compute (right), one line per run, one row of panels per
    dataset; a star at the end for validation top-1 with TTA; the dataset's reference dashed, with
    the cost allowed by :data:`TARGETS` marked and its accuracy target drawn. A dataset whose runs
    have no validation split (trained on every training image, the final scoring of a chosen
    recipe) has no per-epoch curve: its stars are test top-1 with TTA instead. ``budget_line=False``
    leaves the allowed cost out, for a screen whose reference is not the target's (a candidate recipe)."""
    plt = pyplot()
    datasets = sorted({r["dataset"] for r in runs})
    kinds = ["wall"] + (["compute"] if all(r["compute"] is not None for r in runs) else [])
    fig, axes = plt.subplots(len(datasets), len(kinds), figsize=(7 * len(kinds), 5 * len(datasets)), dpi=110,
                             squeeze=False)
    references = {(r["dataset"], r["candidate"]) for r in rows if r["is_reference"]}
    reference_names = {name for _, name in references}
    candidates = sorted({r["candidate"] for r in runs}, key=lambda c: (c not in reference_names, c))
    colours = dict(zip(candidates, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    first_seed = {c: min((q["seed"] or 0) for q in runs if q["candidate"] == c) for c in candidates}
    for row_axes, dataset in zip(axes, datasets):
        target, cost_frac = TARGETS.get(dataset, (None, None))
        mine = [r for r in runs if r["dataset"] == dataset]
        star = star_key(mine)
        # y range below / above the points: validation curves start far below their end, test stars do not
        below, above = (6, 1) if star == "val_top1_tta" else (0.5, 0.3)
        for ax, kind in zip(row_axes, kinds):
            curve_key, end_key, xlabel = AXES[kind]
            tops = []
            for r in mine:
                xs, ys = zip(*r[curve_key]) if r[curve_key] else ((), ())
                label = r["candidate"] if (r["seed"] or 0) == first_seed[r["candidate"]] else None
                ax.plot(xs, ys, "--" if (dataset, r["candidate"]) in references else "-", marker="o", ms=3,
                        color=colours[r["candidate"]], label=label)
                if r[star] is not None:
                    ax.scatter([r[end_key]], [r[star]], marker="*", s=110, color=colours[r["candidate"]], zorder=3)
                    tops.append(r[star])
                tops += list(ys[-2:])
            ref_row = [row for row in rows if row["dataset"] == dataset and row["is_reference"]]
            if budget_line and ref_row and ref_row[0][end_key] and cost_frac is not None:
                ax.axvline(cost_frac * ref_row[0][end_key], color="grey", lw=0.8, ls=":")
                ax.annotate(f"{cost_frac:g} x reference", (cost_frac * ref_row[0][end_key], 0.98),
                            xycoords=("data", "axes fraction"), fontsize=7, rotation=90, ha="right", va="top",
                            color="grey")
            if target is not None:
                ax.axhline(target, color="grey", lw=0.8, ls=":")
                tops.append(target)
            if tops:  # the end of training is what matters: the first epochs are far below
                ax.set_ylim(min(tops) - below, max(tops) + above)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation top-1 (%): per epoch no TTA; star TTA" if star == "val_top1_tta"
                          else "test top-1 with TTA (%), at the end (no validation split)")
            ax.set_title(f"{dataset}: against {'wall seconds' if kind == 'wall' else 'compute'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories, or folders of them (a compare/suite output)")
    ap.add_argument("--reference", nargs="+", default=["airbench94_muon", "cifar100-recipe"], metavar="CANDIDATE",
                    help="the candidate name of each dataset's reference runs (default: %(default)s)")
    ap.add_argument("--out", default="recipe-search", help="folder for search.json and time_to_accuracy.png")
    ap.add_argument("--chosen", nargs="*", default=None, metavar="CANDIDATE",
                    help="the candidates chosen on validation: the table shows test top-1 for these and the "
                         "reference only (default: for all)")
    ap.add_argument("--side-costs", nargs="+", default=[], metavar="SIDE=RATIO",
                    help="a training step's time at SIDE px relative to the full side, measured on this machine "
                         "(e.g. 16=0.29 24=0.57 32=1): adds each run's compute in full-side epochs, which does not "
                         "move with the machine's speed from run to run as wall seconds do")
    ap.add_argument("--network-costs", nargs="+", default=[], metavar="CANDIDATE=RATIO",
                    help="a candidate's full-side training step time relative to the reference network's, when "
                         "its network differs (benchmarks/side_cost.py --set model_kwargs=...; e.g. w64-256-512=1.36): "
                         "its compute is then counted in the reference network's epochs")
    ap.add_argument("--no-budget-line", dest="budget_line", action="store_false",
                    help="leave out the plot's line at the target's cost fraction of --reference: for a screen "
                         "against another candidate, where that line would not be the target's budget")
    args = ap.parse_args()
    side_costs = {int(k): float(v) for k, v in (a.split("=") for a in args.side_costs)}
    network_costs = {k: float(v) for k, v in (a.rsplit("=", 1) for a in args.network_costs)}
    runs = read_runs(args.runs, side_costs or None, network_costs)
    rows = summarize(runs, args.reference)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps({"reference": args.reference, "candidates": rows, "runs": runs}, indent=1))
    plot(runs, rows, out / "time_to_accuracy.png", args.budget_line)
    print(table(rows, args.chosen))
    print(f"\n{out / 'search.json'}, {out / 'time_to_accuracy.png'}")


if __name__ == "__main__":
    main()
