"""Keras models read into rnncore, without Keras or TensorFlow: :func:`load_keras`.

Keras 3 ``.keras`` archives and legacy HDF5 ``.h5`` files of ``Sequential`` models and
chain-shaped functional models, made of the layers in :data:`SUPPORTED_LAYERS`. The file
is read by :mod:`rnncore.formats.keras`, whose documentation says what is read, how layers
are matched to their weights, and what is refused (:class:`UnsupportedModelError`) or
reported as a damaged file (:class:`ModelFileError`).
"""

from __future__ import annotations

# the errors it raises, importable from here as before the move to rnncore.formats
from ..errors import ModelFileError, UnsupportedModelError  # noqa: F401
from ..formats.keras import SUPPORTED_LAYERS
from ..models.saving import load_keras

__all__ = ["load_keras", "SUPPORTED_LAYERS"]
