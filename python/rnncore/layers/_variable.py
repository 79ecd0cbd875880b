"""Weights and masked outputs: :class:`Variable` and :class:`MaskedOutput`.

A layer holds its weights as :class:`Variable` objects wrapping NumPy arrays. Assigning a
variable copies into its array in place, so the arrays a layer's core stream reads never
change identity.

Generations: every change to what a layer computes (a weight assigned or updated by an
optimizer, a quantize, an option set) draws a new number from one process-wide counter
(:func:`next_generation`) and stores it on the layer (``Layer._generation``). The numbers are
never reused, so a cache (a core stream's packed weights, a model's chain, a pool's streams)
that remembers the generation it was built at knows exactly when it is stale by comparing
one integer: no ``id()`` (which CPython reuses once an object is freed) and no tuple of
versions.
"""

from __future__ import annotations

import itertools

import numpy as np

from ._args import as_float_array

__all__ = ["Variable", "MaskedOutput", "attach_mask", "as_mask", "next_generation"]

#: the next generation number: monotonic and never reused in the process (itertools.count's
#: __next__ is one C call, atomic under the GIL, so two threads never draw the same number)
next_generation = itertools.count(1).__next__


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


class Variable:
    """A named weight: a NumPy array that ``assign`` updates in place.

    ``np.asarray(v)`` and ``v.numpy()`` give its value (the latter a copy); ``v.value`` is
    the live array itself. ``version`` counts the updates made through :meth:`assign` and
    by the optimizers (:meth:`changed`), and each update gives the layer owning the variable
    a new generation (see the module's help), so that what packs a copy of the weights (a
    recurrent layer's core stream, a model's chain, a pool) packs them again; writing into
    ``v.value`` directly is not counted: follow such a write with ``v.assign(v.value)``.
    """

    __slots__ = ("name", "path", "trainable", "value", "version", "generation", "_owner")

    def __init__(self, value: np.ndarray, name: str, path: str, trainable: bool = True, owner=None):
        self.value = value
        self.name = name
        self.path = path
        self.trainable = trainable
        self.version = 0
        self.generation = next_generation()  # of the value: a new one at every update
        self._owner = owner  # the layer whose generation an update moves on (Layer.add_weight)

    def changed(self) -> None:
        """Count an update of the value made in place (assign, an optimizer's step): the
        owning layer's caches see a new generation and pack the weights again."""
        self.version += 1
        self.generation = g = next_generation()
        owner = self._owner
        if owner is not None:
            owner._generation = g

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: str(self.value.dtype))
    ndim = property(lambda self: self.value.ndim)

    def numpy(self) -> np.ndarray:
        return self.value.copy()

    def __getstate__(self):
        # not the owner: the layer links its variables again when it is unpickled
        return {k: getattr(self, k) for k in self.__slots__ if k != "_owner"}

    def __setstate__(self, state):
        self.version = 0  # files pickled before the counter existed
        self._owner = None
        for k, v in state.items():
            setattr(self, k, v)
        self.generation = next_generation()  # numbers are the process's own, never pickled

    def assign(self, value) -> None:
        """Copy ``value`` (converted to this variable's dtype) into the weight, in place."""
        a = as_float_array(value, self.value.dtype, f"weight {self.path!r}")
        if a.shape != self.value.shape:
            raise ValueError(
                f"weight {self.path!r}: expected shape {self.value.shape}, got {a.shape}"
            )
        np.copyto(self.value, a)
        self.changed()

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
