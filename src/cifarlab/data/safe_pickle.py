"""A restricted unpickler for the official CIFAR files, which are untrusted pickles.

The CIFAR python releases are Python 2 pickles of dicts holding lists, byte strings and numpy
arrays. Unpickling them with `pickle.load` would let a crafted file run arbitrary code
(any global can be named and called). `RestrictedUnpickler` resolves only the handful of
globals that numpy array reconstruction needs and refuses everything else.
"""
from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

try:  # numpy >= 2 moved the module; old pickles still name numpy.core.multiarray
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it could execute code)."""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 pickles bytes at protocol < 3 as _codecs.encode(str, 'latin1'): harmless.
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy array reconstruction and builtin containers.

    Raises:
        UnsafePickleError: the stream asks for any other global (module.name is in the message).
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: the CIFAR format only needs numpy "
                "arrays, lists and dicts, so this file is not an official CIFAR file and could "
                "execute code") from None


def safe_loads(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` with `RestrictedUnpickler` (``encoding='bytes'`` for Python 2 files)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
