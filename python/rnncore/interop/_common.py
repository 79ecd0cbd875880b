"""What the importers and the exporter share: errors, optional imports, weight checks."""

from __future__ import annotations

import importlib

import numpy as np

from ..layers import UnsupportedArgumentError
from ..models import ModelFileError, check_declared_size, read_json, read_member

__all__ = [
    "ModelFileError",
    "UnsupportedModelError",
    "optional_import",
    "float_array",
    "check_declared_size",
    "read_json",
    "read_member",
]


class UnsupportedModelError(UnsupportedArgumentError):
    """A model that uses a layer, operator or option rnncore does not implement.

    Raised instead of converting it approximately; the message names what is missing.
    (A ``NotImplementedError``, like :class:`rnncore.layers.UnsupportedArgumentError`.)
    """


#: the extra of ``pip install "rnncore[...]"`` that provides each optional module
_EXTRAS = {"h5py": "keras", "onnx": "onnx"}


def optional_import(name: str, what: str):
    """Import an optional dependency, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        extra = _EXTRAS.get(name)
        hint = f'pip install "rnncore[{extra}]"' if extra else f"pip install {name}"
        raise ImportError(f"{what} needs the {name!r} package ({hint}): {e}") from None


def float_array(value, what: str, dtypes=(np.float16, np.float32, np.float64)) -> np.ndarray:
    """``value`` as a NumPy array of a floating dtype, else :class:`ModelFileError`."""
    a = np.asarray(value)
    if a.dtype not in [np.dtype(d) for d in dtypes]:
        raise ModelFileError(f"{what}: expected floating-point weights, got dtype {a.dtype}")
    return a
