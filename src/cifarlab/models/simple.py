"""A LeNet-style baseline: the "simple CNN" of course notebooks (LeCun et al. 1998, adapted to RGB 32x32)."""
from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """conv5(6) -> pool -> conv5(16) -> pool -> fc120 -> fc84 -> fc(num_classes), ReLU, ~62k parameters.

    Input float (B, 3, 32, 32); other sizes work through adaptive pooling to 5x5. Output logits (B, C).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(5))
        self.pre_logits = nn.Sequential(nn.Flatten(), nn.Linear(16 * 25, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.num_features = 84
        self.num_classes = num_classes
        self.head = nn.Linear(84, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
