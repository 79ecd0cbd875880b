"""Merge layers, called on a list of arrays: ``Add``, ``Subtract``, ``Multiply``, ``Average``,
``Maximum``, ``Minimum``, ``Concatenate`` and ``Dot`` (Keras 3's ``keras.layers``), and their
functional forms ``add(...)``, ``concatenate(...)``, ...

Keras 3's rules (``keras/src/layers/merging/``), followed here:

* Element-wise merges: inputs of different ranks get axes of size 1 inserted after the batch
  axis until the ranks agree, then broadcast as NumPy does; the batch sizes must agree.
* Output mask of the element-wise merges: the logical OR of the input masks when every input
  has one, else None. ``Concatenate``: each input's mask (all True for an unmasked input)
  broadcast over its last axis, concatenated on ``axis``, then ``any`` over the last axis
  (so on the feature axis it is the OR too). ``Dot`` drops the mask.
* Masks also change values in three merges (when the inputs' ranks agree): ``Multiply``
  takes masked entries as 1 and zeroes the output where no input is unmasked (when every
  input has a mask); ``Maximum`` / ``Minimum`` merge left to right and skip a masked
  entry (take the other operand's).
"""

from __future__ import annotations

import numpy as np

from ._multi import ForwardCache, MultiInputLayer

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
           "add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate",
           "dot"]  # fmt: skip


def _sum_to(g: np.ndarray, shape: tuple) -> np.ndarray:
    """The gradient of a broadcast input of ``shape`` from ``g`` (its broadcast result):
    summed over the axes inserted after the batch axis and the axes broadcast from 1."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    aligned = shape[:1] + (1,) * (g.ndim - len(shape)) + shape[1:]
    axes = tuple(k for k, (a, n) in enumerate(zip(aligned, g.shape)) if a == 1 and n != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape)


def _or(masks: list) -> np.ndarray | None:
    """The OR of the masks when every one is given, else None (Keras's ``Merge``)."""
    if masks is None or any(m is None for m in masks):
        return None
    out = masks[0]
    for m in masks[1:]:
        out = np.logical_or(out, m)
    return out


class _Merge(MultiInputLayer):
    """Element-wise merges: broadcasting, the OR of the masks, backward through broadcasts.

    A subclass gives ``_merge(xs, masks) -> (y, cache)`` on inputs of equal ranks and
    ``_merge_backward(dy, cache) -> [dL/dx_i]`` (each of the broadcast shape or its own).
    """

    def __init__(self, **kwargs):  # Keras's signature: the base layer's arguments only
        super().__init__(**kwargs)

    def _pair(self, s1: tuple, s2: tuple) -> tuple:
        """Keras's ``_compute_elemwise_op_output_shape`` (aligned on the trailing axes)."""
        if len(s1) < len(s2):
            s1, s2 = s2, s1
        if not s2:
            return s1
        out = list(s1[: len(s1) - len(s2)])
        for i, j in zip(s1[len(s1) - len(s2) :], s2):
            if i is None or j is None:
                out.append(None)
            elif i == 1 or j == 1:
                out.append(j if i == 1 else i)
            elif i != j:
                raise ValueError(f"{self._owner()}: inputs have incompatible shapes {s1} and {s2}")
            else:
                out.append(i)
        return tuple(out)

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        batch = {s[0] for s in shapes if s} - {None}
        if len(batch) > 1:
            raise ValueError(
                f"{self._owner()}: cannot merge inputs with different batch sizes, got "
                f"shapes {shapes}"
            )
        out = shapes[0][1:]
        for s in shapes[1:]:
            out = self._pair(out, s[1:])
        return (batch.pop() if batch else None,) + out

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # validates the shapes
        super().build(input_shape)

    def _run(self, xs: list, mask):
        self.compute_output_shape([x.shape for x in xs])
        same_rank = len({x.ndim for x in xs}) == 1
        # Keras inserts the axes into new tensors, which carry no mask: masks act on values
        # only when the ranks agree
        masks = mask if (mask is not None and same_rank) else [None] * len(xs)
        rank = max(x.ndim for x in xs)
        aligned = [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]
        return self._merge(aligned, masks)

    def call(self, inputs, mask=None, training=None):
        return self._run(inputs, mask)[0]

    def call_train(self, x, mask, rng):
        y, cache = self._run(x, mask)
        self._train_cache = ([a.shape for a in x], cache)
        return y

    def backward(self, dy):
        shapes, cache = self._cached()
        self._grads = []
        dxs = self._merge_backward(np.asarray(dy), cache)
        return [_sum_to(np.asarray(d), s) for d, s in zip(dxs, shapes)]

    def compute_mask(self, inputs, mask=None):
        return _or(mask)


class Add(_Merge):
    """``inputs[0] + inputs[1] + ...`` (Keras's ``Add``)."""

    def _merge(self, xs, masks):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y, len(xs)

    def _merge_backward(self, dy, n):
        return [dy] * n


class Subtract(_Merge):
    """``inputs[0] - inputs[1]``: exactly two inputs (Keras's ``Subtract``)."""

    _n_inputs = (2, 2)

    def _merge(self, xs, masks):
        return xs[0] - xs[1], None

    def _merge_backward(self, dy, cache):
        return [dy, -dy]


class Average(_Merge):
    """``(inputs[0] + inputs[1] + ...) / n`` (Keras's ``Average``)."""

    def _merge(self, xs, masks):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y / len(xs), len(xs)

    def _merge_backward(self, dy, n):
        return [dy / n] * n


class Multiply(_Merge):
    """``inputs[0] * inputs[1] * ...`` (Keras's ``Multiply``).

    A masked entry counts as 1; when every input has a mask, the output is 0 where all
    inputs are masked (outside the OR of the masks)."""

    def _merge(self, xs, masks):
        used = [
            x if m is None else np.where(m[..., None], x, 1).astype(x.dtype)
            for x, m in zip(xs, masks)
        ]
        y = used[0]
        for x in used[1:]:
            y = y * x
        keep = _or(masks)
        if keep is not None:
            y = np.where(keep[..., None], y, 0).astype(y.dtype)
        return y, (used, masks, keep)

    def _merge_backward(self, dy, cache):
        used, masks, keep = cache
        if keep is not None:
            dy = np.where(keep[..., None], dy, 0)
        # d(x_0 ... x_n-1)/dx_i = product of the others, as a prefix times a suffix product
        # (no division, so zeros are fine)
        n = len(used)
        prefix, suffix = [None] * n, [None] * n
        for i in range(1, n):
            prefix[i] = used[i - 1] if i == 1 else prefix[i - 1] * used[i - 1]
        for i in range(n - 2, -1, -1):
            suffix[i] = used[i + 1] if i == n - 2 else suffix[i + 1] * used[i + 1]
        out = []
        for i in range(n):
            d = dy
            for factor in (prefix[i], suffix[i]):
                if factor is not None:
                    d = d * factor
            if masks[i] is not None:
                d = np.where(masks[i][..., None], d, 0)
            out.append(d)
        return out


class _Extremum(_Merge):
    """``Maximum`` and ``Minimum``: merged left to right as Keras's
    ``_apply_merge_op_and_or_mask``; with masks, step k (output o with mask mo, input x
    with mask m)::

        x' = where(m, x, o);   o' = where(mo, o, x');   o = op(o', x');   mo = mo OR m
    """

    _op = staticmethod(np.maximum)

    def _picks_first(self, a, b):
        return a >= b

    def _merge(self, xs, masks):
        o, mo = xs[0], masks[0]
        mo = None if mo is None else mo[..., None]
        steps = []
        for x, m in zip(xs[1:], masks[1:]):
            m = None if m is None else m[..., None]
            x_used = x if m is None else np.where(m, x, o)
            o_used = o if mo is None else np.where(mo, o, x_used)
            first = self._picks_first(o_used, x_used)
            steps.append((o.shape, x.shape, m, mo, first))
            o = self._op(o_used, x_used).astype(o.dtype, copy=False)
            mo = np.logical_or(mo, m) if (m is not None and mo is not None) else None
        return o, steps

    def _merge_backward(self, dy, steps):
        dxs = []
        d_o = dy
        for o_shape, x_shape, m, mo, first in reversed(steps):
            # o = op(o', x'): the gradient goes to the operand op picked (the first on ties)
            d_ou, d_xu = np.where(first, d_o, 0), np.where(first, 0, d_o)
            if mo is not None:  # o' = where(mo, o, x')
                d_xu = d_xu + np.where(mo, 0, d_ou)
                d_ou = np.where(mo, d_ou, 0)
            d_x = d_xu
            if m is not None:  # x' = where(m, x, o)
                d_ou = d_ou + np.where(m, 0, d_xu)
                d_x = np.where(m, d_xu, 0)
            dxs.append(_sum_to(d_x, x_shape))
            d_o = _sum_to(d_ou, o_shape)
        dxs.append(d_o)
        return dxs[::-1]


class Maximum(_Extremum):
    """The element-wise maximum of the inputs (Keras's ``Maximum``); masked entries are
    skipped (see :class:`_Extremum`)."""


class Minimum(_Extremum):
    """The element-wise minimum of the inputs (Keras's ``Minimum``); masked entries are
    skipped (see :class:`_Extremum`)."""

    _op = staticmethod(np.minimum)

    def _picks_first(self, a, b):
        return a <= b


class Concatenate(MultiInputLayer):
    """The inputs concatenated on ``axis`` (Keras's ``Concatenate``); the other axes must
    agree. Output mask: see the module's help."""

    _config = ("axis",)

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Concatenate: axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def _axis(self, ndim: int) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"{self._owner()}: axis={self.axis} is out of range for rank {ndim}")
        return self.axis % ndim

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(
                f"{self._owner()}: inputs must have the same rank, got shapes {shapes}"
            )
        axis = self._axis(ranks.pop())
        out = list(shapes[0])
        for k in range(len(out)):
            if k == axis:
                sizes = [s[k] for s in shapes]
                out[k] = None if None in sizes else sum(sizes)
                continue
            sizes = {s[k] for s in shapes} - {None}
            if len(sizes) > 1:
                raise ValueError(
                    f"{self._owner()}: inputs must match except on the concatenation axis "
                    f"{self.axis}, got shapes {shapes}"
                )
            out[k] = sizes.pop() if sizes else None
        return tuple(out)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        super().build(input_shape)

    def call(self, inputs, mask=None, training=None):
        self.compute_output_shape([x.shape for x in inputs])
        return np.concatenate(inputs, axis=self.axis)

    def call_train(self, x, mask, rng):
        y = self.call(x)
        self._train_cache = ([a.shape[self.axis] for a in x],)
        return y

    def backward(self, dy):
        (sizes,) = self._cached()
        self._grads = []
        return np.split(np.asarray(dy), np.cumsum(sizes)[:-1], axis=self.axis)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        full = [
            np.ones(x.shape, bool) if m is None else np.broadcast_to(m[..., None], x.shape)
            for x, m in zip(inputs, mask)
        ]
        return np.any(np.concatenate(full, axis=self.axis), axis=-1)


class Dot(ForwardCache, MultiInputLayer):
    """The dot product of two inputs over one axis of each, sample by sample (Keras's
    ``Dot``, its ``batch_dot``).

    ``axes``: an integer (the same axis of both; a negative one counts from each input's
    end) or a pair. The output has the first input's other axes, then the second's (less
    the batch axis); a result of rank 1 becomes ``(batch, 1)``. ``normalize=True`` first
    scales each input to unit L2 norm along its axis, ``x * min(1/sqrt(sum x^2), 1e7)``
    (Keras's ``normalize``), so the output is the cosine proximity. The mask is dropped.
    """

    _n_inputs = (2, 2)
    _config = ("axes", "normalize")

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axes, (list, tuple)):
            if len(axes) != 2:
                raise ValueError(f"Dot: axes must be an integer or a pair, got {axes!r}")
            axes = list(axes)
        for a in axes if isinstance(axes, list) else [axes]:
            if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
                raise TypeError(f"Dot: axes must be integers, got {axes!r}")
        self.axes = [int(a) for a in axes] if isinstance(axes, list) else int(axes)
        self.normalize = bool(normalize)

    def _resolved(self, ranks) -> list[int]:
        pair = self.axes if isinstance(self.axes, list) else [self.axes] * 2
        out = []
        for a, r in zip(pair, ranks):
            if not -r <= a < r:
                raise ValueError(f"{self._owner()}: axis {a} is out of range for rank {r}")
            out.append(a % r)
        if 0 in out:
            raise ValueError(f"{self._owner()}: cannot take the dot product over the batch axis 0")
        return out

    def compute_output_shape(self, input_shape):
        s1, s2 = (list(s) for s in self._shapes(input_shape))
        if len(s1) < 2 or len(s2) < 2:
            raise ValueError(f"{self._owner()}: inputs must have rank >= 2, got {s1} and {s2}")
        a1, a2 = self._resolved((len(s1), len(s2)))
        if None not in (s1[a1], s2[a2]) and s1[a1] != s2[a2]:
            raise ValueError(
                f"{self._owner()}: the dot axes differ in size: {s1[a1]} (axis {a1} of "
                f"{tuple(s1)}) != {s2[a2]} (axis {a2} of {tuple(s2)})"
            )
        if None not in (s1[0], s2[0]) and s1[0] != s2[0]:
            raise ValueError(f"{self._owner()}: batch sizes differ: {tuple(s1)}, {tuple(s2)}")
        out = s1[:a1] + s1[a1 + 1 :] + s2[1:a2] + s2[a2 + 1 :]
        return tuple(out) + ((1,) if len(out) == 1 else ())

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        super().build(input_shape)

    @staticmethod
    def _unit(x, axis):
        """``(x * inv, inv, clipped)``: Keras's L2 normalisation along ``axis``."""
        with np.errstate(divide="ignore"):  # a zero vector: 1/0 = inf, clipped to 1/epsilon
            inv_exact = 1.0 / np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
        cap = x.dtype.type(1.0 / 1e-7)  # Keras's backend.epsilon()
        return x * np.minimum(inv_exact, cap), np.minimum(inv_exact, cap), inv_exact >= cap

    def _forward(self, xs):
        x, y = xs
        out_shape = self.compute_output_shape([x.shape, y.shape])
        a1, a2 = self._resolved((x.ndim, y.ndim))
        norms = None
        if self.normalize:
            (x, inv1, clip1), (y, inv2, clip2) = self._unit(x, a1), self._unit(y, a2)
            norms = ((x, inv1, clip1), (y, inv2, clip2))
        # (batch, rest of x, k) @ (batch, k, rest of y): one batched matrix product
        X = np.moveaxis(x, a1, -1).reshape(x.shape[0], -1, x.shape[a1])
        Y = np.moveaxis(y, a2, 1).reshape(y.shape[0], y.shape[a2], -1)
        out = np.matmul(X, Y).reshape(out_shape)
        return out, (X, Y, x.shape, y.shape, a1, a2, norms)

    def backward(self, dy):
        X, Y, xs, ys, a1, a2, norms = self._cached()
        self._grads = []
        dR = np.asarray(dy).reshape(X.shape[0], X.shape[1], Y.shape[2])
        dX, dY = dR @ np.swapaxes(Y, 1, 2), np.swapaxes(X, 1, 2) @ dR
        moved_x = tuple(np.delete(xs, a1)) + (xs[a1],)
        moved_y = (ys[0], ys[a2]) + tuple(np.delete(ys, [0, a2]))
        dx = np.moveaxis(dX.reshape(moved_x), -1, a1)
        dy_ = np.moveaxis(dY.reshape(moved_y), 1, a2)
        if norms is not None:
            # u = x * inv, inv = 1/|x|: du -> dx = inv (du - u sum(du u)); inv clipped: inv du
            out = []
            for d, (u, inv, clip), a in zip((dx, dy_), norms, (a1, a2)):
                proj = u * np.sum(d * u, axis=a, keepdims=True)
                out.append(inv * (d - np.where(clip, 0, proj)))
            dx, dy_ = out
        return [dx, dy_]

    def compute_mask(self, inputs, mask=None):
        return None


# ---- functional forms (Keras's keras.layers.add(...) and the like) ----------------------


def _functional(cls):
    def merge(inputs, **kwargs):
        return cls(**kwargs)(inputs)

    merge.__name__ = merge.__qualname__ = cls.__name__.lower()
    merge.__doc__ = (
        f"``{cls.__name__}(**kwargs)(inputs)`` (Keras's ``keras.layers.{merge.__name__}``)."
    )
    return merge


add, subtract, multiply, average, maximum, minimum = map(
    _functional, (Add, Subtract, Multiply, Average, Maximum, Minimum)
)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis=axis, **kwargs)(inputs)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, **kwargs):
    """``Dot(axes=axes, **kwargs)(inputs)``."""
    return Dot(axes=axes, **kwargs)(inputs)
