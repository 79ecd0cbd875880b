"""Wrappers: Bidirectional (over a recurrent layer) and TimeDistributed."""

from __future__ import annotations

import numpy as np

from ._base import LAYER_CLASSES, Layer, as_mask, covering_generation, shape_tuple
from .recurrent import RNN

__all__ = [
    "Bidirectional",
    "TimeDistributed",
    "LAYER_CLASSES",
    "serialize_layer",
    "deserialize_layer",
]

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy backwards, and merges their outputs
    (Keras's ``keras.layers.Bidirectional``).

    The backward layer is a copy of ``layer`` with ``go_backwards=True`` (or
    ``backward_layer``); its output sequence is flipped back to the input's time order
    before the merge. With ``return_sequences`` and a mask, the outputs at masked steps are
    zeros in both directions (Keras forces ``zero_output_for_mask`` on the wrapped layers).
    Weights: the forward layer's, then the backward layer's.

    Parameters
    ----------
    layer : SimpleRNN, LSTM or GRU
        The forward layer (a copy of it is used, built from its config).
    merge_mode : {'concat', 'sum', 'mul', 'ave', None}, default 'concat'
        How the two outputs combine: concatenated on the last axis, summed, multiplied,
        averaged, or ``None`` for the list ``[forward, backward]``.
    weights : list of arrays, optional
        Initial weights (forward layer's, then backward layer's), set when the layer builds.
    backward_layer : SimpleRNN, LSTM or GRU, optional
        The backward layer, instead of a copy of ``layer``; its ``go_backwards`` must differ
        from ``layer``'s and its ``stateful``, ``return_sequences`` and ``return_state``
        must match.
    **kwargs
        Keras's layer arguments: ``name``, ``dtype``, ``trainable``, ``input_shape`` and the
        like.

    Call arguments
    --------------
    inputs : array_like, shape (batch, timesteps, input_dim)
        The sequences.
    mask : array_like of bool, shape (batch, timesteps), optional
        ``True`` where a step is used; taken from ``inputs._keras_mask`` when not given.
    training : bool, optional
        ``True`` applies the wrapped layers' dropout.
    initial_state : list of arrays, each (batch, units), optional
        The forward layer's states followed by the backward layer's (``[h_f, h_b]``, or
        ``[h_f, c_f, h_b, c_b]`` for LSTM).

    Returns
    -------
    output : ndarray or list of two ndarrays
        The merged output: ``(batch, 2*units)`` for ``'concat'``, else ``(batch, units)``;
        with ``return_sequences`` a time axis after the batch; ``[forward, backward]``
        with ``merge_mode=None``.
    states : ndarray, each (batch, units)
        Only with ``return_state``: the forward layer's final states, then the backward
        layer's, after the output(s) in one tuple.
    """

    _sequence_input = True
    _builds_from_kernel = True
    _transient = Layer._transient + ("_state_grads",)
    _options = ("merge_mode", "stateful", "return_sequences", "return_state")
    generation = covering_generation("generation")
    spec_generation = covering_generation("spec_generation")
    _chain_kind = "bidirectional"

    def _chainable(self) -> bool:
        return (self._native_ok() and self.built and not self.return_state
                and self.merge_mode is not None
                and all(sub._chain_kind == "recurrent" and sub._chainable()
                        for sub in self.inner_layers()))  # fmt: skip

    def _chain_op(self, batch):
        fwd, bwd = self.forward_layer, self.backward_layer
        return ("bidirectional", fwd._stream_for(batch), bwd._stream_for(batch),
                self.return_sequences, fwd.zero_output_for_mask, bwd.zero_output_for_mask,
                self.merge_mode)  # fmt: skip

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if not isinstance(layer, RNN):
            raise ValueError(
                f"Bidirectional: layer must be an rnncore recurrent layer (SimpleRNN, LSTM, "
                f"GRU), got {layer!r}"
            )
        if backward_layer is not None and not isinstance(backward_layer, RNN):
            raise ValueError(
                f"Bidirectional: backward_layer must be an rnncore recurrent layer, "
                f"got {backward_layer!r}"
            )
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"Bidirectional: invalid merge_mode {merge_mode!r}; expected one of "
                f"'concat', 'sum', 'mul', 'ave', None"
            )
        kwargs.setdefault("dtype", layer.dtype)
        if layer._input_shape_arg is not None and not any(
            k in kwargs for k in ("input_shape", "input_dim", "batch_input_shape")
        ):
            kwargs["batch_input_shape"] = layer._input_shape_arg
        super().__init__(**kwargs)

        config = layer.get_config()
        config.pop("batch_input_shape", None)
        self.forward_layer = type(layer).from_config(
            {**config, "name": "forward_" + _strip(layer.name, "forward_")}
        )
        if backward_layer is None:
            self.backward_layer = type(layer).from_config(
                {
                    **config,
                    "go_backwards": True,
                    "name": "backward_" + _strip(layer.name, "backward_"),
                }
            )
            if layer.seed is not None:  # the same seed would give both the same weights
                self.backward_layer._seed_entropy = [int(layer.seed), 1]
        else:
            self.backward_layer = backward_layer
        fwd, bwd = self.forward_layer, self.backward_layer
        if fwd.go_backwards == bwd.go_backwards:
            raise ValueError(
                "Bidirectional: the forward and backward layers must have different "
                f"go_backwards values, got {fwd.go_backwards} for both"
            )
        for attr in ("stateful", "return_sequences", "return_state"):
            if getattr(fwd, attr) != getattr(bwd, attr):
                raise ValueError(
                    f"Bidirectional: the forward and backward layers must have the same "
                    f"{attr}, got {getattr(fwd, attr)} and {getattr(bwd, attr)}"
                )
        for sub in (fwd, bwd):  # Keras: masked steps of the sequences are zeros
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self._initial_weights = None if weights is None else list(weights)

    @property
    def weights(self):
        return self.forward_layer.weights + self.backward_layer.weights

    def inner_layers(self) -> list:
        return [self.forward_layer, self.backward_layer]

    @property
    def states(self):
        f, b = self.forward_layer.states, self.backward_layer.states
        return f + b if f and b else None

    def reset_states(self):
        if not self.stateful:
            raise AttributeError("Bidirectional: reset_states needs a stateful layer")
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    reset_state = reset_states

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(input_shape)
        super().build(input_shape)
        if self._initial_weights is not None:
            weights, self._initial_weights = self._initial_weights, None
            self.set_weights(weights)

    def set_weights(self, weights):
        weights = list(weights)
        if not self.built:
            self._build_from_weights(weights)
        self._check_weights(weights)
        n = len(self.forward_layer.weights)
        self.forward_layer.set_weights(weights[:n])
        self.backward_layer.set_weights(weights[n:])

    def _check_weights(self, weights):
        n_fwd, n_bwd = len(self.forward_layer.weights), len(self.backward_layer.weights)
        if len(weights) != n_fwd + n_bwd:
            names = [
                f"{s.name}/{v.name}"
                for s in (self.forward_layer, self.backward_layer)
                for v in s.weights
            ]
            raise ValueError(
                f"layer {self.name!r} (Bidirectional) has {n_fwd + n_bwd} weight(s) "
                f"({', '.join(names)}), got a list of {len(weights)}"
            )
        return self.forward_layer._check_weights(
            weights[:n_fwd]
        ) + self.backward_layer._check_weights(weights[n_fwd:])

    def _symbolic_shapes(self, input_shape, kwargs):
        shape = super()._symbolic_shapes(input_shape, kwargs)
        states = kwargs.get("initial_state")
        if states is not None:
            shapes = [s.shape for s in states]
            half = len(shapes) // 2
            self.forward_layer._check_state_shapes(shapes[:half], input_shape[0])
            self.backward_layer._check_state_shapes(shapes[half:], input_shape[0])
        return shape

    def _split_states(self, initial_state):
        """The forward layer's initial states and the backward layer's (or None, None)."""
        if initial_state is None:
            return None, None
        half = len(initial_state) // 2
        return initial_state[:half], initial_state[half:]

    def call(self, inputs, initial_state=None, mask=None, training=None):
        mask = as_mask(mask, inputs.shape, f"Bidirectional {self.name!r}")
        fwd_state, bwd_state = self._split_states(initial_state)
        y = self.forward_layer._call(inputs, mask, training, initial_state=fwd_state)[0]
        y_rev = self.backward_layer._call(inputs, mask, training, initial_state=bwd_state)[0]
        return self._merge(y, y_rev)

    def _merge(self, y, y_rev, cache=None):
        """The merged output (and states) from the two layers' results (a training call
        keeps ``cache`` with the two outputs for :meth:`backward`)."""
        states = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]
        if cache is not None:
            self._train_cache = (y, y_rev, cache)
        mode = self.merge_mode
        if mode == "concat":
            out = np.concatenate([y, y_rev], axis=-1)
        elif mode == "sum":
            out = y + y_rev
        elif mode == "ave":
            out = (y + y_rev) / 2
        elif mode == "mul":
            out = y * y_rev
        else:
            out = (y, np.ascontiguousarray(y_rev))
            return out + states if self.return_state else out
        return (out,) + states if self.return_state else out

    # ---- training ---------------------------------------------------------------------

    def forward_train(self, inputs, mask=None, rng=None, initial_state=None):
        """As :meth:`RNN.forward_train`: ``initial_state`` is the forward layer's states then
        the backward layer's; their gradients are left in ``state_gradients``."""
        x = self._convert(inputs)
        if not self.built:
            self.build(x.shape)
        return self.call_train(x, mask, rng, initial_state), self.compute_mask(x, mask)

    def call_train(self, x, mask, rng, initial_state=None):
        mask = as_mask(mask, x.shape, f"Bidirectional {self.name!r}")
        fwd_state, bwd_state = self._split_states(initial_state)
        # each wrapped layer's training cache is kept in this layer's own, so that the
        # graph of a functional model can call a shared Bidirectional several times a step
        y = self.forward_layer.forward_train(x, mask, rng, initial_state=fwd_state)[0]
        y_rev = self.backward_layer.forward_train(x, mask, rng, initial_state=bwd_state)[0]
        caches = (self.forward_layer._train_cache, self.backward_layer._train_cache)
        self.forward_layer._train_cache = self.backward_layer._train_cache = None
        return self._merge(y, y_rev, caches)

    def backward(self, dy):
        y, y_rev, caches = self._cached()
        d_fwd_states = d_bwd_states = []
        if self.return_state:  # [output(s), *forward states, *backward states]
            n_out = 2 if self.merge_mode is None else 1
            n = len(self.forward_layer._state_names)
            dy, d_fwd_states, d_bwd_states = dy[:n_out], dy[n_out : n_out + n], dy[n_out + n :]
            dy = dy if n_out == 2 else dy[0]
        mode = self.merge_mode
        if mode == "concat":
            n = y.shape[-1]
            d_fwd, d_rev = dy[..., :n], dy[..., n:]
        elif mode == "sum":
            d_fwd = d_rev = dy
        elif mode == "ave":
            d_fwd = d_rev = dy / 2
        elif mode == "mul":
            d_fwd, d_rev = dy * y_rev, dy * y
        else:
            d_fwd, d_rev = dy
        if self.return_sequences:
            d_rev = d_rev[:, ::-1]  # back to the backward layer's processing order
        if self.return_state:
            d_fwd, d_rev = [d_fwd, *d_fwd_states], [d_rev, *d_bwd_states]
        fwd, bwd = self.forward_layer, self.backward_layer
        fwd._train_cache, bwd._train_cache = caches
        try:
            dx = fwd.backward(d_fwd) + bwd.backward(d_rev)
        finally:
            fwd._train_cache = bwd._train_cache = None
        self._grads = fwd.gradients + bwd.gradients
        f_states, b_states = fwd.state_gradients, bwd.state_gradients
        self._state_grads = None if f_states is None else f_states + b_states
        return dx

    @property
    def state_gradients(self):
        """dL/d(initial states) of the last :meth:`backward` (forward's, then backward's),
        when its forward was given initial states (else None)."""
        return getattr(self, "_state_grads", None)

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        state_shapes = ()
        if self.return_state:
            shape, state_shapes = shape[0], tuple(shape[1:])
        if self.merge_mode == "concat":
            shape = shape[:-1] + (2 * shape[-1],)
        elif self.merge_mode is None:
            shape = (shape, shape)
        if self.return_state:
            if self.merge_mode is None:
                return shape + state_shapes + state_shapes
            return (shape,) + state_shapes + state_shapes
        return shape

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self.return_sequences:
            out = [mask, mask] if self.merge_mode is None else [mask]
        else:
            out = [None, None] if self.merge_mode is None else [None]
        if self.return_state:
            out += [None] * (2 * len(self.forward_layer._state_names))
        return out if len(out) > 1 else out[0]

    def get_config(self):
        return {
            **super().get_config(),
            "merge_mode": self.merge_mode,
            "layer": serialize_layer(self.forward_layer),
            "backward_layer": serialize_layer(self.backward_layer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = deserialize_layer(config["layer"])
        if config.get("backward_layer") is not None:
            config["backward_layer"] = deserialize_layer(config["backward_layer"])
        return cls(**config)


class TimeDistributed(Layer):
    """Applies a layer to every timestep of a ``(batch, timesteps, ...)`` input.

    The weights are the wrapped layer's. The input mask passes through unchanged.
    """

    _sequence_input = True
    _options = ("layer",)
    generation = covering_generation("generation")
    spec_generation = covering_generation("spec_generation")
    _chain_kind = "dense"  # over a Dense: the chain's product takes every timestep's rows

    def _chainable(self) -> bool:
        inner = self.layer
        return (self._native_ok() and self.built and inner._chain_kind == "dense"
                and not inner.inner_layers() and inner._chainable())  # fmt: skip

    def _chain_op(self, batch):
        return self.layer._chain_op(batch)

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"TimeDistributed: layer must be an rnncore layer, got {layer!r}")
        kwargs.setdefault("dtype", layer.dtype)
        super().__init__(**kwargs)
        self.layer = layer

    @property
    def weights(self):
        return self.layer.weights

    def inner_layers(self) -> list:
        return [self.layer]

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        if len(input_shape) < 3:
            raise ValueError(
                f"TimeDistributed {self.name!r}: input must be at least 3-D "
                f"(batch, timesteps, ...), got shape {input_shape}"
            )
        if not self.layer.built:
            self.layer.build((None,) + input_shape[2:])
        super().build(input_shape)

    def _build_from_weights(self, weights):
        self.layer.set_weights(weights)
        if self.layer.built:
            Layer.build(self, (None, None) + tuple(self.layer.input_shape[1:]))

    def set_weights(self, weights):
        if not self.built:
            self._build_from_weights(list(weights))
        self.layer.set_weights(weights)

    def _check_weights(self, weights):
        return self.layer._check_weights(weights)

    def call(self, inputs, mask=None, training=None):
        if inputs.ndim < 3:
            raise ValueError(
                f"TimeDistributed {self.name!r}: input must be at least 3-D "
                f"(batch, timesteps, ...), got shape {inputs.shape}"
            )
        b, t = inputs.shape[:2]
        flat = inputs.reshape((b * t,) + inputs.shape[2:])
        y = self.layer._call(flat, None, training)[0]
        return y.reshape((b, t) + y.shape[1:])

    def call_train(self, x, mask, rng):
        if x.ndim < 3:
            return self.call(x)  # raises the shape error
        b, t = x.shape[:2]
        y = self.layer.forward_train(x.reshape((b * t,) + x.shape[2:]), None, rng)[0]
        self._train_cache = (b, t, self.layer._train_cache)  # for a shared TimeDistributed
        self.layer._train_cache = None
        return y.reshape((b, t) + y.shape[1:])

    def backward(self, dy):
        b, t, self.layer._train_cache = self._cached()
        try:
            dx = self.layer.backward(dy.reshape((b * t,) + dy.shape[2:]))
        finally:
            self.layer._train_cache = None
        self._grads = self.layer.gradients
        return dx.reshape((b, t) + dx.shape[1:])

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        inner = self.layer.compute_output_shape((input_shape[0],) + input_shape[2:])
        return (inner[0], input_shape[1]) + tuple(inner[1:])

    def get_config(self):
        return {**super().get_config(), "layer": serialize_layer(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = deserialize_layer(config["layer"])
        return cls(**config)


# --------------------------------------------------------------------------------------
# Serialization of layers: {"class_name": ..., "config": ...}, classes from a fixed registry
# --------------------------------------------------------------------------------------


def serialize_layer(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize_layer(spec: dict) -> Layer:
    """A layer from ``{"class_name", "config"}``; only rnncore's own layer classes."""
    if not isinstance(spec, dict) or "class_name" not in spec:
        raise ValueError(f"not a layer description: {spec!r}")
    cls = LAYER_CLASSES.get(spec["class_name"])
    if cls is None:
        raise ValueError(
            f"unknown layer class {spec['class_name']!r}; rnncore knows "
            f"{', '.join(sorted(LAYER_CLASSES))}"
        )
    return cls.from_config(dict(spec.get("config") or {}))
