"""Keras's activations: the one table that the reference, the layers and the importers read.

The core computes these same functions in C++ (``cpp/include/rnncore/activations.hpp``);
this table is their NumPy form, for :mod:`rnncore.reference`, the ``Activation`` and
``Softmax`` layers, the losses and the ONNX runtime. Every name in :data:`NAMES` is accepted
by every recurrent and Dense layer (softmax by Dense and Activation only).
"""

from __future__ import annotations

import numpy as np

from .errors import UnsupportedArgumentError

__all__ = [
    "NAMES",
    "FUNCTIONS",
    "tanh",
    "sigmoid",
    "relu",
    "hard_sigmoid",
    "linear",
    "softmax",
    "get",
    "gradient",
    "name_of",
]


def tanh(x):
    return np.tanh(x)


def sigmoid(x):
    # 1 / (1 + e^-x), written through tanh so that large |x| never overflows.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def relu(x):
    return np.maximum(x, 0)


def hard_sigmoid(x):
    # Keras 3: relu6(x + 3) / 6
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def linear(x):
    return x


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


#: name -> NumPy function, in Keras's names
FUNCTIONS = {f.__name__: f for f in (tanh, sigmoid, relu, hard_sigmoid, linear, softmax)}
NAMES = tuple(FUNCTIONS)

# dL/dx from dL/dy, written through the output y = act(x) alone, so that a backward pass
# needs to keep only the outputs: relu's x > 0 is y > 0, hard_sigmoid's -3 < x < 3 is
# 0 < y < 1, tanh' = 1 - y², sigmoid' = y (1 - y), softmax's Jacobian is diag(y) - y yᵀ.
_GRADIENTS = {
    "tanh": lambda y, dy, axis: dy * (1 - y * y),
    "sigmoid": lambda y, dy, axis: dy * y * (1 - y),
    "relu": lambda y, dy, axis: dy * (y > 0),
    "hard_sigmoid": lambda y, dy, axis: dy * ((y > 0) & (y < 1)) / 6.0,
    "linear": lambda y, dy, axis: dy,
    "softmax": lambda y, dy, axis: y * (dy - np.sum(dy * y, axis=axis, keepdims=True)),
}


def get(name: str):
    """The NumPy function of an activation name; ``ValueError`` for an unknown name."""
    try:
        return FUNCTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}: expected one of {list(NAMES)}") from None


def gradient(name: str, y, dy, axis=-1):
    """dL/dx of ``y = activation(x)`` given dL/dy, from the output ``y``."""
    get(name)  # the same error for an unknown name
    return _GRADIENTS[name](y, dy, axis)


def name_of(activation, owner: str, arg: str = "activation", allow_softmax=True) -> str:
    """The canonical name of an activation given as a name, ``None`` or a named function.

    ``None`` is ``"linear"`` (Keras's rule). A callable is accepted when its ``__name__`` is
    one of the supported names (e.g. ``keras.activations.tanh``, ``numpy.tanh``); anything
    else would be silently computed differently, so it is refused.
    """
    if activation is None:
        return "linear"
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", None)
    if isinstance(activation, dict):  # a serialized Keras activation
        name = activation.get("config", activation).get("name", activation.get("class_name"))
    if name not in FUNCTIONS or (name == "softmax" and not allow_softmax):
        allowed = [n for n in NAMES if allow_softmax or n != "softmax"]
        raise UnsupportedArgumentError(
            f"{owner}: {arg}={activation!r} is not supported by rnncore; "
            f"supported: {', '.join(allowed)}"
        )
    return name
