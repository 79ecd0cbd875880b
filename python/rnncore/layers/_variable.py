"""Weights and masked outputs: :class:`Variable` and :class:`MaskedOutput`.

A layer holds its weights as :class:`Variable` objects wrapping NumPy arrays. Assigning a
variable copies into its array in place, so the arrays a layer's core stream reads never
change identity (a stateful layer's stream, which packs them once, packs them again when
their ``version`` changed).
"""

from __future__ import annotations

import numpy as np

from ._args import as_float_array

__all__ = ["Variable", "MaskedOutput", "attach_mask", "as_mask"]


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


class Variable:
    """A named weight: a NumPy array that ``assign`` updates in place.

    ``np.asarray(v)`` and ``v.numpy()`` give its value (the latter a copy); ``v.value`` is
    the live array itself. ``version`` counts the updates made through :meth:`assign` and
    by the optimizers, so that what packs a copy of the weights (a recurrent layer's core
    stream, stateful or not) knows when to pack them again; writing into ``v.value``
    directly is not counted: follow such a write with ``v.assign(v.value)``.
    """

    __slots__ = ("name", "path", "trainable", "value", "version")

    def __init__(self, value: np.ndarray, name: str, path: str, trainable: bool = True):
        self.value = value
        self.name = name
        self.path = path
        self.trainable = trainable
        self.version = 0

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: str(self.value.dtype))
    ndim = property(lambda self: self.value.ndim)

    def numpy(self) -> np.ndarray:
        return self.value.copy()

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        self.version = 0  # files pickled before the counter existed
        for k, v in state.items():
            setattr(self, k, v)

    def assign(self, value) -> None:
        """Copy ``value`` (converted to this variable's dtype) into the weight, in place."""
        a = as_float_array(value, self.value.dtype, f"weight {self.path!r}")
        if a.shape != self.value.shape:
            raise ValueError(
                f"weight {self.path!r}: expected shape {self.value.shape}, got {a.shape}"
            )
        np.copyto(self.value, a)
        self.version += 1

    def __array__(self, dtype=None, copy=None):
        if copy:
            return self.value.astype(dtype or self.value.dtype, copy=True)
        return self.value if dtype is None else self.value.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}>"


# --------------------------------------------------------------------------------------
# Masks travelling with arrays (Keras's ``_keras_mask``)
# --------------------------------------------------------------------------------------


class MaskedOutput(np.ndarray):
    """An ndarray that carries the Keras mask of a layer's output as ``_keras_mask``.

    Keras attaches the mask a layer computes (``Masking``, and layers that pass a mask on)
    to its output tensor, and the next layer called on it picks the mask up. rnncore does
    the same with this thin ndarray subclass so that layer-by-layer scripts mask exactly as
    in Keras. Arithmetic and slicing give arrays without a mask (as Keras's new tensors).
    """

    _keras_mask = None

    def __array_finalize__(self, obj):
        # New arrays derived from a masked one do not inherit the mask.
        pass


def attach_mask(outputs, mask):
    """Return ``outputs`` with the mask(s) attached (only where a mask is not None)."""
    if mask is None:
        return outputs
    if isinstance(outputs, (tuple, list)):
        masks = mask if isinstance(mask, (tuple, list)) else [mask] + [None] * (len(outputs) - 1)
        return type(outputs)(attach_mask(o, m) for o, m in zip(outputs, masks))
    if isinstance(mask, (tuple, list)):
        mask = mask[0]
        if mask is None:
            return outputs
    out = outputs.view(MaskedOutput)
    out._keras_mask = mask
    return out


def as_mask(mask, shape: tuple, owner: str) -> np.ndarray | None:
    """A ``(batch, timesteps)`` boolean mask for an input of ``shape``, or None."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        m = m != 0 if np.issubdtype(m.dtype, np.number) else m.astype(bool)
    if m.shape != tuple(shape[:2]):
        raise ValueError(
            f"{owner}: mask must have shape (batch, timesteps) = {tuple(shape[:2])}, got {m.shape}"
        )
    return m
