"""``cifarlab``'s entry point: run one command, report errors.

The project's own error types (`cifarlab.workflow.errors.USER_ERRORS`: bad config, data, run
directory, model, divergence, disk, memory...) are printed as one line and exit with the status of
`EXIT_CODES` (2 bad input, 3 diverged, 4 disk/memory); Ctrl-C exits
with 130 after saving. Anything else is a bug in cifarlab: its traceback is shown with a request
to report it, exit status 1. ``--debug`` shows the traceback of every error; ``-q`` hides bars,
epoch lines and warnings; ``-v`` adds the resolved config.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings

from ..version import __version__
from ..config import ConfigError
from .parser import build_parser, config_overrides
from .show import calibration_line, print_run


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command; returns the exit status."""
    warnings.formatwarning = _one_line_warning  # a user needs the message, not our source line
    args = build_parser().parse_args(argv)
    if args.quiet or os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone warns: the data is the same
        warnings.simplefilter("ignore")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- sorted below: ours become one line, others are bugs
        try:
            from ..workflow.errors import USER_ERRORS, exit_code
        except Exception:  # noqa: BLE001 -- the package itself is broken: that is a bug too
            USER_ERRORS, exit_code = (), None
        if isinstance(e, USER_ERRORS):
            if args.debug:
                traceback.print_exc()
            print(f"error: {e}", file=sys.stderr)
            return exit_code(e)
        traceback.print_exc()
        print(f"\nThis is a bug in cifarlab {__version__}, not a problem with your input: please report it with "
              "the command and the traceback above.", file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.command == "models":
        return _models(args)
    if args.command == "config" and args.what is None:
        print("error: cifarlab config: say what to list: 'cifarlab config keys' (every config key, with its "
              "type, default and meaning) or 'cifarlab config recipes' (the named recipes)", file=sys.stderr)
        return 2
    if args.command == "config":
        from ..config_help import keys_table
        from ..recipes import recipes_text
        print(recipes_text() if args.what == "recipes" else keys_table())
        return 0
    from .. import workflow
    if args.command in ("train", "lr-find"):
        return _train(args, workflow)
    if args.command == "evaluate":
        m = workflow.evaluate(args.run_dir, checkpoint=args.checkpoint, tta=args.tta, data_dir=args.data_dir)
        print(json.dumps({k: m[k] for k in ("top1", "top5", "loss", "ece", "superclass_top1") if k in m}, indent=2))
        print(f"wrote evaluation.json in {args.run_dir}; confusion_matrix.csv/png, per_class.csv/md in "
              f"{args.run_dir}/interpretation")
        return 0
    if args.command == "calibrate":
        print(calibration_line(workflow.calibrate(args.run_dir, data_dir=args.data_dir)))
        print(f"stored in {args.run_dir}/results.json: predict, ensembles, comparisons and reports use it")
        return 0
    from .commands import run_analysis
    return run_analysis(args)


def _train(args, workflow) -> int:
    from ..training import TrainingInterrupted
    overrides = config_overrides(args)
    if args.quiet:
        overrides["progress"] = False
    if args.command == "lr-find":
        r = workflow.lr_find(args.config, out_dir=args.out, start_lr=args.start_lr, end_lr=args.end_lr,
                             steps=args.steps, **overrides)
        fmt = lambda v: "n/a" if v is None else f"{v:.2e}"
        print(f"suggested learning rates (--lr): valley {fmt(r['valley'])}, steepest {fmt(r['steepest'])}")
        print(f"wrote {args.out}/lr_find.png and lr_find.json ({len(r['lr'])} steps)")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's SIGTERM saves like Ctrl-C
    if args.resume and args.config:
        raise ConfigError("--resume continues with the run's saved config; drop --config (flags may "
                          "change only where and how the run is read and shown).")
    if args.verbose and not args.resume:
        from ..recipes import resolve_config
        print("resolved config:\n" + resolve_config(args.config, overrides).to_yaml(), file=sys.stderr)
    try:
        run = workflow.train(args.config, run_dir=args.run_dir, resume=args.resume, **overrides)
    except TrainingInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    if run.results:  # empty on a non-zero torchrun rank: rank 0 reports
        print_run(run)
    return 0


def _models(args) -> int:
    if args.timm is None:
        if args.pretrained:
            raise ConfigError("--pretrained lists timm models with weights: use it with --timm PATTERN.")
        from ..models import list_models, model_cfg
        for name in list_models():
            print(f"{name:16s} {model_cfg(name).description}")
        print("\nAny timm model works too: 'cifarlab models --timm PATTERN' lists them.", file=sys.stderr)
        return 0
    from ..models.zoo import find_timm_models
    found = find_timm_models(args.timm, pretrained=args.pretrained)
    for m in found:
        print(m["name"] + ("" if "offline" not in m else
                           "  [works offline]" if m["offline"] else "  [needs a download]"))
    if not found:
        print(f"no timm model matches {args.timm!r} (patterns use * and ?, e.g. 'resnet*')", file=sys.stderr)
        return 2
    if args.pretrained:
        print(f"\n{len(found)} weight sets, {sum(m['offline'] for m in found)} available offline (a weight package or "
              "the hub cache). Offline, a weights file works for any of them: --weights FILE.", file=sys.stderr)
    return 0
