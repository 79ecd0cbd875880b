"""Metrics reported by ``fit`` / ``evaluate``: accuracy (Keras's variants) and mae / mse.

A metric accumulates over batches as Keras's mean metrics do: the sum of its per-sample
(per-timestep) values divided by their count, so an epoch's value does not depend on how
the data was batched. With ``sample_weight`` (``compile(weighted_metrics=...)``) each
sample's value is weighted and the count is the sum of the weights, as Keras's ``Mean``
(``reduce_to_samplewise_values``). ``"accuracy"`` picks Keras's variant from the loss and
output shape: ``sparse_categorical_accuracy`` for the sparse loss, ``binary_accuracy``
(threshold 0.5) for a single output unit, else ``categorical_accuracy``.
"""

from __future__ import annotations

import numpy as np

from .losses import SparseCategoricalCrossentropy, apply_mask, as_weights, match_rank

__all__ = ["Metric", "get", "compile_metrics", "update_metrics"]


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

    #: given the sample weights by :func:`update_metrics` (one of compile's weighted_metrics)
    weighted = False

    def __init__(self, name, fn):
        self.name = name
        self.fn = fn
        self.reset_state()

    def reset_state(self):
        self.total = 0.0
        self.count = 0

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        p = np.asarray(y_pred, dtype=np.float64)
        t = np.asarray(y_true)
        if self.fn is not sparse_categorical_accuracy:
            t = t.astype(np.float64)
            if t.shape != p.shape and t.size == p.size:
                t = t.reshape(p.shape)
        values = self.fn(t, p)
        sample_weight = apply_mask(sample_weight, mask, "sum")
        if sample_weight is None:
            self.total += float(np.sum(values))
            self.count += int(np.size(values))
            return
        # Keras: values averaged down to the weights' rank, weighted, averaged per sample;
        # the count grows by the weights (averaged per sample) summed
        values, w = match_rank(values, as_weights(sample_weight))
        if values.ndim > w.ndim:
            values = values.mean(axis=tuple(range(w.ndim, values.ndim)))
        w = np.broadcast_to(w, values.shape)
        values = values * w
        if values.ndim > 1:
            values = values.mean(axis=tuple(range(1, values.ndim)))
            w = w.mean(axis=tuple(range(1, w.ndim)))
        self.total += float(np.sum(values))
        self.count += float(np.sum(w))

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


def compile_metrics(specs, weighted_specs, loss=None, output_units=None) -> list[Metric]:
    """One output's metrics as Keras's ``CompileMetrics`` lists them: ``metrics``, then
    ``weighted_metrics`` (``weighted=True``), one of those renamed ``weighted_<name>`` when
    its name is taken."""
    out = [get(m, loss, output_units) for m in specs or ()]
    names = {m.name for m in out}
    for spec in weighted_specs or ():
        m = get(spec, loss, output_units)
        if m in out:  # the same object in both lists: Keras updates one state twice
            raise ValueError(f"metric {m.name!r} is given as both a metric and a weighted one")
        m.weighted = True
        if m.name in names:
            m.name = f"weighted_{m.name}"
        names.add(m.name)
        out.append(m)
    return out


def update_metrics(metric_objs, y_true, y_pred, sample_weight=None, mask=None) -> None:
    """Update each metric with one batch; only the weighted ones see ``sample_weight``."""
    for m in metric_objs:
        m.update_state(y_true, y_pred, sample_weight if m.weighted else None, mask)
