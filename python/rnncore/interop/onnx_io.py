"""ONNX in and out of rnncore: :func:`load_onnx` runs ONNX graphs on rnncore's core,
:func:`to_onnx` writes an :class:`rnncore.Sequential` or :class:`rnncore.Model` as ONNX.

The work is done below the models, in :mod:`rnncore.formats.onnx`: its
:mod:`~rnncore.formats.onnx.runtime` documents what :func:`load_onnx` runs (ONNX's
``RNN`` / ``LSTM`` / ``GRU`` conventions, the operators in :data:`SUPPORTED_OPS`) and what
it refuses; its :mod:`~rnncore.formats.onnx.export` documents what :func:`to_onnx` writes.
"""

from __future__ import annotations

# the errors it raises, importable from here as before the move to rnncore.formats
from ..errors import ModelFileError, UnsupportedModelError  # noqa: F401
from ..formats.onnx import export
from ..formats.onnx.runtime import SUPPORTED_OPS, OnnxModel, load_onnx
from ..models.base import ModelBase

__all__ = ["load_onnx", "OnnxModel", "to_onnx", "SUPPORTED_OPS"]


def to_onnx(model, path=None, *, opset: int = 17, input_name: str = "input"):
    """Write an :class:`rnncore.Sequential` or a functional :class:`rnncore.Model` as an ONNX
    model; returns the ``ModelProto``.

    ``path`` (optional) is where to write it. The model must be built (its input feature
    size known). The graph's input is ``(batch, timesteps, features)``; dimensions unknown
    to the model stay symbolic. Outputs: ``output``, plus the states of a last recurrent
    layer with ``return_state``. Needs the ``onnx`` package.
    """
    if not isinstance(model, ModelBase):
        raise TypeError(
            f"to_onnx: expected an rnncore Sequential or Model, got {type(model).__name__}"
        )
    return export.to_onnx(model, path, opset=opset, input_name=input_name)
