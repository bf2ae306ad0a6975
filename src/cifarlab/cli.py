"""The ``cifarlab`` command: thin argument parsing over :mod:`cifarlab.workflow`.

Errors that come from bad input (config, data, run directories, models) are printed as one
paragraph and exit with status 2; a diverged run exits with 3; a full disk or out of memory with 4;
Ctrl-C exits with 130 after saving (:data:`cifarlab.workflow.errors.EXIT_CODES`). The workflow is
imported inside :func:`main` so that ``cifarlab --help`` answers without loading torch.
"""
from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
import warnings
from pathlib import Path

from .config import ConfigError, parse_dataset, parse_overrides

DESCRIPTION = ("Image classification on CIFAR-10, CIFAR-100 and image folders: train, evaluate, compare, "
               "ensemble, report, predict and export. 'cifarlab COMMAND --help' describes each command.")

# flag -> config key, for the most used settings (everything else: --set key=value)
COMMON = {"dataset": str, "data_dir": str, "model": str, "epochs": float, "batch_size": int, "lr": float,
          "val_size": int, "train_size": int, "seed": int, "device": str, "threads": int, "tta": int,
          "precision": str, "optimizer": str, "strategy": str, "weights": str, "img_size": int,
          "freeze_epochs": float}


def _config_args(p):
    for key, typ in COMMON.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=typ, default=None)
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="timm's default pretrained weights (Hugging Face hub; use --weights offline)")
    p.add_argument("--config", help="YAML file of config keys: over the recipe, under flags and --set; "
                                    "a run's config.yaml re-runs it exactly")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _train_parser(sub):
    p = sub.add_parser("train", help="train a model and record a run directory",
                       description="Train with the tuned recipe of --dataset; flags and --set override it. "
                                   "--model takes a built-in name or any timm model name.")
    _config_args(p)
    p.add_argument("--run-dir", help="run directory (default runs/<generated name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    f = sub.add_parser("lr-find", help="learning-rate range test: loss-vs-lr plot and suggestions")
    _config_args(f)
    f.add_argument("--start-lr", type=float, default=1e-6)
    f.add_argument("--end-lr", type=float, default=10.0)
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--out", default="lr_find", help="folder for lr_find.png and lr_find.json")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifarlab", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    e = sub.add_parser("evaluate", help="rescore a run's checkpoint; write confusion matrix and per-class table")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--tta", type=int, default=None, help="override the run's TTA level (0, 1, 2)")
    e.add_argument("--data-dir", default=None)
    sub.add_parser("models", help="list registered models")
    _analysis_parsers(sub)
    return parser


def _analysis_parsers(sub) -> None:
    c = sub.add_parser("compare", help="train a suite of runs (skipping finished ones), compare, ensemble, report",
                       description="Train every run of SUITE (a YAML file, see suites/), resume interrupted ones, "
                                   "skip complete ones, then write comparison.csv/md, ensemble.json and report.html "
                                   "into the suite's output folder.")
    c.add_argument("suite")
    c.add_argument("--data-dir", default=None)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config key for every run")
    c.add_argument("--dry-run", action="store_true", help="validate the suite and list its runs; train nothing")
    c.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("ensemble", help="average class probabilities over runs on one dataset")
    e.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or folders of them)")
    e.add_argument("--method", action="append", choices=["uniform", "weighted", "greedy", "all"],
                   help="uniform (default), weighted by val accuracy, greedy (Caruana 2004); repeatable")
    e.add_argument("--min-val-acc", type=float, default=None, help="keep runs with validation top-1 >= this %%")
    e.add_argument("--per-architecture", action="store_true", help="greedy: at least one run per architecture")
    e.add_argument("--out", default=None, help="folder for ensemble.json and ensemble.md")
    e.add_argument("--data-dir", default=None)
    r = sub.add_parser("report", help="one self-contained HTML report from runs or suites")
    r.add_argument("paths", nargs="+", metavar="RUN_OR_SUITE")
    r.add_argument("--out", default="report.html")
    r.add_argument("--title", default="cifarlab report")
    r.add_argument("--data-dir", default=None)
    p = sub.add_parser("predict", help="classify image files or folders with a run's model")
    p.add_argument("run")
    p.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--tta", type=int, default=None, help="override the run's TTA level (0, 1, 2)")
    p.add_argument("--policy", default=None, choices=["center-crop", "pad"],
                   help="how an image of another size becomes the run's size (default: the run's resize_policy)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    x = sub.add_parser("export", help="export a run's model (ONNX), checked against PyTorch with onnxruntime")
    x.add_argument("run")
    x.add_argument("--onnx", action="store_true", required=True, help="ONNX format (the one supported)")
    x.add_argument("--out", default=None, help="default RUN/model.onnx")
    x.add_argument("--opset", type=int, default=18)
    d = sub.add_parser("data", help="pack image folders or CIFAR into a memory-mapped store; inspect stores")
    dsub = d.add_subparsers(dest="data_command", required=True)
    pk = dsub.add_parser("pack", help="decode SOURCE (an image folder, cifar10 or cifar100) into a store at OUT")
    pk.add_argument("source")
    pk.add_argument("out")
    pk.add_argument("--size", type=int, default=32, help="image folders: side in pixels (default 32)")
    pk.add_argument("--policy", default="center-crop", choices=["center-crop", "pad"])
    pk.add_argument("--data-dir", default=None, help="for cifar10/cifar100")
    pk.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    pk.add_argument("--force", action="store_true", help="replace an existing store")
    sh = dsub.add_parser("shard", help="write SOURCE as WebDataset tar shards (train with --dataset shards:OUT)")
    sh.add_argument("source", help="cifar10, cifar100, an image folder, or store:PATH")
    sh.add_argument("out")
    sh.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
    sh.add_argument("--size", type=int, default=32, help="image folders: side in pixels (default 32)")
    sh.add_argument("--policy", default="center-crop", choices=["center-crop", "pad"])
    sh.add_argument("--data-dir", default=None, help="for cifar10/cifar100")
    inf = dsub.add_parser("info", help="summarize a packed store")
    inf.add_argument("store")


def _overrides(args) -> dict:
    """The command line's config keys: flags, ``--pretrained``, ``--no-progress``, then ``--set``."""
    overrides = {k: getattr(args, k) for k in COMMON if getattr(args, k) is not None}
    if args.pretrained:
        overrides["pretrained"] = True
    if args.no_progress:
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set))
    return overrides


def _user_errors() -> tuple[type[Exception], ...]:
    from .workflow.errors import USER_ERRORS
    return USER_ERRORS


def _exit_code(e: BaseException) -> int:
    from .workflow.errors import exit_code
    return exit_code(e)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _analysis_command(args) -> int:
    from . import workflow  # here, not at the top: `cifarlab --help` answers without loading torch
    if args.command == "compare":
        from .render.table import to_text
        overrides = parse_overrides(args.set)
        if args.data_dir:
            overrides["data_dir"] = args.data_dir
        suite = workflow.load_suite(args.suite, overrides)
        if args.dry_run:
            for r in suite.runs:
                c = r.config
                print(f"{r.name:28s} {c.model:20s} {c.strategy:12s} {c.epochs:g} epochs -> {suite.run_dir(r)}")
            return 0
        res = workflow.run_suite(suite, progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
        if res.rows:
            print(to_text(res.rows))
        if res.ensemble:
            print("\n" + workflow.ensemble_markdown(res.ensemble))
        print(f"\nwrote {suite.out}/comparison.csv, comparison.md" + (", ensemble.json" if res.ensemble else "")
              + (f", {res.report.name}" if res.report else ""))
        for name, why in res.failed.items():
            print(f"failed: {name}: {why}", file=sys.stderr)
        return 1 if res.failed else 0
    if args.command == "ensemble":
        methods = args.method or ["uniform"]
        if "all" in methods:
            methods = ["uniform", "weighted", "greedy"]
        res = workflow.ensemble_runs(workflow.resolve_runs(args.runs), list(dict.fromkeys(methods)),
                                     args.min_val_acc, args.per_architecture, out_dir=args.out, data_dir=args.data_dir)
        print(workflow.ensemble_markdown(res))
        if args.out:
            print(f"wrote {args.out}/ensemble.json and ensemble.md")
        return 0
    if args.command == "report":
        t = time.perf_counter()
        path = workflow.build_report(args.paths, args.out, title=args.title, data_dir=args.data_dir)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
        return 0
    if args.command == "predict":
        res = workflow.predict_images(args.run, args.paths, top_k=args.top_k, tta=args.tta, policy=args.policy)
        _print_predictions(res, "json" if args.json else "csv" if args.csv else "text")
        for e in res["errors"]:
            print(f"skipped {e['file']}: {e['error']}", file=sys.stderr)
        return 0 if res["predictions"] or not res["errors"] else 2
    if args.command == "data":
        return _data_command(args)
    if args.command == "export":
        info = workflow.export_onnx(args.run, args.out, opset=args.opset)
        print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}); onnxruntime vs "
              f"PyTorch on {info['checked_images']} images: max abs logit diff {info['max_abs_diff']:.2e}, "
              f"argmax agreement {info['argmax_agreement']:.1f}%")
        return 0
    return 1


def _data_command(args) -> int:
    from .data import DataError, open_source
    from .data.store import pack_dataset, store_info
    if args.data_command == "info":
        info = store_info(Path(args.store))
        print(json.dumps({k: v for k, v in info.items() if k != "images_per_class"}, indent=2))
        return 0
    out = Path(args.out)
    if args.data_command == "shard":
        from .data.shards import write_shards
        t = time.perf_counter()
        ds = open_source(args.source, args.data_dir, size=args.size, policy=args.policy, bare_path="folder").dataset()
        m = write_shards(ds, out, args.shard_size)
        counts = ", ".join(f"{k} {v['images']}" for k, v in m["splits"].items())
        n_shards = sum(len(v["shards"]) for v in m["splits"].values())
        print(f"wrote {n_shards} shards ({counts} images) to {out} in {time.perf_counter() - t:.1f} s; "
              f"train with --dataset shards:{out}")
        return 0
    if (out / "manifest.json").is_file() and not args.force:
        raise DataError(f"{out} already holds a store; add --force to replace it.")
    t = time.perf_counter()
    spec = parse_dataset(args.source, bare_path="folder")
    if spec.kind == "folder":  # decoded straight into OUT (not through the folder's cached store)
        from .data.folder import pack_folder
        m = pack_folder(Path(spec.path), out, args.size, args.policy, workers=args.workers)
    else:
        m = pack_dataset(open_source(spec, args.data_dir).dataset(), out)
    n = sum(b - a for a, b in m["splits"].values())
    print(f"packed {n} images ({', '.join(f'{k} {b - a}' for k, (a, b) in m['splits'].items())}), "
          f"{len(m['classes'])} classes into {out} in {time.perf_counter() - t:.1f} s; "
          f"{len(m['skipped'])} unreadable files skipped, {m.get('ignored_non_images', 0)} non-image files ignored")
    for s in m["skipped"][:20]:
        print(f"skipped {s}", file=sys.stderr)
    return 0


def _print_predictions(res: dict, fmt: str) -> None:
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


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # a user needs the message, not our source line
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            from .models import list_models, model_cfg
            for name in list_models():
                print(f"{name:16s} {model_cfg(name).description}")
            return 0
        from . import workflow
        from .training import TrainingInterrupted
        if args.command == "train":
            # a scheduler's SIGTERM saves the position like Ctrl-C does
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            if args.resume and args.config:
                raise ConfigError("--resume continues with the run's saved config; drop --config (flags may "
                                  "change only where and how the run is read and shown).")
            try:
                run = workflow.train(args.config, run_dir=args.run_dir, resume=args.resume, **_overrides(args))
            except TrainingInterrupted as e:
                print(f"\n{e}", file=sys.stderr)
                return 130
            r = run.results
            if not r:  # a non-zero torchrun rank: rank 0 reports
                return 0
            line = (f"test top-1 {r['test']['top1']:.2f}%  top-5 {r['test']['top5']:.2f}%  "
                    f"loss {r['test']['loss']:.3f}")
            if "superclass_top1" in r["test"]:
                line += f"  superclass top-1 {r['test']['superclass_top1']:.2f}%"
            print(line)
            print(f"train {r['train_seconds']:.1f} s ({r['train_images_per_s']:.0f} images/s), wall "
                  f"{r['wall_seconds']:.1f} s, peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB")
            print(f"run directory: {run.path}")
            return 0
        if args.command == "lr-find":
            r = workflow.lr_find(args.config, out_dir=args.out, start_lr=args.start_lr, end_lr=args.end_lr,
                                 steps=args.steps, **_overrides(args))
            fmt = lambda v: "n/a" if v is None else f"{v:.2e}"
            print(f"suggested learning rates (--lr): valley {fmt(r['valley'])}, steepest {fmt(r['steepest'])}")
            print(f"wrote {args.out}/lr_find.png and lr_find.json ({len(r['lr'])} steps)")
            return 0
        if args.command == "evaluate":
            m = workflow.evaluate(args.run_dir, checkpoint=args.checkpoint, tta=args.tta, data_dir=args.data_dir)
            print(json.dumps({k: m[k] for k in ("top1", "top5", "loss", "superclass_top1") if k in m}, indent=2))
            print(f"wrote confusion_matrix.csv/png, per_class.csv/md and evaluation.json in {args.run_dir}")
            return 0
        return _analysis_command(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return _exit_code(e)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
