"""Jobs a user asks for, composed from the layers below: train / evaluate / lr-find
(`.train`), cached predictions (`.predictions`), predict (`.predict`), compare and
ensemble (`.compare`, `.verdicts`), interpretation and the HTML report (`.report`), notebook views of a run (`.notebook`), suites
(`.suite_file`, `.suite`), temperature scaling (`.calibrate`) and export (`.export`). Every one assembles its
data, model and pipelines through `.setup.assemble`.
"""
from .calibrate import calibrate
from .compare import comparison_row, comparison_rows, runs_table
from .describe import describe_dataset, preview_batches, show_batch
from .ensemble import ensemble_markdown, ensemble_runs
from .errors import USER_ERRORS
from .export import ExportError, export_onnx, run_onnx
from .export_timm import export_timm
from .classifier import Classifier, load
from .predict import load_run_model, predict_images
from .predictions import load_cached_predictions, run_predictions, save_predictions
from .report import build_report, interpret_run
from .setup import Setup, assemble
from .suite import SuiteResult, run_suite
from .suite_file import Suite, SuiteError, load_suite, resolve_runs
from .verdicts import compare_runs
from .lr_find import lr_find
from .notebook import Run
from .train import evaluate, train

__all__ = ["train", "calibrate", "evaluate", "lr_find", "assemble", "Setup", "run_predictions", "load_cached_predictions",
           "save_predictions", "load_run_model", "predict_images", "compare_runs", "comparison_row", "comparison_rows", "runs_table",
           "ensemble_runs", "ensemble_markdown", "build_report", "interpret_run", "load_suite", "run_suite",
           "resolve_runs", "Suite", "SuiteError", "SuiteResult", "export_onnx", "run_onnx", "USER_ERRORS",
           "ExportError", "export_timm", "Classifier", "load", "describe_dataset", "preview_batches",
           "show_batch", "Run"]
