"""Conv1D: a 1-D convolution over time (Keras's ``keras.layers.Conv1D``), as one matrix
product over the unfolded windows."""

from __future__ import annotations

import numpy as np

from .. import activations, functional, utils
from ._base import check_allocation, positive_int, require_default, shape_tuple
from ._windows import (
    WindowLayer,
    check_format,
    int_tuple,
    padding_mode,
    to_channels_last,
)
from .core import set_kernel_options

__all__ = ["Conv1D"]


class Conv1D(WindowLayer):
    """``y[b, t, f] = act(bias[f] + sum_{j, c} x_pad[b, t*stride + j*dilation, c]
    kernel[j, c, f])``, ``c`` over the input channels of the group of filter ``f``.

    Weights: ``kernel (kernel_size, input_channels // groups, filters)``, ``bias
    (filters,)``. ``padding``: ``'valid'`` (no padding), ``'same'`` (``ceil(T / stride)``
    steps; the padding split as TensorFlow does, the odd step after), ``'causal'`` (all of it
    before: ``y[t]`` sees no input after ``t``). ``data_format='channels_first'`` takes and
    gives ``(batch, channels, steps)``. The layer drops a mask, as Keras's Conv1D does.

    The windows are one strided view of the padded input; the forward is one (batched over
    groups) matrix product of those windows, unfolded to rows ``(batch*steps, kernel_size *
    channels)``, with the kernel. At inference that product is the core's packed Dense
    product with the bias and activation fused (:meth:`_product`): it computes each row with
    the same FMA chain however many rows the call has, so an output step's bits do not
    depend on the batch or the sequence around it, which is what lets a stream carry the
    causal window between calls (:meth:`causal_step`) and match the whole sequence bit for
    bit. Training keeps the NumPy product (its unfolded windows are the backward's cache);
    the backward is two products (``dW = cols^T dz``, ``dcols =
    dz W^T``) and an overlap-add of ``dcols`` with one slice per kernel tap.
    """

    _sequence_input = True
    _config = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
               "groups", "activation", "use_bias", "kernel_initializer",
               "bias_initializer")  # fmt: skip

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):  # fmt: skip
        require_default("Conv1D", kernel_regularizer=(kernel_regularizer, None),
                        bias_regularizer=(bias_regularizer, None),
                        activity_regularizer=(activity_regularizer, None),
                        kernel_constraint=(kernel_constraint, None),
                        bias_constraint=(bias_constraint, None),
                        lora_rank=(kwargs.pop("lora_rank", None), None),
                        lora_alpha=(kwargs.pop("lora_alpha", None), None))  # fmt: skip
        seed = kwargs.pop("seed", None)
        super().__init__(**kwargs)
        self.filters = positive_int(filters, "Conv1D: filters")
        self.kernel_size = int_tuple(kernel_size, 1, "Conv1D: kernel_size")
        self.strides = int_tuple(strides, 1, "Conv1D: strides")
        self.padding = padding_mode(padding, "Conv1D", causal=True)
        self.data_format = check_format(data_format, "Conv1D")
        self.dilation_rate = int_tuple(dilation_rate, 1, "Conv1D: dilation_rate")
        self.groups = positive_int(groups, "Conv1D: groups")
        set_kernel_options(self, activation, use_bias, kernel_initializer, bias_initializer, seed)
        if self.filters % self.groups:
            raise ValueError(
                f"Conv1D: filters={self.filters} must be divisible by groups={self.groups}"
            )
        if self.strides[0] > 1 and self.dilation_rate[0] > 1:
            raise ValueError(
                f"Conv1D: strides > 1 is not supported with dilation_rate > 1 (as in Keras), "
                f"got strides={self.strides} and dilation_rate={self.dilation_rate}"
            )
        self.kernel = self.bias = None

    # ---- shapes -----------------------------------------------------------------------

    def _channels(self, shape) -> int | None:
        return shape[1] if self.data_format == "channels_first" else shape[-1]

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        channels = self._channels(input_shape) if len(input_shape) == 3 else None
        if channels is None:
            raise ValueError(
                f"Conv1D {self.name!r}: input shape must be (batch, steps, channels) "
                f"({self.data_format}) with a known channel count, got {input_shape}"
            )
        if channels % self.groups:
            raise ValueError(
                f"Conv1D {self.name!r}: the input's {channels} channels must be divisible by "
                f"groups={self.groups} (input shape {input_shape})"
            )
        self.compute_output_shape(input_shape)  # a non-positive length fails here
        kernel_shape = self.kernel_size + (channels // self.groups, self.filters)
        check_allocation(
            f"Conv1D {self.name!r} (filters={self.filters})",
            [kernel_shape] + ([(self.filters,)] if self.use_bias else []),
            self._np_dtype,
        )
        rng = np.random.default_rng(utils.draw_seed(self.seed))
        self.kernel = self.add_weight("kernel", kernel_shape, self.kernel_initializer, rng)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, rng)
        super().build(input_shape)

    def _build_from_weights(self, weights):
        if weights and np.ndim(weights[0]) == 3:
            channels = np.shape(weights[0])[1] * self.groups
            first = self.data_format == "channels_first"
            return self.build((None, channels, None) if first else (None, None, channels))
        return super()._build_from_weights(weights)

    def _geometry(self):
        return self.kernel_size[0], self.strides[0], self.dilation_rate[0]

    _chain_kind = "conv1d"  # the core chain's op: the same product as call (windows.hpp)

    def _chainable(self) -> bool:
        return super()._chainable() and self.data_format == "channels_last"

    def _chain_op(self, batch):
        bias = self.bias.value if self.use_bias else None
        _, stride, dilation = self._geometry()
        return ("conv1d", self.kernel.value, bias, self.groups, stride, dilation, self.padding,
                self.activation)  # fmt: skip

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, self.filters)

    # ---- forward and backward -----------------------------------------------------------

    def _check_input(self, x):
        channels = self.kernel.shape[1] * self.groups
        if x.ndim != 3 or self._channels(x.shape) != channels:
            first = self.data_format == "channels_first"
            want = "(batch, channels, steps)" if first else "(batch, steps, channels)"
            raise ValueError(
                f"Conv1D {self.name!r}: expected input of shape {want} with {channels} "
                f"channels, got {x.shape}"
            )

    def _unfold(self, x):
        """``(cols (g, B*To, k*Cg), left, Tp)`` of a channels_last ``x (B, T, C)``."""
        win, left, padded = self._padded_windows(x)  # (B, To, k, C), a view
        return self._cols(win), left, padded

    def _cols(self, win):
        """The windows ``(B, To, k, C)`` as rows (group, sample*step), columns (tap, channel
        of the group): the one copy."""
        b, steps, k, c = win.shape
        g = self.groups
        cols = win.reshape(b, steps, k, g, c // g).transpose(3, 0, 1, 2, 4)
        return cols.reshape(g, -1, k * (c // g))

    def _grouped_kernel(self):
        """The kernel as ``(g, k*Cg, F/g)``: each group's columns as one matrix."""
        k, cg, f = self.kernel.shape
        g = self.groups
        grouped = self.kernel.value.reshape(k, cg, g, f // g).transpose(2, 0, 1, 3)
        return grouped.reshape(g, k * cg, f // g)

    def _forward(self, x):
        x = to_channels_last(x, self.data_format)
        cols, left, padded = self._unfold(x)
        z = np.matmul(cols, self._grouped_kernel())  # (g, B*To, F/g)
        z = z.transpose(1, 0, 2).reshape(x.shape[0], -1, self.filters)
        if self.use_bias:
            z += self.bias.value
        y = activations.get(self.activation)(z).astype(x.dtype, copy=False)
        return y, (cols, x.shape, left, padded)

    def _product(self, cols, batch):
        """``act(cols W + b)`` as ``(batch, steps, filters)``, through the core's Dense
        product: one call per group, bias and activation fused (softmax, which spans the
        groups' filters, after them)."""
        g = self.groups
        kernel = self._grouped_kernel()
        bias = self.bias.value if self.use_bias else None
        if g == 1:
            z = functional.dense(cols[0], kernel[0], bias, self.activation)
        else:
            per_group = "linear" if self.activation == "softmax" else self.activation
            fg = self.filters // g
            z = np.concatenate(
                [
                    functional.dense(
                        cols[i],
                        kernel[i],
                        None if bias is None else bias[i * fg : (i + 1) * fg],
                        per_group,
                    )
                    for i in range(g)
                ],
                axis=-1,
            )
            if per_group != self.activation:
                z = activations.softmax(z)
        return z.reshape(batch, -1, self.filters)

    def call(self, inputs, mask=None, training=None):
        self._check_input(inputs)
        x = to_channels_last(inputs, self.data_format)
        self._out_len(x.shape[1], x.shape)  # no output step: an error naming the layer
        _, stride, dilation = self._geometry()
        y = functional.conv1d(
            x,
            self.kernel.value,
            self.bias.value if self.use_bias else None,
            strides=stride,
            padding=self._pads(x.shape[1]),
            dilation=dilation,
            groups=self.groups,
            activation=self.activation,
        )
        return to_channels_last(y, self.data_format)

    def causal_width(self) -> int:
        """The input steps a causal convolution carries between calls of a stream:
        ``(kernel_size - 1) * dilation_rate``."""
        return (self.kernel_size[0] - 1) * self.dilation_rate[0]

    def causal_step(self, x, window):
        """A causal convolution continued across calls: ``(y (B, T, filters), the next
        window)`` from ``x (B, T, channels)`` (channels_last) and ``window (B,
        causal_width(), channels)``, the inputs of the steps before it (zeros at a stream's
        start: the causal padding). The outputs are, bit for bit, those of the same steps
        in one call on the whole sequence (each row's product is independent of the rows
        around it, see the class's help). Only for ``padding='causal'``, ``strides=1``,
        ``channels_last``."""
        if self.padding != "causal" or self.strides[0] != 1 or self.data_format != "channels_last":
            raise ValueError(
                f"Conv1D {self.name!r}: causal_step needs padding='causal', strides=1 and "
                f"data_format='channels_last', got padding={self.padding!r}, strides="
                f"{self.strides}, data_format={self.data_format!r}"
            )
        self._check_input(x)
        width = self.causal_width()
        if window.shape != (x.shape[0], width, x.shape[2]):
            raise ValueError(
                f"Conv1D {self.name!r}: causal_step's window must have shape "
                f"{(x.shape[0], width, x.shape[2])}, got {window.shape}"
            )
        xp = np.concatenate([window, x], axis=1)
        k, _, dilation = self._geometry()
        # the windows gathered by one index (B, T, k, C): the values of :func:`windows`'
        # view, without its per-call cost (a few steps is the common call here)
        taps = np.arange(x.shape[1])[:, None] + dilation * np.arange(k)
        y = self._product(self._cols(xp[:, taps]), x.shape[0])
        return y, xp[:, xp.shape[1] - width :].copy()

    def call_train(self, x, mask, rng):
        self._check_input(x)
        y, cache = self._forward(x)
        self._train_cache = (y,) + cache
        return to_channels_last(y, self.data_format)

    def backward(self, dy):
        y, cols, (b, t, c), left, padded = self._cached()
        dy = to_channels_last(np.asarray(dy, dtype=y.dtype), self.data_format)
        dz = activations.gradient(self.activation, y, dy).astype(y.dtype, copy=False)
        g, k, out_len = self.groups, self.kernel_size[0], y.shape[1]
        dz_g = dz.reshape(b * out_len, g, self.filters // g).transpose(1, 0, 2)
        # dW = cols^T dz per group; back to (k, Cg, F) with the groups' filters side by side
        d_kernel = np.matmul(cols.transpose(0, 2, 1), dz_g)
        d_kernel = d_kernel.reshape(g, k, c // g, -1).transpose(1, 2, 0, 3)
        d_kernel = d_kernel.reshape(self.kernel.shape)
        self._grads = [d_kernel] + ([dz.sum(axis=(0, 1))] if self.use_bias else [])
        # dcols = dz W^T, then each window's gradient added back where it was read
        d_cols = np.matmul(dz_g, self._grouped_kernel().transpose(0, 2, 1))
        d_win = d_cols.reshape(g, b, out_len, k, c // g).transpose(1, 2, 3, 0, 4)
        d_win = d_win.reshape(b, out_len, k, c)
        return to_channels_last(self._windows_backward(d_win, left, padded, t), self.data_format)
