"""Ensembles of finished runs: class probabilities averaged uniformly, weighted by validation
accuracy, or by Caruana et al.'s (2004) greedy selection, from each run's cached predictions
(`.predictions.run_predictions`, computed once per run); nothing is retrained."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..evaluation import Predictions
from ..evaluation import significance as sig
from ..evaluation.metrics import topk_hits
from ..evaluation.ensemble import (METHODS, EnsembleError, Member, combine, ensemble_weights, error_diversity,
                                   select_members)
from ..runs import RunDir, write_json
from .predictions import run_predictions
from .verdicts import p_text


def _check_same_task(preds: dict[str, Predictions]) -> None:
    """Refuse runs on different datasets, class lists or test sets, naming them."""
    names = list(preds)
    ref = preds[names[0]]
    for n in names[1:]:
        p = preds[n]
        if p.dataset != ref.dataset:
            raise EnsembleError(f"cannot ensemble runs on different datasets: {names[0]} is {ref.dataset}, "
                                f"{n} is {p.dataset}.")
        if p.classes != ref.classes:
            diff = sorted(set(p.classes) ^ set(ref.classes))[:5]
            raise EnsembleError(f"cannot ensemble runs with different class lists: {names[0]} and {n} differ"
                                + (f" (e.g. {', '.join(diff)})" if diff else " in class order") + ".")
        if not np.array_equal(p.test_labels, ref.test_labels):
            raise EnsembleError(f"{names[0]} and {n} were scored on different test sets (labels differ); "
                                "they must use the same data.")


def _same_validation(preds: dict[str, Predictions]) -> str | None:
    """None when every run has the same validation split, else why not."""
    names = list(preds)
    ref = preds[names[0]]
    for n in names[1:]:
        p = preds[n]
        if (p.val_labels is None) != (ref.val_labels is None) or (
                p.val_labels is not None and not np.array_equal(p.val_labels, ref.val_labels)):
            return (f"{names[0]} and {n} have different validation splits (val_size or split_seed differ); "
                    "weighted and greedy ensembles need one split for all runs. Use --method uniform.")
    return None


def ensemble_runs(run_dirs, methods=("uniform",), min_val_acc: float | None = None, per_architecture: bool = False,
                  out_dir=None, data_dir: str | None = None) -> dict:
    """Ensemble the runs' test probabilities by each of ``methods`` and score them.

    Args:
        run_dirs: complete runs on the same dataset (two or more).
        methods: any of ``uniform``, ``weighted`` (by validation accuracy), ``greedy`` (Caruana 2004);
            the last two need runs trained with a validation split (``--val-size``).
        min_val_acc: keep only runs with validation top-1 >= this (%).
        per_architecture: greedy selection starts with the best run of each architecture.
        out_dir: write ``ensemble.json`` and ``ensemble.md`` there.

    Returns:
        ``{"dataset", "members": [{run, model, test top1, val top1}], "best_single": {...},
        "ensembles": {method: {"weights": {run: w}, "test": metrics, "gain_over_best_single"}}, "notes",
        "tta", "diversity"}``: ``tta`` is the members' TTA level, or ``{run: level}`` where they
        differ; ``diversity`` is how their test errors overlap (`error_diversity`).

    Raises:
        EnsembleError: fewer than two runs, different datasets/classes/test sets, missing validation.
        RunDirError: an incomplete run.
    """
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise EnsembleError(f"an ensemble needs at least two runs, got {len(paths)}.")
    for m in methods:
        if m not in METHODS:
            raise EnsembleError(f"unknown ensemble method {m!r}; choose from {', '.join(METHODS)}.")
    names = _unique_names(paths)
    preds = {n: run_predictions(p, data_dir=data_dir) for n, p in zip(names, paths)}
    _check_same_task(preds)
    ref = next(iter(preds.values()))
    val_problem = _same_validation(preds)
    if val_problem:
        if set(methods) != {"uniform"} or min_val_acc is not None:
            raise EnsembleError(val_problem)
        for p in preds.values():  # uniform averaging does not look at validation predictions
            p.val_logits = p.val_labels = None
    models = {n: RunDir(p).load_config().model for n, p in zip(names, paths)}
    members = [Member(n, models[n], preds[n].test_probs, preds[n].val_probs) for n in names]
    members, notes = select_members(members, ref.val_labels, min_val_acc)
    single = {m.name: ref.metrics_of_probs(m.test_probs) for m in members}
    best_name = max(single, key=lambda n: single[n]["top1"])
    levels = {m.name: preds[m.name].tta for m in members}
    out = {"dataset": ref.dataset, "num_classes": len(ref.classes),
           "tta": ref.tta if len(set(levels.values())) == 1 else levels,
           "members": [{"run": m.name, "path": str(paths[names.index(m.name)]), "model": m.architecture,
                        "test_top1": single[m.name]["top1"],
                        "val_top1": None if m.val_probs is None else
                        float(100.0 * (m.val_probs.argmax(1) == ref.val_labels).mean())} for m in members],
           "best_single": {"run": best_name, **single[best_name]}, "ensembles": {}, "notes": notes,
           "diversity": error_diversity([m.test_probs for m in members], ref.test_labels, [m.name for m in members])}
    best_hits = _hits(next(m.test_probs for m in members if m.name == best_name), ref.test_labels)
    for method in methods:
        w = ensemble_weights(method, members, ref.val_labels, per_architecture)
        probs = combine([m.test_probs for m in members], w)
        metrics = ref.metrics_of_probs(probs)
        entry = {"weights": {m.name: float(wi) for m, wi in zip(members, w) if wi > 0}, "test": metrics,
                 "gain_over_best_single": metrics["top1"] - single[best_name]["top1"]}
        if ref.val_labels is not None:
            entry["val_top1"] = float(100.0 * (combine([m.val_probs for m in members], w).argmax(1)
                                               == ref.val_labels).mean())
        entry["vs_best_single"] = _paired(_hits(probs, ref.test_labels), best_hits)
        out["ensembles"][method] = entry
    _holm_verdicts(list(out["ensembles"].values()))
    if out_dir is not None:
        o = Path(out_dir)
        o.mkdir(parents=True, exist_ok=True)
        write_json(o / "ensemble.json", out)
        (o / "ensemble.md").write_text(ensemble_markdown(out))
    return out


def _hits(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool (N,) top-1 hits of probabilities, with the tie-breaking of the reported top-1."""
    logits = torch.from_numpy(np.log(np.clip(probs, 1e-12, None)).astype(np.float32))
    return topk_hits(logits, torch.from_numpy(labels)).numpy()


def _paired(hits: np.ndarray, best: np.ndarray) -> dict:
    """An ensemble's hits against the best member's on the same test images: the top-1 difference with
    its paired bootstrap 95% interval and the exact McNemar p."""
    d = sig.paired_difference(hits, best)
    return {"difference": d["difference"], "low": d["low"], "high": d["high"], "p": sig.mcnemar(hits, best)["p"]}


def _holm_verdicts(entries: list[dict]) -> None:
    """Holm's correction across the methods' ``vs_best_single`` p-values, and each one's verdict."""
    for e, p_holm in zip(entries, sig.holm([e["vs_best_single"]["p"] for e in entries])):
        v = e["vs_best_single"]
        v.update(p_holm=p_holm, verdict=sig.verdict(v["low"], v["high"], p_holm))


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def overlap_summary(diversity: dict) -> str:
    """One line on how the members' test errors overlap (``diversity``: `error_diversity`'s
    result), shared by the Markdown summary and the HTML report."""
    d = diversity
    line = (f"Test errors: {d['wrong_for_all']} of {d['images']} images wrong for every member "
            f"(oracle top-1 {d['oracle_top1']:.2f}%), {d['wrong_for_any']} for at least one")
    if d["mean_error_correlation"] is not None:
        line += f"; mean pairwise error correlation {d['mean_error_correlation']:.3f}"
    return line


def ensemble_markdown(result: dict) -> str:
    """The ensemble result as a Markdown table: best single run, then each method."""
    b = result["best_single"]
    tta = result["tta"]
    tta = (f"TTA level {tta}" if not isinstance(tta, dict) else
           "TTA levels " + ", ".join(f"{run} {level}" for run, level in tta.items()))
    lines = [f"Ensemble of {len(result['members'])} runs on {result['dataset']} ({tta}).", "",
             "| | members | top-1 % | top-5 % | loss | ECE % | gain (points) | paired 95% interval | p (Holm) | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
             f"| best single ({b['run']}) | 1 | {b['top1']:.2f} | {b['top5']:.2f} | {b['loss']:.3f} | {b['ece']:.2f} | | | | |"]
    for method, e in result["ensembles"].items():
        t, v = e["test"], e.get("vs_best_single")
        paired = " | | "
        if v:
            paired = f"[{v['low']:+.2f}, {v['high']:+.2f}] | {p_text(v['p_holm'])} | {v['verdict']}"
        lines.append(f"| {method} | {len(e['weights'])} | {t['top1']:.2f} | {t['top5']:.2f} | {t['loss']:.3f} | "
                     f"{t['ece']:.2f} | {e['gain_over_best_single']:+.2f} | {paired} |")
    d = result.get("diversity")
    if d:
        lines += ["", overlap_summary(d) + "."]
        pairs = d["error_correlation"]
        if 0 < len(pairs) <= 15:
            lines += ["", "| members | error correlation |", "|---|---:|"]
            lines += [f"| {k} | {'n/a' if r is None else f'{r:.3f}'} |" for k, r in pairs.items()]
        elif pairs:
            lines += ["", "The correlation of every pair is in ensemble.json."]
    for note in result.get("notes", []):
        lines.append(f"\nleft out: {note}")
    return "\n".join(lines) + "\n"
