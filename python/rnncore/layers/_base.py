"""What every layer shares: names, dtype, weights, input-shape arguments, masks, config.

A layer holds its weights as :class:`Variable` objects wrapping NumPy arrays. Assigning a
variable copies into its array in place, so the arrays a layer hands to the core never
change identity and a cached call (see the recurrent layers' fast path) stays valid.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from .._memory import check_allocation
from ..errors import UnsupportedArgumentError

__all__ = ["Layer", "Variable", "MaskedOutput", "UnsupportedArgumentError"]


# --------------------------------------------------------------------------------------
# Names: Keras's scheme, "lstm", "lstm_1", "lstm_2", ... per snake-cased class name.
# --------------------------------------------------------------------------------------

_NAME_UIDS: defaultdict[str, int] = defaultdict(int)


def to_snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    n = _NAME_UIDS[base]
    _NAME_UIDS[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


# --------------------------------------------------------------------------------------
# dtype: float32 (default) or float64, as a string like Keras's ``layer.dtype``.
# --------------------------------------------------------------------------------------

_FLOAT_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def standardize_dtype(dtype, owner: str = "layer") -> np.dtype:
    """``None`` -> float32; a name, NumPy dtype, Keras DTypePolicy or its config -> dtype."""
    if dtype is None:
        return np.dtype(np.float32)
    if isinstance(dtype, dict):  # a serialized Keras DTypePolicy
        dtype = dtype.get("config", dtype).get("name", dtype)
    name = getattr(dtype, "name", dtype)  # a Keras DTypePolicy object has .name
    try:
        d = np.dtype(name)
    except TypeError:
        d = None
    if d not in _FLOAT_DTYPES:
        raise UnsupportedArgumentError(
            f"{owner}: dtype={name!r} is not supported by rnncore; use 'float32' or 'float64'"
        )
    return d


def canonical_dtype(a):
    """``a`` viewed with NumPy's own float32/float64 dtype object (no copy).

    Unpickled arrays carry an equal but distinct dtype object, which the core (it checks
    the dtype's identity) would refuse.
    """
    if isinstance(a, np.ndarray) and a.dtype in _FLOAT_DTYPES:
        canonical = np.dtype(_FLOAT_DTYPES[a.dtype])
        if a.dtype is not canonical:
            return a.view(canonical)
    return a


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
    return canonical_dtype(np.asarray(a, dtype=dtype))


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


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


class Variable:
    """A named weight: a NumPy array that ``assign`` updates in place.

    ``np.asarray(v)`` and ``v.numpy()`` give its value (the latter a copy); ``v.value`` is
    the live array itself.
    """

    __slots__ = ("name", "path", "trainable", "value")

    def __init__(self, value: np.ndarray, name: str, path: str, trainable: bool = True):
        self.value = value
        self.name = name
        self.path = path
        self.trainable = trainable

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: str(self.value.dtype))
    ndim = property(lambda self: self.value.ndim)

    def numpy(self) -> np.ndarray:
        return self.value.copy()

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self.value = canonical_dtype(self.value)

    def assign(self, value) -> None:
        """Copy ``value`` (converted to this variable's dtype) into the weight, in place."""
        a = as_float_array(value, self.value.dtype, f"weight {self.path!r}")
        if a.shape != self.value.shape:
            raise ValueError(
                f"weight {self.path!r}: expected shape {self.value.shape}, got {a.shape}"
            )
        np.copyto(self.value, a)

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


# --------------------------------------------------------------------------------------
# Layer
# --------------------------------------------------------------------------------------


class DropsTransientOnPickle:
    """Pickles an object's attributes except those named in ``_transient`` (caches, bound
    core calls, training state), which come back as None."""

    _transient: tuple = ()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._transient:
            if name in state:
                state[name] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class Layer(DropsTransientOnPickle):
    """Base of all rnncore layers (Keras's ``keras.layers.Layer`` subset for inference).

    Subclasses implement ``build(input_shape)``, ``call(inputs, mask=None, training=None,
    ...)``, ``compute_output_shape`` and, when they transform masks, ``compute_mask``.
    Layers build lazily on their first call, or explicitly with ``build(input_shape)``.
    """

    #: Whether ``input_dim``/``input_length`` describe a sequence ``(timesteps, input_dim)``.
    _sequence_input = False

    def __init__(self, *, name=None, dtype=None, trainable=True, autocast=True, **kwargs):
        owner = type(self).__name__
        self._input_shape_arg = self._pop_input_shape(kwargs, owner)
        reject_kwargs(owner, kwargs)
        self.name = name if name is not None else unique_name(to_snake_case(owner))
        self._np_dtype = standardize_dtype(dtype, owner)
        if not isinstance(trainable, bool):
            raise TypeError(f"{owner}: trainable must be a bool, got {trainable!r}")
        self.trainable = trainable
        self.autocast = autocast
        self._variables: list[Variable] = []
        self.built = False
        self._build_input_shape = None

    # ---- input shape arguments ---------------------------------------------------------

    def _pop_input_shape(self, kwargs: dict, owner: str):
        """The batch input shape given by Keras's shape kwargs, or None.

        ``input_shape=(timesteps, input_dim)``; ``input_dim=`` (with ``input_length=`` for
        a sequence layer; timesteps ``None`` otherwise); ``batch_input_shape=`` and
        ``batch_size=`` (Keras 2).
        """
        input_shape = kwargs.pop("input_shape", None)
        input_dim = kwargs.pop("input_dim", None)
        input_length = kwargs.pop("input_length", None)
        batch_input_shape = kwargs.pop("batch_input_shape", None)
        batch_size = kwargs.pop("batch_size", None)
        if batch_input_shape is not None:
            if input_shape is not None or input_dim is not None:
                raise ValueError(f"{owner}: give batch_input_shape or input_shape/input_dim")
            return shape_tuple(batch_input_shape, f"{owner}: batch_input_shape")
        if input_dim is not None:
            if input_shape is not None:
                raise ValueError(f"{owner}: give input_shape or input_dim, not both")
            if self._sequence_input:
                input_shape = (input_length, input_dim)
            elif input_length is not None:
                raise TypeError(f"{owner}: input_length applies to sequence layers only")
            else:
                input_shape = (input_dim,)
        elif input_length is not None:
            if input_shape is not None or not self._sequence_input:
                raise TypeError(f"{owner}: input_length needs input_dim (a sequence layer)")
            raise ValueError(f"{owner}: input_length={input_length} needs input_dim too")
        if input_shape is None:
            if batch_size is not None:
                raise ValueError(f"{owner}: batch_size needs input_shape or input_dim")
            return None
        return (batch_size,) + shape_tuple(input_shape, f"{owner}: input_shape")

    # ---- properties ----------------------------------------------------------------------

    @property
    def dtype(self) -> str:
        return _FLOAT_DTYPES[self._np_dtype]

    @property
    def compute_dtype(self) -> str:
        return self.dtype

    @property
    def weights(self) -> list[Variable]:
        return list(self._variables)

    @property
    def trainable_weights(self) -> list[Variable]:
        return [v for v in self.weights if v.trainable] if self.trainable else []

    @property
    def non_trainable_weights(self) -> list[Variable]:
        if not self.trainable:
            return self.weights
        return [v for v in self.weights if not v.trainable]

    @property
    def variables(self) -> list[Variable]:
        return self.weights

    @property
    def input_shape(self):
        """The batch input shape the layer was built with (or declared with)."""
        return self._build_input_shape or self._input_shape_arg

    @property
    def supports_masking(self) -> bool:
        return True

    # ---- weights ----------------------------------------------------------------------

    def add_weight(self, name: str, shape, initializer, rng, trainable=True) -> Variable:
        from . import initializers

        init = initializers.get(initializer)
        check_allocation(
            f"{type(self).__name__} {self.name!r}: weight {name!r}", [shape], self._np_dtype
        )
        value = initializers.materialize(init, tuple(shape), self._np_dtype, rng)
        var = Variable(value, name, f"{self.name}/{name}", trainable)
        self._variables.append(var)
        return var

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, in Keras's order and shapes."""
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights) -> None:
        """Set the weights from arrays in Keras's order and shapes (converted to the dtype).

        An unbuilt layer whose input size can be read off the weights builds itself first.
        """
        weights = list(weights)
        if not self.built:
            self._build_from_weights(weights)
        arrays = self._check_weights(weights)
        for v, a in zip(self.weights, arrays):  # all checked before anything changes
            v.assign(a)

    def _check_weights(self, weights) -> list[np.ndarray]:
        """The weights as arrays, after checking their count and shapes against the layer's."""
        own = self.weights
        if len(weights) != len(own):
            names = ", ".join(v.name for v in own) or "none"
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) has {len(own)} weight(s) "
                f"({names}), got a list of {len(weights)}"
            )
        arrays = []
        for v, w in zip(own, weights):
            a = as_float_array(
                w, v.value.dtype, f"layer {self.name!r} ({type(self).__name__}): weight {v.name!r}"
            )
            if a.shape != v.shape:
                raise ValueError(
                    f"layer {self.name!r} ({type(self).__name__}): weight {v.name!r} "
                    f"expects shape {v.shape}, got {a.shape}"
                )
            arrays.append(a)
        return arrays

    def _build_from_weights(self, weights) -> None:
        """Build an unbuilt layer from its weights' shapes where possible."""
        raise ValueError(
            f"layer {self.name!r} ({type(self).__name__}) is not built yet: call it once or "
            f"call build(input_shape) before set_weights"
        )

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(
                f"layer {self.name!r} is not built yet, so its parameter count is unknown"
            )
        return int(sum(v.value.size for v in self.weights))

    # ---- calling --------------------------------------------------------------------------

    def build(self, input_shape) -> None:
        self._build_input_shape = shape_tuple(input_shape, f"{self.name}: build")
        self.built = True

    def _convert(self, inputs) -> np.ndarray:
        """The input as a NumPy array of the layer's dtype (Keras converts inputs too)."""
        from .core import InputTensor

        if isinstance(inputs, InputTensor):
            raise NotImplementedError(
                f"{type(self).__name__}: calling a layer on rnncore.Input() (Keras's "
                f"functional API) is not supported; build the model with rnncore.Sequential"
            )
        what = f"{type(self).__name__} {self.name!r}: inputs"
        return as_float_array(inputs, self._np_dtype, what)

    def __call__(self, inputs, *args, mask=None, training=None, **kwargs):
        if mask is None:
            mask = getattr(inputs, "_keras_mask", None)
        outputs, out_mask = self._call(inputs, mask, training, *args, **kwargs)
        return attach_mask(outputs, out_mask)

    def _call(self, inputs, mask, training, *args, **kwargs):
        """Convert, build, call; returns ``(outputs, output_mask)`` (Sequential uses this)."""
        x = self._convert(inputs)
        if not self.built:
            self.build(x.shape)
        outputs = self.call(x, *args, mask=mask, training=training, **kwargs)
        return outputs, self.compute_mask(x, mask)

    def call(self, inputs, mask=None, training=None):
        raise NotImplementedError

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    # ---- training ---------------------------------------------------------------------
    #
    # ``forward_train`` runs the layer in training mode (dropout active) and keeps what
    # ``backward`` needs in ``_train_cache``; ``backward(dy)`` returns dL/d(input) and
    # leaves dL/d(weight) in ``gradients`` (aligned with ``weights``). Sequential chains them.

    def forward_train(self, inputs, mask=None, rng=None):
        """``(output, output_mask)`` of a training call; keeps what :meth:`backward` needs."""
        x = self._convert(inputs)
        if not self.built:
            self.build(x.shape)
        y = self.call_train(x, mask, rng)
        return y, self.compute_mask(x, mask)

    def call_train(self, x, mask, rng):
        raise NotImplementedError(
            f"{type(self).__name__} {self.name!r}: training through this layer is not "
            f"supported by rnncore"
        )

    def backward(self, dy):
        """dL/d(input) from dL/d(output) of the last :meth:`forward_train`."""
        raise NotImplementedError(
            f"{type(self).__name__} {self.name!r}: backward is not supported by rnncore"
        )

    @property
    def gradients(self) -> list:
        """dL/d(weight) of the last :meth:`backward`, aligned with :attr:`weights`."""
        grads = getattr(self, "_grads", None)
        return list(grads) if grads is not None else [None] * len(self.weights)

    def _cached(self):
        cache = getattr(self, "_train_cache", None)
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__} {self.name!r}: backward needs a forward_train first"
            )
        return cache

    def _noise_rng(self, rng):
        """The generator of dropout masks: the layer's own (from its seed) or the caller's."""
        seed = getattr(self, "seed", None)
        if seed is None:
            if rng is None:
                from .. import utils

                rng = np.random.default_rng(utils.draw_seed())
            return rng
        if getattr(self, "_dropout_rng", None) is None:
            entropy = getattr(self, "_seed_entropy", seed)
            entropy = list(entropy) if isinstance(entropy, (list, tuple)) else [int(entropy)]
            self._dropout_rng = np.random.default_rng(entropy + [0x5EED])
        return self._dropout_rng

    # ---- pickling -----------------------------------------------------------------------
    #
    # A pickled layer is its attributes: config values and weights (NumPy arrays), never
    # code or core objects. Caches (bound core calls, streams, training buffers) are named
    # in ``_transient`` and dropped; each is rebuilt lazily on the next call.

    #: attributes dropped when pickling, restored as None (caches rebuilt on demand)
    _transient: tuple = ("_train_cache", "_grads", "_dropout_rng")

    # ---- config -----------------------------------------------------------------------

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._input_shape_arg is not None:
            config["batch_input_shape"] = list(self._input_shape_arg)
        return config

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
