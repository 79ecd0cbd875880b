"""Layer arguments: Keras's names, dtypes, array conversion, shapes and keyword checks."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from .._memory import check_allocation
from ..errors import UnsupportedArgumentError

__all__ = [
    "to_snake_case",
    "unique_name",
    "standardize_dtype",
    "as_float_array",
    "check_allocation",
    "require_default",
    "reject_kwargs",
    "positive_int",
    "shape_tuple",
    "declared_shape",
    "batch_size_arg",
]


# --------------------------------------------------------------------------------------
# Names: Keras's scheme, "lstm", "lstm_1", "lstm_2", ... per snake-cased class name.
# --------------------------------------------------------------------------------------

_NAME_UIDS: defaultdict[str, int] = defaultdict(int)


def to_snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: layer names, and the group names of its weights files."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()  # Keras: "Conv1D" -> "conv1d"


def unique_name(base: str) -> str:
    n = _NAME_UIDS[base]
    _NAME_UIDS[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


# --------------------------------------------------------------------------------------
# dtype: float32 (default) or float64, as a string like Keras's ``layer.dtype``.
# --------------------------------------------------------------------------------------

_FLOAT_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def standardize_dtype(dtype, owner: str = "layer", integers: bool = False) -> np.dtype:
    """``None`` -> float32; a name, NumPy dtype, Keras DTypePolicy or its config -> dtype.

    ``integers=True`` (a model input: token ids for an Embedding) also accepts the integer
    and bool dtypes, as ``keras.Input`` does; layers compute in float32 or float64 only.
    """
    if dtype is None:
        return np.dtype(np.float32)
    if isinstance(dtype, dict):  # a serialized Keras DTypePolicy
        dtype = dtype.get("config", dtype).get("name", dtype)
    name = getattr(dtype, "name", dtype)  # a Keras DTypePolicy object has .name
    try:
        d = np.dtype(name)
    except TypeError:
        d = None
    if integers and d is not None and d.kind in "biu":
        return d
    if d not in _FLOAT_DTYPES:
        allowed = "'float32' or 'float64'" + (" (or an integer dtype)" if integers else "")
        raise UnsupportedArgumentError(
            f"{owner}: dtype={name!r} is not supported by rnncore; use {allowed}"
        )
    return d


# --------------------------------------------------------------------------------------
# Array arguments: one conversion for inputs, states and weights
# --------------------------------------------------------------------------------------

_REAL_KINDS = frozenset("biuf")  # bool, signed / unsigned integer, floating point


def as_float_array(value, dtype, what: str) -> np.ndarray:
    """``value`` as an array of the float ``dtype``: real values are cast as Keras does.

    Complex values (the cast would drop the imaginary part), strings, dates and object
    arrays holding anything but real numbers (``None`` would become NaN) are refused with a
    TypeError naming ``what`` -- nothing is converted silently into a wrong number.
    """
    a = np.asarray(value)
    kind = a.dtype.kind
    if kind == "O":
        try:  # the dtype NumPy would give the elements themselves
            kind = np.asarray(a.tolist()).dtype.kind
        except (TypeError, ValueError):
            kind = "O"
    if kind not in _REAL_KINDS:
        if kind == "c":
            why = "complex values (casting them would discard the imaginary part)"
        elif a.dtype.kind == "O":
            why = "an object array with non-numeric elements (e.g. None)"
        else:
            why = f"dtype {a.dtype}"
        raise TypeError(f"{what}: expected real numbers, got {why}")
    return np.asarray(a, dtype=dtype)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def require_default(owner: str, **args) -> None:
    """Refuse Keras arguments rnncore does not implement, unless left at their default.

    Each keyword is ``name=(value, default)``; ``None`` defaults also accept ``None``.
    """
    for name, (value, default) in args.items():
        same = (
            value is default if default is None or isinstance(default, bool) else (value == default)
        )
        if not same:
            raise UnsupportedArgumentError(
                f"{owner}: argument {name}={value!r} is not supported by rnncore "
                f"(only the default {name}={default!r})"
            )


# Keras arguments some layers accept that rnncore knows about and refuses when set.
_KNOWN_UNSUPPORTED = {
    "time_major": False,
    "activity_regularizer": None,
    "kernel_regularizer": None,
    "recurrent_regularizer": None,
    "bias_regularizer": None,
    "kernel_constraint": None,
    "recurrent_constraint": None,
    "bias_constraint": None,
    "sparse": None,
    "ragged": None,
    "lora_rank": None,
    "lora_alpha": None,
    "quantization_config": None,
}


def reject_kwargs(owner: str, kwargs: dict) -> None:
    """Known-but-unsupported Keras kwargs: error naming them; unknown kwargs: TypeError."""
    for name, value in list(kwargs.items()):
        if name in _KNOWN_UNSUPPORTED:
            require_default(owner, **{name: (value, _KNOWN_UNSUPPORTED[name])})
            del kwargs[name]
    if kwargs:
        names = ", ".join(repr(k) for k in kwargs)
        raise TypeError(f"{owner}: unexpected keyword argument(s) {names}")


def positive_int(value, what: str) -> int:
    """``value`` as a positive ``int``: an integer (NumPy's too) or an integral float, as a
    JSON config may hold. A bool, a string or a fractional number is refused rather than
    rounded (Keras would turn ``Dense(2.7)`` into 2 units and ``LSTM(True)`` into 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer, float, np.floating)
    ):
        raise TypeError(
            f"{what} must be a positive integer, got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(value) or int(value) != value or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def shape_tuple(shape, what: str) -> tuple:
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except TypeError:
        raise TypeError(f"{what}: expected a shape tuple, got {shape!r}") from None


def batch_size_arg(value, what: str):
    """A declared batch size: None or a positive integer. Refused here, where it is given,
    rather than when the first array meets the model (0 or -2 would fail much later)."""
    if value is None:
        return None
    return positive_int(value, what)


def declared_shape(shape, what: str, batch_axis: bool = False) -> tuple:
    """A shape the user declares (Input's ``shape`` / ``batch_shape``, a layer's
    ``input_shape`` / ``batch_input_shape``): each dimension None or a whole number >= 0 (as
    Keras), and with ``batch_axis`` the first one a batch size (None or >= 1)."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{what}: expected a shape tuple, got {shape!r}")
    shape = tuple(shape)
    dims = []
    for k, d in enumerate(shape):
        if batch_axis and k == 0:
            dims.append(batch_size_arg(d, f"{what}: the batch size (first dimension)"))
            continue
        if d is None:
            dims.append(None)
            continue
        whole = isinstance(d, (int, np.integer)) or (
            isinstance(d, (float, np.floating)) and math.isfinite(d) and int(d) == d
        )
        if not whole or isinstance(d, (bool, np.bool_)):
            raise TypeError(
                f"{what}: each dimension must be a whole number or None, got {d!r} in {shape!r}"
            )
        if d < 0:
            raise ValueError(
                f"{what}: dimensions must be >= 0 (or None for any size), got {int(d)} in "
                f"{tuple(None if e is None else e for e in shape)!r}"
            )
        dims.append(int(d))
    return tuple(dims)
