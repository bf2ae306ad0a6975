"""The exception types that mean bad input or a run that cannot go on (config, data, run directory,
model, weights, checkpoint, divergence, memory, disk, suite, ensemble, a GPU that cannot run the step): the command line reports
them as one paragraph rather than a traceback, with the exit status of `exit_code`, and a
suite records them per run and goes on. Any other exception (a plain ``ValueError`` from deep
inside included) is a bug and keeps its traceback."""
from ..config import ConfigError
from ..data import DataError
from ..evaluation.ensemble import EnsembleError
from ..files import FolderInUse, StorageError
from ..models import UnknownModelError, WeightsError
from ..runs import RunDirError
from ..runtime import DeviceError
from ..training import CheckpointError, TrainingDiverged, TrainingOutOfMemory
from .export import ExportError
from .suite_file import SuiteError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, RunDirError, FolderInUse, UnknownModelError, CheckpointError,
                                            TrainingDiverged, TrainingOutOfMemory, StorageError, WeightsError,
                                            SuiteError, EnsembleError, ExportError, DeviceError)

EXIT_CODES = {0: "done", 1: "internal error (a bug: please report it with the traceback)",
              2: "bad input: config, data, run directory, model, checkpoint; or the run directory is in use",
              3: "training diverged (a loss, gradient or weight became NaN/inf)",
              4: "out of disk space, memory, or write permission (resume once fixed)",
              130: "interrupted (Ctrl-C or SIGTERM); the position is saved for --resume"}
"""The ``cifarlab`` command's exit statuses (also in the README)."""


def exit_code(e: BaseException) -> int:
    """The exit status for an error of `USER_ERRORS` (see `EXIT_CODES`)."""
    if isinstance(e, TrainingDiverged):
        return 3
    if isinstance(e, (StorageError, TrainingOutOfMemory)):
        return 4
    return 2
