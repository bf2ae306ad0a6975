"""CIFAR-10 through an ImageNet classifier's own head: a check that pretrained weights were loaded
right (a wrong padding convention, BatchNorm epsilon or key mapping shows up as a collapse of
this accuracy), with no training at all.

Each CIFAR-10 class is a group of ImageNet-1k classes (indices and names from timm's
``ImageNetInfo``); an image's ImageNet probabilities are summed per group and the largest group
is the prediction. ImageNet has no generic "deer" or "horse": the nearest classes stand in.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CIFAR10_FROM_IMAGENET: dict[str, list[int]] = {
    "airplane": [404, 895, 908],                                    # airliner, warplane, wing
    "automobile": [436, 468, 479, 511, 581, 609, 627, 656, 661, 751, 817],  # wagon, cab, car wheel, convertible, grille, jeep, limo, minivan, Model T, racer, sports car
    "bird": list(range(7, 25)) + list(range(80, 101)) + list(range(127, 147)),  # cock .. great grey owl, grouse .. goose, stork .. bustard
    "cat": [281, 282, 283, 284, 285],                               # tabby, tiger cat, Persian, Siamese, Egyptian
    "deer": [350, 351, 352, 353],                                   # ibex, hartebeest, impala, gazelle
    "dog": list(range(151, 269)),                                   # the dog breeds
    "frog": [30, 31, 32],                                           # bullfrog, tree frog, tailed frog
    "horse": [339, 603],                                            # sorrel, horse cart
    "ship": [403, 484, 510, 554, 576, 625, 628, 694, 724, 780, 814, 833, 871, 914],  # carrier .. yawl
    "truck": [555, 569, 675, 717, 734, 864, 867],                   # fire engine, garbage truck, moving van, pickup, police van, tow truck, trailer truck
}


@torch.no_grad()
def zero_shot_cifar10(model: torch.nn.Module, images: np.ndarray, mean, std, side: int = 224,
                      batch_size: int = 100, interpolation: str = "bicubic") -> np.ndarray:
    """CIFAR-10 class predictions of an ImageNet-1k classifier, int64 (N,).

    Args:
        images: uint8 (N, 3, 32, 32) CIFAR-10 images, upsampled to ``side`` (the model's pretrained
            input size) with ``interpolation`` and normalized by ``mean``/``std`` ([0, 1] units).
        model: any module returning (B, 1000) ImageNet logits; evaluated in eval mode.
    """
    model.eval()
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    groups = list(CIFAR10_FROM_IMAGENET.values())
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).float() / 255.0
        x = F.interpolate(x, size=(side, side), mode=interpolation, align_corners=False).clamp(0, 1)
        p = model((x - m) / s).float().softmax(1)
        out.append(torch.stack([p[:, g].sum(1) for g in groups], 1).argmax(1))
    return torch.cat(out).numpy()
