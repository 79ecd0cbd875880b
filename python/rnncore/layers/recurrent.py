"""SimpleRNN, LSTM and GRU layers over the compiled core.

One base class, :class:`RNN`, owns the mechanics: Keras's constructor arguments, building the
weights, ``get_weights``/``set_weights``, initial and carried (``stateful``) states, masks,
``return_sequences``/``return_state``/``go_backwards``. A subclass only declares its cell:
the core's cell name, the number of gates and states, the functional it calls, its bias
shape and any cell option (``recurrent_activation``, ``reset_after``).

Every number comes from the core. The general path calls :mod:`rnncore.functional`. Calls
with nothing to convert or check (a C-contiguous float array of the layer's dtype, no mask,
no explicit initial state) take a fast path bound once per configuration: the compiled
``rnn_forward`` with its fixed arguments, or, for a stateful layer, ``run`` of the core's
carried-state stream (:func:`rnncore.functional.stream`: weights checked once, buffers kept),
so a stream fed one timestep per call pays as little Python as possible. Anything unusual on
that path (wrong dtype, shape, layout) makes the core refuse before computing, and the call
is redone by the general path, which converts or explains.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import _core, functional, utils
from . import activations, initializers
from ._base import (
    Layer,
    as_float_array,
    as_mask,
    canonical_dtype,
    check_allocation,
    positive_int,
    require_default,
    shape_tuple,
)

__all__ = ["RNN", "SimpleRNN", "LSTM", "GRU"]

_rnn_forward = _core.rnn_forward
_make_stream = getattr(functional, "stream", None)  # the core's carried-state stream


class _CoreOption:
    """An attribute that is part of the cached core call: setting it drops the cache."""

    def __set_name__(self, owner, name):
        self.slot = "_opt_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else obj.__dict__[self.slot]

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value
        obj._fast = None


class RNN(Layer):
    """Shared mechanics of the recurrent layers (not used directly: see the subclasses).

    Call: ``layer(inputs, initial_state=None, mask=None, training=None)`` with ``inputs``
    ``(batch, timesteps, input_dim)``. Returns the output (``(batch, units)``, or
    ``(batch, timesteps, units)`` with ``return_sequences``), and with ``return_state``
    the tuple ``(output, h)`` or ``(output, h, c)`` for LSTM, as Keras.
    """

    _sequence_input = True
    #: the core's name of the cell, its gate count, and its states
    _cell: str = ""
    _gates: int = 1
    _state_names: tuple = ("h",)
    #: the rnncore.functional function computing the layer
    _functional = None

    activation = _CoreOption()
    go_backwards = _CoreOption()
    return_sequences = _CoreOption()
    return_state = _CoreOption()
    stateful = _CoreOption()

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        zero_output_for_mask=False,
        use_cudnn="auto",
        time_major=False,
        **kwargs,
    ):
        owner = type(self).__name__
        require_default(
            owner,
            kernel_regularizer=(kernel_regularizer, None),
            recurrent_regularizer=(recurrent_regularizer, None),
            bias_regularizer=(bias_regularizer, None),
            activity_regularizer=(activity_regularizer, None),
            kernel_constraint=(kernel_constraint, None),
            recurrent_constraint=(recurrent_constraint, None),
            bias_constraint=(bias_constraint, None),
            unroll=(unroll, False),
            time_major=(time_major, False),
        )
        if use_cudnn not in ("auto", False):
            require_default(owner, use_cudnn=(use_cudnn, "auto"))
        self._fast = None
        # serialises the calls of a stateful layer shared by threads: each call reads the
        # carried states, runs and writes them back as one step (no lost update, and
        # return_state returns the states of the call's own output)
        self._lock = threading.RLock()
        super().__init__(**kwargs)
        self.units = positive_int(units, f"{owner}: units")
        self.activation = activations.name_of(activation, owner, allow_softmax=False)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{owner}: {name} must be in [0, 1], got {rate!r}")
        # Stored for training; at inference dropout is the identity (Keras's semantics).
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.use_cudnn = use_cudnn
        self.seed = seed
        self._seed_entropy = seed
        self.kernel = self.recurrent_kernel = self.bias = None
        self._states: list[np.ndarray] = []
        self._stream = None

    # ---- what a cell declares -----------------------------------------------------------

    @property
    def state_size(self) -> list[int]:
        return [self.units] * len(self._state_names)

    @property
    def cell(self):
        """Keras keeps the weights on ``layer.cell``; here the layer is its own cell."""
        return self

    def _cell_options(self) -> dict:
        """Keyword options of the cell's functional beyond ``activation``."""
        return {}

    def _core_options(self) -> tuple:
        """``(recurrent_activation, reset_after)`` as the core's ``rnn_forward`` takes them."""
        return ("sigmoid", True)

    def _bias_shape(self) -> tuple:
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    # ---- building and weights -----------------------------------------------------------

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: input shape must be "
                f"(batch, timesteps, input_dim) with a known input_dim, got {input_shape}"
            )
        gh = self._gates * self.units
        check_allocation(  # all the weights, before allocating any
            f"{type(self).__name__} {self.name!r} (units={self.units})",
            [(input_shape[-1], gh), (self.units, gh), self._bias_shape()],
            self._np_dtype,
        )
        rng = np.random.default_rng(utils.draw_seed(self._seed_entropy))
        self._variables = []
        self._fast = None
        self._stream = None
        self.kernel = self.add_weight("kernel", (input_shape[-1], gh), self.kernel_initializer, rng)
        self.recurrent_kernel = self.add_weight(
            "recurrent_kernel", (self.units, gh), self.recurrent_initializer, rng
        )
        self.bias = (
            self.add_weight("bias", self._bias_shape(), self._bias_initializer(), rng)
            if self.use_bias
            else None
        )
        super().build(input_shape)
        self._batch_size = input_shape[0]
        self.reset_states()

    def _build_from_weights(self, weights):
        if weights and np.ndim(weights[0]) == 2:
            batch = self._input_shape_arg[0] if self._input_shape_arg else None
            return self.build((batch, None, np.shape(weights[0])[0]))
        super()._build_from_weights(weights)

    # ---- states -------------------------------------------------------------------------
    #
    # A stateful layer carries its states in a core stream (rnncore.functional.stream: the
    # weights checked once, buffers kept between calls) when the core has one for it (not
    # for go_backwards); otherwise, and for non-stateful layers, in the list self._states.

    @property
    def states(self):
        """The carried states of a stateful layer (``[h]`` or ``[h, c]``), else None."""
        if not (self.stateful and self.built):
            return None
        with self._lock:
            return self._stream.get_states() if self._stream is not None else list(self._states)

    def reset_states(self, states=None):
        """Zero the carried states of a stateful layer (or set them to ``states``)."""
        with self._lock:
            self._reset_states(states)

    def _reset_states(self, states):
        if not self.stateful or not self.built:
            self._states = []
            return
        if states is None:
            if self._stream is not None:
                self._stream.set_states([])
            elif self._batch_size is not None:
                shape = (self._batch_size, self.units)
                self._states = [np.zeros(shape, self._np_dtype) for _ in self._state_names]
            return
        states = [states] if isinstance(states, np.ndarray) else list(states)
        if len(states) != len(self._state_names):
            raise ValueError(
                f"{self.name}: expected {len(self._state_names)} state(s), got {len(states)}"
            )
        if self._batch_size is None:
            self._batch_size = np.shape(states[0])[0]
        shape = (self._batch_size, self.units)
        new = []
        for name, s in zip(self._state_names, states):
            s = np.array(
                as_float_array(s, self._np_dtype, f"{self.name}: state {name!r}"), order="C"
            )
            if s.shape != shape:
                raise ValueError(
                    f"{self.name}: state {name!r} must have shape {shape}, got {s.shape}"
                )
            new.append(s)
        if self._stream is not None:
            self._stream.set_states(new)
        else:
            self._states = new

    reset_state = reset_states

    _transient = Layer._transient + ("_fast", "_stream", "_lock")

    def __getstate__(self):
        state = super().__getstate__()
        if self._stream is not None:  # the carried states leave the core stream as arrays
            state["_states"] = [np.array(s) for s in self._stream.get_states()]
        else:
            state["_states"] = [np.array(s) for s in self._states]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._states = [canonical_dtype(s) for s in self._states]
        self._lock = threading.RLock()

    def _sync_stream(self):
        """(Re)create the core stream of a stateful layer, carrying the states over."""
        if self._stream is not None:
            self._states = self._stream.get_states()
            self._stream = None
        if (
            self.stateful
            and self._batch_size is not None
            and not self.go_backwards
            and _make_stream is not None
        ):
            rec_act, reset_after = self._core_options()
            self._stream = _make_stream(
                self._cell,
                self.kernel.value,
                self.recurrent_kernel.value,
                None if self.bias is None else self.bias.value,
                batch_size=self._batch_size,
                activation=self.activation,
                recurrent_activation=rec_act,
                reset_after=reset_after,
            )
            if self._states:
                self._stream.set_states(self._states)
            self._states = []

    # ---- calling ------------------------------------------------------------------------

    def _make_fast(self):
        """The call for plain inputs: the core directly, with everything fixed bound in."""
        self._sync_stream()
        rs, rstate = self.return_sequences, self.return_state
        if self._stream is not None:
            run, get_states = self._stream.run, self._stream.get_states
            if rstate:

                def fast(x):
                    return (run(x, None, rs), *get_states())
            else:

                def fast(x):
                    return run(x, None, rs)
        else:
            rec_act, reset_after = self._core_options()
            args = (
                self._cell,
                self.kernel.value,
                self.recurrent_kernel.value,
                None if self.bias is None else self.bias.value,
            )
            opts = (self.activation, rec_act, reset_after, self.go_backwards, rs, False)
            stateful, no_states = self.stateful, []

            def fast(x):
                cell, W, U, b = args
                y, finals, _ = _rnn_forward(
                    cell, x, W, U, b, self._states if stateful else no_states, None, *opts
                )
                if stateful:
                    self._states = finals
                return (y, *finals) if rstate else y

        self._fast = fast

    def __call__(self, inputs, initial_state=None, mask=None, training=None):
        if self.stateful:
            with self._lock:
                return self._call_once(inputs, initial_state, mask, training)
        return self._call_once(inputs, initial_state, mask, training)

    def _call_once(self, inputs, initial_state, mask, training):
        fast = self._fast
        if (
            fast is not None
            and type(inputs) is np.ndarray
            and mask is None
            and initial_state is None
            and not training
        ):
            try:
                return fast(inputs)
            except (TypeError, ValueError):
                pass  # something to convert or explain (the core refused before computing)
        return Layer.__call__(
            self, inputs, initial_state=initial_state, mask=mask, training=training
        )

    def _call(self, inputs, mask, training, *args, **kwargs):
        # also the entry of wrappers (Bidirectional): stateful calls serialised as above
        if self.stateful:
            with self._lock:
                return super()._call(inputs, mask, training, *args, **kwargs)
        return super()._call(inputs, mask, training, *args, **kwargs)

    def _check_input(self, x, owner):
        d = self.kernel.shape[0]
        if x.ndim != 3 or x.shape[2] != d:
            raise ValueError(
                f"{owner}: expected input of shape (batch, timesteps, {d}), got {x.shape}"
            )

    def call(self, inputs, initial_state=None, mask=None, training=None):
        owner = f"{type(self).__name__} {self.name!r}"
        if training and (self.dropout or self.recurrent_dropout):
            if initial_state is not None:
                raise NotImplementedError(
                    f"{owner}: training=True with dropout and an initial_state in a direct "
                    f"call is not supported; use model.fit"
                )
            y = self.call_train(inputs, mask, None)
            self._train_cache = None
            return y
        x = inputs
        self._check_input(x, owner)
        if self.stateful and self._batch_size is None:  # built without a batch size
            self._batch_size = x.shape[0]
            self.reset_states()
        if self.stateful and x.shape[0] != self._batch_size:
            raise ValueError(
                f"{owner}: the layer is stateful with batch size {self._batch_size}; "
                f"got input batch size {x.shape[0]}"
            )
        if self._fast is None:
            self._make_fast()  # also brings the stream up to date with the options
        mask = as_mask(mask, x.shape, owner)
        states = self._initial_states(initial_state, x.shape[0], owner)
        if self._stream is not None:
            if states is not None:
                self._stream.set_states(states)
            y = self._stream.run(
                np.ascontiguousarray(x),
                None if mask is None else np.ascontiguousarray(mask),
                self.return_sequences,
            )
            finals = self._stream.get_states() if self.return_state else []
        else:
            if states is None and self.stateful:
                states = self._states
            y, *finals = self._functional(
                x,
                self.kernel.value,
                self.recurrent_kernel.value,
                None if self.bias is None else self.bias.value,
                activation=self.activation,
                initial_state=states,
                mask=mask,
                go_backwards=self.go_backwards,
                return_sequences=self.return_sequences,
                **self._cell_options(),
            )
            if self.stateful:
                self._states = finals
        if self.zero_output_for_mask and self.return_sequences and mask is not None:
            used = mask[:, ::-1] if self.go_backwards else mask
            y[~used] = 0
        return (y, *finals) if self.return_state else y

    # ---- training ---------------------------------------------------------------------
    #
    # Dropout follows Keras 3 (a rate acts only when 0 < rate < 1; masks are drawn once per
    # call, i.e. per sequence, the same at every timestep, scaled by 1 / (1 - rate)):
    # * recurrent_dropout == 0: one mask on the input features; the core runs on x * mask.
    # * 0 < recurrent_dropout < 1: Keras switches LSTM/GRU to their per-gate form, with one
    #   input mask and one recurrent mask per gate (SimpleRNN: one of each), the latter on
    #   h_(t-1) where it enters the gates (not on the carried state). Masking the rows of a
    #   weight is the same as masking what it multiplies: (h * m_g) U_g = h (diag(m_g) U_g).
    #   The masks differ per sample, so each sample runs through the core with its own
    #   masked kernel and recurrent kernel; their gradients are masked back the same way.

    def _draw_dropout_masks(self, rng, batch, input_dim):
        """``(input_masks, recurrent_masks)``, each ``(count, batch, n)`` or None."""
        per_gate = self._gates > 1 and (
            0.0 < self.recurrent_dropout < 1.0 or getattr(self, "_implementation", 2) == 1
        )
        count = self._gates if per_gate else 1

        def draw(rate, n):
            if not 0.0 < rate < 1.0:
                return None
            keep = 1.0 - rate
            return (self._noise_rng(rng).random((count, batch, n)) < keep) / keep

        return draw(self.dropout, input_dim), draw(self.recurrent_dropout, self.units)

    def call_train(self, x, mask, rng):
        if self.stateful:
            with self._lock:
                return self._call_train(x, mask, rng)
        return self._call_train(x, mask, rng)

    def _call_train(self, x, mask, rng):
        owner = f"{type(self).__name__} {self.name!r}"
        if self.return_state:
            raise NotImplementedError(f"{owner}: training with return_state=True")
        self._check_input(x, owner)
        mask = as_mask(mask, x.shape, owner)
        states = None
        if self.stateful:  # truncated backpropagation: the carried states are constants
            if self._batch_size is None:
                self._batch_size = x.shape[0]
                self.reset_states()
            if x.shape[0] != self._batch_size:
                raise ValueError(
                    f"{owner}: the layer is stateful with batch size {self._batch_size}; "
                    f"got input batch size {x.shape[0]}"
                )
            states = [np.array(s) for s in self.states]
        in_masks, rec_masks = self._draw_dropout_masks(rng, x.shape[0], x.shape[2])
        if in_masks is not None:
            in_masks = in_masks.astype(x.dtype)
        bias = None if self.bias is None else self.bias.value
        options = dict(
            activation=self.activation,
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            training=True,
            **self._cell_options(),
        )
        if rec_masks is None and (in_masks is None or len(in_masks) == 1):
            noise = None if in_masks is None else in_masks[0]
            y, *finals, workspace = self._functional(
                x if noise is None else x * noise[:, None, :],
                self.kernel.value,
                self.recurrent_kernel.value,
                bias,
                initial_state=states,
                mask=mask,
                **options,
            )
            cache = ("batch", workspace, noise)
        else:
            if rec_masks is not None:
                rec_masks = rec_masks.astype(x.dtype)
            W, U = self.kernel.value, self.recurrent_kernel.value
            outputs, workspaces = [], []
            for b in range(x.shape[0]):
                Wb = W if in_masks is None else W * _gate_scale(in_masks[:, b], self.units)
                Ub = U if rec_masks is None else U * _gate_scale(rec_masks[:, b], self.units)
                y_b, *finals_b, ws = self._functional(
                    x[b : b + 1],
                    Wb,
                    Ub,
                    bias,
                    initial_state=None if states is None else [s[b : b + 1] for s in states],
                    mask=None if mask is None else mask[b : b + 1],
                    **options,
                )
                outputs.append((y_b, finals_b))
                workspaces.append(ws)
            y = np.concatenate([o[0] for o in outputs])
            finals = [np.concatenate(parts) for parts in zip(*(o[1] for o in outputs))]
            cache = ("per_sample", workspaces, in_masks, rec_masks)
        if self.stateful:
            self.reset_states(finals)
        zeroed = None
        if self.zero_output_for_mask and self.return_sequences and mask is not None:
            zeroed = ~(mask[:, ::-1] if self.go_backwards else mask)
            y[zeroed] = 0
        self._train_cache = cache + (zeroed,)
        return y

    def backward(self, dy):
        cache = self._cached()
        dy = np.array(dy, dtype=self._np_dtype, order="C")
        zeroed = cache[-1]
        if zeroed is not None:
            dy[zeroed] = 0
        if cache[0] == "batch":
            _, workspace, noise, _ = cache
            g = functional.backward(workspace, dy)
            self._grads = [g.kernel, g.recurrent_kernel] + ([g.bias] if self.use_bias else [])
            return g.x if noise is None else g.x * noise[:, None, :]
        _, workspaces, in_masks, rec_masks, _ = cache
        dW = np.zeros_like(self.kernel.value)
        dU = np.zeros_like(self.recurrent_kernel.value)
        db = None if self.bias is None else np.zeros_like(self.bias.value)
        dx = []
        for b, ws in enumerate(workspaces):
            g = functional.backward(ws, dy[b : b + 1])
            dx.append(g.x)
            dW += (
                g.kernel if in_masks is None else g.kernel * _gate_scale(in_masks[:, b], self.units)
            )
            dU += (
                g.recurrent_kernel
                if rec_masks is None
                else (g.recurrent_kernel * _gate_scale(rec_masks[:, b], self.units))
            )
            if db is not None:
                db += g.bias
        self._grads = [dW, dU] + ([db] if self.use_bias else [])
        return np.concatenate(dx)

    def _initial_states(self, initial_state, batch, owner):
        """Explicit initial states, checked and converted; None when not given."""
        if initial_state is None:
            return None
        if isinstance(initial_state, np.ndarray) or not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        n = len(self._state_names)
        if len(initial_state) != n:
            raise ValueError(
                f"{owner}: initial_state must be {n} array(s) "
                f"({', '.join(self._state_names)}), got {len(initial_state)}"
            )
        states = []
        for name, s in zip(self._state_names, initial_state):
            s = np.ascontiguousarray(
                as_float_array(s, self._np_dtype, f"{owner}: initial state {name!r}")
            )
            if s.shape != (batch, self.units):
                raise ValueError(
                    f"{owner}: initial state {name!r} must have shape "
                    f"{(batch, self.units)}, got {s.shape}"
                )
            states.append(s)
        return states

    def compute_output_shape(self, input_shape):
        batch, steps = tuple(input_shape)[:2]
        out = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return (out,) + tuple((batch, self.units) for _ in self._state_names)
        return out

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        if self.return_state:
            return [out] + [None] * len(self._state_names)
        return out

    # ---- config -------------------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "zero_output_for_mask": self.zero_output_for_mask,
            "seed": self.seed,
        }


def _gate_scale(masks, units):
    """Row scales of a kernel ``(n, G*units)`` from per-gate masks ``(count, n)``.

    One mask scales every column; ``G`` masks scale each gate's column block by its own.
    """
    if masks.shape[0] == 1:
        return masks[0][:, None]
    return np.repeat(masks.T, units, axis=1)


class SimpleRNN(RNN):
    """Fully-connected RNN: ``h_t = activation(x_t W + h_{t-1} U + b)`` (Keras's)."""

    _cell = "simple_rnn"
    _gates = 1
    _state_names = ("h",)
    _functional = staticmethod(functional.simple_rnn)

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            units,
            activation,
            use_bias,
            kernel_initializer,
            recurrent_initializer,
            bias_initializer,
            kernel_regularizer,
            recurrent_regularizer,
            bias_regularizer,
            activity_regularizer,
            kernel_constraint,
            recurrent_constraint,
            bias_constraint,
            dropout,
            recurrent_dropout,
            return_sequences,
            return_state,
            go_backwards,
            stateful,
            unroll,
            seed,
            **kwargs,
        )


class _GatedRNN(RNN):
    """LSTM and GRU: a recurrent activation on the gates."""

    recurrent_activation = _CoreOption()

    def _set_recurrent_activation(self, recurrent_activation):
        self.recurrent_activation = activations.name_of(
            recurrent_activation, type(self).__name__, "recurrent_activation", allow_softmax=False
        )

    def _cell_options(self):
        return {"recurrent_activation": self.recurrent_activation}

    def _core_options(self):
        return (self.recurrent_activation, True)

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation}


class LSTM(_GatedRNN):
    """Long Short-Term Memory (Hochreiter 1997), Keras's gate order ``i, f, c, o``.

    States ``[h, c]``. ``unit_forget_bias=True`` (default) initializes the forget-gate bias
    to one.
    """

    _cell = "lstm"
    _gates = 4
    _state_names = ("h", "c")
    _functional = staticmethod(functional.lstm)

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        **kwargs,
    ):
        # Keras: a speed choice, same numbers, except that implementation=1 draws one
        # dropout mask per gate in training (as any recurrent_dropout does)
        implementation = kwargs.pop("implementation", 2)
        super().__init__(
            units,
            activation,
            use_bias,
            kernel_initializer,
            recurrent_initializer,
            bias_initializer,
            kernel_regularizer,
            recurrent_regularizer,
            bias_regularizer,
            activity_regularizer,
            kernel_constraint,
            recurrent_constraint,
            bias_constraint,
            dropout,
            recurrent_dropout,
            return_sequences,
            return_state,
            go_backwards,
            stateful,
            unroll,
            seed,
            use_cudnn=use_cudnn,
            **kwargs,
        )
        self._set_recurrent_activation(recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)
        self._implementation = implementation

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        init, units = self.bias_initializer, self.units

        def bias_initializer(shape, dtype=None, rng=None):
            # [i, f, c, o]: the forget gate's bias starts at one
            def part(n):
                return initializers.materialize(init, (n,), dtype, rng)

            return np.concatenate([part(units), np.ones(units), part(2 * units)])

        return bias_initializer

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRU(_GatedRNN):
    """Gated Recurrent Unit (Cho 2014), Keras's gate order ``z, r, h``.

    ``reset_after=True`` (Keras 3's default, cuDNN-compatible) has a bias of shape
    ``(2, 3*units)``: input and recurrent rows. ``reset_after=False`` is the 2014 form with
    a bias ``(3*units,)``.
    """

    _cell = "gru"
    _gates = 3
    _state_names = ("h",)
    _functional = staticmethod(functional.gru)

    reset_after = _CoreOption()

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        reset_after=True,
        use_cudnn="auto",
        **kwargs,
    ):
        # Keras: a speed choice, same numbers, except that implementation=1 draws one
        # dropout mask per gate in training (as any recurrent_dropout does)
        implementation = kwargs.pop("implementation", 2)
        super().__init__(
            units,
            activation,
            use_bias,
            kernel_initializer,
            recurrent_initializer,
            bias_initializer,
            kernel_regularizer,
            recurrent_regularizer,
            bias_regularizer,
            activity_regularizer,
            kernel_constraint,
            recurrent_constraint,
            bias_constraint,
            dropout,
            recurrent_dropout,
            return_sequences,
            return_state,
            go_backwards,
            stateful,
            unroll,
            seed,
            use_cudnn=use_cudnn,
            **kwargs,
        )
        self._set_recurrent_activation(recurrent_activation)
        self.reset_after = bool(reset_after)
        self._implementation = implementation

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _cell_options(self):
        return {**super()._cell_options(), "reset_after": self.reset_after}

    def _core_options(self):
        return (self.recurrent_activation, self.reset_after)

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}
