"""ONNX in and out of rnncore's layers, below the models.

* :mod:`.runtime`: :func:`load_onnx` / :class:`OnnxModel`, an ONNX graph interpreter whose
  recurrent nodes run on rnncore's core;
* :mod:`.ops`: the other operators it runs, in NumPy;
* :mod:`.recurrent`: ``RNN`` / ``LSTM`` / ``GRU`` nodes in Keras's layouts (and the layout
  facts the exporter shares);
* :mod:`.export`: :func:`to_onnx`, a built model's layers written as an ONNX graph.

``onnx`` is optional (``pip install ".[onnx]"``), imported when first needed.
"""

from .export import to_onnx
from .runtime import SUPPORTED_OPS, OnnxModel, load_onnx

__all__ = ["load_onnx", "OnnxModel", "SUPPORTED_OPS", "to_onnx"]
