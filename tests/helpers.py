"""Shared helpers for tests that train tiny runs."""
from __future__ import annotations

import cifarlab
from cifarlab import TrainConfig


class StopAt:
    """A training callback that presses Ctrl-C (raises KeyboardInterrupt) at optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, event, info, model):
        if event == "step" and info["global_step"] == self.step:
            raise KeyboardInterrupt


def tiny_config(data_dir, dataset: str = "cifar10", **kw) -> TrainConfig:
    """A few-second airbench run on the tiny fixture data (widths 8/16/16, batch 50)."""
    base = cifarlab.recipe_config(dataset).update(dict(
        data_dir=str(data_dir), download=False, model_kwargs={"widths": [8, 16, 16]}, batch_size=50,
        eval_batch_size=64, epochs=3, progress=False, whiten_bias_epochs=1, channels_last=False))
    return base.update(kw)
