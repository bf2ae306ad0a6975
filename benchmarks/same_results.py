"""Whether a change to the code leaves training's results alone: three fixed-seed runs, fingerprinted.

    python benchmarks/same_results.py --data-dir data --out /tmp/same-before.json
    python benchmarks/same_results.py --data-dir data --out /tmp/same-after.json --against /tmp/same-before.json

Runs, on the same machine and seed 0: the ``cifar10`` recipe for 2 epochs; a linear probe and a
partial fine-tune (last stage) of a randomly initialised timm ``resnet18`` at 32 px on 2 000
training images, 3 epochs each, in fp32. For each run it records test top-1, test loss and a
SHA-256 of every tensor in ``checkpoint-best.safetensors``. With ``--against`` it prints which
figures differ and exits 1 if any does. The runs write under ``--work`` (deleted afterwards).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import cifarlab
from cifarlab.models import create_model
from cifarlab.runtime import environment


def fingerprint(path: Path) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of each tensor's dtype, shape and bytes, keyed by tensor name."""
    def digest(v: torch.Tensor) -> str:
        data = v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        return hashlib.sha256(f"{v.dtype}{tuple(v.shape)}".encode() + data).hexdigest()[:16]
    return {k: digest(v) for k, v in sorted(load_file(str(path)).items())}


def runs(data: str, work: Path, only: list[str] | None = None) -> dict[str, dict]:
    torch.manual_seed(0)
    weights = work / "resnet18-random.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("resnet18", 10).state_dict().items()}, str(weights))
    small = dict(data_dir=data, model="resnet18", weights=str(weights), img_size=32, train_size=2000, val_size=500,
                 epochs=3, batch_size=100, precision="fp32", channels_last=False, tta=1, progress=False,
                 cache_dir=str(work / "cache"), seed=0)
    configs = {
        "cifar10 recipe, 2 epochs": cifarlab.recipe_config("cifar10").update(
            dict(data_dir=data, epochs=2, seed=0, progress=False)),
        "linear probe": cifarlab.recipe_config("cifar10", "resnet18").update({**small, "strategy": "linear-probe"}),
        "partial fine-tune": cifarlab.recipe_config("cifar10", "resnet18").update(
            {**small, "strategy": "partial-fine-tune", "trainable_stages": 1, "freeze_epochs": 1}),
    }
    out = {}
    for name, cfg in configs.items():
        if only and not any(o in name for o in only):
            continue
        t = time.perf_counter()
        run = cifarlab.train(cfg, run_dir=work / name.replace(" ", "-").replace(",", ""))
        out[name] = {"test_top1": run.results["test"]["top1"], "test_loss": run.results["test"]["loss"],
                     "seconds": round(time.perf_counter() - t, 1),
                     "tensors": fingerprint(run.path / "checkpoint-best.safetensors")}
        print(f"{name}: top-1 {out[name]['test_top1']:.2f}%, loss {out[name]['test_loss']:.6f}", flush=True)
    return out


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two results files' runs (test top-1, loss, tensors)."""
    found = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            found.append(f"{name}: only in one file")
            continue
        for k in ("test_top1", "test_loss"):
            if a[name][k] != b[name][k]:
                found.append(f"{name}: {k} {a[name][k]!r} -> {b[name][k]!r}")
        ta, tb = a[name]["tensors"], b[name]["tensors"]
        changed = sorted(k for k in set(ta) | set(tb) if ta.get(k) != tb.get(k))
        if changed:
            found.append(f"{name}: {len(changed)} of {len(ta)} tensors differ (first: {changed[0]})")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data", help="a folder with CIFAR-10 in the python format")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--against", help="an earlier --out file to compare with")
    ap.add_argument("--only", nargs="*", help="run only the runs whose names contain one of these words, e.g. probe")
    ap.add_argument("--work", help="scratch folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="same-results-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = runs(args.data_dir, work, args.only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env = environment(torch.device("cpu"))
    Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
                                          "cpu": env.get("cpu"), "torch": torch.__version__, "runs": result}, indent=1))
    if args.against:
        before = json.loads(Path(args.against).read_text())["runs"]
        found = differences({k: v for k, v in before.items() if k in result}, result)
        print("\n".join(found) if found else "the same: every test top-1, loss and checkpoint tensor")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
