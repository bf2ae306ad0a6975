"""The models package's error for weights (its own module so that the weight loaders can share it)."""


class WeightsError(RuntimeError):
    """Weights could not be obtained or do not fit the model. The message says which keys and what to do."""
