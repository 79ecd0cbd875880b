"""Models in and out of rnncore: Keras files, PyTorch modules, ONNX graphs.

* :func:`load_keras`: a Keras 3 ``.keras`` or legacy ``.h5`` model file (read with ``h5py``
  and JSON; Keras is not needed) as an :class:`rnncore.Sequential`.
* :func:`from_torch`: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (or their ``state_dict`` and
  constructor arguments, without torch) as a :class:`TorchRNN`; ``nn.RNNCell`` /
  ``LSTMCell`` / ``GRUCell`` as a one-step :class:`TorchCell`.
* :func:`load_onnx`: an ONNX graph of ``RNN`` / ``LSTM`` / ``GRU`` nodes as an
  :class:`OnnxModel` computing with rnncore's core, with ONNX's output conventions.
* :func:`to_onnx`: an :class:`rnncore.Sequential` written as an ONNX model.
* :mod:`onnx_backend`: rnncore as an ONNX backend (``onnx.backend.base.Backend``).

``h5py`` and ``onnx`` are optional (``pip install ".[keras]"``, ``".[onnx]"`` in the source
checkout); they are imported when first needed. Loading never runs code from a file.
"""

from ..errors import ModelFileError, UnsupportedModelError
from . import onnx_backend
from .keras_io import load_keras
from .onnx_io import OnnxModel, load_onnx, to_onnx
from .torch_io import TorchCell, TorchRNN, from_torch

__all__ = [
    "load_keras",
    "from_torch",
    "TorchRNN",
    "TorchCell",
    "load_onnx",
    "OnnxModel",
    "to_onnx",
    "onnx_backend",
    "ModelFileError",
    "UnsupportedModelError",
]
