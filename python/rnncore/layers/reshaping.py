"""Layers that move values without arithmetic (Keras's reshaping layers): RepeatVector,
Flatten, Reshape, Permute, ZeroPadding1D, Cropping1D, UpSampling1D.

None of them supports masking in Keras: a mask reaching them is dropped (Keras warns). Each
backward is the adjoint of its forward: the same move run backwards (a sum where the
forward copied a value several times, zeros where it dropped one).
"""

from __future__ import annotations

import math

import numpy as np

from ._base import Layer, positive_int, shape_tuple
from ._windows import DropsMask, check_format, int_tuple, to_channels_last

__all__ = ["RepeatVector", "Flatten", "Reshape", "Permute", "ZeroPadding1D", "Cropping1D",
           "UpSampling1D"]  # fmt: skip


class _Reshaping(DropsMask, Layer):
    """A weightless layer whose training forward is its inference forward; ``_ndim``, when
    set, is the input rank it takes."""

    _ndim: int | None = None

    def _check(self, x):
        if self._ndim is not None and x.ndim != self._ndim:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: expected a {self._ndim}-D input, got "
                f"shape {x.shape}"
            )

    def call(self, inputs, mask=None, training=None):
        self._check(inputs)
        return self._forward(inputs)

    def call_train(self, x, mask, rng):
        self._check(x)
        self._train_cache = (x.shape,)
        return self._forward(x)

    def backward(self, dy):
        (shape,) = self._cached()
        self._grads = []
        return self._backward(np.asarray(dy), shape)


class RepeatVector(_Reshaping):
    """``(batch, features)`` -> ``(batch, n, features)``, the vector repeated ``n`` times."""

    _ndim = 2
    _config = ("n",)

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = positive_int(n, "RepeatVector: n")

    def _forward(self, x):
        return np.repeat(x[:, None, :], self.n, axis=1)

    def _backward(self, dy, shape):
        return dy.sum(axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])


class Flatten(_Reshaping):
    """``(batch, ...)`` -> ``(batch, product of the rest)``; ``channels_first`` moves the
    channel axis last first (Keras's order of the flattened values)."""

    _config = ("data_format",)

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_format(data_format, "Flatten")

    def _order(self, ndim) -> tuple:
        """The axes in the order they are flattened."""
        if self.data_format == "channels_first" and ndim > 2:
            return (0, *range(2, ndim), 1)
        return tuple(range(ndim))

    def _forward(self, x):
        return x.transpose(self._order(x.ndim)).reshape(x.shape[0], -1)

    def _backward(self, dy, shape):
        order = self._order(len(shape))
        return dy.reshape(tuple(shape[i] for i in order)).transpose(np.argsort(order))

    def compute_output_shape(self, input_shape):
        rest = tuple(input_shape)[1:]
        size = None if None in rest else math.prod(rest)
        return (input_shape[0], size)


class Reshape(_Reshaping):
    """``(batch, ...)`` -> ``(batch, *target_shape)``; one entry may be -1 (inferred)."""

    _config = ("target_shape",)

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        target = shape_tuple(target_shape, "Reshape: target_shape")
        if any(d is None or d < -1 for d in target) or target.count(-1) > 1:
            raise ValueError(
                f"Reshape: target_shape must hold non-negative sizes and at most one -1, got "
                f"{target_shape!r}"
            )
        self.target_shape = target

    def _resolve(self, input_shape):
        """The output's shape after the batch: -1 replaced when the input size is known."""
        rest = tuple(input_shape)[1:]
        if None in rest:
            return tuple(None if d == -1 else d for d in self.target_shape)
        size, known = math.prod(rest), math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape and known and size % known == 0:
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if -1 not in self.target_shape and known == size:
            return self.target_shape
        raise ValueError(
            f"Reshape {self.name!r}: cannot reshape an input of shape {tuple(input_shape)} to "
            f"(batch, *{self.target_shape}): the total size must be unchanged"
        )

    def _forward(self, x):
        return x.reshape((x.shape[0],) + self._resolve(x.shape))

    def _backward(self, dy, shape):
        return dy.reshape(shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._resolve(input_shape)


class Permute(_Reshaping):
    """Permutes the axes after the batch: ``dims`` is a permutation of ``1 .. rank-1``."""

    _config = ("dims",)

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(
                f"Permute: dims must be a permutation of 1..{len(self.dims)} (the axes after "
                f"the batch), got {dims!r}"
            )
        self._ndim = len(self.dims) + 1

    def _forward(self, x):
        return x.transpose((0,) + self.dims)

    def _backward(self, dy, shape):
        return dy.transpose(np.argsort((0,) + self.dims))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)


class _TimeLayer(_Reshaping):
    """A 3-D input whose steps axis is 1 (2 with ``data_format='channels_first'``)."""

    _ndim = 3
    data_format = "channels_last"

    def _forward(self, x):
        x = to_channels_last(x, self.data_format)
        return to_channels_last(self._steps(x), self.data_format)

    def _backward(self, dy, shape):
        dy = to_channels_last(dy, self.data_format)
        return to_channels_last(self._steps_backward(dy), self.data_format)

    def compute_output_shape(self, input_shape):
        shape = list(shape_tuple(input_shape, f"{self.name}: input shape"))
        axis = 2 if self.data_format == "channels_first" else 1
        if shape[axis] is not None:
            shape[axis] = self._length(shape[axis], input_shape)
        return tuple(shape)


class ZeroPadding1D(_TimeLayer):
    """``padding = (before, after)`` zero steps added (an int pads both sides)."""

    _config = ("padding", "data_format")

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_format(data_format, "ZeroPadding1D")
        self.padding = int_tuple(padding, 2, "ZeroPadding1D: padding", allow_zero=True)

    def _steps(self, x):
        return np.pad(x, ((0, 0), self.padding, (0, 0)))

    def _steps_backward(self, dy):
        return dy[:, self.padding[0] : dy.shape[1] - self.padding[1]]

    def _length(self, steps, input_shape):
        return steps + sum(self.padding)


class Cropping1D(_TimeLayer):
    """``cropping = (before, after)`` steps removed (an int crops both sides)."""

    _config = ("cropping",)

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.cropping = int_tuple(cropping, 2, "Cropping1D: cropping", allow_zero=True)

    def _steps(self, x):
        self._length(x.shape[1], x.shape)
        return x[:, self.cropping[0] : x.shape[1] - self.cropping[1]]

    def _steps_backward(self, dy):
        return np.pad(dy, ((0, 0), self.cropping, (0, 0)))

    def _length(self, steps, input_shape):
        if steps - sum(self.cropping) <= 0:
            raise ValueError(
                f"Cropping1D {self.name!r}: cropping={self.cropping} must leave at least one "
                f"step of the input, of shape {tuple(input_shape)}"
            )
        return steps - sum(self.cropping)


class UpSampling1D(_TimeLayer):
    """Each step repeated ``size`` times: ``y[:, t] = x[:, t // size]``."""

    _config = ("size",)

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = positive_int(size, "UpSampling1D: size")

    def _steps(self, x):
        return np.repeat(x, self.size, axis=1)

    def _steps_backward(self, dy):
        b, t, c = dy.shape
        return dy.reshape(b, t // self.size, self.size, c).sum(axis=2)

    def _length(self, steps, input_shape):
        return steps * self.size
