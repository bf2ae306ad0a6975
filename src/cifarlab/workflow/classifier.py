"""The notebook's model object: ``clf = cifarlab.load("runs/x")`` (a run directory or a stamped
checkpoint file alone, `.portable`), then ``clf.predict("cat.jpg")``."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..config import TrainConfig
from ..runtime import resolve_device
from .predict import load_run_model, score_arrays


class Classifier:
    """A trained model ready to use in a notebook: ``clf = cifarlab.load("runs/x")``, then
    ``clf.predict("cat.jpg")``. Images are brought to the run's data side by its resize policy,
    normalized and resized exactly as in training, scored with the run's TTA level, and the
    probabilities are temperature-scaled when the run was calibrated.

    Attributes:
        classes: class names, index order. model: the ``nn.Module`` (eval mode). config: its
        `TrainConfig`. temperature: the calibration temperature (1.0 = none).
    """

    def __init__(self, source: str, config: TrainConfig, model: torch.nn.Module, info: dict):
        self.source, self.config, self.model, self.info = source, config, model, info
        self.classes: list[str] = list(info["classes"])
        self.temperature = float((info.get("calibration") or {}).get("temperature", 1.0))

    def __repr__(self) -> str:
        return (f"Classifier({self.config.model}, {len(self.classes)} classes, T={self.temperature:.3f}, "
                f"from {self.source})")

    def predict(self, image, top_k: int = 5) -> list[tuple[str, float]]:
        """Classify one image: a file path, a ``PIL.Image`` of any mode and size, or a uint8
        (3, H, W) tensor/array already at the run's data side.

        Returns:
            The ``top_k`` (class name, probability in [0, 1]) pairs, most probable first.

        Raises:
            cifarlab.data.images.ImageDecodeError: an unreadable file (a ``ValueError``);
            ConfigError: an array of the wrong shape.
        """
        probs = self.predict_proba([image])[0]
        top = np.argsort(-probs)[:top_k]
        return [(self.classes[i], float(probs[i])) for i in top]

    def predict_proba(self, images) -> np.ndarray:
        """float32 (N, num_classes) probabilities of a list of images (as `predict` takes)."""
        arrays = np.stack([self._array(im) for im in images])
        return score_arrays(self.config, self.model, self.info, arrays).numpy()

    def _array(self, image) -> np.ndarray:
        from ..config import ConfigError
        from ..data.images import fit_size, load_image, to_rgb
        side = int(self.info.get("data_side", 32))
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, side, self.config.resize_policy)
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            return np.asarray(fit_size(to_rgb(image), side, self.config.resize_policy)).transpose(2, 0, 1).copy()
        a = np.asarray(image.cpu() if isinstance(image, torch.Tensor) else image)
        if a.shape != (3, side, side) or a.dtype != np.uint8:
            raise ConfigError(f"an image array must be uint8 (3, {side}, {side}) (got {a.dtype} {a.shape}); or pass "
                              "a file path or a PIL image of any size.")
        return a


def load(path, checkpoint: str = "best", device: str | None = None) -> Classifier:
    """A finished run directory or a stamped checkpoint file as a `Classifier`.

    Raises:
        RunDirError: an incomplete run; CheckpointError: a damaged checkpoint or one without metadata.
    """
    dev = resolve_device(device) if device else None
    cfg, model, info = load_run_model(path, checkpoint, dev)
    return Classifier(str(path), cfg, model, info)
