"""What the 1-D layers share (Conv1D, pooling, reshaping): sliding windows over the time
axis, Keras's tuple and format arguments, and :class:`DropsMask`.

A layer over windows of ``size`` steps, ``stride`` apart, taps ``dilation`` apart, reads
the input padded on the time axis, ``xp = pad(x, (left, right))``, through one strided view
``win[b, t, j, c] = xp[b, t*stride + j*dilation, c]`` (no copy, no loop), and its backward
adds the windows' gradients back where they were read: ``dxp[b, t*stride + j*dilation, c]
+= dwin[b, t, j, c]``, one vectorised slice per tap ``j`` (windows of one tap never overlap).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._args import positive_int
from ._base import Layer

__all__ = [
    "DropsMask",
    "WindowLayer",
    "check_3d",
    "int_tuple",
    "check_format",
    "padding_mode",
    "output_length",
    "pad_amounts",
    "windows",
    "overlap_add",
    "to_channels_last",
]


class DropsMask:
    """Mixin (before :class:`Layer`) for Keras layers that do not support masking: a mask
    reaching them is dropped, their output carries none (Keras warns and drops it)."""

    supports_masking = False

    def compute_mask(self, inputs, mask=None):
        return None


def int_tuple(value, n: int, what: str, allow_zero=False) -> tuple:
    """Keras's ``standardize_tuple``: an int, or ``n`` ints (a JSON list), as a tuple."""
    values = (value,) * n if isinstance(value, (int, np.integer)) else value
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{what} must be an int or a tuple of {n} ints, got {value!r}") from None
    if len(values) != n:
        raise ValueError(f"{what} must be an int or a tuple of {n} ints, got {value!r}")
    if allow_zero:  # paddings and croppings may be zero
        return tuple(_non_negative_int(v, what) for v in values)
    return tuple(positive_int(v, what) for v in values)


def _non_negative_int(v, what: str) -> int:
    if v == 0 and not isinstance(v, (bool, np.bool_, str)):
        return 0
    return positive_int(v, f"{what} (each >= 0)")


def check_format(value, owner: str) -> str:
    """``None`` -> ``channels_last`` (Keras's default image_data_format)."""
    fmt = "channels_last" if value is None else str(value).lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(
            f"{owner}: data_format must be 'channels_last' or 'channels_first', got {value!r}"
        )
    return fmt


def padding_mode(value, owner: str, causal=False) -> str:
    allowed = ("valid", "same", "causal") if causal else ("valid", "same")
    mode = value.lower() if isinstance(value, str) else value
    if mode not in allowed:
        raise ValueError(f"{owner}: padding must be one of {allowed}, got {value!r}")
    return mode


def output_length(length, size, stride, padding, dilation=1):
    """Output steps (Keras's ``compute_conv_output_shape``); ``None`` for unknown length.

    valid: ``floor((T - dilation*(size-1) - 1) / stride) + 1``; same and causal:
    ``ceil(T / stride)``.
    """
    if length is None:
        return None
    if padding == "valid":
        return (length - dilation * (size - 1) - 1) // stride + 1
    return (length + stride - 1) // stride


def pad_amounts(length, size, stride, padding, dilation=1) -> tuple[int, int]:
    """Steps added before and after the input: ``same`` as TensorFlow and Keras's backends
    (the extra step after), ``causal`` all before (``dilation*(size-1)``)."""
    span = dilation * (size - 1) + 1
    if padding == "causal":
        return span - 1, 0
    if padding == "valid":
        return 0, 0
    out = output_length(length, size, stride, "same")
    total = max(0, (out - 1) * stride + span - length)
    return total // 2, total - total // 2


def windows(xp, size, stride, dilation, out_len):
    """The strided view ``win (B, out_len, size, C)`` of a padded ``xp (B, Tp, C)``."""
    span = dilation * (size - 1) + 1
    view = sliding_window_view(xp, span, axis=1)  # (B, Tp - span + 1, C, span)
    return view[:, ::stride][:, :out_len, :, ::dilation].transpose(0, 1, 3, 2)


def overlap_add(dwin, padded_len, stride, dilation):
    """The adjoint of :func:`windows`: ``dxp (B, padded_len, C)`` from ``dwin (B, To, size,
    C)``, one strided slice per tap."""
    b, out_len, size, c = dwin.shape
    dxp = np.zeros((b, padded_len, c), dwin.dtype)
    last = stride * (out_len - 1) + 1
    for j in range(size):
        dxp[:, j * dilation : j * dilation + last : stride] += dwin[:, :, j]
    return dxp


def to_channels_last(a, fmt: str):
    """``(B, C, T)`` <-> ``(B, T, C)`` for ``channels_first`` (its own inverse)."""
    return a.transpose(0, 2, 1) if fmt == "channels_first" else a


def check_3d(layer, x) -> None:
    if x.ndim != 3:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r}: expected a 3-D input (batch, steps, "
            f"channels), got shape {x.shape}"
        )


class WindowLayer(DropsMask, Layer):
    """A layer over windows of the time axis of a 3-D input (Conv1D, the pooling layers):
    ``_geometry()`` gives ``(size, stride, dilation)``; ``padding`` and ``data_format`` are
    Keras's. It works on ``(batch, steps, channels)``; ``channels_first`` inputs are
    transposed on the way in and out. The mask is dropped, as Keras's layers drop it."""

    _abstract = True  # a base class: not in LAYER_CLASSES

    padding = "valid"
    data_format = "channels_last"

    def _geometry(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def _out_len(self, steps, input_shape):
        """The output's steps for ``steps`` input steps; an error when there would be none."""
        size, stride, dilation = self._geometry()
        out = output_length(steps, size, stride, self.padding, dilation)
        if out is not None and out <= 0:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: the output would have {out} steps: input "
                f"shape {tuple(input_shape)}, window {size} (dilation {dilation}), stride "
                f"{stride}, padding={self.padding!r}"
            )
        return out

    def _output_shape(self, input_shape, channels):
        """The output shape: the steps through the windows, ``channels`` (None: the input's)."""
        b, *rest = tuple(input_shape)
        first = self.data_format == "channels_first"
        c, t = rest if first else rest[::-1]
        out = (self._out_len(t, input_shape), c if channels is None else channels)
        return (b,) + (out[::-1] if first else out)

    def _pads(self, steps) -> tuple[int, int]:
        """The steps ``padding`` adds before and after ``steps`` input steps."""
        size, stride, dilation = self._geometry()
        return pad_amounts(steps, size, stride, self.padding, dilation)

    def _padded_windows(self, x, fill=0):
        """``(win (B, To, size, C), left, padded length)`` of a channels_last ``x``: a view
        of ``x`` padded with ``fill`` on the time axis."""
        size, stride, dilation = self._geometry()
        t = x.shape[1]
        out_len = self._out_len(t, x.shape)
        left, right = self._pads(t)
        if left or right:
            x = np.pad(x, ((0, 0), (left, right), (0, 0)), constant_values=fill)
        return windows(x, size, stride, dilation, out_len), left, x.shape[1]

    def _windows_backward(self, d_win, left, padded, steps):
        """dL/dx (channels_last) from the windows' gradients: overlap-add, then unpad."""
        _, stride, dilation = self._geometry()
        return overlap_add(d_win, padded, stride, dilation)[:, left : left + steps]
