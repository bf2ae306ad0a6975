"""A run as a notebook shows it: `Run` (what `cifarlab.train` returns and `cifarlab.Run.load`
reads) renders itself as HTML and draws its curves, confusion matrix and worst mistakes as
matplotlib figures that Jupyter shows inline, in the spirit of fastai's
``ClassificationInterpretation``. The same views as files: `cifarlab.interpret_run`."""
from __future__ import annotations

import base64
import html

import numpy as np

from .. import runs
from ..config import RESUME_SAFE_KEYS, config_diff
from ..evaluation.analysis import top_losses
from ..evaluation.metrics import confusion_matrix
from ..recipes import recipe_config
from ..render import confusion_figure
from ..render.interpret import top_losses_figure
from ..render.plots import curves_figure
from .predictions import run_predictions
from .report import dataset_of


class Run(runs.Run):
    """A run directory read back (`cifarlab.runs.Run`), with notebook views.

    Raises (the plot methods):
        RunDirError: the run is incomplete; DataError: its dataset cannot be read where the view
            needs it (the confusion matrix needs it only when no predictions are cached).
    """

    def changes(self) -> dict:
        """The config keys this run set away from its dataset's recipe: ``{key: (recipe's, run's)}``."""
        cfg = self.config
        try:
            base = recipe_config(cfg.dataset, cfg.model, cfg.recipe)
        except Exception:  # noqa: BLE001 - a model registered in another session: compare with the defaults
            base = type(cfg)()
        return config_diff(base, cfg, ignore=RESUME_SAFE_KEYS | {"dataset", "model", "recipe"})

    def _repr_html_(self) -> str:
        cfg, test = self.config, self.results.get("test", {})
        head = (f"<b>{html.escape(self.path.name)}</b>: {html.escape(cfg.model)} on {html.escape(cfg.dataset)}"
                f"{' (recipe ' + html.escape(cfg.recipe) + ')' if cfg.recipe else ''}, {cfg.strategy}, "
                f"{len(self.rows)} epochs")
        metrics = " &middot; ".join(f"test {k} {test[k]:.2f}{'%' if k != 'loss' else ''}"
                                    for k in ("top1", "top5", "loss", "ece") if test.get(k) is not None)
        temperature = (self.results.get("calibration") or {}).get("temperature")
        if temperature:
            metrics += f" &middot; temperature {temperature:.3f}"
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(repr(a))}</td><td>{html.escape(repr(b))}</td></tr>"
                       for k, (a, b) in self.changes().items())
        table = (f"<table><tr><th>key</th><th>recipe</th><th>this run</th></tr>{rows}</table>" if rows
                 else "<p>the recipe's settings</p>")
        curves = self.path / runs.CURVES_FILE
        img = (f'<img src="data:image/png;base64,{base64.b64encode(curves.read_bytes()).decode()}" width="560">'
               if curves.is_file() else "")
        return f"<div><p>{head}<br>{metrics or 'not scored yet'}</p>{table}{img}</div>"

    def plot_curves(self):
        """Loss, top-1 and learning-rate multiplier per epoch (`curves_figure`)."""
        return curves_figure({self.path.name: self.rows})

    def plot_confusion_matrix(self, data_dir: str | None = None):
        """The test set's confusion matrix, row-normalized (from the cached predictions, computed once)."""
        p = run_predictions(self.path, data_dir=data_dir)
        counts = confusion_matrix(p.test_labels, p.test_probs.argmax(1), len(p.classes))
        return confusion_figure(counts, p.classes, f"{self.path.name}: confusion matrix (row-normalized, %)")

    def plot_top_losses(self, k: int = 16, data_dir: str | None = None):
        """The ``k`` test images with the highest loss, true and predicted class with their probabilities."""
        p = run_predictions(self.path, data_dir=data_dir)
        entries = top_losses(p.test_probs, p.test_labels, k)
        images = dataset_of(self.config, data_dir).test.images[np.array([e["index"] for e in entries], dtype=int)]
        return top_losses_figure(images, entries, p.classes)
