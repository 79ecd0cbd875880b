"""Weight-only low precision: float32 weights as bfloat16 or int8 (``quantize`` of
:mod:`rnncore.functional`, the layers and the models).

The one definition of both formats; the core (``cpp/include/rnncore/lowp.hpp``) widens the
stored values back to float32 inside its kernels, and everything else (activations, states,
accumulation, gate math) stays float32.

* ``"bf16"``: each weight rounded to nearest even to bfloat16, stored as its 16 bits
  (``uint16``, the high half of the float32). 8 significant bits: ``|w - dequantize(q)| <=
  2**-8 |w|`` for every finite ``w`` in bfloat16's range.
* ``"int8"``: symmetric, one float32 scale per output column (the last axis):
  ``s_j = max_k |w[k, j]| / 127``, ``q = round(w / s)`` in ``[-127, 127]``, ``w ~ s_j q``
  with ``|w - s_j q| <= s_j / 2``. A column of zeros has scale 0.

:func:`dequantize` gives the float32 weights the kernels compute with (bf16 exactly; int8's
kernel sums ``x q`` and scales once, which differs from ``x (s q)`` by float32 rounding).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["MODES", "Quantized", "quantize", "dequantize", "check_mode"]

#: the low-precision formats
MODES = ("bf16", "int8")


class Quantized(NamedTuple):
    """One weight in low precision: ``values`` (``uint16`` bfloat16 bits, or ``int8``) of
    the weight's shape, and for int8 ``scale``, float32 of the last axis's length."""

    mode: str
    values: np.ndarray
    scale: np.ndarray | None = None

    @property
    def shape(self) -> tuple:
        return self.values.shape


def check_mode(mode, what: str = "quantize") -> str:
    if mode not in MODES:
        raise ValueError(f"{what}: expected one of {MODES}, got {mode!r}")
    return mode


def quantize(w, mode: str, name: str = "weight") -> Quantized:
    """``w`` (a float32 array, 1-D or 2-D, columns on the last axis) in low precision."""
    check_mode(mode)
    if not isinstance(w, np.ndarray) or w.dtype != np.float32:
        got = w.dtype if isinstance(w, np.ndarray) else type(w).__name__
        raise TypeError(
            f"{name}: quantize takes float32 weights only, got {got}"
            + (" (a float64 model: convert it to float32 first)" if got == np.float64 else "")
        )
    if mode == "bf16":
        bits = np.ascontiguousarray(w).view(np.uint32)
        # round to nearest even on the 16 bits dropped; NaN stays a (quiet) NaN
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        rounded = np.where(np.isnan(w), (bits >> 16) | 0x40, rounded)
        return Quantized(mode, rounded.astype(np.uint16))
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name}: int8 quantization needs finite weights (found inf or NaN)")
    flat = w.reshape(-1, w.shape[-1]) if w.ndim else w.reshape(1, 1)
    scale = (np.abs(flat).max(axis=0) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(flat / safe), -127, 127).astype(np.int8)
    return Quantized(mode, q.reshape(w.shape), scale)


def dequantize(q: Quantized) -> np.ndarray:
    """The float32 weights ``q`` stands for: bf16 bits widened, or ``scale * values``."""
    if q.mode == "bf16":
        return (q.values.astype(np.uint32) << 16).view(np.float32)
    return (q.values.astype(np.float32) * q.scale).astype(np.float32)


def check_quantized(q, mode: str, shape: tuple, name: str) -> Quantized:
    """``q`` checked as a :class:`Quantized` weight of ``mode`` and ``shape`` (its values'
    dtype, its scale's presence, dtype and shape): the refusals a tampered file meets."""
    if not isinstance(q, Quantized):
        raise TypeError(f"{name}: expected a Quantized weight, got {type(q).__name__}")
    dtype = np.uint16 if mode == "bf16" else np.int8
    v = q.values
    if q.mode != mode:
        raise ValueError(f"{name}: expected quantize mode {mode!r}, got {q.mode!r}")
    if not isinstance(v, np.ndarray) or v.dtype != dtype or v.shape != tuple(shape):
        raise ValueError(
            f"{name}: expected {np.dtype(dtype)} values of shape {tuple(shape)}, got "
            f"{getattr(v, 'dtype', type(v).__name__)} {getattr(v, 'shape', '')}"
        )
    if mode == "int8":
        s = q.scale
        want = (shape[-1],)
        if not isinstance(s, np.ndarray) or s.dtype != np.float32 or s.shape != want:
            raise ValueError(
                f"{name}: expected float32 scales of shape {want}, got "
                f"{getattr(s, 'dtype', type(s).__name__)} {getattr(s, 'shape', '')}"
            )
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError(f"{name}: scales must be finite and >= 0")
    elif q.scale is not None:
        raise ValueError(f"{name}: a bf16 weight has no scale")
    return Quantized(mode, np.ascontiguousarray(v), q.scale)
