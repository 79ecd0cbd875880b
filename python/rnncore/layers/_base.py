"""What every layer shares: the :class:`Layer` base, and the symbolic tensors of Keras's
functional API (:class:`KerasTensor`, what ``Input()`` gives; see :mod:`._symbolic`).

The pieces a layer is made of live beside it: argument handling in :mod:`._args`, weights
and masked outputs in :mod:`._variable`; they are re-exported here for the layer modules.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import utils
from ..errors import UnsupportedArgumentError
from . import initializers
from ._args import (
    as_float_array,
    batch_size_arg,
    check_allocation,
    declared_shape,
    positive_int,
    reject_kwargs,
    require_default,
    shape_tuple,
    standardize_dtype,
    to_snake_case,
    unique_name,
)
from ._symbolic import KerasTensor, is_symbolic, symbolic_call
from ._variable import MaskedOutput, Variable, as_mask, attach_mask, next_generation, publish

__all__ = [
    "LAYER_CLASSES",
    "Layer",
    "build_chain",
    "InputTensor",
    "KerasTensor",
    "Variable",
    "MaskedOutput",
    "UnsupportedArgumentError",
    "DropsTransientOnPickle",
    "next_generation",
    "covering_generation",
    "option",
    # the pieces, for the layer modules
    "as_float_array",
    "as_mask",
    "attach_mask",
    "check_allocation",
    "positive_int",
    "reject_kwargs",
    "require_default",
    "shape_tuple",
    "standardize_dtype",
    "to_snake_case",
    "unique_name",
]


#: what ``Input()`` returns (the name rnncore used before the functional API)
InputTensor = KerasTensor


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


def option(name: str) -> property:
    """A layer option (what the layer computes depends on it): setting it gives the layer a
    new generation, so that every cache built from the layer (its core stream, a model's
    chain, a pool's plan) is built again before its next use. Read by attrgetter, in C."""
    slot = "_opt_" + name

    def set_option(self, value):
        self.__dict__[slot] = value
        self._respec()

    return property(operator.attrgetter(slot), set_option)


def covering_generation(attr: str) -> property:
    """A wrapper's ``generation`` / ``spec_generation``: the newest of its own and of the
    layers it wraps (numbers are never reused, so any change of any of them changes it)."""
    own = "_" + attr

    def get(self):
        return max(getattr(self, own), *(getattr(sub, attr) for sub in self.inner_layers()))

    return property(get)


#: the methods through which a layer computes its call: an executor that computes the layer
#: by its own means (a core chain, a pool's streams) stands for these, so it may do so only
#: when the layer's class has rnncore's own (Layer._native_ok)
_EXECUTED = ("__call__", "_call", "call", "compute_mask")


#: rnncore's layer classes by name: all a saved model may name (nothing else is ever
#: instantiated when a file is read). Every concrete layer class of rnncore.layers adds itself
#: (Layer.__init_subclass__); a base class sets ``_abstract = True`` and a private one starts
#: with an underscore.
LAYER_CLASSES: dict[str, type] = {}


class Layer(DropsTransientOnPickle):
    """Base of all rnncore layers (Keras's ``keras.layers.Layer`` subset for inference).

    Subclasses implement ``build(input_shape)``, ``call(inputs, mask=None, training=None,
    ...)``, ``compute_output_shape`` and, when they transform masks, ``compute_mask``.
    Layers build lazily on their first call, or explicitly with ``build(input_shape)``.
    """

    #: Whether ``input_dim``/``input_length`` describe a sequence ``(timesteps, input_dim)``.
    _sequence_input = False

    #: Generations (see rnncore.layers._variable): ``_generation`` moves on at every change
    #: of what the layer computes (its weights' values, its options, quantize, build);
    #: ``_spec_generation`` only at the changes a cache must be *built* again for (options,
    #: quantize, build: new arrays), not merely repacked (new values in the same arrays).
    _generation = 0
    _spec_generation = 0
    #: attributes that are options besides those of ``_config`` (each class its own)
    _options: tuple = ()
    #: whether the class computes its call with rnncore's own code (see _native_ok)
    _rnncore_call = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__module__.startswith("rnncore.layers.")
        if own and not cls.__name__.startswith("_") and not cls.__dict__.get("_abstract"):
            LAYER_CLASSES[cls.__name__] = cls
        # every config attribute (and declared option) is an option: setting it moves the
        # generation on (attributes the class or a base already defines as descriptors, e.g.
        # read-only properties, stay as they are)
        for name in cls.__dict__.get("_config", ()) + cls.__dict__.get("_options", ()):
            if not any(hasattr(c.__dict__.get(name), "__set__") for c in cls.__mro__):
                setattr(cls, name, option(name))
        # a class outside rnncore that overrides how a call is computed is run through its
        # own code by every executor (the chain, the pool, ragged predict)
        ref = next(c for c in cls.__mro__ if c.__module__.startswith("rnncore."))
        cls._rnncore_call = ref._rnncore_call and all(
            getattr(cls, m) is getattr(ref, m) for m in _EXECUTED
        )

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
            if batch_size is not None:
                raise ValueError(f"{owner}: give batch_input_shape or batch_size, not both")
            return declared_shape(batch_input_shape, f"{owner}: batch_input_shape", True)
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
        batch_size = batch_size_arg(batch_size, f"{owner}: batch_size")
        return (batch_size,) + declared_shape(input_shape, f"{owner}: input_shape")

    # ---- properties ----------------------------------------------------------------------

    @property
    def dtype(self) -> str:
        return self._np_dtype.name

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

    #: the layer's generation (see rnncore.layers._variable): a wrapper's covers the layers
    #: it wraps
    generation = property(operator.attrgetter("_generation"))
    spec_generation = property(operator.attrgetter("_spec_generation"))

    def _respec(self) -> None:
        """A change that needs the caches built again, not only repacked (an option, new
        weight arrays, quantize): both generations move on."""
        self._spec_generation = self._generation = g = next_generation()
        publish(g)  # after the store: a model's plan that sees the number sees the change

    def _native_ok(self) -> bool:
        """Whether an executor may compute this layer by its own means (a core chain, a
        pool's streams) instead of calling it: True for rnncore's classes and subclasses
        that keep their calls; a subclass that overrides ``call`` (or ``_call``,
        ``__call__``, ``compute_mask``) is run through its own ``call`` everywhere."""
        return self._rnncore_call

    # ---- the native chain (rnncore.models.native_chain) ----------------------------------

    #: the kind of the chain's op for this layer, or None when the chain cannot run it:
    #: "identity" (skipped), "masking", "embedding" (first in a chain only), "dense",
    #: "recurrent", "bidirectional"
    _chain_kind = None

    def _chainable(self) -> bool:
        """Whether the chain can run the layer at inference, with its current options."""
        kind = self._chain_kind
        return kind is not None and self._native_ok() and (self.built or kind == "identity")

    def _chain_op(self, batch):
        """The chain's op for the layer with its current weights (None: the identity)."""
        return None

    def _free_chain_op(self):
        """The chain's op for a run whose recurrent states are the caller's (a stream
        pool's step, from and to its state table): :meth:`_chain_op`, except that a
        recurrent layer runs a stream carrying nothing."""
        return self._chain_op(None)

    # ---- weights ----------------------------------------------------------------------

    def add_weight(self, name: str, shape, initializer, rng, trainable=True) -> Variable:
        init = initializers.get(initializer)
        check_allocation(
            f"{type(self).__name__} {self.name!r}: weight {name!r}", [shape], self._np_dtype
        )
        value = initializers.materialize(init, tuple(shape), self._np_dtype, rng)
        var = Variable(value, name, f"{self.name}/{name}", trainable, owner=self)
        self._variables.append(var)
        self._respec()  # new arrays
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

    #: whether ``set_weights`` may build the layer from its first weight, a kernel
    #: ``(input_dim, ...)``: for ``(batch, None, input_dim)`` when ``_sequence_input`` (the
    #: batch from ``batch_input_shape``), else for ``(None, input_dim)``
    _builds_from_kernel = False

    def _build_from_weights(self, weights) -> None:
        """Build an unbuilt layer from its weights' shapes where possible."""
        if self._builds_from_kernel and weights and np.ndim(weights[0]) == 2:
            input_dim = np.shape(weights[0])[0]
            if not self._sequence_input:
                return self.build((None, input_dim))
            batch = self._input_shape_arg[0] if self._input_shape_arg else None
            return self.build((batch, None, input_dim))
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
        self._respec()

    def _convert(self, inputs) -> np.ndarray:
        """The input as a NumPy array of the layer's dtype (Keras converts inputs too)."""
        what = f"{type(self).__name__} {self.name!r}: inputs"
        return as_float_array(inputs, self._np_dtype, what)

    def __call__(self, inputs, *args, mask=None, training=None, **kwargs):
        if type(inputs) is not np.ndarray and is_symbolic(inputs, mask, kwargs):
            if args:
                raise TypeError(
                    f"{type(self).__name__} {self.name!r}: on symbolic tensors, pass the call's "
                    f"arguments after the inputs by keyword"
                )
            return symbolic_call(self, inputs, {**kwargs, "mask": mask, "training": training})
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

    # ---- symbolic calls (Keras's functional API) --------------------------------------

    def _symbolic_shapes(self, input_shape, kwargs):
        """The output shape(s) of a call on symbolic tensors of ``input_shape``: the layer
        builds for it, or checks it against the shape it was built for (a shared layer)."""
        if not self.built:
            self.build(input_shape)
        else:
            self._check_input_shape(input_shape)
        return self.compute_output_shape(input_shape)

    @property
    def input(self):
        """The symbolic input(s) of the layer's first call (Keras's ``layer.input``)."""
        return self._first_call("input").args[0]

    @property
    def output(self):
        """The symbolic output(s) of the layer's first call (Keras's ``layer.output``), e.g.
        for ``Model(model.input, model.get_layer(name).output)``."""
        return self._first_call("output").output_structure

    def _first_call(self, what):
        nodes = getattr(self, "_inbound_nodes", None)
        if not nodes:
            raise AttributeError(
                f"{type(self).__name__} {self.name!r} has never been called on symbolic "
                f"tensors, so it has no {what}"
            )
        return nodes[0]

    def _check_input_shape(self, input_shape) -> None:
        """Refuse an input its weights cannot take: for the layers whose kernel reads the
        last axis (Dense, the recurrent layers and their wrappers) that axis, and for the
        sequence layers the rank, must be those the layer was built for."""
        built = self._build_input_shape
        if built is None or not (self._builds_from_kernel or self._sequence_input):
            return
        shape = tuple(input_shape)
        rank_differs = self._sequence_input and len(shape) != len(built)
        if rank_differs or None not in (shape[-1], built[-1]) and shape[-1] != built[-1]:
            raise ValueError(
                f"the layer was built for inputs of shape {tuple(built)}, so it expects "
                f"{'a ' + str(len(built)) + '-D input' if rank_differs else ''}"
                f"{'' if rank_differs else 'a last axis of ' + str(built[-1])}, got shape {shape}"
            )

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
                rng = np.random.default_rng(utils.draw_seed())
            return rng
        if getattr(self, "_dropout_rng", None) is None:
            entropy = getattr(self, "_seed_entropy", seed)
            entropy = list(entropy) if isinstance(entropy, (list, tuple)) else [int(entropy)]
            self._dropout_rng = np.random.default_rng(entropy + [0x5EED])
        return self._dropout_rng

    def inner_layers(self) -> list:
        """The layers this one wraps (Bidirectional's two directions, TimeDistributed's
        layer), which model-wide operations (``model.quantize``) reach; none for a plain
        layer."""
        return []

    # ---- pickling -----------------------------------------------------------------------
    #
    # A pickled layer is its attributes: config values and weights (NumPy arrays), never
    # code or core objects. Caches (bound core calls, streams, training buffers) are named
    # in ``_transient`` and dropped; each is rebuilt lazily on the next call.

    #: attributes dropped when pickling, restored as None (caches rebuilt on demand)
    _transient: tuple = ("_train_cache", "_grads", "_dropout_rng", "_inbound_nodes")

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        cls = type(self)
        for key in list(state):  # an option pickled as a plain attribute (older files)
            if isinstance(getattr(cls, key, None), property) and "_opt_" + key not in state:
                if getattr(cls, key).fset is not None:
                    state["_opt_" + key] = state.pop(key)
        super().__setstate__(state)
        for v in self.__dict__.get("_variables", ()):
            v._owner = self
        # a new generation: nothing cached for the pickled layer applies to this one
        self._respec()

    # ---- config -----------------------------------------------------------------------

    #: the attributes ``get_config`` returns under their Keras argument names: each class
    #: lists its own, after those of its bases (initializers are serialized)
    _config: tuple = ()

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._input_shape_arg is not None:
            config["batch_input_shape"] = list(self._input_shape_arg)
        for cls in reversed(type(self).__mro__):
            for key in cls.__dict__.get("_config", ()):
                value = getattr(self, key)
                is_init = isinstance(value, initializers.Initializer)
                config[key] = initializers.serialize(value) if is_init else value
        return config

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def build_chain(layers: list, input_shape, owner: str) -> list:
    """Build a chain of layers for a batch input shape, each for the previous one's output
    (``Sequential.build``; Keras files read as a chain). Only the last layer may have several
    outputs. Returns each layer's output shape."""
    shape = shape_tuple(input_shape, f"{owner}: build")
    output_shapes = []
    for k, layer in enumerate(layers):
        if not layer.built:
            layer.build(shape)
        shape = layer.compute_output_shape(shape)
        output_shapes.append(shape)
        several = isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], (tuple, list))
        if several and k < len(layers) - 1:
            raise ValueError(
                f"{owner}: layer {layer.name!r} has several outputs (e.g. return_state=True), "
                f"which only the last layer of a Sequential may have"
            )
    return output_shapes
