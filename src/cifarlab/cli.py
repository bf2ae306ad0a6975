"""The ``cifarlab`` command: thin argument parsing over :mod:`cifarlab.api`.

Errors that come from bad input (config, data, run directories, models, divergence) are printed
as one paragraph and exit with status 2; Ctrl-C exits with 130 after saving.
"""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, TrainConfig, parse_overrides

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
    p.add_argument("--config", help="YAML file of config keys (applied before flags)")
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
    parser = argparse.ArgumentParser(prog="cifarlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    e = sub.add_parser("evaluate", help="rescore a run's checkpoint; write confusion matrix and per-class table")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--tta", type=int, default=None, help="override the run's TTA level (0, 1, 2)")
    e.add_argument("--data-dir", default=None)
    sub.add_parser("models", help="list registered models")
    return parser


def _train_config(args) -> tuple[TrainConfig | None, dict]:
    from .recipes import recipe_config

    overrides = {k: getattr(args, k) for k in COMMON if getattr(args, k) is not None}
    if args.pretrained:
        overrides["pretrained"] = True
    if args.no_progress:
        overrides["progress"] = False
    overrides.update(parse_overrides(args.set))
    if getattr(args, "resume", None):
        return None, overrides
    base = recipe_config(overrides.get("dataset", "cifar10"), overrides.get("model"))
    if args.config:
        file_cfg = TrainConfig.load_yaml(args.config)
        dataset = overrides.get("dataset", file_cfg.dataset)
        base = recipe_config(dataset, overrides.get("model", file_cfg.model if file_cfg.model != TrainConfig().model
                                                    else None)).update(
            {k: v for k, v in file_cfg.to_dict().items() if v != TrainConfig().to_dict()[k]}, source=args.config)
    return base, overrides


def _expected_errors():
    from .data import DataError
    from .models import UnknownModelError
    from .runs import RunDirError
    from .models import WeightsError
    from .training import CheckpointError, TrainingDiverged
    return (ConfigError, DataError, RunDirError, UnknownModelError, CheckpointError, TrainingDiverged, WeightsError,
            ValueError)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings
    warnings.formatwarning = _one_line_warning  # a user needs the message, not our source line
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            from .models import list_models, model_cfg
            for name in list_models():
                print(f"{name:16s} {model_cfg(name).description}")
            return 0
        from . import api
        from .training import TrainingInterrupted
        if args.command == "train":
            import signal
            # a scheduler's SIGTERM saves the position like Ctrl-C does
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            cfg, overrides = _train_config(args)
            try:
                run = api.train(cfg, run_dir=args.run_dir, resume=args.resume, **overrides)
            except TrainingInterrupted as e:
                print(f"\n{e}", file=sys.stderr)
                return 130
            r = run.results
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
            cfg, overrides = _train_config(args)
            r = api.lr_find(cfg, out_dir=args.out, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
                            **overrides)
            fmt = lambda v: "n/a" if v is None else f"{v:.2e}"
            print(f"suggested learning rates (--lr): valley {fmt(r['valley'])}, steepest {fmt(r['steepest'])}")
            print(f"wrote {args.out}/lr_find.png and lr_find.json ({len(r['lr'])} steps)")
            return 0
        if args.command == "evaluate":
            m = api.evaluate(args.run_dir, checkpoint=args.checkpoint, tta=args.tta, data_dir=args.data_dir)
            print(json.dumps({k: m[k] for k in ("top1", "top5", "loss", "superclass_top1") if k in m}, indent=2))
            print(f"wrote confusion_matrix.csv/png, per_class.csv/md and evaluation.json in {args.run_dir}")
            return 0
    except _expected_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
