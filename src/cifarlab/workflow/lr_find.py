"""The learning-rate range test as a user asks for it: ``lr_find(config)`` writes the curve and
its suggestions (`cifarlab.training.lr_range_test`)."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import TrainConfig
from ..render import plot_lr_find
from ..runs import RunDirError, write_json
from ..runtime import default_threads, num_threads, tune_malloc
from ..training import lr_range_test
from .setup import assemble
from .train import run_config


def lr_find(config: TrainConfig | dict | str | os.PathLike | None = None, out_dir: str | os.PathLike = "lr_find",
            start_lr: float = 1e-6, end_lr: float = 10.0, steps: int = 100, **overrides) -> dict:
    """LR range test on the configured data, model and strategy; writes ``lr_find.png`` and
    ``lr_find.json`` in ``out_dir`` and returns the curve with ``valley`` and ``steepest`` suggestions
    (learning rates of the main parameter group, ``cfg.lr``'s role). ``config`` as in `train`.

    Raises:
        ConfigError: as `train`; likewise DataError, UnknownModelError and WeightsError.
    """
    tune_malloc()
    cfg = run_config(config, overrides)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"Cannot write {out}: {e.strerror}.") from None
    with num_threads(default_threads(cfg.threads)):
        s = assemble(cfg)
        result = lr_range_test(s.model, s.pipes["train"], cfg, s.ctx, start_lr=start_lr, end_lr=end_lr, steps=steps)
    write_json(out / "lr_find.json", {**result, "config": cfg.to_dict()})
    plot_lr_find(out / "lr_find.png", result)
    return result
