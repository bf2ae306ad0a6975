"""cifarlab: image classification on CIFAR-10/100 -- fast from-scratch recipes, recorded runs.

Notebook use::

    import cifarlab
    run = cifarlab.train(dataset="cifar10", data_dir="data")   # tuned recipe, runs/<name>/
    print(run.results["test"]["top1"])
    cifarlab.evaluate(run.path)                                 # confusion matrix, per-class table
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


def __getattr__(name):  # keep `import cifarlab` light: torch loads on first use
    if name == "Run":
        from .api import Run
        return Run
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


__all__ = ["train", "evaluate", "Run", "TrainConfig", "ConfigError", "RECIPES", "recipe_config", "__version__"]
