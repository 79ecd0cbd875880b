"""1-D pooling over time: MaxPooling1D, AveragePooling1D, GlobalAveragePooling1D,
GlobalMaxPooling1D (Keras's layers of those names)."""

from __future__ import annotations

import numpy as np

from .. import functional
from ._base import Layer, as_mask, shape_tuple
from ._windows import DropsMask, WindowLayer, check_3d, check_format, int_tuple, padding_mode
from ._windows import to_channels_last as _last

__all__ = [
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
]


class _Pooling1D(WindowLayer):
    """Windows of ``pool_size`` steps, ``strides`` apart (default ``pool_size``), reduced to
    one step by ``_reduce``; ``padding='same'`` pads to ``ceil(T / strides)`` windows, the
    padded steps taking no part (TensorFlow's and JAX's rule: a max over the real steps, an
    average over their count). The mask is dropped, as in Keras."""

    _config = ("pool_size", "padding", "strides", "data_format")

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):  # fmt: skip
        owner = type(self).__name__
        super().__init__(name=name, **kwargs)
        self.pool_size = int_tuple(pool_size, 1, f"{owner}: pool_size")
        self.strides = int_tuple(pool_size if strides is None else strides, 1, f"{owner}: strides")
        self.padding = padding_mode(padding, owner)
        self.data_format = check_format(data_format, owner)

    def _geometry(self):
        return self.pool_size[0], self.strides[0], 1

    _chain_kind = "pool1d"  # the core chain's op: the same reduction as call (windows.hpp)

    def _chainable(self) -> bool:
        return super()._chainable() and self.data_format == "channels_last"

    def _chain_op(self, batch):
        return ("pool1d", self.pool_size[0], self.strides[0], self.padding, self._average)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, None)

    def call(self, inputs, mask=None, training=None):
        check_3d(self, inputs)
        x = _last(inputs, self.data_format)
        self._out_len(x.shape[1], x.shape)  # no output step: an error naming the layer
        _, stride, _ = self._geometry()
        y = functional.pool1d(x, self.pool_size[0], strides=stride, padding=self._pads(x.shape[1]),
                              average=self._average)  # fmt: skip
        return _last(y, self.data_format)

    def call_train(self, x, mask, rng):
        check_3d(self, x)
        x = _last(x, self.data_format)
        y, cache = self._reduce(x)
        self._train_cache = (x.shape[1],) + cache
        return _last(y, self.data_format)

    def backward(self, dy):
        steps, left, padded, *cache = self._cached()
        d_win = self._reduce_backward(_last(np.asarray(dy), self.data_format), *cache)
        self._grads = []
        return _last(self._windows_backward(d_win, left, padded, steps), self.data_format)


class MaxPooling1D(_Pooling1D):
    """The largest value of each window: ``y[b, t, c] = max_j x[b, t*strides + j, c]``.

    Backward: each window's gradient goes to its largest step (the first, on a tie).
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):  # fmt: skip
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)

    _average = False

    def _reduce(self, x):
        win, left, padded = self._padded_windows(x, -np.inf)
        where = win.argmax(axis=2)[:, :, None]  # (B, To, 1, C)
        return np.take_along_axis(win, where, axis=2)[:, :, 0], (left, padded, where)

    def _reduce_backward(self, dy, where):
        b, out_len, _, c = where.shape
        d_win = np.zeros((b, out_len, self.pool_size[0], c), dy.dtype)
        np.put_along_axis(d_win, where, dy[:, :, None], axis=2)
        return d_win


class AveragePooling1D(_Pooling1D):
    """The mean of each window over its real (unpadded) steps.

    With ``padding='same'`` and an odd amount of padding, Keras's torch backend averages
    over copies of the edge step instead (its own departure from Keras's TensorFlow and JAX
    backends); rnncore follows the latter.
    """

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None,
                 **kwargs):  # fmt: skip
        super().__init__(pool_size, strides, padding, data_format, name, **kwargs)

    _average = True

    def _reduce(self, x):
        win, left, padded = self._padded_windows(x)
        count = self._padded_windows(np.ones((1, x.shape[1], 1), x.dtype))[0].sum(axis=2)
        return win.sum(axis=2) / count, (left, padded, count)

    def _reduce_backward(self, dy, count):
        d_mean = (dy / count)[:, :, None, :]
        return np.broadcast_to(d_mean, d_mean.shape[:2] + self.pool_size + d_mean.shape[3:])


class _GlobalPooling1D(Layer):
    """Reduces the steps axis (1, or 2 for ``channels_first``), keeping it with size 1 when
    ``keepdims``."""

    _config = ("data_format", "keepdims")

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_format(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)

    @property
    def _axis(self) -> int:
        return 2 if self.data_format == "channels_first" else 1

    def compute_output_shape(self, input_shape):
        shape = list(shape_tuple(input_shape, f"{self.name}: input shape"))
        if self.keepdims:
            shape[self._axis] = 1
        else:
            del shape[self._axis]
        return tuple(shape)

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs, mask=None, training=None):
        return self.call_train(inputs, mask, None, keep=False)

    def backward(self, dy):
        shape, weights = self._cached()
        dy = np.asarray(dy)
        if not self.keepdims:
            dy = np.expand_dims(dy, self._axis)
        self._grads = []
        return np.broadcast_to(weights * dy, shape).astype(dy.dtype)  # dx[t] = w[t] dy


class GlobalAveragePooling1D(_GlobalPooling1D):
    """The mean over the steps; with a mask, over the unmasked steps only (a fully masked
    sample gives NaN, 0/0, as in Keras). The mask is consumed."""

    def call_train(self, x, mask, rng, keep=True):
        check_3d(self, x)
        mask = as_mask(mask, (x.shape[0], x.shape[self._axis]), f"{type(self).__name__}")
        if mask is None:
            weights = np.full((1, 1, 1), 1.0 / x.shape[self._axis], x.dtype)
        else:
            m = np.expand_dims(mask, 2 if self._axis == 1 else 1).astype(x.dtype)
            with np.errstate(invalid="ignore", divide="ignore"):
                weights = m / m.sum(axis=self._axis, keepdims=True)
        if keep:
            self._train_cache = (x.shape, weights)
        # y = sum_t w[t] x[t], w = mask / count (masked steps count zero, NaN stays out)
        y = np.where(weights != 0, x, 0) * weights
        return y.sum(axis=self._axis, keepdims=self.keepdims)


class GlobalMaxPooling1D(DropsMask, _GlobalPooling1D):
    """The largest value over all steps. As Keras's, it does not read the mask: masked steps
    take part, and the mask is dropped. Backward: to the largest step (the first, on a tie).
    """

    def call_train(self, x, mask, rng, keep=True):
        check_3d(self, x)
        where = x.argmax(axis=self._axis)
        where = np.expand_dims(where, self._axis)
        y = np.take_along_axis(x, where, axis=self._axis)
        if keep:
            hit = np.zeros(x.shape, x.dtype)
            np.put_along_axis(hit, where, 1, axis=self._axis)
            self._train_cache = (x.shape, hit)
        return y if self.keepdims else y.squeeze(self._axis)
