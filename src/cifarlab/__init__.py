"""cifarlab: image classification on CIFAR-10/100 -- fast from-scratch recipes, recorded runs.

Notebook use::

    import cifarlab
    run = cifarlab.train(dataset="cifar10", data_dir="data")   # tuned recipe, runs/<name>/
    print(run.results["test"]["top1"])
    cifarlab.evaluate(run)                                      # confusion matrix, per-class table
    cifarlab.compare_runs([run_a, run_b])                       # a DataFrame: a row per config, seeds grouped, verdicts
    cifarlab.runs_table("runs/my-suite")                         # a DataFrame: a row per run
    cifarlab.ensemble_runs([run_a, run_b, run_c], ["uniform", "greedy"])
    cifarlab.build_report(["runs/my-suite"], "report.html")
    cifarlab.predict_images(run, ["cat.jpg"], top_k=3)
    clf = cifarlab.load("runs/<name>")        # or a checkpoint .safetensors alone
    clf.predict("cat.jpg")                    # [("cat", 0.93), ...], calibrated when the run was

A `Run` works wherever a run directory's path does.
"""
from .config import ConfigError, TrainConfig
from .recipes import RECIPES, recipe_config, resolve_config

from .version import __version__

# name -> module: imported on first use, so `import cifarlab` stays light (torch loads when needed)
_LAZY = {"train": "workflow", "evaluate": "workflow", "lr_find": "workflow", "Run": "workflow",
         "compare_runs": "workflow", "runs_table": "workflow", "ensemble_runs": "workflow", "build_report": "workflow",
         "interpret_run": "workflow", "predict_images": "workflow", "run_predictions": "workflow",
         "export_onnx": "workflow", "load_suite": "workflow", "run_suite": "workflow", "calibrate": "workflow",
         "load": "workflow", "Classifier": "workflow", "export_timm": "workflow", "describe_dataset": "workflow",
         "preview_batches": "workflow", "show_batch": "workflow"}
SUBPACKAGES = ("workflow", "data", "models", "training", "evaluation", "render")


def __getattr__(name):
    import importlib
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in SUBPACKAGES:  # cifarlab.workflow.X works without importing cifarlab.workflow first
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


__all__ = ["TrainConfig", "ConfigError", "RECIPES", "recipe_config", "resolve_config", "__version__", *_LAZY]


def __dir__():
    """The module's names and the lazy ones, so tab completion and ``dir(cifarlab)`` show ``train``."""
    return sorted(set(globals()) | set(_LAZY) | set(SUBPACKAGES))
