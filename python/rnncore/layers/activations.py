"""The activations as the layers see them: :mod:`rnncore.activations` under its old name.

Kept so that ``rnncore.layers.activations`` goes on working; the table itself lives in
:mod:`rnncore.activations`.
"""

from __future__ import annotations

from ..activations import (
    NAMES,
    get,
    gradient,
    hard_sigmoid,
    linear,
    name_of,
    relu,
    sigmoid,
    softmax,
    tanh,
)

__all__ = ["get", "NAMES", "backward", "name_of", "gradient"]
__all__ += ["tanh", "sigmoid", "relu", "hard_sigmoid", "linear", "softmax"]


def backward(name: str, x, y, dy, axis=-1):
    """dL/dx of ``y = activation(x)`` given dL/dy; ``x`` is not needed (see
    :func:`rnncore.activations.gradient`) and kept for the old signature."""
    del x
    return gradient(name, y, dy, axis)
