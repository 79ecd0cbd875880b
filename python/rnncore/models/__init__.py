"""Models: :class:`Sequential`, :class:`Model` (Keras's functional API), and saving and
loading them (:func:`save_model`, :func:`load_model`; rnncore's own file format is described
in :mod:`rnncore.formats.saved_model`, the Keras files written in
:mod:`rnncore.formats.keras_save`)."""

from __future__ import annotations

from ..errors import ModelFileError
from ..formats.saved_model import FORMAT, FORMAT_VERSION
from .functional import Functional, Model
from .saving import load_model, model_from_json, save_model
from .sequential import Sequential

__all__ = [
    "Sequential",
    "Model",
    "Functional",
    "load_model",
    "save_model",
    "model_from_json",
    "ModelFileError",
    "FORMAT",
    "FORMAT_VERSION",
]
