"""``cifarlab calibrate RUN``: fit temperature scaling (Guo et al. 2017) to a finished run's
validation predictions and record it, so that ``predict``, ensembles, comparisons and reports give
probabilities that mean what they say. Training does the same at its end when it has a validation
split; this is for runs recorded before, or re-fitting after ``evaluate``."""
from __future__ import annotations

from ..evaluation.calibration import calibration_summary
from ..runs import RESULTS_FILE, RunDir, RunDirError
from .portable import stamp_temperature
from .predictions import run_predictions, save_predictions


def calibrate(run_dir, data_dir: str | None = None) -> dict:
    """Fit the temperature on ``run_dir``'s validation predictions and store it in ``results.json``
    (key ``calibration``; `calibration_summary`'s dict) and
    in the metadata of the run's checkpoints.

    Returns:
        The calibration dict: temperature, test ECE (%) and NLL (nats) before and after.

    Raises:
        RunDirError: the run is incomplete, or was trained without a validation split (the fix:
            train with ``--val-size``, e.g. 5000); DataError: predictions must be computed and the
            dataset is missing.
    """
    rd = RunDir(run_dir)
    preds = run_predictions(rd.path, data_dir=data_dir)
    if preds.val_logits is None:
        raise RunDirError(f"{rd.path} has no validation split, and temperature scaling must be fitted on held-out "
                          "images, never the test set. Train with --val-size 5000 (or any held-out size) and "
                          "calibrate that run.")
    summary = calibration_summary(preds.val_logits, preds.val_labels, preds.test_logits, preds.test_labels)
    results = rd.read_results()
    results["calibration"] = summary
    stamp_temperature(rd.path, summary["temperature"])
    save_predictions(rd.path, preds)  # re-keyed to the re-stamped checkpoint
    rd.write_json(RESULTS_FILE, results)
    return summary
