"""One layer of :func:`~.export.to_onnx` (:func:`export_layer`): the recurrent ones go to
:mod:`.export_recurrent`; here Dense, Activation, Softmax, the identities at inference,
Masking, TimeDistributed, ``Embedding``, ``Conv1D``, the pooling layers, the reshaping
layers, ``LayerNormalization`` and ``BatchNormalization`` (inference: the moving
statistics).

Each computes what the layer's ``call`` computes, in the same order of operations where
that matters for rounding (the normalisations), and passes, consumes or drops the mask as
the layer does (Keras's rules). The rest is refused by name.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedModelError
from ...layers import reshaping
from ...layers._base import Layer
from ...layers._windows import pad_amounts
from ...layers.convolutional import Conv1D
from ...layers.core import Activation, Dense, Dropout, Masking, Softmax
from ...layers.embedding import Embedding
from ...layers.noise import GaussianNoise
from ...layers.normalization import BatchNormalization, LayerNormalization
from ...layers.pooling import (
    AveragePooling1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    MaxPooling1D,
)
from ...layers.reshaping import Cropping1D, UpSampling1D, ZeroPadding1D
from ...layers.wrappers import TimeDistributed
from .export_graph import FAR, Exporter
from .export_recurrent import RECURRENT, export_recurrent

__all__ = ["export_layer", "reads_ids"]


def export_layer(ex: Exporter, layer, x: str, mask: str | None, initial=None):
    """``(outputs, output mask)`` of one layer on ``x``: ``outputs`` are ``(name, tensor)``
    in the layer's return order; ``initial`` the initial states given to a recurrent call."""
    if layer.dtype != ex.dtype.name:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r} has dtype {layer.dtype}, the model {ex.dtype.name}"
        )
    if not reads_ids(layer):  # an input of another dtype, converted as predict
        x = ex.as_float(x)
    if isinstance(layer, RECURRENT):
        return export_recurrent(ex, layer, x, mask, initial)
    if isinstance(layer, Masking):
        # keep = any(x != mask_value, axis=-1); the output is where(keep, x, 0)
        value = ex.scalar(f"{layer.name}/mask_value", layer.mask_value)
        differs = ex.node("Not", [ex.node("Equal", [x, value])])
        as_int = ex.node("Cast", [differs], to=ex.onnx.TensorProto.INT32)
        any_ = ex.reduce("ReduceMax", as_int, [-1], False, base=f"{layer.name}/any")
        mask = ex.node("Cast", [any_], base=f"{layer.name}/mask", to=ex.onnx.TensorProto.BOOL)
        keep = ex.unsqueeze(mask, [-1], base=f"{layer.name}/keep")
        return [("output", ex.zeros_where_not(keep, x, base=layer.name))], mask
    inner = layer.layer if isinstance(layer, TimeDistributed) else layer
    if isinstance(layer, TimeDistributed) and not isinstance(inner, _LAST_AXIS):
        return _time_distributed(ex, layer, x, mask)
    if isinstance(inner, (Dropout, GaussianNoise)):  # identities at inference
        y = x
    elif isinstance(inner, Dense):  # MatMul acts on the last axis of any rank, as Dense
        y = ex.node("MatMul", [x, ex.const(f"{inner.name}/kernel", inner.kernel.value)])
        if inner.bias is not None:
            y = ex.node("Add", [y, ex.const(f"{inner.name}/bias", inner.bias.value)])
        y = ex.activation(y, inner.activation, inner.name)
    elif isinstance(inner, Activation):
        y = ex.activation(x, inner.activation, inner.name)
    elif isinstance(inner, Softmax):
        y = _softmax(ex, inner, x, mask)
    else:
        return _other_layer(ex, layer, x, mask)
    if type(layer).compute_mask is not Layer.compute_mask:
        raise AssertionError(f"to_onnx: {type(layer).__name__} has its own mask rule")
    return [("output", y)], mask


def reads_ids(layer) -> bool:
    """Whether the layer takes token ids (an ``Embedding``, or one TimeDistributed)."""
    while isinstance(layer, TimeDistributed):
        layer = layer.layer
    return isinstance(layer, Embedding)


#: the layers that act on the last axis alone: TimeDistributed of them is the layer itself
#: on the whole input (MatMul takes any rank, as Dense)
_LAST_AXIS = (Dense, Activation, Dropout, GaussianNoise)


def _time_distributed(ex: Exporter, layer, x: str, mask):
    """The wrapped layer on ``(batch * steps, ...)``, without a mask (as the layer's call),
    its output reshaped to ``(batch, steps, ...)``; the input mask passes through."""
    inner = layer.layer
    if getattr(inner, "stateful", False):
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: TimeDistributed of a stateful layer "
            f"({inner.name!r}) is not exported (its states would be per step and sample)"
        )
    shape = ex.node("Shape", [x], base=f"{layer.name}/shape")
    rest = ex.slice(shape, 2, FAR, 0)
    flat = ex.node("Reshape", [x, ex.node("Concat", [ex.ints("minus_one", [-1]), rest], axis=0)])
    results, _ = export_layer(ex, inner, flat, None)
    if len(results) != 1:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: TimeDistributed of a layer with several outputs "
            f"({inner.name!r}) is not exported"
        )
    y = results[0][1]
    tail = ex.slice(ex.node("Shape", [y]), 1, FAR, 0)
    target = ex.node("Concat", [ex.slice(shape, 0, 2, 0), tail], axis=0)
    return [("output", ex.node("Reshape", [y, target], base=layer.name))], mask


def _softmax(ex: Exporter, layer, x: str, mask) -> str:
    if mask is not None:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r} (Softmax) receives a mask: its masked softmax "
            f"is not exported"
        )
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r}: Softmax over several axes {axis} is not "
                f"supported (ONNX Softmax takes one axis)"
            )
        axis = axis[0]
    return ex.node("Softmax", [x], base=layer.name, axis=int(axis))


def _other_layer(ex: Exporter, layer, x: str, mask: str | None):
    """``([("output", tensor)], output mask)`` of the layers of the table ``_LAYERS``."""
    for cls, fn in _LAYERS:
        if isinstance(layer, cls):
            y, mask = fn(ex, layer, x, mask)
            return [("output", y)], mask
    raise UnsupportedModelError(
        f"to_onnx: layer {layer.name!r} ({type(layer).__name__}) is not supported by the "
        f"ONNX export"
    )


def _embedding(ex, layer, ids, mask):
    ids, dtype = ex.as_ids(ids)
    y = ex.node("Gather", [ex.const(f"{layer.name}/embeddings", layer.embeddings.value), ids])
    if layer.mask_zero:  # mask = ids != 0
        zero = ex.const(f"{layer.name}/zero", np.asarray(0, dtype))
        mask = ex.node("Not", [ex.node("Equal", [ids, zero])], base=f"{layer.name}/mask")
    else:
        mask = None
    return y, mask


def _channels_first(ex, x, fmt, base):
    """(B, T, C) <-> (B, C, T) unless the layer is channels_first already (ONNX's layout)."""
    if fmt == "channels_first":
        return x
    return ex.node("Transpose", [x], base=base, perm=[0, 2, 1])


def _window_attrs(layer, size, stride, dilation):
    """ONNX Conv / pooling attributes of a Keras window: the pads Keras adds, written out
    (``causal``: ``dilation (size - 1)`` steps before; ``same`` with stride 1: that many
    split as TensorFlow splits them, the odd step after). ``same`` with a stride > 1 pads by
    the input's length: SAME_UPPER, the same split (the dilation is then 1, as Keras
    requires; onnxruntime refuses SAME_UPPER with a dilation)."""
    attrs = {"kernel_shape": [size], "strides": [stride]}
    if layer.padding == "same" and stride > 1:
        attrs["auto_pad"] = "SAME_UPPER"
    elif layer.padding != "valid":
        attrs["pads"] = list(pad_amounts(1, size, 1, layer.padding, dilation))
    return attrs


def _conv1d(ex, layer, x, mask):
    size, stride, dilation = layer._geometry()
    attrs = _window_attrs(layer, size, stride, dilation)
    # kernel (k, C/g, F) -> ONNX W (F, C/g, k); the groups' filters side by side, as ONNX
    w = np.ascontiguousarray(layer.kernel.value.transpose(2, 1, 0))
    ins = [_channels_first(ex, x, layer.data_format, f"{layer.name}/x"), ex.const("W", w)]
    if layer.use_bias:
        ins.append(ex.const(f"{layer.name}/bias", layer.bias.value))
    y = ex.node("Conv", ins, base=layer.name, dilations=[dilation], group=layer.groups, **attrs)
    y = _channels_first(ex, y, layer.data_format, f"{layer.name}/y")
    return ex.activation(y, layer.activation, layer.name), None


def _pooling(ex, layer, x, mask):
    size, stride, dilation = layer._geometry()
    attrs = _window_attrs(layer, size, stride, dilation)
    xc = _channels_first(ex, x, layer.data_format, f"{layer.name}/x")
    if isinstance(layer, MaxPooling1D):
        y = ex.node("MaxPool", [xc], base=layer.name, **attrs)
    else:  # the mean over the real steps of each window (padding not counted)
        y = ex.node("AveragePool", [xc], base=layer.name, count_include_pad=0, **attrs)
    return _channels_first(ex, y, layer.data_format, f"{layer.name}/y"), None


def _global_pooling(ex, layer, x, mask):
    axis = layer._axis
    if isinstance(layer, GlobalMaxPooling1D) or mask is None:
        op = "ReduceMax" if isinstance(layer, GlobalMaxPooling1D) else "ReduceMean"
        return ex.reduce(op, x, [axis], layer.keepdims, base=layer.name), None
    # the masked mean: w = m / sum(m), y = sum_t where(w != 0, x, 0) w (0/0 = NaN for a
    # fully masked sample, as predict)
    m = ex.node("Cast", [ex.unsqueeze(mask, [2 if axis == 1 else 1])], to=ex.elem)
    w = ex.node("Div", [m, ex.reduce("ReduceSum", m, [axis], True)], base=f"{layer.name}/w")
    used = ex.node("Not", [ex.node("Equal", [w, ex.scalar("zero", 0)])])
    y = ex.node("Mul", [ex.zeros_where_not(used, x), w])
    return ex.reduce("ReduceSum", y, [axis], layer.keepdims, base=layer.name), None


def _layer_norm(ex, layer, x, mask):
    # mu = mean(x), xc = x - mu, var = mean(xc^2), y = (xc or x) / sqrt(var + eps) gamma + beta
    ndim = len(layer.input_shape)
    axes = list(layer._axes(ndim))
    mu = ex.reduce("ReduceMean", x, axes, True, base=f"{layer.name}/mean")
    xc = ex.node("Sub", [x, mu])
    var = ex.reduce("ReduceMean", ex.node("Mul", [xc, xc]), axes, True, base=f"{layer.name}/var")
    std = ex.node("Sqrt", [ex.node("Add", [var, ex.scalar("epsilon", layer.epsilon)])])
    r = ex.node("Div", [ex.scalar("one", 1), std], base=f"{layer.name}/r")
    y = ex.node("Mul", [x if layer.rms_scaling else xc, r])
    bshape = [layer.input_shape[k] if k in axes else 1 for k in range(ndim)]
    bshape[0] = 1
    if layer.gamma is not None:
        y = ex.node("Mul", [y, ex.const("gamma", layer.gamma.value.reshape(bshape))])
    if layer.beta is not None:
        y = ex.node("Add", [y, ex.const("beta", layer.beta.value.reshape(bshape))])
    return y, mask


def _batch_norm(ex, layer, x, mask):
    # inference: (x - mean) * (rsqrt(var + eps) gamma) + beta, the scale folded as predict
    ndim = len(layer.input_shape)
    axis = layer._channel_axis(ndim)
    bshape = [layer.input_shape[axis] if k == axis else 1 for k in range(ndim)]
    mean = layer.moving_mean.value.reshape(bshape)
    r = 1.0 / np.sqrt(layer.moving_variance.value.reshape(bshape) + layer.epsilon)
    scale = r if layer.gamma is None else r * layer.gamma.value.reshape(bshape)
    y = ex.node("Sub", [x, ex.const("mean", mean.astype(ex.dtype))])
    y = ex.node("Mul", [y, ex.const("scale", np.asarray(scale, ex.dtype))])
    if layer.beta is not None:
        y = ex.node("Add", [y, ex.const("beta", layer.beta.value.reshape(bshape))])
    return y, mask


def _batch_shape(ex, x, rest) -> str:
    """``[batch, *rest]`` as a Reshape target (the batch read from ``x``: Reshape's 0 would
    also copy a 0 of ``rest``)."""
    batch = ex.slice(ex.node("Shape", [x]), 0, 1, 0)
    return ex.node("Concat", [batch, ex.ints("rest", list(rest))], axis=0)


def _flatten(ex, layer, x, mask):
    ndim = len(layer.input_shape)
    order = layer._order(ndim)
    if list(order) != list(range(ndim)):
        x = ex.node("Transpose", [x], perm=list(order))
    return ex.node("Reshape", [x, _batch_shape(ex, x, [-1])], base=layer.name), None


def _reshape(ex, layer, x, mask):
    target = layer._resolve(layer.input_shape)
    target = [-1 if d is None else d for d in target]
    return ex.node("Reshape", [x, _batch_shape(ex, x, target)], base=layer.name), None


def _permute(ex, layer, x, mask):
    return ex.node("Transpose", [x], base=layer.name, perm=[0, *layer.dims]), None


def _repeat_vector(ex, layer, x, mask):
    y = ex.unsqueeze(x, [1])
    return ex.node("Tile", [y, ex.ints("repeats", [1, layer.n, 1])], base=layer.name), None


def _time_layer(ex, layer, x, mask):
    """ZeroPadding1D, Cropping1D, UpSampling1D on the steps axis (1, or 2 channels_first)."""
    axis = 2 if layer.data_format == "channels_first" else 1
    if isinstance(layer, ZeroPadding1D):
        pads = [0, 0, 0, 0, 0, 0]
        pads[axis], pads[3 + axis] = layer.padding
        y = ex.node("Pad", [x, ex.ints("pads", pads)], base=layer.name)
    elif isinstance(layer, Cropping1D):
        before, after = layer.cropping
        y = ex.slice(x, before, -after if after else FAR, axis, base=layer.name)
    else:  # UpSampling1D: y[:, t] = x[:, t // size]: a size-1 axis tiled, then merged
        repeats = [1, 1, 1, 1]
        repeats[axis + 1] = layer.size
        tiled = ex.node("Tile", [ex.unsqueeze(x, [axis + 1]), ex.ints("repeats", repeats)])
        scale = [1, 1, 1]
        scale[axis] = layer.size
        shape = ex.node("Mul", [ex.node("Shape", [x]), ex.ints("scale", scale)])
        y = ex.node("Reshape", [tiled, shape], base=layer.name)
    return y, None


_LAYERS = (
    (Embedding, _embedding),
    (Conv1D, _conv1d),
    ((MaxPooling1D, AveragePooling1D), _pooling),
    ((GlobalAveragePooling1D, GlobalMaxPooling1D), _global_pooling),
    (LayerNormalization, _layer_norm),
    (BatchNormalization, _batch_norm),
    (reshaping.Flatten, _flatten),
    (reshaping.Reshape, _reshape),
    (reshaping.Permute, _permute),
    (reshaping.RepeatVector, _repeat_vector),
    ((ZeroPadding1D, Cropping1D, UpSampling1D), _time_layer),
)
