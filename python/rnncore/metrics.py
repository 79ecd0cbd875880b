"""Metrics reported by ``fit`` / ``evaluate``: accuracy (Keras's variants) and mae / mse.

A metric accumulates over batches as Keras's mean metrics do: the sum of its per-sample
(per-timestep) values divided by their count, so an epoch's value does not depend on how
the data was batched. ``"accuracy"`` picks Keras's variant from the loss and output shape:
``sparse_categorical_accuracy`` for the sparse loss, ``binary_accuracy`` (threshold 0.5)
for a single output unit, else ``categorical_accuracy``.
"""

from __future__ import annotations

import numpy as np

from .losses import SparseCategoricalCrossentropy

__all__ = ["Metric", "get"]


def binary_accuracy(t, p, threshold=0.5):
    return ((p > threshold) == (t > 0.5)).astype(np.float64).mean(axis=-1)


def categorical_accuracy(t, p):
    return (np.argmax(t, axis=-1) == np.argmax(p, axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(t, p):
    t = np.asarray(t).reshape(p.shape[:-1])
    return (t == np.argmax(p, axis=-1)).astype(np.float64)


def mean_absolute_error(t, p):
    return np.abs(p - t).mean(axis=-1)


def mean_squared_error(t, p):
    return np.square(p - t).mean(axis=-1)


class Metric:
    """A named running mean of ``fn(y_true, y_pred)`` over all samples seen."""

    def __init__(self, name, fn):
        self.name = name
        self.fn = fn
        self.reset_state()

    def reset_state(self):
        self.total = 0.0
        self.count = 0

    def update_state(self, y_true, y_pred):
        p = np.asarray(y_pred, dtype=np.float64)
        t = np.asarray(y_true)
        if self.fn is not sparse_categorical_accuracy:
            t = t.astype(np.float64)
            if t.shape != p.shape and t.size == p.size:
                t = t.reshape(p.shape)
        values = self.fn(t, p)
        self.total += float(np.sum(values))
        self.count += int(np.size(values))

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def __repr__(self):
        return f"<Metric {self.name}>"


_FUNCTIONS = {
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
}


def get(identifier, loss=None, output_units=None) -> Metric:
    """A :class:`Metric` from a Keras name; ``"accuracy"``/``"acc"`` resolved as Keras does."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"unknown metric {identifier!r}: give a metric name")
    key = identifier.lower()
    if key in ("accuracy", "acc"):
        if isinstance(loss, SparseCategoricalCrossentropy):
            fn = sparse_categorical_accuracy
        elif output_units == 1:
            fn = binary_accuracy
        else:
            fn = categorical_accuracy
        return Metric(identifier, fn)
    if key in _FUNCTIONS:
        return Metric(identifier, _FUNCTIONS[key])
    raise ValueError(
        f"unknown metric {identifier!r}; rnncore has 'accuracy', "
        f"{', '.join(repr(k) for k in _FUNCTIONS)}"
    )
