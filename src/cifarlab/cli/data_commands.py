"""``cifarlab data``: pack, shard, info, describe and preview."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import parse_dataset, parse_overrides


def add_data_parsers(sub, verbosity) -> None:
    """Add ``data`` and its subcommands to ``sub``."""
    d = sub.add_parser("data", help="look at a dataset (describe, preview); pack or shard it; inspect stores")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    ds = dsub.add_parser("describe", help="class counts plot, sample grid per class, image statistics",
                         description="Write DATASET's class counts (plot + JSON), a grid of samples per class and "
                                     "its image statistics (size, channel mean/std) into --out.")
    ds.add_argument("dataset", help="cifar10, cifar100, an image folder, store:PATH or shards:PATH")
    ds.add_argument("--out", default=None, help="folder for the files (default describe-<name>)")
    ds.add_argument("--data-dir", default=None, help="for cifar10/cifar100")
    ds.add_argument("--per-class", type=int, default=8, help="samples per class in the grid (default 8)")
    pv = dsub.add_parser("preview", help="a grid of augmented training batches as the model sees them",
                         description="Draw training images after the config's augmentation, resizing, mixup and "
                                     "CutMix, as the model sees them (fastai's show_batch).")
    pv.add_argument("dataset")
    pv.add_argument("--config", default=None, help="YAML config file (as for train)")
    pv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    pv.add_argument("--data-dir", default=None)
    pv.add_argument("--images", type=int, default=32, help="images to show (default 32)")
    pv.add_argument("--out", default=None, help="PNG file (default preview-<name>.png)")
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
    for q in (ds, pv, pk, sh, inf):
        verbosity(q, top=False)


def _name(dataset: str) -> str:
    return Path(str(parse_dataset(dataset, bare_path="folder").path or dataset)).name


def run_data(args) -> int:
    """Run one ``cifarlab data`` subcommand; returns the exit status."""
    from .. import workflow
    from ..data import DataError, open_source
    from ..data.store import pack_dataset, store_info
    cmd = args.data_command
    if cmd == "describe":
        info = workflow.describe_dataset(args.dataset, args.out or f"describe-{_name(args.dataset)}",
                                         data_dir=args.data_dir, per_class=args.per_class)
        splits = ", ".join(f"{k} {v}" for k, v in info["images"].items())
        print(f"{info['name']}: {len(info['classes'])} classes, {splits} images of {info['side']}x{info['side']} px; "
              f"channel mean {_rgb(info['mean'])}, std {_rgb(info['std'])}")
        print(f"wrote {', '.join(str(p) for p in info['files'].values())}")
        return 0
    if cmd == "preview":
        overrides = parse_overrides(args.set)
        overrides["dataset"] = args.dataset
        if args.data_dir:
            overrides["data_dir"] = args.data_dir
        path = workflow.preview_batches(args.config, args.out or f"preview-{_name(args.dataset)}.png",
                                        images=args.images, **overrides)
        print(f"wrote {path}")
        return 0
    if cmd == "info":
        info = store_info(Path(args.store))
        print(json.dumps({k: v for k, v in info.items() if k != "images_per_class"}, indent=2))
        return 0
    out = Path(args.out)
    t = time.perf_counter()
    if cmd == "shard":
        from ..data.shards import write_shards
        ds = open_source(args.source, args.data_dir, size=args.size, policy=args.policy, bare_path="folder").dataset()
        m = write_shards(ds, out, args.shard_size, progress=not args.quiet)
        counts = ", ".join(f"{k} {v['images']}" for k, v in m["splits"].items())
        n_shards = sum(len(v["shards"]) for v in m["splits"].values())
        print(f"wrote {n_shards} shards ({counts} images) to {out} in {time.perf_counter() - t:.1f} s; "
              f"train with --dataset shards:{out}")
        return 0
    if (out / "manifest.json").is_file() and not args.force:
        raise DataError(f"{out} already holds a store; add --force to replace it.")
    spec = parse_dataset(args.source, bare_path="folder")
    if spec.kind == "folder":  # decoded straight into OUT (not through the folder's cached store)
        from ..data.folder import pack_folder, report_skipped
        m = pack_folder(Path(spec.path), out, args.size, args.policy, workers=args.workers, progress=not args.quiet)
        report_skipped(Path(spec.path), out, m)
    else:
        m = pack_dataset(open_source(spec, args.data_dir).dataset(), out)
    n = sum(b - a for a, b in m["splits"].values())
    print(f"packed {n} images ({', '.join(f'{k} {b - a}' for k, (a, b) in m['splits'].items())}), "
          f"{len(m['classes'])} classes into {out} in {time.perf_counter() - t:.1f} s; "
          f"{len(m['skipped'])} unreadable files skipped, {m.get('ignored_non_images', 0)} non-image files ignored")
    return 0


def _rgb(v) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"
