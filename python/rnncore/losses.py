"""Loss functions for training, with their gradients (Keras 3's definitions and reductions).

Each loss maps ``(y_true, y_pred)`` to one value per sample (and per timestep for a
sequence output), then averages them: Keras's ``"sum_over_batch_size"`` reduction, i.e. the
mean over the batch and, for 3-D outputs, over the timesteps too. With ``sample_weight``
each value is multiplied by its weight first, and the sum is still divided by the number of
values (Keras's rule; :func:`reduce_weighted` has it, and the other reductions).
``mse``/``mae`` first average over the last axis; the crossentropies sum over classes
(``categorical`` / ``sparse``) or average over the last axis (``binary``). Probabilities are
clipped to ``[eps, 1 - eps]`` with ``eps = 1e-7`` as Keras does; ``from_logits=True`` takes
raw scores.

:meth:`Loss.value_and_gradient` returns the loss and dL/d(y_pred) for backpropagation
(zero where Keras's clipping cuts the gradient). Values are computed in float64.
"""

from __future__ import annotations

import numpy as np

from .activations import sigmoid

__all__ = [
    "Loss",
    "reduce_weighted",
    "apply_mask",
    "class_weight_to_sample_weights",
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
        if reduction not in REDUCTIONS:
            raise NotImplementedError(
                f"{type(self).__name__}: reduction={reduction!r} is not supported by rnncore "
                f"(only {', '.join(map(repr, REDUCTIONS))})"
            )
        self.reduction = reduction
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

    def value_and_gradient(self, y_true, y_pred, sample_weight=None, mask=None):
        """``(loss, dloss/dy_pred)``: the reduced (weighted) loss and its gradient, in
        y_pred's dtype. ``mask`` (bool, one entry per loss value) drops values as Keras drops
        the masked timesteps of a masked output."""
        dtype = np.asarray(y_pred).dtype
        t, p = self._prepare(y_true, y_pred)
        values, grads = self._per_element(t, p)
        loss, scale = reduce_weighted(values, sample_weight, mask, self.reduction)
        return loss, (grads * scale[..., None]).astype(dtype, copy=False)

    def __call__(self, y_true, y_pred, sample_weight=None, mask=None) -> float:
        t, p = self._prepare(y_true, y_pred)
        values, _ = self._per_element(t, p)
        return reduce_weighted(values, sample_weight, mask, self.reduction)[0]

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


# ---- weighting (Keras 3's keras/src/losses/loss.py) ----------------------------------

#: "sum_over_batch_size" and "mean": sum(w l) / (number of values); "sum": sum(w l);
#: "mean_with_sample_weight": sum(w l) / sum(w) (of the weights as given, rank-matched)
REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight")


def match_rank(values, weights):
    """Keras's ``squeeze_or_expand_to_same_rank``: a trailing axis of size 1 on one side is
    dropped (or a 1-D side gets one) when the ranks differ by one; then weights with fewer
    axes than the values weigh whole leading slices (``(B,)`` weights on ``(B, T)`` losses:
    one weight per sample, as Keras 2; Keras 3 fails on that case)."""
    if values.ndim == weights.ndim + 1 and values.shape[-1] == 1:
        if weights.ndim == 1:
            weights = weights[:, None]
        else:
            values = values[..., 0]
    elif weights.ndim == values.ndim + 1 and weights.shape[-1] == 1:
        if values.ndim == 1:
            values = values[:, None]
        else:
            weights = weights[..., 0]
    if weights.ndim < values.ndim and weights.shape == values.shape[: weights.ndim]:
        weights = weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim))
    return values, weights


def as_weights(sample_weight, what="sample_weight") -> np.ndarray:
    """``sample_weight`` as a float64 array; refused unless real, finite numbers."""
    w = np.asarray(sample_weight)
    if w.dtype == object or not (np.issubdtype(w.dtype, np.number) or w.dtype == bool):
        raise TypeError(f"{what} must be an array of numbers, got dtype {w.dtype}")
    if w.dtype.kind == "c" or not np.all(np.isfinite(w)):
        raise ValueError(f"{what} must be finite real numbers (no NaN, inf or complex)")
    return w.astype(np.float64)


def apply_mask(sample_weight, mask, reduction):
    """Keras's ``apply_mask``: the mask folded into the weights. For the mean reductions a
    kept value weighs ``total / valid``, so that the mean is over the kept values only."""
    if mask is None:
        return sample_weight
    mask = np.asarray(mask, dtype=bool)
    if reduction in ("mean", "sum_over_batch_size"):
        valid = int(mask.sum())
        float_mask = np.where(mask, mask.size / valid if valid else 0.0, 0.0)
    else:
        float_mask = mask.astype(np.float64)
    if sample_weight is None:
        return float_mask
    float_mask, sample_weight = match_rank(float_mask, as_weights(sample_weight))
    return sample_weight * float_mask


def reduce_weighted(values, sample_weight=None, mask=None, reduction="sum_over_batch_size"):
    """``(loss, dloss/dvalues)`` for per-sample (per-timestep) loss ``values``: Keras's
    ``reduce_weighted_values``. The derivative is the weight of each value over the divisor
    (the number of values, or the weights' sum), so a loss's gradient is ``grads * it``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.size == 0:  # Keras returns those unreduced
        return float(values.sum()), np.ones_like(values)
    sample_weight = apply_mask(sample_weight, mask, reduction)
    if sample_weight is None:
        weights = np.ones_like(values)
    else:
        matched, w = match_rank(values, as_weights(sample_weight))
        if w.ndim and (
            w.ndim != matched.ndim or any(a not in (1, b) for a, b in zip(w.shape, matched.shape))
        ):
            raise ValueError(
                f"sample_weight of shape {np.shape(sample_weight)} does not fit the loss "
                f"values of shape {values.shape} (one weight per sample, or per sample and "
                f"timestep, expected)"
            )
        weights = np.broadcast_to(w, matched.shape).reshape(values.shape)
    if reduction == "sum":
        divisor = 1.0
    elif reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = float(w.sum())
    else:
        divisor = float(values.size)
    if divisor == 0:  # Keras's divide_no_nan
        return 0.0, np.zeros_like(values)
    return float((values * weights).sum() / divisor), weights / divisor


def class_weight_to_sample_weights(y, class_weight) -> np.ndarray:
    """Keras's ``class_weight_to_sample_weights``: one weight per sample, the weight of its
    class (``argmax`` of one-hot targets, else the rounded label; 1.0 for classes not in
    ``class_weight``)."""
    if not isinstance(class_weight, dict):
        raise TypeError(
            f"class_weight must be a dict {{class index: weight}}, got "
            f"{type(class_weight).__name__}"
        )
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
    if y.ndim != 1:
        raise ValueError(
            f"class_weight needs one class per sample; targets of shape {np.shape(y)} have "
            f"several (a sequence output): give sample_weight of shape (samples, timesteps)"
        )
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError("class_weight: the targets hold NaN or inf, which name no class")
    classes, index = np.unique(np.round(y).astype(np.int64), return_inverse=True)
    per_class = [float(class_weight.get(int(c), 1.0)) for c in classes]
    return as_weights(per_class, "class_weight values")[index.reshape(-1)]


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
