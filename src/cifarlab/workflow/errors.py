"""The exception types that mean bad input or a run that cannot go on (config, data, run directory,
model, weights, checkpoint, divergence, suite, ensemble): the command line reports them as one
paragraph rather than a traceback, and a suite records them per run and goes on."""
from ..config import ConfigError
from ..data import DataError
from ..evaluation.ensemble import EnsembleError
from ..models import UnknownModelError, WeightsError
from ..runs import RunDirError
from ..training import CheckpointError, TrainingDiverged
from .suite_file import SuiteError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, RunDirError, UnknownModelError, CheckpointError,
                                            TrainingDiverged, WeightsError, SuiteError, EnsembleError, ValueError)
