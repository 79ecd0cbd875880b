"""The ONNX operators around the recurrent nodes, computed in NumPy.

Each takes the node (its ``attrs``, its model's ``opset``) and its inputs, and returns a
tuple of outputs. These are the small operators exporters put around recurrent nodes (e.g.
``torch.onnx.export`` of ``nn.LSTM``: ``Transpose``, ``Slice``, ``Concat``, ``Reshape``,
``Shape``, ``Gather``, ...) and ``MatMul`` / ``Gemm`` / ``Add`` / activations for dense
heads.
"""

from __future__ import annotations

import math

import numpy as np

from ... import activations
from ...errors import UnsupportedModelError

__all__ = ["OPS", "np_dtype"]


def np_dtype(onnx, elem_type: int, what: str):
    """The NumPy dtype of an ONNX element type; :class:`UnsupportedModelError` if none."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModelError(f"{what}: element type {elem_type} is not supported") from None


def _axes(plan, axes_input, name="axes"):
    if axes_input is not None:
        return [int(v) for v in np.asarray(axes_input).ravel()]
    v = plan.attrs.get(name)
    return None if v is None else [int(x) for x in v]


def _op_slice(plan, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:  # opset < 10: attributes
        starts, ends = plan.attrs["starts"], plan.attrs["ends"]
        axes = plan.attrs.get("axes")
    starts = [int(v) for v in np.asarray(starts).ravel()]
    ends = [int(v) for v in np.asarray(ends).ravel()]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).ravel()]
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ValueError("Slice: a step of 0")
        n = x.shape[a]
        if st > 0:
            s = min(max(s + n if s < 0 else s, 0), n)
            e = min(max(e + n if e < 0 else e, 0), n)
        else:
            s = min(max(s + n if s < 0 else s, -1), n - 1)
            e = min(max(e + n if e < 0 else e, -1), n - 1)
            if e < 0:
                e = None
        index[a] = slice(s, e, st)
    return (x[tuple(index)],)


def _op_reshape(plan, x, shape):
    shape = [int(v) for v in np.asarray(shape).ravel()]
    if not plan.attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return (x.reshape(shape),)


def _op_squeeze(plan, x, axes=None):
    axes = _axes(plan, axes)
    return (np.squeeze(x, axis=None if axes is None else tuple(axes)),)


def _op_unsqueeze(plan, x, axes=None):
    axes = _axes(plan, axes)
    rank = x.ndim + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        x = np.expand_dims(x, a)
    return (x,)


def _op_shape(plan, x):
    start, end = plan.attrs.get("start", 0), plan.attrs.get("end")
    return (np.array(x.shape[start:end], np.int64),)


def _op_constant_of_shape(plan, shape):
    value = plan.attrs.get("value", np.zeros(1, np.float32))
    return (
        np.full([int(v) for v in np.asarray(shape).ravel()], value.ravel()[0], dtype=value.dtype),
    )


def _op_cast(plan, x):
    return (x.astype(np_dtype(plan.model._onnx, plan.attrs["to"], plan.label)),)


def _op_gemm(plan, a, b, c=None):
    at = plan.attrs
    a = a.T if at.get("transA", 0) else a
    b = b.T if at.get("transB", 0) else b
    y = at.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + at.get("beta", 1.0) * c
    return (y.astype(a.dtype, copy=False),)


def _op_div(plan, a, b):
    if np.issubdtype(a.dtype, np.integer):
        return (np.trunc(a / b).astype(a.dtype),)
    return (np.divide(a, b),)


def _op_softmax(plan, x):
    axis = plan.attrs.get("axis", -1 if plan.model.opset >= 13 else 1)
    if plan.model.opset >= 13:
        return (activations.softmax(x, axis=axis),)
    axis = axis + x.ndim if axis < 0 else axis  # opset < 13: over the flattened tail
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return (activations.softmax(flat, axis=1).reshape(x.shape),)


def _op_hard_sigmoid(plan, x):
    alpha, beta = plan.attrs.get("alpha", 0.2), plan.attrs.get("beta", 0.5)
    return (np.clip(alpha * x + beta, 0, 1).astype(x.dtype, copy=False),)


def _op_reduce(fn):
    def op(plan, x, axes=None):
        axes = _axes(plan, axes)
        keep = bool(plan.attrs.get("keepdims", 1))
        if not axes:
            if plan.attrs.get("noop_with_empty_axes", 0):
                return (x,)
            axes = None
        return (fn(x, axis=None if axes is None else tuple(axes), keepdims=keep),)

    return op


#: ONNX operator -> its NumPy computation
OPS = {
    "Constant": lambda p: (p.constant_value(),),
    "Identity": lambda p, x: (x,),
    "Transpose": lambda p, x: (np.transpose(x, p.attrs.get("perm")),),
    "Slice": _op_slice,
    "Concat": lambda p, *xs: (np.concatenate(xs, axis=p.attrs["axis"]),),
    "Reshape": _op_reshape,
    "Squeeze": _op_squeeze,
    "Unsqueeze": _op_unsqueeze,
    "Shape": _op_shape,
    "Gather": lambda p, x, i: (np.take(x, i, axis=p.attrs.get("axis", 0)),),
    "ConstantOfShape": _op_constant_of_shape,
    "Cast": _op_cast,
    "Expand": lambda p, x, s: (
        np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(v) for v in s)))),
    ),
    "MatMul": lambda p, a, b: (np.matmul(a, b),),
    "Gemm": _op_gemm,
    "Add": lambda p, a, b: (a + b,),
    "Sub": lambda p, a, b: (a - b,),
    "Mul": lambda p, a, b: (a * b,),
    "Div": _op_div,
    "Tanh": lambda p, x: (activations.tanh(x),),
    # the tanh form of 1 / (1 + e^-x) never overflows; ONNX keeps the input's dtype
    "Sigmoid": lambda p, x: (activations.sigmoid(x).astype(x.dtype, copy=False),),
    "Relu": lambda p, x: (activations.relu(x),),
    "HardSigmoid": _op_hard_sigmoid,
    "Softmax": _op_softmax,
    "ReduceSum": _op_reduce(np.sum),
    "ReduceMean": _op_reduce(np.mean),
}
