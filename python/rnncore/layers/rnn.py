"""The mechanics of the recurrent layers: :class:`RNN`, the base of SimpleRNN, LSTM and GRU.

One route to the core. A call is checked once (:meth:`RNN._checked`: input shape, mask,
initial states) and run once, by the layer's core stream (:func:`rnncore.functional.stream`,
built from the layer's weights and cell options): ``stream.run(x, mask, return_sequences,
initial_state, return_state)``. The stream of a stateful layer (Keras's ``stateful=True``)
carries the states between calls: it is their one home, the layer keeps no copy. The
stream of any other layer carries nothing.

Training runs the core's training forward (:mod:`rnncore.functional` with ``training=True``,
which keeps the workspace :func:`rnncore.functional.backward` reads), starting a stateful
layer from the stream's states and leaving its final states there.

A subclass declares its cell: the core's cell name, the gate count, the state names, its
functional, its bias shape and the options its cell takes (``_cell_options``).
"""

from __future__ import annotations

import threading

import numpy as np

from .. import activations, functional, utils
from . import initializers
from ._base import (
    Layer,
    as_float_array,
    as_mask,
    attach_mask,
    check_allocation,
    positive_int,
    require_default,
    shape_tuple,
)
from ._caches import StreamCache
from ._quantized import Quantizable
from ._symbolic import is_symbolic, symbolic_call

__all__ = ["RNN"]


class RNN(Quantizable, Layer):
    """Shared mechanics of the recurrent layers (not used directly: see the subclasses).

    Call: ``layer(inputs, initial_state=None, mask=None, training=None)`` with ``inputs``
    ``(batch, timesteps, input_dim)``. Returns the output (``(batch, units)``, or
    ``(batch, timesteps, units)`` with ``return_sequences``), and with ``return_state``
    the tuple ``(output, h)`` or ``(output, h, c)`` for LSTM, as Keras.
    """

    _abstract = True  # a base class: not in LAYER_CLASSES

    _sequence_input = True
    _builds_from_kernel = True
    _config = ("units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
               "bias_initializer", "dropout", "recurrent_dropout", "return_sequences",
               "return_state", "go_backwards", "stateful", "zero_output_for_mask",
               "seed")  # fmt: skip
    #: the core's name of the cell, its gate count, and its states
    _cell: str = ""
    _gates: int = 1
    _state_names: tuple = ("h",)
    #: the rnncore.functional function computing the layer (its training forward)
    _functional = None
    #: the cell's options, as keywords of _functional and of functional.stream
    _cell_options: tuple = ("activation",)
    #: optional weights after the bias (attributes, None when unused), each named as its
    #: keyword of _functional / functional.stream and its field of functional.Gradients
    _variant_weights: tuple = ()
    _quantized_weights = ("kernel", "recurrent_kernel")  # quantize(mode): see _quantized.py

    # every name of _config is an option (Layer.__init_subclass__): setting one moves the
    # layer's generation on, and the stream is built again at the next call (states go on)
    _chain_kind = "recurrent"

    def __init__(self, units, *, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, seed=None,
                 zero_output_for_mask=False, use_cudnn="auto", time_major=False,
                 **kwargs):  # fmt: skip
        owner = type(self).__name__
        require_default(owner, kernel_regularizer=(kernel_regularizer, None),
                        recurrent_regularizer=(recurrent_regularizer, None),
                        bias_regularizer=(bias_regularizer, None),
                        activity_regularizer=(activity_regularizer, None),
                        kernel_constraint=(kernel_constraint, None),
                        recurrent_constraint=(recurrent_constraint, None),
                        bias_constraint=(bias_constraint, None), unroll=(unroll, False),
                        time_major=(time_major, False))  # fmt: skip
        if use_cudnn not in ("auto", False):
            require_default(owner, use_cudnn=(use_cudnn, "auto"))
        self._streams = StreamCache()  # the layer's core stream (see _stream_for)
        self._free_streams = StreamCache()  # a stateful layer's stream carrying nothing
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
        self._batch_size = None

    # ---- what a cell declares -----------------------------------------------------------

    @property
    def state_size(self) -> list[int]:
        """The width of each state; the first (h) is also the output's."""
        return [self.units] * len(self._state_names)

    @property
    def cell(self):
        """Keras keeps the weights on ``layer.cell``; here the layer is its own cell."""
        return self

    def _bias_shape(self) -> tuple:
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def _weight_specs(self, input_dim) -> list[tuple]:
        """``(name, shape, initializer)`` of each weight, in ``get_weights`` order."""
        gh = self._gates * self.units
        specs = [
            ("kernel", (input_dim, gh), self.kernel_initializer),
            ("recurrent_kernel", (self.state_size[0], gh), self.recurrent_initializer),
        ]
        if self.use_bias:
            specs.append(("bias", self._bias_shape(), self._bias_initializer()))
        return specs

    def _cell_keywords(self) -> dict:
        """The cell's options and optional weights, as keywords of _functional / stream."""
        variants = {n: getattr(self, n) for n in self._variant_weights}
        options = {name: getattr(self, name) for name in self._cell_options}
        return options | {n: v.value for n, v in variants.items() if v is not None}

    # ---- building and weights -----------------------------------------------------------

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: input shape must be "
                f"(batch, timesteps, input_dim) with a known input_dim, got {input_shape}"
            )
        specs = self._weight_specs(input_shape[-1])
        check_allocation(  # all the weights, before allocating any
            f"{type(self).__name__} {self.name!r} (units={self.units})",
            [shape for _, shape, _ in specs],
            self._np_dtype,
        )
        rng = np.random.default_rng(utils.draw_seed(self._seed_entropy))
        self._variables = []
        for name, shape, init in specs:  # drawn in this order: a seed gives the same weights
            setattr(self, name, self.add_weight(name, shape, init, rng))
        super().build(input_shape)
        self._streams = StreamCache()  # over the new weights, at zero states
        self._free_streams = StreamCache()
        self._batch_size = input_shape[0]

    # ---- the core stream: the one route to the core, and the home of carried states ------
    #
    # A stateful layer's stream serialises its runs (each reads the carried states, runs and
    # stores them as one step, and with return_state returns the states of its own output),
    # so concurrent calls need no lock here. The stream cache's lock only makes one stream
    # per layer when threads race to build it; the layer's lock makes a training step one
    # step (see call_train).

    @property
    def _stream(self):
        """The layer's core stream as last built (None before its first use)."""
        return self._streams.stream

    def _stream_for(self, batch):
        """The layer's core stream for a call of ``batch`` rows (StreamCache: built on
        first use and again after an option changed, told to repack after the weights
        changed). A stateful layer's batch size is fixed by its build, its first call or its
        first states; another batch size is refused here."""
        if self.stateful and batch != self._batch_size:
            if self._batch_size is not None:
                raise ValueError(
                    f"{self._owner()}: the layer is stateful with batch size "
                    f"{self._batch_size}; got input batch size {batch}"
                )
            self._batch_size = batch
        return self._streams.get(self, self._batch_size if self.stateful else None)

    def _free_stream(self):
        """A stream over the layer's weights that carries no states (each run from its
        ``initial_state``): what a stream pool and ragged predict run, whose states are
        theirs. The layer's own stream when it is not stateful (its weights packed once);
        a stateful layer's carries its states, so it gets a second one."""
        if not self.stateful:
            return self._stream_for(None)
        return self._free_streams.get(self, None)

    def _new_stream(self, batch_size):
        """A new core stream over the layer's current weights (its quantized ones when
        quantized, as its own calls) and options, carrying ``batch_size`` rows or none."""
        low = self.quantized_weights()
        return functional.stream(
            self._cell,
            self.kernel.value if low is None else low["kernel"],
            self.recurrent_kernel.value if low is None else low["recurrent_kernel"],
            None if self.bias is None else self.bias.value,
            batch_size=batch_size,
            go_backwards=self.go_backwards,
            quantize=self.quantization_mode,
            **self._cell_keywords(),
        )

    # ---- the native chain (rnncore.models.native_chain) ----------------------------------

    def _chainable(self) -> bool:
        return self._native_ok() and self.built and not self.return_state

    def _chain_op(self, batch):
        stream = self._stream_for(batch)  # built or repacked as the layer's call would
        return ("recurrent", stream, self.return_sequences, self.zero_output_for_mask)

    def _free_chain_op(self):
        return ("recurrent", self._free_stream(), self.return_sequences,
                self.zero_output_for_mask)  # fmt: skip

    @property
    def states(self):
        """The carried states of a stateful layer (``[h]`` or ``[h, c]``), else None."""
        if not (self.stateful and self.built):
            return None
        if self._batch_size is None:  # built without a batch size and not called yet
            return []
        return self._stream_for(self._batch_size).get_states()

    def reset_states(self, states=None):
        """Zero the carried states of a stateful layer (or set them to ``states``)."""
        if not (self.stateful and self.built):
            return
        if states is None:
            if self._batch_size is not None:
                self._stream_for(self._batch_size).set_states([])
            return
        states = [states] if isinstance(states, np.ndarray) else list(states)
        if len(states) != len(self._state_names):
            raise ValueError(
                f"{self.name}: expected {len(self._state_names)} state(s), got {len(states)}"
            )
        batch = self._batch_size if self._batch_size is not None else np.shape(states[0])[0]
        states = self._checked_states(states, batch, "state", self.name)
        self._stream_for(batch).set_states(states)

    reset_state = reset_states

    _transient = Layer._transient + ("_streams", "_free_streams", "_lock", "_state_grads")

    def __getstate__(self):
        state = super().__getstate__()
        # the carried states leave the core stream as arrays (and come back in __setstate__)
        stream = self._stream
        carried = stream is not None and stream.batch_size is not None
        state["_states"] = stream.get_states() if carried else []
        return state

    def __setstate__(self, state):
        state = dict(state)
        states = state.pop("_states", [])
        super().__setstate__(state)
        self._lock = threading.RLock()
        self._streams, self._free_streams = StreamCache(), StreamCache()
        if states and self.stateful:
            self._stream_for(states[0].shape[0]).set_states(states)

    # ---- calling ------------------------------------------------------------------------

    def _owner(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    def __call__(self, inputs, initial_state=None, mask=None, training=None):
        if type(inputs) is not np.ndarray and is_symbolic(inputs, initial_state, mask):
            if initial_state is not None and not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            kwargs = {"initial_state": initial_state, "mask": mask, "training": training}
            return symbolic_call(self, inputs, kwargs)
        if mask is None:
            mask = getattr(inputs, "_keras_mask", None)
        outputs, out_mask = self._call(inputs, mask, training, initial_state)
        return attach_mask(outputs, out_mask)

    def _symbolic_shapes(self, input_shape, kwargs):
        shape = super()._symbolic_shapes(input_shape, kwargs)
        states = kwargs.get("initial_state")
        if states is not None:
            self._check_state_shapes([s.shape for s in states], input_shape[0])
        return shape

    def _check_state_shapes(self, shapes, batch) -> None:
        """Symbolic initial states: one ``(batch, width)`` per state of the cell."""
        names = self._state_names
        if len(shapes) != len(names):
            raise ValueError(
                f"initial_state must be {len(names)} tensor(s) ({', '.join(names)}), "
                f"got {len(shapes)}"
            )
        for name, shape, width in zip(names, shapes, self.state_size):
            b = shape[0] if shape else None
            if len(shape) != 2 or shape[1] != width or None not in (b, batch) and b != batch:
                raise ValueError(
                    f"initial state {name!r} must have shape {(batch, width)}, got {shape}"
                )

    def _call(self, inputs, mask, training, initial_state=None):
        # Layer.__call__ and _call with the recurrent call's own arguments: Layer's generic
        # *args/**kwargs passing cost a streamed step (SimpleRNN, B = T = 1, H = 128, about
        # 2.3 us in all) some 0.3 us
        x = self._convert(inputs)
        if not self.built:
            self.build(x.shape)
        return self.call(x, initial_state, mask, training), self.compute_mask(x, mask)

    def _convert(self, inputs):
        if type(inputs) is np.ndarray and inputs.dtype == self._np_dtype:
            return inputs  # nothing to convert
        return super()._convert(inputs)

    def call(self, inputs, initial_state=None, mask=None, training=None):
        if training and (self.dropout or self.recurrent_dropout):
            if initial_state is not None:
                raise NotImplementedError(
                    f"{self._owner()}: training=True with dropout and an initial_state in a "
                    f"direct call is not supported; use model.fit"
                )
            y = self.call_train(inputs, mask, None)
            self._train_cache = None
            return y
        x, mask, initial_state = self._checked(inputs, mask, initial_state)
        stream = self._stream_for(x.shape[0])
        out = stream.run(x, mask, self.return_sequences, initial_state, self.return_state)
        if mask is not None and self.zero_output_for_mask and self.return_sequences:
            y = out[0] if self.return_state else out
            y[~(mask[:, ::-1] if self.go_backwards else mask)] = 0
        return out

    def _checked(self, x, mask, initial_state):
        """The call's arguments, checked once: ``x`` C-contiguous ``(batch, timesteps,
        input_dim)``, the mask ``(batch, timesteps)`` bool or None, the initial states
        ``(batch, width)`` (:attr:`state_size`) in the layer's dtype or None."""
        d = self.kernel.value.shape[0]
        if x.ndim != 3 or x.shape[2] != d:
            raise ValueError(
                f"{self._owner()}: expected input of shape (batch, timesteps, {d}), got {x.shape}"
            )
        if mask is not None:
            mask = np.ascontiguousarray(as_mask(mask, x.shape, self._owner()))
        if initial_state is not None:
            if isinstance(initial_state, np.ndarray) or not isinstance(
                initial_state, (list, tuple)
            ):
                initial_state = [initial_state]
            n = len(self._state_names)
            if len(initial_state) != n:
                raise ValueError(
                    f"{self._owner()}: initial_state must be {n} array(s) "
                    f"({', '.join(self._state_names)}), got {len(initial_state)}"
                )
            initial_state = self._checked_states(
                initial_state, x.shape[0], "initial state", self._owner()
            )
        return np.ascontiguousarray(x), mask, initial_state

    def _checked_states(self, states, batch, what, owner) -> list[np.ndarray]:
        out = []
        for name, s, width in zip(self._state_names, states, self.state_size):
            shape = (batch, width)
            s = np.ascontiguousarray(as_float_array(s, self._np_dtype, f"{owner}: {what} {name!r}"))
            if s.shape != shape:
                raise ValueError(f"{owner}: {what} {name!r} must have shape {shape}, got {s.shape}")
            out.append(s)
        return out

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

        return draw(self.dropout, input_dim), draw(self.recurrent_dropout, self.state_size[0])

    def forward_train(self, inputs, mask=None, rng=None, initial_state=None):
        """``(output, output_mask)`` of a training call (``(output, *states)`` with
        ``return_state``); with ``initial_state`` (a functional model's states, e.g. an
        encoder's), :meth:`backward` also leaves their gradients in ``state_gradients``."""
        x = self._convert(inputs)
        if not self.built:
            self.build(x.shape)
        return self.call_train(x, mask, rng, initial_state), self.compute_mask(x, mask)

    def call_train(self, x, mask, rng, initial_state=None):
        self._refuse_training()
        x, mask, initial_state = self._checked(x, mask, initial_state)
        if not self.stateful:
            y, finals = self._train_forward(x, mask, initial_state, rng)
        elif initial_state is not None:
            raise NotImplementedError(
                f"{self._owner()}: training a stateful layer from an initial_state"
            )
        else:
            with self._lock:  # the carried states: read, trained from and stored as one step
                stream = self._stream_for(x.shape[0])
                y, finals = self._train_forward(x, mask, stream.get_states(), rng)
                stream.set_states(finals)
        return (y, *finals) if self.return_state else y

    def _train_forward(self, x, mask, states, rng):
        """``(output, final states)`` of the training forward from ``states`` (the carried
        ones of a stateful layer are constants: truncated backpropagation; given initial
        states get gradients), keeping what :meth:`backward` needs."""
        in_masks, rec_masks = self._draw_dropout_masks(rng, x.shape[0], x.shape[2])
        if in_masks is not None:
            in_masks = in_masks.astype(x.dtype)
        bias = None if self.bias is None else self.bias.value
        options = dict(
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            training=True,
            **self._cell_keywords(),
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
        zeroed = None
        if self.zero_output_for_mask and self.return_sequences and mask is not None:
            zeroed = ~(mask[:, ::-1] if self.go_backwards else mask)
            y[zeroed] = 0
        given = states is not None and not self.stateful
        self._train_cache = cache + (zeroed, given)
        return y, finals

    def backward(self, dy):
        """dL/d(input) from dL/d(output) (with ``return_state``: the list ``[d_output,
        *d_states]``, None for a state without gradient). The gradients of the initial
        states the forward was given are left in :attr:`state_gradients`."""
        cache = self._cached()
        d_states = None
        if self.return_state:
            dy, *d_states = dy
            if all(d is None for d in d_states):
                d_states = None
        zeroed, given = cache[-2:]
        if zeroed is not None:  # a copy: the caller's dy stays as it is
            dy = np.array(dy, dtype=self._np_dtype, order="C")
            dy[zeroed] = 0
        else:
            dy = np.ascontiguousarray(dy, dtype=self._np_dtype)
        if d_states is not None:
            d_states = [
                np.zeros((dy.shape[0], width), self._np_dtype) if d is None
                else np.ascontiguousarray(d, dtype=self._np_dtype)
                for d, width in zip(d_states, self.state_size)
            ]  # fmt: skip
        variants = [n for n in self._variant_weights if getattr(self, n) is not None]
        if cache[0] == "batch":
            _, workspace, noise, _, _ = cache
            g = functional.backward(workspace, dy, d_states)
            self._grads = [g.kernel, g.recurrent_kernel] + ([g.bias] if self.use_bias else [])
            self._grads += [getattr(g, n) for n in variants]
            self._state_grads = list(g.initial_state) if given else None
            return g.x if noise is None else g.x * noise[:, None, :]
        _, workspaces, in_masks, rec_masks, _, _ = cache
        dW = np.zeros_like(self.kernel.value)
        dU = np.zeros_like(self.recurrent_kernel.value)
        db = None if self.bias is None else np.zeros_like(self.bias.value)
        d_variants = [np.zeros_like(getattr(self, n).value) for n in variants]
        dx, d_init = [], []
        for b, ws in enumerate(workspaces):
            ds_b = None if d_states is None else [d[b : b + 1] for d in d_states]
            g = functional.backward(ws, dy[b : b + 1], ds_b)
            dx.append(g.x)
            d_init.append(g.initial_state)
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
            for total, n in zip(d_variants, variants):  # not masked: no dropout acts on them
                total += getattr(g, n)
        self._grads = [dW, dU] + ([db] if self.use_bias else []) + d_variants
        self._state_grads = [np.concatenate(parts) for parts in zip(*d_init)] if given else None
        return np.concatenate(dx)

    @property
    def state_gradients(self):
        """dL/d(initial states) of the last :meth:`backward`, when its forward was given
        initial states (else None)."""
        return getattr(self, "_state_grads", None)

    # ---- shapes, masks, config ----------------------------------------------------------

    def compute_output_shape(self, input_shape):
        batch, steps = tuple(input_shape)[:2]
        width = self.state_size[0]
        out = (batch, steps, width) if self.return_sequences else (batch, width)
        if self.return_state:
            return (out,) + tuple((batch, w) for w in self.state_size)
        return out

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        if self.return_state:
            return [out] + [None] * len(self._state_names)
        return out


def _gate_scale(masks, units):
    """Row scales of a kernel ``(n, G*units)`` from per-gate masks ``(count, n)``.

    One mask scales every column; ``G`` masks scale each gate's column block by its own.
    """
    if masks.shape[0] == 1:
        return masks[0][:, None]
    return np.repeat(masks.T, units, axis=1)
