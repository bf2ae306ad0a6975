"""A run's predictions, computed once and shared by every view (fastai's ``Interpretation`` habit):
comparison rows, ensembles, the confusion matrix, top losses and reliability diagrams all derive
from one `Predictions`. Reading and writing it in a run directory is the workflow's job."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .calibration import softmax
from .metrics import classification_metrics


@dataclass
class Predictions:
    """A run's predictions. Logits are float32 (N, C) averaged over TTA views; labels int64 (N,).

    ``temperature`` (1.0 = none) is the run's fitted temperature scaling
    (`fit_temperature`): the probabilities divide the logits
    by it, the logits themselves are stored as the model gave them.
    """
    dataset: str
    classes: list[str]
    tta: int
    test_logits: np.ndarray
    test_labels: np.ndarray
    val_logits: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    coarse_of_fine: np.ndarray | None = None   # int64 (C,) CIFAR-100 superclass of each class
    coarse_classes: list[str] | None = None
    temperature: float = 1.0

    @property
    def test_probs(self) -> np.ndarray:
        """float32 (N, C) test probabilities, temperature-scaled."""
        return softmax(self.test_logits / self.temperature)

    @property
    def val_probs(self) -> np.ndarray | None:
        """float32 (N, C) validation probabilities, temperature-scaled (None without a split)."""
        return None if self.val_logits is None else softmax(self.val_logits / self.temperature)

    def metrics_of_probs(self, probs: np.ndarray) -> dict:
        """top1/top5 (%), loss (nats), ECE (%), and superclass top-1 (%) when the dataset has one,
        of float (N, C) test probabilities (an ensemble's, or a member's)."""
        logits = torch.from_numpy(np.log(np.clip(probs, 1e-12, None)).astype(np.float32))
        m = classification_metrics(logits, torch.from_numpy(self.test_labels), self.classes, self.coarse_of_fine,
                                   self.coarse_classes)
        return {k: m[k] for k in ("top1", "top5", "loss", "ece", "superclass_top1") if k in m}
