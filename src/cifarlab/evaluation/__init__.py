"""Evaluation (package `evaluation`; `cifarlab.evaluate` is the function): predictions with TTA, top-k / per-class / superclass metrics, throughput. Never trains."""
from .metrics import (classification_metrics, confusion_matrix, fine_to_coarse, inference_throughput,
                      predict_logits, topk_accuracy)

__all__ = ["classification_metrics", "confusion_matrix", "fine_to_coarse", "inference_throughput",
           "predict_logits", "topk_accuracy"]
