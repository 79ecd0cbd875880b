"""Activation names (Keras's) and their element-wise NumPy forms for ``Activation``/``Softmax``.

The recurrent and Dense layers pass activation *names* to the core; only the standalone
``Activation`` and ``Softmax`` layers evaluate an activation here. The set is the core's
(:data:`rnncore.functional.ACTIVATIONS`), so every layer accepts the same names.
"""

from __future__ import annotations

import numpy as np

from ._base import UnsupportedArgumentError

__all__ = ["get", "NAMES", "backward"]


def tanh(x):
    return np.tanh(x)


def sigmoid(x):
    # 1 / (1 + e^-x) through tanh: no overflow for large |x|
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


_FUNCTIONS = {f.__name__: f for f in (tanh, sigmoid, relu, hard_sigmoid, linear, softmax)}
NAMES = tuple(_FUNCTIONS)


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
    if name not in _FUNCTIONS or (name == "softmax" and not allow_softmax):
        allowed = [n for n in NAMES if allow_softmax or n != "softmax"]
        raise UnsupportedArgumentError(
            f"{owner}: {arg}={activation!r} is not supported by rnncore; "
            f"supported: {', '.join(allowed)}"
        )
    return name


def get(name: str):
    """The NumPy function of a supported activation name."""
    return _FUNCTIONS[name]


def backward(name: str, x, y, dy, axis=-1):
    """dL/dx of ``y = activation(x)`` given dL/dy (for the ``Activation``/``Softmax`` layers)."""
    if name == "linear":
        return dy
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "relu":
        return dy * (x > 0)
    if name == "hard_sigmoid":
        return dy * ((x > -3) & (x < 3)) / 6.0
    if name == "softmax":
        return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))
    raise ValueError(f"no backward for activation {name!r}")
