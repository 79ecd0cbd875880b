"""A model as a causal, per-timestep program: what :class:`~rnncore.models.stream_pool.StreamPool`
steps and what ragged ``predict`` runs.

:class:`StreamPlan` reads a Sequential or a single-input, single-output functional model
once and lists its layer calls (ops) in the order the model runs them. Each op is one of:

* ``recurrent``: a SimpleRNN / LSTM / GRU, run through a non-carrying core stream
  (:func:`rnncore.functional.stream` with ``initial_state`` and ``return_state``), so the
  states are the caller's: gathered into a batch before the call and handed back after it.
  The core computes every row with the same FMA chain whatever the batch around it and
  however the rows are split between threads, so a row's bits do not depend on the others.
* ``rows``: a layer computed position by position with NumPy element-wise or per-row
  operations (Activation, Dropout and the noise layers at inference, Masking, Embedding,
  Layer/BatchNormalization over feature axes, the element-wise merges, Concatenate on the
  feature axis): run once on the whole batch, each row's result is that of the row alone.
  Dense and TimeDistributed(Dense) are ``rows`` too: the core's packed product computes each
  row with the same FMA chain however many rows the call has (dense.hpp).
* ``window``: a causal Conv1D (``padding='causal'``, ``strides=1``, channels_last), whose
  step ``t`` reads the inputs of steps ``t - (kernel_size - 1)·dilation .. t``: its state is
  the last ``(kernel_size - 1)·dilation`` inputs of each sample (zeros at the start: the
  causal padding), carried between calls as a recurrent layer's states are, so a stream fed
  chunk by chunk computes what the whole sequence computes (:meth:`Conv1D.causal_step`;
  each output row's bits do not depend on the rows around it). In a ragged batch it runs
  once on the right-padded batch: a causal window never reads the padding after a sample.
* ``call``: a recurrent layer whose class overrides ``call`` (Layer._native_ok): ragged
  predict calls it on each sample's own steps; the pool refuses it (it carries the states
  between steps itself, and an overridden call does not hand them over).
* ``each``: a layer whose numbers depend on how many rows a call has (Softmax's mask
  broadcasting depends on the batch shape; TimeDistributed of another layer): called once
  per sample with exactly the rows the sample alone would give it, so the bits are those
  of the sample alone.

  Any layer after the time axis is gone (after a recurrent layer with
  ``return_sequences=False``: Flatten, Reshape, Dot, RepeatVector, pooling of those
  values...) is ``each`` too: a step's output is a function of the sample's own values.

On the time axis, layers that need later timesteps or context across timesteps
(Bidirectional, a Conv1D that is not causal or has strides > 1,
pooling, Flatten and the other reshaping layers, Attention, Dot, a recurrent layer with
``go_backwards`` or ``return_state``, nested models) are refused by name with the reason,
as is a layer that needs a time axis after a recurrent layer with ``return_sequences=False``.

The ops are plain data (layer, kind, input and output slots). When the core chain runs
them all (:attr:`StreamPlan.native`), a pool's step is one core call
(:meth:`StreamPlan.run_slots`) instead of :meth:`StreamPlan.run_steps`' op by op.

A recurrent op runs the layer's stream that carries nothing (``RNN._free_stream``: the
layer's own stream unless the layer is stateful), so its weights are packed once for the
layer's calls, ragged predict and every pool, and follow every change of the layer through
the one generation-keyed cache (``rnncore.layers._caches.StreamCache``).
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from .. import _core
from ..errors import UnsupportedModelError
from ..layers import (
    RNN,
    Activation,
    Add,
    Average,
    BatchNormalization,
    Concatenate,
    Conv1D,
    Dense,
    Dropout,
    Embedding,
    GaussianNoise,
    Layer,
    LayerNormalization,
    Masking,
    Maximum,
    Minimum,
    Multiply,
    Softmax,
    Subtract,
    TimeDistributed,
)
from ..layers._caches import GenerationCache
from ..layers._symbolic import KerasTensor, flatten
from .graph import _masks_of, several_outputs

__all__ = ["StreamPlan", "Op"]

#: element-wise or per-position layers: one call on the batch gives each row its own bits
_ROW_LAYERS = (Activation, Dropout, GaussianNoise, Masking, Embedding, Add, Subtract, Multiply,
               Average, Maximum, Minimum)  # fmt: skip
#: per-timestep layers whose rounding depends on the row count of the call
_EACH_LAYERS = (Dense, TimeDistributed, Softmax)
_CELLS = ("simple_rnn", "lstm", "gru")
_spec_generation = operator.attrgetter("spec_generation")
_generation = operator.attrgetter("generation")
#: the chain's ops a pool's step runs in the core (bind_chain.cpp); an Embedding first only
_CHAIN_KINDS = ("identity", "masking", "dense", "recurrent", "embedding", "layer_norm")


class Op(NamedTuple):
    """One layer call: ``kind`` (``recurrent``, ``window``, ``rows``, ``call`` or ``each``),
    the layer, the slot(s) it reads (an int, or a list for a merge) and the slot it
    writes."""

    kind: str
    layer: object
    args: object
    out: int
    key: str  # its states' key in a pool's saved state: "position:kind" (see _add)
    timed: bool  # whether its input has a time axis


class _Value(NamedTuple):
    shape: tuple  # the symbolic shape, batch first
    has_time: bool  # axis 1 is time


def _refuse(layer, why: str):
    return UnsupportedModelError(
        f"stream_pool / ragged predict: layer {layer.name!r} ({type(layer).__name__}) {why}"
    )


def _resolved_axes(axes, rank: int) -> list:
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
    return [int(a) % rank for a in axes]


def _check_recurrent(layer, value: _Value) -> bool:
    """Refuse what the pool cannot carry; returns whether the output keeps the time axis."""
    if getattr(layer, "_cell", None) not in _CELLS:
        raise _refuse(layer, "is a recurrent layer of a cell the pool does not know")
    if not value.has_time:
        raise _refuse(layer, "needs a time axis, which an earlier layer removed")
    if layer.go_backwards:
        raise _refuse(layer, "has go_backwards=True: it reads each sequence from its end")
    if layer.return_state:
        raise _refuse(layer, "has return_state=True: the pool carries the states itself")
    passed = {id(layer.kernel), id(layer.recurrent_kernel), id(layer.bias)}
    passed |= {id(getattr(layer, n, None)) for n in getattr(layer, "_variant_weights", ())}
    extra = [v.name for v in layer.weights if id(v) not in passed]
    if extra:  # a variant whose weights its stream keywords do not carry: not reproduced
        raise _refuse(layer, f"has weights {extra} that the pool does not pass to the core")
    return layer.return_sequences


def _check_conv(layer, value: _Value) -> bool:
    """A Conv1D on a sequence: only a causal one with strides 1 streams."""
    if layer.padding != "causal":
        raise _refuse(
            layer,
            f"convolves a window of timesteps with padding={layer.padding!r}: its outputs need "
            f"later steps (padding='causal' streams)",
        )
    if layer.strides[0] != 1:
        raise _refuse(
            layer,
            f"convolves a window of timesteps with strides={layer.strides[0]}: one output per "
            f"{layer.strides[0]} input steps, not one per step (strides=1 streams)",
        )
    if layer.data_format != "channels_last":
        raise _refuse(
            layer,
            "convolves a window of timesteps with data_format='channels_first': the time axis "
            "is not the second (channels_last streams)",
        )
    return True


def _check_own_call(layer, value: _Value) -> bool:
    """A recurrent layer whose class overrides ``call``: run through that call (ragged
    predict: on each sample's own steps, from zero states); the pool refuses it."""
    if not value.has_time:
        raise _refuse(layer, "needs a time axis, which an earlier layer removed")
    if layer.return_state:
        raise _refuse(layer, "has return_state=True: the pool carries the states itself")
    return layer.return_sequences


def _check_rows(layer, values: list) -> bool:
    has_time = values[0].has_time
    if any(v.has_time != has_time for v in values):
        raise _refuse(layer, "merges a sequence with a tensor without a time axis")
    rank = len(values[0].shape)
    first_feature = 2 if has_time else 1
    if isinstance(layer, (LayerNormalization, BatchNormalization, Concatenate)):
        if min(_resolved_axes(layer.axis, rank)) < first_feature:
            raise _refuse(
                layer, f"works on axis {layer.axis!r}, across samples or timesteps (rank {rank})"
            )
    return has_time


def _classify(layer, values: list):
    """``(kind, output has a time axis)`` of a call on ``values``, or an error saying why
    the layer cannot be streamed."""
    if not isinstance(layer, Layer):
        raise UnsupportedModelError(
            f"stream_pool / ragged predict: {layer.name!r} is a nested model; build the model "
            f"from its layers directly"
        )
    if isinstance(layer, RNN):
        if not layer._native_ok():
            return "call", _check_own_call(layer, values[0])
        return "recurrent", _check_recurrent(layer, values[0])
    if not layer._native_ok():
        # a subclass's own call: nothing says its rows are independent of each other
        return "each", values[0].has_time
    if isinstance(layer, _ROW_LAYERS + (LayerNormalization, BatchNormalization, Concatenate)):
        return "rows", _check_rows(layer, values)
    if isinstance(layer, _EACH_LAYERS):
        if isinstance(layer, TimeDistributed) and not values[0].has_time:
            raise _refuse(layer, "needs a time axis, which an earlier layer removed")
        if isinstance(layer, Softmax) and min(_resolved_axes(layer.axis, len(values[0].shape))) < (
            2 if values[0].has_time else 1
        ):
            raise _refuse(layer, f"works on axis {layer.axis!r}, across timesteps")
        inner = layer.layer if isinstance(layer, TimeDistributed) else layer
        if type(inner) is Dense:  # the core's packed product: each row's own FMA chain
            return "rows", values[0].has_time
        return "each", values[0].has_time
    if not any(v.has_time for v in values):
        # the stream's time axis is gone (a recurrent layer without return_sequences): each
        # step's output is a function of the sample's own values, so any layer (Flatten,
        # Reshape, Dot, RepeatVector, pooling over its own axes...) runs on each sample alone
        return "each", False
    if isinstance(layer, Conv1D):
        return "window", _check_conv(layer, values[0])
    why = {
        "Bidirectional": "reads each sequence backwards too: its outputs need the future",
        "Attention": "attends across timesteps",
        "AdditiveAttention": "attends across timesteps",
        "Dot": "takes products across timesteps",
    }.get(type(layer).__name__, "is not a per-timestep layer (it pools, reshapes or moves "
          "the time axis)")  # fmt: skip
    raise _refuse(layer, why)


def _state_shapes(op) -> list:
    """``[(name, shape for one sample)]`` of an op's carried states."""
    layer = op.layer
    if op.kind == "window":
        return [("window", (layer.causal_width(), int(layer.kernel.shape[1]) * layer.groups))]
    return [(n, (int(w),)) for n, w in zip(layer._state_names, layer.state_size)]


class StreamPlan:
    """The ops of ``model`` (see the module's help); raises UnsupportedModelError naming the
    first layer that cannot be streamed."""

    def __init__(self, model):
        self.model_name = model.name
        graph = getattr(model, "_graph", None)
        if graph is None:
            self._from_sequential(model)
        else:
            self._from_graph(model, graph)
        # the ops with states carried between calls: each state's name and shape for one
        # sample (a recurrent layer's (width,) vectors, a causal Conv1D's (steps, channels)
        # window of past inputs)
        self.carried = [op for op in self.ops if op.kind in ("recurrent", "window")]
        self.state_spec = {op.key: _state_shapes(op) for op in self.carried}
        self.state_dtypes = {op.key: op.layer._np_dtype for op in self.carried}
        self.own_calls = [op for op in self.ops if op.kind == "call"]
        # the layers when the core chain runs the whole plan (run_slots), else None
        self.native = self._chained_layers()
        self._chain = GenerationCache()
        # the layers' options when planned: a later change (go_backwards, return_sequences,
        # quantize, ...) makes the plan stale (see stale), so its users plan again
        self._layers = [op.layer for op in self.ops]
        self.spec_generation = max(map(_spec_generation, self._layers), default=0)

    def stale(self) -> bool:
        """Whether an option of one of the model's layers changed since the plan was made."""
        return max(map(_spec_generation, self._layers), default=0) != self.spec_generation

    # ---- building ---------------------------------------------------------------------------

    def _input(self, shape, dtype, owner):
        shape = tuple(shape)
        if len(shape) < 2:
            raise UnsupportedModelError(
                f"stream_pool / ragged predict: {owner}'s input {shape} has no time axis"
            )
        self.input_shape = shape
        self.step_shape = shape[2:]  # one timestep of one sample
        self.input_dtype = np.dtype(dtype)
        self.ops: list[Op] = []
        return [_Value(shape, True)]

    def _add(self, layer, values, args, out) -> _Value:
        kind, has_time = _classify(layer, values)
        # The call's position among the model's layer calls and the layer's class, not its
        # name: generated names ("lstm_3") depend on what the process built before, so the
        # same model built in code in another process would not find its states.
        key = f"{len(self.ops)}:{type(layer).__name__}"
        self.ops.append(Op(kind, layer, args, out, key, values[0].has_time))
        return has_time

    def _from_sequential(self, model):
        if not model.built or not model.layers:
            raise ValueError(
                f"{model.name}: stream_pool needs a built model with layers (start it with an "
                f"Input, or call it once)"
            )
        layers = model.layers
        first = layers[0]
        if model._input_layer is not None:
            dtype = model._input_layer.dtype
        else:
            dtype = np.int64 if isinstance(first, Embedding) else first.dtype
        values = self._input(model.input_shape, dtype, model.name)
        for k, layer in enumerate(layers):
            has_time = self._add(layer, [values[k]], k, k + 1)
            values.append(_Value(tuple(model._output_shapes[k]), has_time))
        self._finish(values[-1])

    def _from_graph(self, model, graph):
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise UnsupportedModelError(
                f"stream_pool / ragged predict: model {model.name!r} has {len(graph.inputs)} "
                f"inputs and {len(graph.outputs)} outputs; only one of each is supported"
            )
        t_in = graph.inputs[0]
        slots = {id(t_in): 0}
        values = self._input(t_in.shape, t_in.dtype, model.name)
        for node in graph.order:
            if node.is_input:
                continue
            layer = node.operation
            extra = [k for k in node.kwargs if k != "training"]
            if extra or several_outputs(node) or len(node.outputs) != 1:
                raise _refuse(
                    layer,
                    f"is called with {extra or 'several outputs'}; the pool runs single-output "
                    f"calls on their inputs only",
                )
            inputs = node.args[0]
            tensors = flatten(inputs)
            if not all(isinstance(t, KerasTensor) for t in tensors):
                raise _refuse(layer, "is called on something other than tensors")
            args = [slots[id(t)] for t in tensors]
            args = args if isinstance(inputs, (list, tuple)) else args[0]
            out = len(values)
            ins = [values[a] for a in (args if isinstance(args, list) else [args])]
            has_time = self._add(layer, ins, args, out)
            values.append(_Value(tuple(node.outputs[0].shape), has_time))
            slots[id(node.outputs[0])] = out
        self._finish(values[slots[id(graph.outputs[0])]])
        self.output_slot = slots[id(graph.outputs[0])]

    def _finish(self, value: _Value):
        self.output_has_time = value.has_time
        self.output_slot = len(self.ops)

    # ---- running: one core call ----------------------------------------------------------
    #
    # When every op is one the core chain runs (recurrent layers going forwards, Dense and
    # TimeDistributed(Dense), Masking, LayerNormalization on the last axis, an Embedding
    # first, the identity layers: what native_chain chains), in one line from the input to
    # the output, in one float dtype, a pool's step is one call of the chain (run_slots): the
    # recurrent ops start from the pool's state table and leave their final states there.
    # Other plans (a windowed causal Conv1D, NumPy ``rows`` ops, ``each`` ops) run op by op
    # (run_steps) until the issue "Every layer native" gives those layers a native form.

    def _chained_layers(self):
        """The ops' layers when the chain can run them all as one call, else None."""
        dtypes = {op.layer._np_dtype for op in self.ops}
        dtype = dtypes.pop() if len(dtypes) == 1 else None
        if dtype not in (np.float32, np.float64):
            return None
        ids = isinstance(self.ops[0].layer, Embedding)
        if ids != (self.input_dtype.kind in "iu") or len(self.step_shape) != (0 if ids else 1):
            return None
        if not ids and self.input_dtype != dtype:
            return None  # the chain reads x in its own dtype; the layers convert it
        previous = 0
        for k, op in enumerate(self.ops):
            kind = op.layer._chain_kind
            if op.kind not in ("recurrent", "rows") or kind not in _CHAIN_KINDS:
                return None
            if not op.layer._chainable() or op.args != previous:
                return None  # not chainable with its options, or not a line of calls
            if (kind == "embedding" and k) or (kind in ("masking", "recurrent", "embedding")
                                               and not op.timed):  # fmt: skip
                return None  # the chain's Embedding is its first op; Masking needs time
            previous = op.out
        layers = [op.layer for op in self.ops]
        if previous != self.output_slot or all(x._chain_kind == "identity" for x in layers):
            return None
        return layers

    def native_input(self, x):
        """``x`` (B, T, *step_shape) as the chain takes it, or None when it would refuse it
        (token ids out of range: the Embedding's own call then raises as before)."""
        if self.input_dtype.kind not in "iu":
            return np.ascontiguousarray(x)
        if x.dtype.kind not in "iu":
            return None  # bools index as masks in NumPy: the layer's own call decides
        x = np.ascontiguousarray(x, np.int64 if x.dtype not in (np.int32, np.int64) else None)
        vocab = self.ops[0].layer.input_dim
        if x.size == 0 or x.min() < 0 or x.max() >= vocab:
            return None
        return x

    def run_slots(self, x, slots, table):
        """One pool step of a native plan in one core call: ``x`` from :meth:`native_input`,
        ``slots`` int64 (B,) the distinct rows of ``table`` (one (capacity, width) array per
        state of each recurrent op, in op order) the batch's rows start from and end in.
        Returns the output; the caller holds the slots for the step."""
        generation = max(map(_generation, self.native))
        chain = self._chain.get(generation, self._built_chain)
        return chain.run_slots(x, slots, table)

    def _built_chain(self, previous):
        ops = [op for op in (layer._free_chain_op() for layer in self.native) if op]
        return _core.make_chain(ops, self.native[0]._np_dtype == np.float64)

    # ---- running ------------------------------------------------------------------------

    def _recurrent(self, op, x, mask, states):
        """``(output, output mask, final states)`` from ``states`` (one array per state)."""
        layer = op.layer
        x = np.ascontiguousarray(layer._convert(x))
        if mask is not None:
            mask = np.ascontiguousarray(mask, dtype=np.bool_)
        out = layer._free_stream().run(x, mask, layer.return_sequences, states, True)
        y, finals = out[0], list(out[1:])
        if mask is not None and layer.zero_output_for_mask and layer.return_sequences:
            y[~mask] = 0  # as the layer's own call
        return y, layer.compute_mask(x, mask), finals

    @staticmethod
    def _window(op, x, states):
        """A causal Conv1D continued from ``states`` (its window): ``(output, [window])``;
        the layer drops the mask, as its own call does."""
        layer = op.layer
        y, window = layer.causal_step(layer._convert(x), states[0])
        return y, [window]

    @staticmethod
    def _each(layer, x, mask, rows):
        """The layer called on each sample's rows alone: ``rows[i]`` slices sample ``i`` (of
        each input and mask, for a layer of several inputs)."""

        def part(a, r):
            if isinstance(a, list):
                return [None if m is None else m[r] for m in a]
            return None if a is None else a[r]

        return [layer._call(part(x, r), part(mask, r), False) for r in rows]

    def _inputs(self, op, values):
        if isinstance(op.args, list):
            xs = [values[a][0] for a in op.args]
            return xs, _masks_of([values[a][1] for a in op.args])
        return values[op.args]

    def run_steps(self, x, states: dict):
        """One call for a batch of samples of equal length: ``x`` ``(B, T, *step_shape)``
        in the input dtype; ``states`` maps each carried op's key to its arrays ``(B,
        *shape)`` (:attr:`state_spec`). Returns ``(output, final states)`` (as ``states``)."""
        values = [(x, None)] + [None] * len(self.ops)
        finals = {}
        rows = None  # one slice per sample, for the ``each`` ops
        for op in self.ops:
            xin, mask = self._inputs(op, values)
            if op.kind == "recurrent":
                y, m, finals[op.key] = self._recurrent(op, xin, mask, states[op.key])
            elif op.kind == "window":
                (y, finals[op.key]), m = self._window(op, xin, states[op.key]), None
            elif op.kind == "rows":
                y, m = op.layer._call(xin, mask, False)
            else:
                rows = rows or [slice(i, i + 1) for i in range(x.shape[0])]
                parts = self._each(op.layer, xin, mask, rows)
                y = np.concatenate([p[0] for p in parts])
                m = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
            values[op.out] = (np.asarray(y), m)
        return values[self.output_slot][0], finals

    def run_ragged(self, x, lengths):
        """Outputs of samples of different lengths, each as if predicted alone.

        ``x`` ``(B, T_max, *step_shape)`` holds the samples right-padded, sorted by length,
        longest first; ``lengths`` (descending) their lengths. Layer by layer: a recurrent
        layer runs the time spans between successive lengths, each over the rows still
        running (those that ended drop out); an ``each`` layer gets each sample's own
        ``lengths[i]`` steps; a ``rows`` layer, and a causal ``window`` (which reads no
        later step), runs once over the padded batch (its padded positions are never
        read). Returns the per-sample outputs (sliced to their
        lengths when the output is a sequence)."""
        values = [(x, None)] + [None] * len(self.ops)
        for op in self.ops:
            xin, mask = self._inputs(op, values)
            if op.kind == "recurrent":
                y, m = self._recurrent_ragged(op, xin, mask, lengths)
            elif op.kind == "call":
                y, m = self._call_ragged(op, xin, mask, lengths)
            elif op.kind in ("rows", "window"):
                y, m = op.layer._call(xin, mask, False)
            else:
                y, m = self._each_ragged(op, xin, mask, lengths)
            values[op.out] = (np.asarray(y), m)
        y = values[self.output_slot][0]
        if self.output_has_time:
            return [y[i, :n] for i, n in enumerate(lengths)]
        return list(y)

    def _each_ragged(self, op, x, mask, lengths):
        """An ``each`` layer on each sample's own steps; padded positions stay zero."""
        if op.timed:
            rows = [(slice(i, i + 1), slice(0, n)) for i, n in enumerate(lengths)]
        else:
            rows = [slice(i, i + 1) for i in range(len(lengths))]
        parts = self._each(op.layer, x, mask, rows)
        y0, x0 = parts[0][0], (x[0] if isinstance(x, list) else x)
        shape = (x0.shape[0],) + ((x0.shape[1],) + y0.shape[2:] if op.timed else y0.shape[1:])
        y = np.zeros(shape, y0.dtype)
        m = None if parts[0][1] is None else np.zeros(shape[: 1 + op.timed], np.bool_)
        for r, (yi, mi) in zip(rows, parts):
            y[r] = yi
            if m is not None:
                m[r] = mi
        return y, m

    def _call_ragged(self, op, x, mask, lengths):
        """A recurrent layer's own call on each sample's own steps (from zero states, as
        predicting the sample alone); padded positions stay zero."""
        parts = [
            op.layer._call(x[i : i + 1, :n], None if mask is None else mask[i : i + 1, :n], False)
            for i, n in enumerate(lengths)
        ]
        if not op.layer.return_sequences:
            return np.concatenate([np.asarray(p[0]) for p in parts]), None
        y0 = np.asarray(parts[0][0])
        y = np.zeros((x.shape[0], x.shape[1]) + y0.shape[2:], y0.dtype)
        m = None if parts[0][1] is None else np.zeros(x.shape[:2], np.bool_)
        for i, (n, (yi, mi)) in enumerate(zip(lengths, parts)):
            y[i, :n] = yi[0]
            if m is not None:
                m[i, :n] = mi[0]
        return y, m

    def _recurrent_ragged(self, op, x, mask, lengths):
        """The layer over each sample's own steps (see :meth:`run_ragged`), from zeros."""
        layer = op.layer
        x = np.ascontiguousarray(layer._convert(x))
        B, T = x.shape[:2]
        stream = layer._free_stream()
        states = [np.zeros((B, w), layer._np_dtype) for w in layer.state_size]
        seq = layer.return_sequences
        y = None
        if mask is not None:
            mask = np.ascontiguousarray(mask, dtype=np.bool_)
        t0 = 0
        for t1 in sorted(set(int(n) for n in lengths)):
            n = int(np.count_nonzero(np.asarray(lengths) >= t1))  # rows still running
            seg = np.ascontiguousarray(x[:n, t0:t1])
            m = None if mask is None else np.ascontiguousarray(mask[:n, t0:t1])
            out = stream.run(seg, m, seq, [s[:n].copy() for s in states], True)
            for s, f in zip(states, out[1:]):
                s[:n] = f
            if seq:
                if y is None:
                    y = np.zeros((B, T) + out[0].shape[2:], out[0].dtype)
                y[:n, t0:t1] = out[0]
            t0 = t1
        if not seq:
            # the last output is h after the last used step: the final h (zeros if none)
            return states[0], None
        if mask is not None:
            _fill_masked(y, mask)
            if layer.zero_output_for_mask:
                y[~mask] = 0
        return y, layer.compute_mask(x, mask)


def _fill_masked(y, mask) -> None:
    """Keras's rule for a masked step, across the spans run separately: it repeats the
    output of the last used step before it (zeros when there is none). Each span's core
    call restarts that "previous output" at zero, so the masked steps at a span's start
    are filled here from the steps before it (copies: the bits are those of one call)."""
    T = mask.shape[1]
    last = np.maximum.accumulate(np.where(mask, np.arange(T), -1), axis=1)
    rows, cols = np.nonzero(~mask & (last >= 0))
    y[rows, cols] = y[rows, last[rows, cols]]
