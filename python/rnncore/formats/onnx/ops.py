"""The ONNX operators around the recurrent nodes, computed in NumPy.

Each takes the node (its ``attrs``, its model's ``opset``) and its inputs, and returns a
tuple of outputs. These are the small operators exporters put around recurrent nodes (e.g.
``torch.onnx.export`` of ``nn.LSTM``: ``Transpose``, ``Slice``, ``Concat``, ``Reshape``,
``Shape``, ``Gather``, ...), ``MatMul`` / ``Gemm`` / ``Add`` / activations for dense
heads, and every operator rnncore's own :func:`~.export.to_onnx` writes (masks:
``Equal``, ``Not``, ``Or``, ``Where``, ``CumSum``, ``TopK``, ``GatherND``, ``Range``;
``Conv``, ``MaxPool``, ``AveragePool``, ``Pad``, ``Tile``; the normalisations' ``Sqrt``;
``ReduceMax``, ``Max``, ``Min``), so that every export reads back. They follow the ONNX
spec in full (every attribute, broadcasting, the inputs that were attributes in older
opsets, the input's dtype kept), checked by the ``onnx`` package's node test cases
(tests/test_onnx_backend.py).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


def _op_reduce(fn, empty=False):
    """``Reduce*``: ``axes`` an attribute (before opset 18; 13 for ReduceSum) or an input.
    ``empty``: the reduction has an identity to give over an empty set (ReduceMax: the
    dtype's lowest value, ``-inf`` for floats, as ONNX defines it)."""

    def op(plan, x, axes=None):
        axes = _axes(plan, axes)
        keep = bool(plan.attrs.get("keepdims", 1))
        if not axes:
            if plan.attrs.get("noop_with_empty_axes", 0):
                return (x,)
            axes = None
        kw = {"initial": _lowest(x.dtype)} if empty else {}
        return (fn(x, axis=None if axes is None else tuple(axes), keepdims=keep, **kw),)

    return op


def _lowest(dtype):
    """The smallest value of ``dtype``: ``-inf`` for floats, ``False`` for bool."""
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


def _op_variadic(fn):
    """``Max`` / ``Min``: any number of inputs, broadcast together (one input: a copy)."""

    def op(plan, *xs):
        y = xs[0]
        for x in xs[1:]:
            y = fn(y, x)
        return (np.array(y, dtype=xs[0].dtype),)

    return op


def _op_compare(fn):
    """``Equal`` / ``Greater`` / ``Less``: broadcast, a bool tensor."""
    return lambda plan, a, b: (np.asarray(fn(a, b), dtype=np.bool_),)


def _op_where(plan, cond, x, y):
    return (np.where(cond, x, y).astype(x.dtype, copy=False),)


def _op_cumsum(plan, x, axis):
    axis = int(np.asarray(axis).reshape(-1)[0])
    reverse, exclusive = plan.attrs.get("reverse", 0), plan.attrs.get("exclusive", 0)
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:  # each sum without its own element: shifted one step, a zero first
        n = x.shape[axis]
        y = np.concatenate([np.zeros_like(np.take(x, [0] if n else [], axis)),
                            np.take(y, np.arange(n - 1), axis)], axis=axis)  # fmt: skip
    return (np.flip(y, axis) if reverse else y,)


def _op_range(plan, start, limit, delta):
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if delta == 0:
        raise ValueError("Range: delta is 0")
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    # ONNX: output[i] = start + i * delta, in the inputs' type
    return ((start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype),)


def _op_topk(plan, x, k=None):
    axis = plan.attrs.get("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    k = int(np.asarray(k).reshape(-1)[0]) if k is not None else int(plan.attrs["k"])
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"TopK: k={k} is not in [0, {n}] (the size of axis {axis})")
    # a stable sort keeps equal values in index order, as ONNX asks (the lower index first);
    # the largest first: the stable ascending order of the reversed axis, reversed again
    if plan.attrs.get("largest", 1):
        order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    index = np.take(order, np.arange(k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, index, axis=axis), index


def _op_gather_nd(plan, data, indices):
    b = int(plan.attrs.get("batch_dims", 0))
    q = indices.shape[-1]
    if b + q > data.ndim or data.shape[:b] != indices.shape[:b]:
        raise ValueError(
            f"GatherND: indices of shape {indices.shape} (batch_dims={b}) do not index data of "
            f"shape {data.shape}"
        )
    dims = np.array(data.shape[b : b + q], np.int64)
    idx = indices.astype(np.int64).reshape(math.prod(indices.shape[:b]), -1, q)
    idx = np.where(idx < 0, idx + dims, idx)  # negative indices count from the end
    if np.any((idx < 0) | (idx >= dims)):
        raise ValueError(f"GatherND: an index is out of range for data of shape {data.shape}")
    flat = data.reshape((idx.shape[0],) + data.shape[b:])
    rows = np.arange(idx.shape[0])[:, None]
    y = flat[(rows, *np.moveaxis(idx, -1, 0))]
    return (y.reshape(indices.shape[:-1] + data.shape[b + q :]),)


def _op_tile(plan, x, repeats):
    repeats = [int(v) for v in np.asarray(repeats).ravel()]
    if len(repeats) != x.ndim or min(repeats, default=0) < 0:
        # np.tile would pad a short list with ones; ONNX asks one count >= 0 per axis
        raise ValueError(f"Tile: repeats {repeats} for an input of rank {x.ndim}")
    return (np.tile(x, repeats),)


def _op_pad(plan, x, pads=None, value=None, axes=None):
    if pads is None:  # opset < 11: attributes
        pads, value = plan.attrs["pads"], plan.attrs.get("value", 0.0)
    pads = [int(v) for v in np.asarray(pads).ravel()]
    axes = list(range(x.ndim)) if axes is None else [int(a) for a in np.asarray(axes).ravel()]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes (2 per axis)")
    widths = [[0, 0] for _ in range(x.ndim)]
    for k, a in enumerate(axes):
        widths[a + x.ndim if a < 0 else a] = [pads[k], pads[len(axes) + k]]
    # negative pads remove steps; the positive ones add them
    x = x[tuple(slice(-min(b, 0), x.shape[i] + min(e, 0)) for i, (b, e) in enumerate(widths))]
    widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    mode = plan.attrs.get("mode", "constant")
    if mode == "constant":
        value = 0 if value is None else np.asarray(value).reshape(-1)[0]
        return (np.pad(x, widths, mode="constant", constant_values=value),)
    if mode not in ("reflect", "edge", "wrap"):
        raise ValueError(f"Pad: unknown mode {mode!r}")
    return (np.pad(x, widths, mode=mode),)


def _window_plan(plan, x, kernel, ceil_ok):
    """``(pads begin, pads end, output sizes, strides, dilations)`` of a sliding window over
    the spatial axes of ``x (N, C, *spatial)`` (Conv, MaxPool, AveragePool), per ONNX:
    ``auto_pad`` SAME_* gives ``ceil(in / stride)`` outputs, the odd padding step at the end
    (UPPER) or the beginning (LOWER); VALID none; NOTSET the ``pads`` attribute, with
    ``ceil_mode`` (pools) counting a last partial window unless it starts in the end pad."""
    at, n = plan.attrs, len(kernel)
    strides = list(at.get("strides", [1] * n))
    dilations = list(at.get("dilations", [1] * n))
    auto = at.get("auto_pad", "NOTSET")
    spatial = x.shape[2:]
    if len(spatial) != n:
        raise ValueError(f"a {n}-D window on an input of shape {x.shape}")
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(spatial, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, spans, spatial)]
        lower = [t - t // 2 if auto == "SAME_LOWER" else t // 2 for t in total]
        return lower, [t - lo for t, lo in zip(total, lower)], out, strides, dilations
    if auto == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto == "NOTSET":
        pads = list(at.get("pads", [0] * 2 * n))
        begin, end = pads[:n], pads[n:]
    else:
        raise ValueError(f"unknown auto_pad {auto!r}")
    out = []
    for i, b, e, s, span in zip(spatial, begin, end, strides, spans):
        room = i + b + e - span
        o = room // s + 1
        if ceil_ok and at.get("ceil_mode", 0) and room % s:
            o += 1
            if (o - 1) * s >= i + b:  # the last window would start in the end padding
                o -= 1
        out.append(max(o, 0))
    return begin, end, out, strides, dilations


def _windows(x, begin, end, out, strides, dilations, kernel, fill):
    """``(N, C, *out, *kernel)``: the windows of ``x`` padded with ``fill`` (``begin``
    before, ``end`` after, and past that as far as a last partial window reaches)."""
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    widths = [(0, 0), (0, 0)]
    for i, b, e, o, s, span in zip(x.shape[2:], begin, end, out, strides, spans):
        widths.append((b, max(e, (o - 1) * s + span - i - b, 0)))
    xp = np.pad(x, widths, mode="constant", constant_values=fill)
    n = len(kernel)
    view = sliding_window_view(xp, spans, axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, o * s, s) for o, s in zip(out, strides))
    index += tuple(slice(None, None, d) for d in dilations)
    return view[index]


def _op_conv(plan, x, w, b=None):
    group = int(plan.attrs.get("group", 1))
    kernel = list(plan.attrs.get("kernel_shape", w.shape[2:]))
    m, cg = w.shape[:2]
    if x.ndim < 3 or x.shape[1] != cg * group or m % group or list(w.shape[2:]) != kernel:
        raise ValueError(
            f"Conv: input of shape {x.shape}, weights {w.shape}, group {group} and kernel_shape "
            f"{kernel} do not agree"
        )
    begin, end, out, strides, dil = _window_plan(plan, x, kernel, ceil_ok=False)
    win = _windows(x, begin, end, out, strides, dil, kernel, 0)  # (N, C, *out, *kernel)
    n, nd = x.shape[0], len(kernel)
    win = win.reshape((n, group, cg) + win.shape[2:])
    # (N, g, *out, C/g, *kernel) -> rows of one output position, against the filters' rows
    win = np.moveaxis(win, 2, 2 + nd).reshape(n, group, math.prod(out), cg * math.prod(kernel))
    filters = w.reshape(group, m // group, -1).transpose(0, 2, 1)
    y = np.matmul(win, filters)  # (N, g, positions, M/g)
    y = y.transpose(0, 1, 3, 2).reshape([n, m, *out])
    if b is not None:
        y = y + b.reshape([m] + [1] * nd)
    return (y.astype(x.dtype, copy=False),)


def _op_max_pool(plan, x):
    kernel = list(plan.attrs["kernel_shape"])
    begin, end, out, strides, dil = _window_plan(plan, x, kernel, ceil_ok=True)
    nd = len(kernel)
    win = _windows(x, begin, end, out, strides, dil, kernel, _lowest(x.dtype))
    kaxes = tuple(range(2 + nd, 2 + 2 * nd))
    y = win.max(axis=kaxes) if win.size else np.zeros(win.shape[: 2 + nd], x.dtype)
    if len(plan.outputs) < 2 or not plan.outputs[1]:
        return (y,)
    # Indices: the flat index into x of the first largest value of each window (padding
    # never counts); spatial positions in row-major order, or column-major with
    # storage_order=1, after the (batch, channel) offset
    spatial = x.shape[2:]
    order = "F" if plan.attrs.get("storage_order", 0) else "C"
    pos = np.ravel_multi_index(np.indices(spatial), spatial, order=order)
    pos = _windows(pos[None, None], begin, end, out, strides, dil, kernel, -1)
    hit = (win == y.reshape(y.shape + (1,) * nd)) & (pos >= 0)
    flat = lambda a: a.reshape(a.shape[: 2 + nd] + (-1,))  # noqa: E731
    first = np.argmax(flat(hit), axis=-1)[..., None]
    index = np.take_along_axis(flat(np.broadcast_to(pos, hit.shape)), first, -1)[..., 0]
    offset = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * nd)
    return y, (index + offset * math.prod(spatial)).astype(np.int64)


def _op_average_pool(plan, x):
    kernel = list(plan.attrs["kernel_shape"])
    begin, end, out, strides, dil = _window_plan(plan, x, kernel, ceil_ok=True)
    nd = len(kernel)
    kaxes = tuple(range(2 + nd, 2 + 2 * nd))
    total = _windows(x, begin, end, out, strides, dil, kernel, 0).sum(axis=kaxes)
    # the divisor: the window's steps in x, or in x and its pads with count_include_pad
    # (the steps past the pads that a ceil_mode window reaches never count)
    counted = np.ones((1, 1) + x.shape[2:], x.dtype)
    if plan.attrs.get("count_include_pad", 0):
        counted = np.pad(counted, [(0, 0), (0, 0)] + list(zip(begin, end)), constant_values=1)
        begin = [0] * nd
        end = [0] * nd
    count = _windows(counted, begin, end, out, strides, dil, kernel, 0).sum(axis=kaxes)
    return ((total / count).astype(x.dtype, copy=False),)


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
    # the operators rnncore's own to_onnx writes besides the above (masks, Conv1D, pooling,
    # normalisations, merges): every export is read back
    "ReduceMax": _op_reduce(np.max, empty=True),
    "Max": _op_variadic(np.maximum),
    "Min": _op_variadic(np.minimum),
    "Sqrt": lambda p, x: (np.sqrt(x),),
    "Equal": _op_compare(np.equal),
    "Greater": _op_compare(np.greater),
    "Less": _op_compare(np.less),
    "Not": lambda p, x: (np.logical_not(x),),
    "Or": lambda p, a, b: (np.logical_or(a, b),),
    "And": lambda p, a, b: (np.logical_and(a, b),),
    "Where": _op_where,
    "CumSum": _op_cumsum,
    "Range": _op_range,
    "TopK": _op_topk,
    "GatherND": _op_gather_nd,
    "Tile": _op_tile,
    "Pad": _op_pad,
    "Conv": _op_conv,
    "MaxPool": _op_max_pool,
    "AveragePool": _op_average_pool,
}
