"""Keras models read into rnncore, without Keras or TensorFlow: :func:`load_keras`.

Keras 3 ``.keras`` archives and legacy HDF5 ``.h5`` files of ``Sequential`` models and
chain-shaped functional models, made of the layers in :data:`SUPPORTED_LAYERS`. The file
is read by :mod:`rnncore.formats.keras`, whose documentation says what is read, how layers
are matched to their weights, and what is refused (:class:`UnsupportedModelError`) or
reported as a damaged file (:class:`ModelFileError`).
"""

from __future__ import annotations

from ..formats.keras import SUPPORTED_LAYERS, read_keras
from ..models import Sequential

__all__ = ["load_keras", "SUPPORTED_LAYERS"]


def load_keras(filepath) -> Sequential:
    """Read a Keras model file (``.keras`` or legacy ``.h5``) as an :class:`rnncore.Sequential`.

    The format is recognised from the file's content, not its name. Needs ``h5py``
    (``pip install "rnncore[keras]"``); Keras and TensorFlow are not used. See
    :mod:`rnncore.formats.keras` for what is supported and how layers are matched to their
    weights.
    """
    layers, name, input_shape = read_keras(filepath)
    model = Sequential(layers, name=name)
    if input_shape is not None and not model.built:
        model.build(input_shape)
    return model
