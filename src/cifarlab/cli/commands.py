"""The analysis and data commands' parsers and handlers: compare, ensemble, report, predict,
export and data. Each handler parses nothing and calls one `cifarlab.workflow` function."""
from __future__ import annotations

import sys
import time

from ..config import TTA_LEVELS, parse_overrides
from .show import print_predictions


def add_analysis_parsers(sub, verbosity) -> None:
    """Add the commands after training to the subparsers ``sub`` (``verbosity`` adds -q/-v/--debug)."""
    c = sub.add_parser("compare", help="compare runs with intervals and paired tests, or train and compare a suite",
                       description="With run directories (or folders of them): one row per config (seeds of one "
                                   "config form a row), test top-1 with its 95% interval, and each row against the "
                                   "baseline on the same test images: the difference with a paired bootstrap "
                                   "interval, a p-value (exact McNemar with one run a side, paired t over the images with "
                                   "seeds on one side, Welch's t with seeds on both), Holm-corrected, and a verdict. With a SUITE "
                                   "(a YAML file, see suites/): train every run (resuming interrupted ones, skipping "
                                   "complete ones), then write comparison.csv/md, verdicts.csv/md, ensemble.json and report.html into "
                                   "the suite's output folder.")
    c.add_argument("paths", nargs="+", metavar="RUN_OR_SUITE")
    c.add_argument("--baseline", default=None, metavar="NAME",
                   help="runs: the row the others are tested against (a row's name or its start; default the best)")
    c.add_argument("--out", default=None, metavar="DIR", help="runs: also write verdicts.csv and verdicts.md here")
    c.add_argument("--detect", type=float, default=None, metavar="POINTS",
                   help="runs: how many seeds per side would tell a top-1 difference of POINTS apart, from the "
                        "seed-to-seed spread of the rows with seeds")
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
    p = sub.add_parser("predict", help="classify image files or folders with a run's model or a checkpoint file")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory, or a checkpoint .safetensors alone")
    p.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--tta", type=int, default=None, choices=TTA_LEVELS, help="override the run's TTA level")
    p.add_argument("--policy", default=None, choices=["center-crop", "pad"],
                   help="how an image of another size becomes the run's size (default: the run's resize_policy)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    x = sub.add_parser("export", help="export a run's model: ONNX (checked with onnxruntime) or timm's folder format")
    kind = x.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", action="store_true", help="ONNX, written to --out (default RUN/model.onnx)")
    kind.add_argument("--timm", metavar="DIR",
                      help="timm's local-dir format: timm.create_model('local-dir:DIR', pretrained=True)")
    x.add_argument("run")
    x.add_argument("--out", default=None, help="--onnx: the file (default RUN/model.onnx)")
    x.add_argument("--opset", type=int, default=18)
    x.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="with --timm: also upload DIR to this Hugging Face repository (needs a login)")
    for q in (c, e, r, p, x):
        verbosity(q, top=False)
    from .data_commands import add_data_parsers  # noqa: PLC0415
    add_data_parsers(sub, verbosity)


def run_analysis(args) -> int:
    """Run one of the commands above; returns the exit status."""
    from .. import workflow  # here, not at the top: `cifarlab --help` answers without loading torch
    if args.command == "compare" and not (len(args.paths) == 1 and args.paths[0].endswith((".yaml", ".yml"))):
        return _compare_runs(args, workflow)
    if args.command == "compare":
        from ..render.table import to_text
        from ..workflow.verdicts import verdict_text
        overrides = parse_overrides(args.set)
        if args.data_dir:
            overrides["data_dir"] = args.data_dir
        suite = workflow.load_suite(args.paths[0], overrides)
        if args.dry_run:
            for r in suite.runs:
                c = r.config
                print(f"{r.name:28s} {c.model:20s} {c.strategy:12s} {c.epochs:g} epochs -> {suite.run_dir(r)}")
            return 0
        res = workflow.run_suite(suite, progress=not (args.no_progress or args.quiet), log=lambda m: print(m, file=sys.stderr))
        if res.rows:
            print(to_text(res.rows))
        for ds, rows in res.verdicts.items():
            print(f"\n{ds}:\n{verdict_text(rows)}")
        if res.ensemble:
            print("\n" + workflow.ensemble_markdown(res.ensemble))
        print(f"\nwrote {suite.out}/comparison.csv, comparison.md, verdicts.csv/md" + (", ensemble.json" if res.ensemble else "")
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
        res = workflow.predict_images(args.run, args.paths, top_k=args.top_k, tta=args.tta, policy=args.policy,
                                      progress=not args.quiet)
        print_predictions(res, "json" if args.json else "csv" if args.csv else "text")
        for e in res["errors"]:
            print(f"skipped {e['file']}: {e['error']}", file=sys.stderr)
        return 0 if res["predictions"] or not res["errors"] else 2
    if args.command == "export":
        return _export(args, workflow)
    from .data_commands import run_data
    return run_data(args)


def _export(args, workflow) -> int:
    if args.push_to_hub and not args.timm:
        from ..config import ConfigError
        raise ConfigError("--push-to-hub uploads the timm folder: use it with --timm DIR.")
    if args.timm:
        info = workflow.export_timm(args.run, args.timm, push_to_hub=args.push_to_hub)
        print(f"wrote {info['path']} (config.json + model.safetensors, {info['architecture']}, "
              f"{info['num_classes']} classes, input {info['input_size']}); load it with "
              f"timm.create_model('local-dir:{info['path']}', pretrained=True)" + (f"; pushed to {info['hub_url']}"
                                                                   if info.get("hub_url") else ""))
        return 0
    info = workflow.export_onnx(args.run, args.out, opset=args.opset)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}); onnxruntime vs "
          f"PyTorch on {info['checked_images']} images: max abs logit diff {info['max_abs_diff']:.2e}, "
          f"argmax agreement {info['argmax_agreement']:.1f}%")
    return 0


def _compare_runs(args, workflow) -> int:
    """``cifarlab compare RUN [RUN ...]``: the verdict table of each dataset on the console (and as files with --out)."""
    from ..workflow.verdicts import seeds_text, tables_by_dataset, verdict_text, write_verdicts
    tables = tables_by_dataset(workflow.resolve_runs(args.paths), args.baseline, args.data_dir)
    for ds, rows in tables.items():
        print((f"{ds}:\n" if len(tables) > 1 else "") + verdict_text(rows))
        print(seeds_text(rows, args.detect))
    if args.out:
        print("wrote " + ", ".join(str(f) for f in write_verdicts(tables, args.out)))
    return 0
