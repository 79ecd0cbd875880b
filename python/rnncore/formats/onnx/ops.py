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

__all__ = ["OPS", "cast", "np_dtype"]


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


def _int_range(dtype: np.dtype):
    """``(min, max)`` of an integer dtype (NumPy's, or ml_dtypes' int4/uint4/int2/uint2,
    which NumPy sees as void kinds), or None for any other dtype."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
    elif dtype.kind == "V" and dtype.itemsize == 1:
        import ml_dtypes  # comes with onnx: its sub-byte and float8 types are onnx's

        try:
            info = ml_dtypes.iinfo(dtype)
        except ValueError:
            return None
    else:
        return None
    return int(info.min), int(info.max)


def _is_float(dtype: np.dtype) -> bool:
    """NumPy's floats and ml_dtypes' (bfloat16, float8, float4: some of them void kinds to
    NumPy)."""
    if dtype.kind == "f" or np.issubdtype(dtype, np.floating):
        return True
    if dtype.kind != "V":
        return False
    import ml_dtypes

    try:
        ml_dtypes.finfo(dtype)
    except ValueError:
        return False
    return True


def _to_e8m0(x: np.ndarray, to: np.dtype, saturate: bool, round_mode: str) -> np.ndarray:
    """float -> FLOAT8E8M0 (a bare exponent: 2**(e - 127); 0xFF is NaN), as the spec's
    table and onnx's reference compute it: the float32 exponent, rounded on the dropped
    mantissa by ``round_mode`` ("up": any mantissa bit set; "nearest": the guard bit, and
    any lower bit or a non-zero exponent; "down": never), never past 0xFE with
    ``saturate``; NaN and +-Inf give 0xFF. The sign is dropped (the spec leaves negative
    values undefined)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    e = ((bits >> 23) & 0xFF).astype(np.uint16)
    mantissa = bits & 0x7FFFFF
    special = e == 0xFF
    if round_mode == "up":
        up = mantissa > 0
    elif round_mode == "nearest":
        up = ((mantissa & 0x400000) > 0) & (((mantissa & 0x3FFFFF) > 0) | (e > 0))
    elif round_mode == "down":
        up = np.zeros(bits.shape, bool)
    else:
        raise UnsupportedModelError(
            f"Cast: round_mode must be 'up', 'nearest' or 'down', got {round_mode!r}"
        )
    up &= ~special
    if saturate:
        up &= e != 0xFE
    e = np.where(special, 0xFF, e + up)
    return (e & 0xFF).astype(np.uint8).view(to)


def cast(x: np.ndarray, to: np.dtype, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """ONNX ``Cast`` of ``x`` to ``to``, computed explicitly where NumPy's own conversion
    depends on the CPU (and warns on some CPUs but not others).

    * float -> integer: truncation toward zero; a value the type holds converts exactly.
      ONNX leaves the rest undefined ("fixed point: undefined if OOR"), and NumPy's result
      (and its ``invalid value`` warning) differs between its AVX2 and AVX-512 loops and
      between x86 and ARM. rnncore fixes it, the same bits on every CPU, and warns never:
      for the 4- and 2-bit types, onnx's reference implementation (ml_dtypes): NaN, +-Inf
      and out-of-range values become 0; for the 8- to 64-bit types, NaN becomes 0 and
      +-Inf and out-of-range values saturate to the type's min / max (as ARM and Java do).
    * float -> narrower float: out of range gives +-Inf (the spec), without a warning;
      float8 types with ``saturate`` (the default) clamp to +-the type's largest finite
      value instead, NaN staying NaN (the spec's table); without it, ml_dtypes' conversion.
    * float -> FLOAT8E8M0: :func:`_to_e8m0` (``round_mode``).
    * integer -> integer: the low bits, two's complement (the spec; NumPy's wrap-around).
    """
    to = np.dtype(to)
    bounds = _int_range(to)
    if _is_float(x.dtype) and bounds is not None:
        lo, hi = bounds
        # float64 holds every float32/16/bf16/float8 value and every bound below exactly
        t = np.trunc(x.astype(np.float64))
        fits = (t >= lo) & (t <= hi)  # False for NaN and +-Inf: comparisons never warn
        out = np.zeros(x.shape, to)
        out[fits] = t[fits].astype(to)
        if hi - lo >= 255:  # 8 bits or more; the sub-byte types keep 0 (onnx's reference)
            out[t > hi] = hi
            out[t < lo] = lo
        return out
    if _is_float(x.dtype) and to.name == "float8_e8m0fnu":
        return _to_e8m0(x, to, saturate, round_mode)
    if _is_float(x.dtype) and _is_float(to):
        if saturate and to.itemsize == 1:  # the float8 types
            import ml_dtypes

            top = float(ml_dtypes.finfo(to).max)
            x = np.clip(x.astype(np.float64), -top, top)  # NaN passes through clip
        with np.errstate(over="ignore"):
            return x.astype(to)
    return x.astype(to)


def _cast_options(plan) -> dict:
    mode = plan.attrs.get("round_mode", "up")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return dict(saturate=bool(plan.attrs.get("saturate", 1)), round_mode=mode)


def _op_cast(plan, x):
    to = np_dtype(plan.model._onnx, plan.attrs["to"], plan.label)
    return (cast(x, to, **_cast_options(plan)),)


def _op_cast_like(plan, x, like):
    return (cast(x, like.dtype, **_cast_options(plan)),)


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
    "CastLike": _op_cast_like,
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
