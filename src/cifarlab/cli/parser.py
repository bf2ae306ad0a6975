"""The ``cifarlab`` argument parser. The help of every config flag is generated from
`TrainConfig`'s field documentation (`cifarlab.config_help`), so the
help and the config cannot drift; keys without a flag are listed under ``train --help`` and by
``cifarlab config keys``. Imports no torch: ``cifarlab --help`` answers at once."""
from __future__ import annotations

import argparse
import difflib

from ..version import __version__
from ..config import TTA_LEVELS
from ..config_help import config_keys
from ..recipes import recipe_config

DESCRIPTION = ("Image classification on CIFAR-10, CIFAR-100 and image folders: train, evaluate, calibrate, "
               "compare, ensemble, report, predict and export. 'cifarlab COMMAND --help' describes each command.")

# the config keys with a flag of their own, the settings used most (timm's train.py names where it has
# one); the rest: --set. Types, choices and help come from the config (`cifarlab.config_help`).
FLAGS = ("dataset", "data_dir", "recipe", "model", "epochs", "batch_size", "lr", "val_size", "train_size", "seed",
         "device", "threads", "tta", "precision", "optimizer", "strategy", "weights", "img_size", "freeze_epochs",
         "schedule", "label_smoothing", "cutout", "mixup", "cutmix", "trainable_stages", "random_resized_crop",
         "auto_augment", "logger")
SWITCHES = {"ema": "--ema", "pretrained": "--pretrained", "early_stopping_patience": "--early-stopping",
            "progress": "--no-progress"}


class Parser(argparse.ArgumentParser):
    """argparse that never guesses: no prefix matching (``--epoch`` is not ``--epochs``), and a
    one-line error (the command, what was wrong, a close flag of that command, where the flags
    are listed) instead of the whole usage text above the message."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; '{self.prog} --help' lists the arguments\n")

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            cmd = self._command_parser(ns)
            bad = next((a for a in extra if a.startswith("-")), extra[0])
            flags = [o for a in cmd._actions for o in a.option_strings if o.startswith("--")]
            close = difflib.get_close_matches(bad.split("=")[0], flags, n=1, cutoff=0.6)
            cmd.error(f"unrecognized argument {bad}" + (f" (did you mean {close[0]}?)" if close else ""))
        return ns

    def _command_parser(self, ns) -> argparse.ArgumentParser:
        """The (sub)parser of the command ``ns`` holds, ``data describe`` included; self without one."""
        parser = self
        for dest in ("command", "data_command"):
            action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            if action is None or getattr(ns, dest, None) not in action.choices:
                break
            parser = action.choices[getattr(ns, dest)]
        return parser


def _default_text(key: str, default, recipe_cfg) -> str:
    recipe = getattr(recipe_cfg, key)
    text = f"default {default!r}".replace("'", "")
    return text + (f"; the cifar10 recipe sets {recipe!r}".replace("'", "") if recipe != default else "")


def _verbosity(p, top: bool) -> None:
    """-q / -v / --debug, accepted before or after the command (``cifarlab -q train`` or ``train -q``)."""
    d = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-q", "--quiet", action="count", help="only results and errors: no bars, epoch lines or warnings",
                   **({"default": 0} if top else d))
    p.add_argument("-v", "--verbose", action="count", help="also the resolved config and data notes",
                   **({"default": 0} if top else d))
    p.add_argument("--debug", action="store_true", help="full traceback for every error",
                   **({"default": False} if top else d))


def _config_args(p) -> None:
    docs = {k.name: k for k in config_keys()}
    recipe_cfg = recipe_config("cifar10")
    g = p.add_argument_group("config (flags win over --set, which wins over --config and the recipe)")
    for key in FLAGS:   # values reach the config as text, which it reads by the key's type
        k = docs[key]
        g.add_argument("--" + key.replace("_", "-"), dest=key, default=None, choices=k.choices,
                       type=type(k.choices[0]) if k.choices else str, metavar=None if k.choices else key.upper(),
                       help=f"{k.help} ({_default_text(key, k.default, recipe_cfg)})")
    g.add_argument("--pretrained", action="store_true", default=None,
                   help=f"{docs['pretrained'].help}; offline, use --weights FILE")
    g.add_argument("--ema", action="store_true", default=None, help=f"{docs['ema'].help} (decay: --set ema_decay)")
    g.add_argument("--early-stopping", dest="early_stopping_patience", type=int, default=None, metavar="PATIENCE",
                   help=docs["early_stopping_patience"].help)
    g.add_argument("--config", help="YAML file of config keys: over the recipe, under flags and --set; "
                                    "a run's config.yaml re-runs it exactly")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key (the list below; 'cifarlab config keys' for types and defaults)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar and epoch lines")
    _verbosity(p, top=False)


def _other_keys_epilog() -> str:
    covered = set(FLAGS) | set(SWITCHES)
    lines = ["other config keys (--set KEY=VALUE):"]
    lines += [f"  {k.name:25s} {k.help} (default {k.default!r})" for k in config_keys() if k.name not in covered]
    return "\n".join(lines)


def _train_parsers(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("train", help="train a model and record a run directory", formatter_class=fmt,
                       description="Train with the tuned recipe of --dataset; flags and --set override it.\n"
                                   "--model takes a built-in name, any timm model name or a Keras name "
                                   "(VGG16, ResNet50, ...).", epilog=_other_keys_epilog())
    _config_args(p)
    p.add_argument("--run-dir", help="run directory (default runs/<generated name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    f = sub.add_parser("lr-find", help="learning-rate range test: loss-vs-lr plot and suggestions")
    _config_args(f)
    f.add_argument("--start-lr", type=float, default=1e-6)
    f.add_argument("--end-lr", type=float, default=10.0)
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--out", default="lr_find", help="folder for lr_find.png and lr_find.json")
    c = sub.add_parser("config", help="the config keys and named recipes: 'cifarlab config keys|recipes'")
    c.add_argument("what", nargs="?", choices=["keys", "recipes"], help="keys: every key with its type, default and meaning; "
                   "recipes: the named recipes (--recipe), each with its changes, reason and measured result")
    _verbosity(c, top=False)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (see ``cifarlab --help``)."""
    parser = Parser(prog="cifarlab", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    _verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parsers(sub)
    e = sub.add_parser("evaluate", help="rescore a run; write its confusion matrix and per-class table")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--tta", type=int, default=None, choices=TTA_LEVELS, help="override the run's TTA level")
    e.add_argument("--data-dir", default=None)
    k = sub.add_parser("calibrate", help="fit temperature scaling on a run's validation predictions",
                       description="Fit one temperature on the run's validation predictions (Guo et al. 2017) "
                                   "and store it in results.json: predict, ensembles, comparisons and reports "
                                   "then use calibrated probabilities. Prints test ECE and NLL before and after.")
    k.add_argument("run_dir")
    k.add_argument("--data-dir", default=None)
    m = sub.add_parser("models", help="list built-in models, or timm's with --timm")
    m.add_argument("--timm", metavar="PATTERN", default=None, help="timm names matching PATTERN, e.g. 'resnet*'")
    m.add_argument("--pretrained", action="store_true",
                   help="with --timm: only models with ImageNet weights, marking those available offline")
    for q in (e, k, m):
        _verbosity(q, top=False)
    from .commands import add_analysis_parsers  # noqa: PLC0415 (keeps this file to the training surface)
    add_analysis_parsers(sub, _verbosity)
    return parser


def config_overrides(args) -> dict:
    """The command line's config keys: the flags that were given, the switches, then ``--set``."""
    from ..config import parse_overrides
    out = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    for key in ("pretrained", "ema"):
        if getattr(args, key):
            out[key] = True
    if args.early_stopping_patience is not None:
        out["early_stopping_patience"] = args.early_stopping_patience
    if args.no_progress:
        out["progress"] = False
    out.update(parse_overrides(args.set))
    return out

