"""Evaluation (package `evaluation`; `cifarlab.evaluate` is the function): predictions with TTA,
top-k / per-class / superclass metrics, calibration, error analysis, ensemble weights, and the
`Predictions` record every view is derived from. Never trains; reads no run directory.
"""
from .metrics import (classification_metrics, confusion_matrix, inference_throughput, loss_and_top1, predict_logits,
                      topk_accuracy)
from .predictions import Predictions

__all__ = ["classification_metrics", "confusion_matrix", "inference_throughput", "loss_and_top1", "predict_logits",
           "topk_accuracy", "Predictions"]
