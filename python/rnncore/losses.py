"""Loss functions for training, with their gradients (Keras 3's definitions and reductions).

Each loss maps ``(y_true, y_pred)`` to one value per sample (and per timestep for a
sequence output), then averages them: Keras's ``"sum_over_batch_size"`` reduction, i.e. the
mean over the batch and, for 3-D outputs, over the timesteps too. ``mse``/``mae`` first
average over the last axis; the crossentropies sum over classes (``categorical`` /
``sparse``) or average over the last axis (``binary``). Probabilities are clipped to
``[eps, 1 - eps]`` with ``eps = 1e-7`` as Keras does; ``from_logits=True`` takes raw scores.

:meth:`Loss.value_and_gradient` returns the loss and dL/d(y_pred) for backpropagation
(zero where Keras's clipping cuts the gradient). Values are computed in float64.
"""

from __future__ import annotations

import numpy as np

from .activations import sigmoid

__all__ = [
    "Loss",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "get",
]

EPSILON = 1e-7


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Loss:
    """Base class: subclasses define ``_per_element(y_true, y_pred)`` -> ``(values, grads)``.

    ``values`` has one entry per sample (per timestep); ``grads`` is d(values.sum())/d(y_pred).
    """

    name = "loss"

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        if reduction != "sum_over_batch_size":
            raise NotImplementedError(
                f"{type(self).__name__}: reduction={reduction!r} is not supported by rnncore "
                f"(only 'sum_over_batch_size')"
            )
        if name is not None:
            self.name = name

    # ---- shapes ----------------------------------------------------------------------

    def target_shape(self, output_shape) -> tuple:
        """The shape ``y_true`` must have for a model output of ``output_shape``."""
        return tuple(output_shape)

    def check_target(self, y_shape, output_shape) -> None:
        """Raise a ValueError naming the loss when targets do not fit the model's output."""
        want = self.target_shape(output_shape)
        if not _same_shape(tuple(y_shape), want):
            raise ValueError(
                f"loss {self.name!r}: targets of shape {tuple(y_shape)} do not fit the model's "
                f"output {tuple(output_shape)}: expected targets of shape "
                f"{_fmt(want)}{self._hint(output_shape)}"
            )

    def _hint(self, output_shape) -> str:
        return ""

    def _prepare(self, y_true, y_pred):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        y_true = np.asarray(y_true, dtype=np.float64)
        if y_true.shape != y_pred.shape and y_true.size == y_pred.size:
            y_true = y_true.reshape(y_pred.shape)  # (B,) against (B, 1), as Keras squeezes
        return y_true, y_pred

    # ---- values ----------------------------------------------------------------------

    def value_and_gradient(self, y_true, y_pred):
        """``(loss, dloss/dy_pred)``: the mean loss and its gradient, in y_pred's dtype."""
        dtype = np.asarray(y_pred).dtype
        t, p = self._prepare(y_true, y_pred)
        values, grads = self._per_element(t, p)
        n = max(values.size, 1)
        return float(values.sum() / n), (grads / n).astype(dtype, copy=False)

    def __call__(self, y_true, y_pred) -> float:
        t, p = self._prepare(y_true, y_pred)
        values, _ = self._per_element(t, p)
        return float(values.mean())

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


def _same_shape(got, want) -> bool:
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))


def _fmt(shape) -> str:
    return (
        "("
        + ", ".join("batch" if k == 0 and d is None else str(d) for k, d in enumerate(shape))
        + ("," if len(shape) == 1 else "")
        + ")"
    )


class _ElementwiseTarget(Loss):
    def check_target(self, y_shape, output_shape):
        y_shape, output_shape = tuple(y_shape), tuple(output_shape)
        # (B,) targets for a (B, 1) output are accepted (Keras squeezes or expands them)
        if output_shape[-1] == 1 and _same_shape(y_shape, output_shape[:-1]):
            return
        super().check_target(y_shape, output_shape)


class MeanSquaredError(_ElementwiseTarget):
    """``mean((y_true - y_pred)**2, axis=-1)``, averaged over the batch."""

    name = "mean_squared_error"

    def _per_element(self, t, p):
        d = p - t
        k = p.shape[-1] if p.ndim else 1
        return (d * d).mean(axis=-1), 2.0 * d / k


class MeanAbsoluteError(_ElementwiseTarget):
    """``mean(|y_true - y_pred|, axis=-1)``, averaged over the batch."""

    name = "mean_absolute_error"

    def _per_element(self, t, p):
        d = p - t
        k = p.shape[-1] if p.ndim else 1
        return np.abs(d).mean(axis=-1), np.sign(d) / k


class BinaryCrossentropy(_ElementwiseTarget):
    """``mean(-(t log p + (1 - t) log(1 - p)), axis=-1)`` with ``p`` clipped to ``[eps, 1-eps]``.

    ``from_logits=True``: ``p = sigmoid(y_pred)``, computed stably from the logits.
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None, **kwargs):
        if label_smoothing:
            raise NotImplementedError("BinaryCrossentropy: label_smoothing is not supported")
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)

    def _per_element(self, t, p):
        k = p.shape[-1] if p.ndim else 1
        if self.from_logits:
            # -(t log s(z) + (1-t) log(1-s(z))) = max(z, 0) - z t + log(1 + exp(-|z|))
            values = np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
            sig = sigmoid(p)
            return values.mean(axis=-1), (sig - t) / k
        q = np.clip(p, EPSILON, 1.0 - EPSILON)
        values = -(t * np.log(q) + (1.0 - t) * np.log(1.0 - q))
        inside = (p > EPSILON) & (p < 1.0 - EPSILON)
        grads = np.where(inside, (q - t) / (q * (1.0 - q)), 0.0)
        return values.mean(axis=-1), grads / k

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


def _categorical(t, p, from_logits):
    """Per-sample ``-sum(t log q)`` and its gradient; ``t`` one-hot (or soft) targets."""
    if from_logits:
        logq = _log_softmax(p)
        values = -(t * logq).sum(axis=-1)
        q = np.exp(logq)
        return values, q * t.sum(axis=-1, keepdims=True) - t
    s = p.sum(axis=-1, keepdims=True)
    q = p / s
    qc = np.clip(q, EPSILON, 1.0 - EPSILON)
    values = -(t * np.log(qc)).sum(axis=-1)
    dq = np.where((q > EPSILON) & (q < 1.0 - EPSILON), -t / qc, 0.0)
    # q = p / s: dL/dp_j = (dq_j - sum_k dq_k q_k) / s
    return values, (dq - (dq * q).sum(axis=-1, keepdims=True)) / s


class CategoricalCrossentropy(Loss):
    """``-sum(y_true * log(y_pred), axis=-1)``; targets one-hot, shaped like the output.

    Without logits the predictions are normalised to sum to one and clipped, as Keras does.
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, name=None, **kwargs):
        if label_smoothing or axis != -1:
            raise NotImplementedError(
                "CategoricalCrossentropy: label_smoothing and axis are not supported"
            )
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)

    def _hint(self, output_shape):
        return " (one-hot; for integer class labels use sparse_categorical_crossentropy)"

    def _per_element(self, t, p):
        return _categorical(t, p, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class SparseCategoricalCrossentropy(Loss):
    """Categorical crossentropy with integer class labels: targets ``output.shape[:-1]``."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, ignore_class=None, name=None, **kwargs):
        if ignore_class is not None:
            raise NotImplementedError(
                "SparseCategoricalCrossentropy: ignore_class is not supported"
            )
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)

    def target_shape(self, output_shape):
        return tuple(output_shape)[:-1]

    def check_target(self, y_shape, output_shape):
        y_shape = tuple(y_shape)
        if len(y_shape) == len(output_shape) and y_shape and y_shape[-1] == 1:
            y_shape = y_shape[:-1]  # (B, 1) labels, as Keras squeezes them
        super().check_target(y_shape, output_shape)

    def _hint(self, output_shape):
        return " (integer class labels; for one-hot targets use categorical_crossentropy)"

    def check_labels(self, y, n_classes) -> None:
        y = np.asarray(y)
        if y.size and (
            not np.all(np.isfinite(y))
            or np.any(y != np.round(y))
            or y.min() < 0
            or y.max() >= n_classes
        ):
            raise ValueError(
                f"loss {self.name!r}: targets must be integer class labels in "
                f"[0, {n_classes - 1}], got values in [{y.min()}, {y.max()}]"
            )

    def _prepare(self, y_true, y_pred):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        labels = np.asarray(y_true).reshape(y_pred.shape[:-1]).astype(np.int64)
        t = np.zeros_like(y_pred)
        np.put_along_axis(t, labels[..., None], 1.0, axis=-1)
        return t, y_pred

    def _per_element(self, t, p):
        return _categorical(t, p, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


_ALIASES = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}

mean_squared_error = mse = MeanSquaredError
mean_absolute_error = mae = MeanAbsoluteError


def get(identifier) -> Loss:
    """A :class:`Loss` from a Keras name (``"mse"``, ``"categorical_crossentropy"``, ...),
    a class, or an instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _ALIASES:
            loss = _ALIASES[key]()
            loss.name = identifier if key in ("mse", "mae") else loss.name
            return loss
    raise ValueError(
        f"unknown loss {identifier!r}; rnncore has {', '.join(sorted(_ALIASES))} "
        f"(or a rnncore.losses.Loss instance)"
    )
