"""Is an ImageNet checkpoint converted right? CIFAR-10 test images through the ImageNet head
(cifarlab.evaluation.zero_shot), for each candidate timm architecture of the installed weight
package. Usage: python benchmarks/zero_shot_imagenet.py --data-dir data [--images 2000]"""
from __future__ import annotations

import argparse
import time

import numpy as np
import timm
import torch

from cifarlab.data import open_source
from cifarlab.evaluation.zero_shot import zero_shot_cifar10
from cifarlab.models.timm_adapter import read_state_dict
from cifarlab.models.weight_packages import convert_efficientnet_pytorch, package_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--images", type=int, default=2000, help="N test images, the first N/10 of each class")
    ap.add_argument("--package-model", default="tf_efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    test = open_source("cifar10", args.data_dir, download=False).dataset().test
    idx = np.concatenate([np.flatnonzero(test.labels == c)[:args.images // 10] for c in range(10)])
    images, labels = test.images[idx], test.labels[idx]
    path = package_weights(args.package_model)
    if path is None:
        raise SystemExit(f"no weight package installed for {args.package_model}")
    sd = read_state_dict(path)
    arch = args.package_model
    # the weights' own preprocessing (the TF checkpoints' mean/std 0.5, 224 px) for every candidate, so
    # that only the architecture's conventions (padding, BatchNorm eps) differ; then the other
    # variant's own pretrained_cfg too, which is what a user of that name would get
    own = timm.create_model(arch).pretrained_cfg
    for name, cfg_from in ((arch, arch), (arch.replace("tf_", ""), arch), (arch.replace("tf_", ""), None)):
        model = timm.create_model(name)
        model.load_state_dict(convert_efficientnet_pytorch(sd, model))
        cfg = own if cfg_from else model.pretrained_cfg
        name = f"{name} ({'mean/std 0.5' if cfg_from else 'its own mean/std'})"
        t = time.perf_counter()
        pred = zero_shot_cifar10(model, images, cfg["mean"], cfg["std"], cfg["input_size"][-1])
        sec = time.perf_counter() - t
        acc = 100.0 * (pred == labels).mean()
        per_class = [100.0 * (pred[labels == c] == c).mean() for c in range(10)]
        print(f"{name:44s} zero-shot CIFAR-10 top-1 {acc:.2f}% on {len(labels)} test images "
              f"({len(labels) / sec:.0f} images/s at {cfg['input_size'][-1]} px); per class: "
              + " ".join(f"{p:.0f}" for p in per_class))


if __name__ == "__main__":
    main()
