"""cifarlab: image classification on CIFAR-10/100 -- fast from-scratch recipes, recorded runs.

Notebook use::

    import cifarlab
    run = cifarlab.train(dataset="cifar10", data_dir="data")   # tuned recipe, runs/<name>/
    print(run.results["test"]["top1"])
    cifarlab.evaluate(run.path)                                 # confusion matrix, per-class table
    cifarlab.compare_runs([run_a, run_b])                       # comparison rows
    cifarlab.ensemble_runs([run_a, run_b, run_c], ["uniform", "greedy"])
    cifarlab.build_report(["runs/my-suite"], "report.html")
    cifarlab.predict_images(run.path, ["cat.jpg"], top_k=3)
"""
from .config import ConfigError, TrainConfig
from .recipes import RECIPES, recipe_config

__version__ = "0.1.0"


def train(config=None, run_dir=None, resume=None, callbacks=(), **overrides):
    """Train and record a run; see :func:`cifarlab.api.train`. Returns a :class:`cifarlab.api.Run`."""
    from .api import train as _train
    return _train(config, run_dir=run_dir, resume=resume, callbacks=callbacks, **overrides)


def evaluate(run_dir, checkpoint="best", tta=None, data_dir=None):
    """Rescore a run and write its interpretation files; see :func:`cifarlab.api.evaluate`."""
    from .api import evaluate as _evaluate
    return _evaluate(run_dir, checkpoint=checkpoint, tta=tta, data_dir=data_dir)


# name -> module: imported on first use, so `import cifarlab` stays light (torch loads when needed)
_LAZY = {"Run": "api", "lr_find": "api", "compare_runs": "compare", "ensemble_runs": "compare",
         "build_report": "reporting", "interpret_run": "reporting", "predict_images": "inference",
         "run_predictions": "inference", "export_onnx": "export", "load_suite": "suite", "run_suite": "suite"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


__all__ = ["train", "evaluate", "TrainConfig", "ConfigError", "RECIPES", "recipe_config", "__version__", *_LAZY]
