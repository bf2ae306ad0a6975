"""The ``cifarlab`` command: thin argument parsing over `cifarlab.workflow`.

`.parser` builds the parser (the config flags' help generated from the config's
documentation), `.main` runs a command and turns the project's errors into one-line messages
and exit statuses, `.commands` and `.data_commands` hold the handlers after training.
"""
from .main import main
from .parser import build_parser

__all__ = ["main", "build_parser"]
