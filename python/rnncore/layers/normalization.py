"""``LayerNormalization`` and ``BatchNormalization`` (Keras 3's formulas, weights and masks).

Both normalise ``x`` by a mean ``mu`` and a biased variance ``var`` over some axes::

    x_hat = (x - mu) / sqrt(var + epsilon)          y = gamma * x_hat + beta

LayerNormalization over ``axis`` of each sample (its statistics are never stored);
BatchNormalization per channel (``axis``) over all the other axes of the batch in training,
and with its moving statistics at inference. The backward pass goes through ``mu`` and
``var`` (:func:`_normalize_backward`).
"""

from __future__ import annotations

import numpy as np

from .. import functional, utils
from . import initializers
from ._base import Layer, UnsupportedArgumentError, require_default, shape_tuple
from ._multi import ForwardCache

__all__ = ["LayerNormalization", "BatchNormalization"]

#: Keras's ``backend.epsilon()``, added to the count of unmasked entries (BatchNormalization)
_COUNT_EPSILON = 1e-7


def _moments(x, axes: tuple, weight=None):
    """``(mu, x - mu, var, count)`` over ``axes`` (kept as size-1 axes).

    With ``weight`` (1 where an entry counts, 0 where masked; Keras's masked moments):
    ``count = sum(weight) + 1e-7``, ``mu = sum(weight x) / count`` and
    ``var = sum(weight (x - mu)^2) / count``; else the plain mean over the ``N`` entries.
    """
    if weight is None:
        count = np.prod([x.shape[a] for a in axes])
        mu = np.mean(x, axis=axes, keepdims=True)
        xc = x - mu
        return mu, xc, np.mean(xc * xc, axis=axes, keepdims=True), count
    count = np.sum(weight, axis=axes, keepdims=True) + _COUNT_EPSILON
    mu = np.sum(weight * x, axis=axes, keepdims=True) / count
    xc = x - mu
    wxc = weight * xc
    return mu, xc, np.sum(wxc * xc, axis=axes, keepdims=True) / count, count


def _normalize_backward(dz, x, xc, r, axes, count, weight=None, centered=True):
    """dL/dx through ``z = (x - mu) r`` (``centered``; ``z = x r`` for rms scaling), where
    ``r = (var + eps)^-1/2`` and ``mu``, ``var`` are :func:`_moments` of ``x`` with weight
    ``w`` (1 when None) and count ``c``::

        dr   = sum(dz (x - mu))                       [sum(dz x) when not centered]
        dvar = -r^3 / 2 * dr
        dmu  = -r sum(dz) + dvar * (-2/c) sum(w (x - mu))   [no -r sum(dz) when not centered]
        dx   = dz r + dvar * 2 w (x - mu) / c + dmu * w / c
    """
    w = 1.0 if weight is None else weight
    dvar = -0.5 * r**3 * np.sum(dz * (xc if centered else x), axis=axes, keepdims=True)
    dmu = dvar * (-2.0 / count) * np.sum(w * xc, axis=axes, keepdims=True)
    if centered:
        dmu = dmu - r * np.sum(dz, axis=axes, keepdims=True)
    return dz * r + dvar * (2.0 / count) * (w * xc) + dmu * (w / count)


class _Normalization(Layer):
    """The parts both share: Keras's refusals, the affine weights, building from them."""

    def _refuse(self, beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint):
        """Keras's regularizers and constraints: refused unless None."""
        args = dict(beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                    beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)  # fmt: skip
        require_default(type(self).__name__, **{k: (v, None) for k, v in args.items()})

    def _init_affine(self, epsilon, center, scale, beta_initializer, gamma_initializer):
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.gamma = self.beta = None

    def _known(self, shape, input_shape):
        """``shape`` (the weights' shape, read off the input shape), which must be known."""
        if None in shape:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: the input's size on axis {self.axis} "
                f"must be known, got input shape {input_shape}"
            )
        return shape

    def _param(self, name, shape, initializer, rng, trainable=True):
        return self.add_weight(name, shape, initializer, rng, trainable=trainable)

    def _build_from_weights(self, weights):
        # a per-feature layer on the last axis builds from its weights' length
        if weights and np.ndim(weights[0]) == 1 and self.axis in (-1, [-1]):
            return self.build((None, np.shape(weights[0])[0]))
        return super()._build_from_weights(weights)

    def _affine_grads(self, dy, x_hat, axes):
        """``[dgamma, dbeta]`` (those the layer has): sums of ``dy x_hat`` and ``dy``."""
        grads = []
        if self.gamma is not None:
            grads.append(np.sum(dy * x_hat, axis=axes).reshape(self.gamma.shape))
        if self.beta is not None:
            grads.append(np.sum(dy, axis=axes).reshape(self.beta.shape))
        return grads


class LayerNormalization(ForwardCache, _Normalization):
    """Normalises each sample over ``axis`` (Keras's ``LayerNormalization``)::

        y = (x - mean) / sqrt(var + epsilon) * gamma + beta

    mean and (biased) variance over ``axis``; ``gamma`` and ``beta`` have the shape of the
    input on ``axis``. Keras's deprecated ``rms_scaling=True`` computes
    ``y = x / sqrt(var + epsilon) * gamma`` (the variance, not the mean square, as Keras;
    no beta). The mask passes through unchanged.

    At inference over the last axis (``axis=-1``, or the last axis's index) in float32 or
    float64 it runs in the core (``functional.layer_norm``, norm.hpp: statistics in double)
    and in a model's native chain; other axes, and training, run the NumPy formulas here.
    """

    _config = ("axis", "epsilon", "center", "scale", "rms_scaling", "beta_initializer",
               "gamma_initializer")  # fmt: skip
    _chain_kind = "layer_norm"

    def _chainable(self) -> bool:
        # over the last axis only (the core normalises rows): axis -1, or the last axis of
        # the rank the layer was built for
        shape = self._build_input_shape
        last = [-1] if shape is None else [-1, len(shape) - 1]
        return super()._chainable() and self.axis in ([a] for a in last)

    def _chain_op(self, batch):
        gamma = None if self.gamma is None else self.gamma.value
        beta = None if self.beta is None else self.beta.value
        return ("layer_norm", gamma, beta, self.epsilon, self.rms_scaling)

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, **kwargs):  # fmt: skip
        self._refuse(beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)
        rms_scaling = kwargs.pop("rms_scaling", False)  # Keras also takes it from kwargs
        super().__init__(**kwargs)
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if not axes or any(
            isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axes
        ):
            raise TypeError(
                f"LayerNormalization: axis must be an int or a list of ints, got {axis!r}"
            )
        if min(axes) < 0 <= max(axes):
            # Keras sorts the given values and reshapes gamma in that order, which scrambles
            # gamma when negative and non-negative axes are mixed
            raise UnsupportedArgumentError(
                f"LayerNormalization: axis={axis!r} mixes negative and non-negative axes, "
                f"which rnncore does not support; give all axes of one sign"
            )
        self.axis = [int(a) for a in axes] if isinstance(axis, (list, tuple)) else int(axis)
        self._init_affine(epsilon, center, scale, beta_initializer, gamma_initializer)
        self.rms_scaling = bool(rms_scaling)

    def _axes(self, ndim: int) -> tuple:
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"LayerNormalization {self.name!r}: axis {a} is out of range for inputs "
                    f"of rank {ndim}"
                )
        return tuple(sorted(a % ndim for a in axes))

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        axes = self._axes(len(input_shape))
        self.axis = sorted(self.axis) if isinstance(self.axis, list) else [self.axis]  # Keras
        shape = self._known(tuple(input_shape[a] for a in axes), input_shape)
        rng = np.random.default_rng(utils.draw_seed(None))
        if self.scale or self.rms_scaling:
            self.gamma = self._param("gamma", shape, self.gamma_initializer, rng)
        if self.center and not self.rms_scaling:
            self.beta = self._param("beta", shape, self.beta_initializer, rng)
        super().build(input_shape)

    def _check_size(self, x, axes):
        """The input's size on ``axes`` must be the weights' (when it has any)."""
        weight = self.gamma if self.gamma is not None else self.beta
        if weight is not None and weight.shape != tuple(x.shape[a] for a in axes):
            raise ValueError(
                f"LayerNormalization {self.name!r}: expected inputs of size {weight.shape} "
                f"on axis {self.axis}, got shape {x.shape}"
            )

    def _native(self, x, axes):
        """The core's result for ``x`` (over the last axis, float32 or float64), else None."""
        if axes != (x.ndim - 1,) or x.dtype not in (np.float32, np.float64):
            return None
        self._check_size(x, axes)
        gamma = None if self.gamma is None else self.gamma.value
        beta = None if self.beta is None else self.beta.value
        return functional.layer_norm(x, gamma, beta, epsilon=self.epsilon,
                                     rms_scaling=self.rms_scaling)  # fmt: skip

    def call(self, inputs, mask=None, training=None):
        y = self._native(inputs, self._axes(inputs.ndim))
        return self._forward(inputs)[0] if y is None else y

    def _forward(self, x, native=True):
        """``(y, the cache backward reads)``; ``y`` from the core where it runs (so training
        and inference give the same bits), else (or with ``native=False``) from NumPy."""
        axes = self._axes(x.ndim)
        self._check_size(x, axes)
        bshape = tuple(x.shape[k] if k in axes else 1 for k in range(x.ndim))
        mu, xc, var, count = _moments(x, axes)
        r = 1.0 / np.sqrt(var + self.epsilon)
        x_hat = (x if self.rms_scaling else xc) * r
        cache = (x, xc, r, x_hat, axes, count, bshape)
        y = self._native(x, axes) if native else None
        if y is not None:
            return y, cache
        y = x_hat
        if self.gamma is not None:
            y = y * self.gamma.value.reshape(bshape)
        if self.beta is not None:
            y = y + self.beta.value.reshape(bshape)
        return y.astype(x.dtype, copy=False), cache

    def backward(self, dy):
        x, xc, r, x_hat, axes, count, bshape = self._cached()
        dy = np.asarray(dy)
        dz = dy if self.gamma is None else dy * self.gamma.value.reshape(bshape)
        others = tuple(k for k in range(x.ndim) if k not in axes)
        self._grads = self._affine_grads(dy, x_hat, others)
        dx = _normalize_backward(dz, x, xc, r, axes, count, centered=not self.rms_scaling)
        return dx.astype(x.dtype, copy=False)

    def compute_output_shape(self, input_shape):
        self._axes(len(input_shape))
        return tuple(input_shape)


class BatchNormalization(_Normalization):
    """Normalises each channel (``axis``) over the batch (Keras's ``BatchNormalization``)::

        y = (x - mean) / sqrt(var + epsilon) * gamma + beta

    At inference ``mean``, ``var`` are the weights ``moving_mean``, ``moving_variance``. In
    training (``fit``, or a call with ``training=True``; not when ``trainable=False``) they
    are the batch's mean and biased variance over every axis but ``axis``, and the training
    forward updates the moving statistics as Keras does::

        moving_mean = moving_mean * momentum + mean * (1 - momentum)   (same for the variance)

    A mask (the input's shape less the last axis) restricts the batch statistics to the
    unmasked entries, dividing by their count + 1e-7 (Keras's masked moments); the output is
    normalised everywhere and the mask passes through. Weights, in Keras's order: ``gamma``
    (if ``scale``), ``beta`` (if ``center``), ``moving_mean``, ``moving_variance`` (the
    last two not trainable).
    """

    _config = ("axis", "momentum", "epsilon", "center", "scale", "beta_initializer",
               "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer",
               "synchronized", "renorm", "renorm_clipping", "renorm_momentum")  # fmt: skip

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, synchronized=False, **kwargs):  # fmt: skip
        self._refuse(beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)
        # renorm_clipping and renorm_momentum only act with renorm=True (Keras ignores them)
        require_default("BatchNormalization", renorm=(renorm, False),
                        synchronized=(synchronized, False))  # fmt: skip
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)) and len(axis) == 1:  # as Keras 2 configs write it
            axis = axis[0]
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization: axis must be an integer, got {axis!r}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self._init_affine(epsilon, center, scale, beta_initializer, gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.synchronized = False
        self.renorm = False
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.moving_mean = self.moving_variance = None

    def _channel_axis(self, ndim: int) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(
                f"BatchNormalization {self.name!r}: axis {self.axis} is out of range for "
                f"inputs of rank {ndim}"
            )
        return self.axis % ndim

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        shape = self._known((input_shape[self._channel_axis(len(input_shape))],), input_shape)
        rng = np.random.default_rng(utils.draw_seed(None))
        if self.scale:
            self.gamma = self._param("gamma", shape, self.gamma_initializer, rng)
        if self.center:
            self.beta = self._param("beta", shape, self.beta_initializer, rng)
        self.moving_mean = self._param(
            "moving_mean", shape, self.moving_mean_initializer, rng, trainable=False
        )
        self.moving_variance = self._param(
            "moving_variance", shape, self.moving_variance_initializer, rng, trainable=False
        )
        super().build(input_shape)

    def _check(self, x, mask):
        """``(channel axis, reduction axes, broadcast shape, mask weight or None)``."""
        axis = self._channel_axis(x.ndim)
        c = self.moving_mean.shape[0]
        if x.shape[axis] != c:
            raise ValueError(
                f"BatchNormalization {self.name!r}: expected {c} channels on axis "
                f"{self.axis}, got inputs of shape {x.shape}"
            )
        weight = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != x.shape[:-1]:
                raise ValueError(
                    f"BatchNormalization {self.name!r}: the mask must have the inputs' shape "
                    f"less the last axis, {x.shape[:-1]}, got {mask.shape}"
                )
            weight = (mask if mask.dtype == np.bool_ else mask != 0)[..., None].astype(x.dtype)
            weight = np.broadcast_to(weight, x.shape)
        bshape = tuple(c if k == axis else 1 for k in range(x.ndim))
        return axis, tuple(k for k in range(x.ndim) if k != axis), bshape, weight

    def _affine(self, x, mean, var, bshape):
        """Keras's ``batch_normalization``: ``(x - mean) * (rsqrt(var + eps) * gamma) + beta``;
        returns ``(y, r)`` with ``r = rsqrt(var + eps)``."""
        r = 1.0 / np.sqrt(var + self.epsilon)
        scale = r if self.gamma is None else r * self.gamma.value.reshape(bshape)
        y = (x - mean) * scale
        if self.beta is not None:
            y = y + self.beta.value.reshape(bshape)
        return y.astype(x.dtype, copy=False), r

    def call(self, inputs, mask=None, training=None):
        if training and self.trainable:
            return self.call_train(inputs, mask, None)
        _, _, bshape, _ = self._check(inputs, mask)
        mean = self.moving_mean.value.reshape(bshape)
        return self._affine(inputs, mean, self.moving_variance.value.reshape(bshape), bshape)[0]

    def call_train(self, x, mask, rng):
        _, axes, bshape, weight = self._check(x, mask)
        if not self.trainable:  # Keras: the moving statistics, and no update
            mean = self.moving_mean.value.reshape(bshape)
            y, r = self._affine(x, mean, self.moving_variance.value.reshape(bshape), bshape)
            self._train_cache = (x, x - mean, r, axes, bshape, None, None, False)
            return y
        mean, xc, var, count = _moments(x, axes, weight)
        m = self.momentum
        for v, batch in ((self.moving_mean, mean), (self.moving_variance, var)):
            v.assign(v.value * m + batch.reshape(v.shape).astype(x.dtype) * (1.0 - m))
        y, r = self._affine(x, mean, var, bshape)
        self._train_cache = (x, xc, r, axes, bshape, count, weight, True)
        return y

    def backward(self, dy):
        x, xc, r, axes, bshape, count, weight, batch_stats = self._cached()
        dy = np.asarray(dy)
        dz = dy if self.gamma is None else dy * self.gamma.value.reshape(bshape)
        self._grads = self._affine_grads(dy, xc * r, axes) + [None, None]
        if not batch_stats:  # the moving statistics are constants
            return (dz * r).astype(x.dtype, copy=False)
        dx = _normalize_backward(dz, x, xc, r, axes, count, weight)
        return dx.astype(x.dtype, copy=False)

    def compute_output_shape(self, input_shape):
        self._channel_axis(len(input_shape))
        return tuple(input_shape)
