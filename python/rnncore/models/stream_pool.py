"""A pool of independent streams over one model: ``pool = model.stream_pool(capacity)``.

Servers often run one model over many independent streams (one per user or device), each
fed a timestep or a chunk of timesteps at a time. The pool keeps every open stream's
recurrent states (and a causal Conv1D's window of past inputs) in a table with one row
(slot) per stream, and steps any subset of them together as one batch::

    pool = model.stream_pool(64)
    a, b = pool.open(), pool.open()
    out = pool.step({a: x_a, b: x_b})          # {a: y_a, b: y_b}
    out = pool.step([a, b], np.stack([x_a, x_b]))
    saved = pool.get_state(a)                  # plain dict of NumPy arrays: picklable
    pool.reset(a); pool.set_state(b, saved); pool.close(a)

* ``open()`` returns a new stream id (an int, never reused) at zero states; beyond
  ``capacity`` open streams it raises :class:`PoolFullError`.
* ``step({sid: x, ...})`` or ``step(ids, stacked)`` runs each given stream's next step(s).
  ``x`` is one timestep, shaped as one step of one sample (``(input_dim,)``; a scalar id
  for a model starting with an Embedding), or a chunk ``(timesteps, input_dim)``. Streams
  whose chunks have different lengths in one call are grouped by length: one batch per
  length. The result maps each id to its output, shaped as the model's
  output for one sample: ``(units,)`` for a model without a time axis in its output; for
  a ``return_sequences`` model ``(timesteps, units)`` for a chunk and ``(units,)`` for one
  step (the step's output, without a time axis).
* ``reset(sid)`` zeros a stream's states, ``close(sid)`` frees its slot;
  ``get_state(sid)`` / ``set_state(sid, state)`` read and write its states as
  ``{"model": name, "states": {layer key: [array per state]}}``. A recurrent layer's states
  are its ``(units,)`` vectors (``h``, and ``c`` for an LSTM); a causal Conv1D's is
  ``[window]``, its last ``(kernel_size - 1)·dilation_rate`` inputs ``(steps, channels)``,
  oldest first (zeros at open and reset: the causal padding of a sequence's start). A
  layer call's key is ``"position:kind"``, e.g. ``"0:LSTM"`` or ``"0:Conv1D"``: its
  position among the model's layer calls (a Sequential's layers in order, a functional
  model's calls in the order it runs them) and the layer's class, not its generated name,
  so the same model built in code in another process takes the state. ``set_state``
  checks the keys and the states' shapes, naming the position, kind or shape that differs.

What a stream computes: exactly what a stateful copy of the model with batch size 1
computes when fed the same steps or chunks (each call continues from the states of the
last), bit for bit, whatever other streams share the step and with any thread count
(:class:`~rnncore.models.stream_plan.StreamPlan` says why). One difference, by design: a
``Conv1D(padding="causal")`` (strides 1, channels_last) carries its window of past inputs
between calls, so its outputs are those of the whole sequence fed so far (``predict`` on it,
bit for bit), where a stateful Keras model, which carries no window, convolves each call's
chunk alone as if it started the sequence (rnncore's stateful models keep that, for parity).
A Conv1D that is not causal, or has strides > 1, is refused: its outputs need later steps or
come at another rate. The streams start from zeros;
the model's own stateful layers keep their states, the pool never reads or changes them.
Masks (a Masking layer, ``Embedding(mask_zero=True)``) follow the stateful model too:
inside a call a masked step repeats the previous output, and at the start of a call
Keras's "previous output" is zeros.

How a batch runs: when the core chain runs every layer of the model (recurrent layers going
forwards, Dense and TimeDistributed(Dense), Masking, an Embedding first, the identity
layers, one after the other in one float dtype), a step is one core call
(:meth:`StreamPlan.run_slots <rnncore.models.stream_plan.StreamPlan.run_slots>`): it gathers
the streams' rows of the state table, runs the layers and scatters the final states back,
with the GIL released once. Other models (a causal Conv1D, layers computed with NumPy,
layers run per sample) run layer by layer on the gathered states, which go back to the
table once the batch has run. The results are the same bits either way.

Threads: several threads may step different streams at once; the core calls run outside
the pool's lock (the core releases the GIL). A stream stepped, reset, closed or
read from two threads at once is handled one call after the other. Bad input (an unknown
or closed id, a wrong shape or dtype, a state of another model) raises before any state
changes, so every stream stays as it was.
"""

from __future__ import annotations

import itertools
import operator
import threading

import numpy as np

from ..errors import UnsupportedModelError
from ..layers._args import as_float_array
from .stream_plan import StreamPlan

__all__ = ["StreamPool", "PoolFullError"]


class PoolFullError(RuntimeError):
    """``open()`` on a pool whose ``capacity`` streams are all open."""


class StreamPool:
    """Independent streams over one model (see the module's help)."""

    def __init__(self, model, capacity):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"stream_pool: capacity must be an integer, got {capacity!r}")
        if capacity < 1:
            raise ValueError(f"stream_pool: capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self._model = model
        self._plan = self._planned(model)
        self._model_name = model.name
        # one (capacity, *shape) array per state of each carried call: a stream's states
        # are the rows of its slot, gathered into a batch for each step
        self._states = {
            key: [
                np.zeros((self.capacity,) + shape, self._plan.state_dtypes[key])
                for _, shape in spec
            ]
            for key, spec in self._plan.state_spec.items()
        }
        # the same arrays in the order a native plan's chain reads them (run_slots): each
        # state of each recurrent layer, in the order the model runs them
        self._table = [a for arrays in self._states.values() for a in arrays]
        self._slots: dict[int, int] = {}  # open id -> slot
        self._free = list(range(self.capacity - 1, -1, -1))
        self._ids = itertools.count()
        self._busy: set = set()  # ids in a running step
        self._cond = threading.Condition()

    @staticmethod
    def _planned(model) -> StreamPlan:
        plan = StreamPlan(model)
        if plan.own_calls:
            layer = plan.own_calls[0].layer
            raise UnsupportedModelError(
                f"stream_pool: layer {layer.name!r} ({type(layer).__name__}) overrides call: "
                f"the pool carries a recurrent layer's states between steps itself and an "
                f"overridden call does not hand them over; step a stateful model instead "
                f"(its calls run the override), or predict"
            )
        return plan

    def _current_plan(self) -> StreamPlan:
        """The plan, made again when a layer's option changed since (go_backwards, return_
        sequences, quantize...): refused if the model no longer streams, or if its states
        changed shape (the open streams' states would not fit)."""
        plan = self._plan
        if not plan.stale():
            return plan
        with self._cond:
            if self._plan is plan:
                new = self._planned(self._model)
                # in order: the table lists the states as the chain reads them
                if list(new.state_spec.items()) != list(plan.state_spec.items()):
                    raise UnsupportedModelError(
                        f"stream_pool: the states of model {self._model_name!r} changed since "
                        f"the pool was made ({plan.state_spec} -> {new.state_spec}); make a "
                        f"new pool"
                    )
                self._plan = new
            return self._plan

    def __len__(self) -> int:
        """The number of open streams."""
        return len(self._slots)

    def __repr__(self):
        return (
            f"<StreamPool model={self._model_name!r} open={len(self._slots)} "
            f"capacity={self.capacity}>"
        )

    # ---- ids ------------------------------------------------------------------------------

    def open(self) -> int:
        """A new stream at zero states; its id."""
        with self._cond:
            if not self._free:
                raise PoolFullError(
                    f"stream_pool: all {self.capacity} streams are open; close one, or make a "
                    f"pool with a larger capacity"
                )
            sid = next(self._ids)
            slot = self._free.pop()
            for arrays in self._states.values():
                for a in arrays:
                    a[slot] = 0
            self._slots[sid] = slot
            return sid

    def _id(self, sid) -> int:
        try:
            return operator.index(sid)
        except TypeError:
            raise TypeError(f"stream_pool: a stream id is an int, got {sid!r}") from None

    def _slot(self, sid) -> int:
        """The slot of an open stream (the condition's lock held)."""
        slot = self._slots.get(sid)
        if slot is None:
            raise KeyError(f"stream_pool: stream {sid!r} is not open (never opened, or closed)")
        return slot

    def _open_slots(self, ids) -> list:
        """The slots of open streams, in the order of ``ids`` (the lock held); KeyError
        naming the first that is not open."""
        try:
            return list(map(self._slots.__getitem__, ids))
        except KeyError:
            for sid in ids:
                self._slot(sid)
            raise

    def _idle(self, sid) -> int:
        """Wait until no step runs ``sid``; its slot (the lock held)."""
        self._cond.wait_for(lambda: sid not in self._busy)
        return self._slot(sid)

    def close(self, sid) -> None:
        """Free the stream's slot; its id is not used again."""
        sid = self._id(sid)
        with self._cond:
            self._free.append(self._idle(sid))
            del self._slots[sid]

    def reset(self, sid) -> None:
        """Zero the stream's states."""
        sid = self._id(sid)
        with self._cond:
            slot = self._idle(sid)
            for arrays in self._states.values():
                for a in arrays:
                    a[slot] = 0

    def get_state(self, sid) -> dict:
        """The stream's states (copies): ``{"model": name, "states": {key: [arrays]}}``."""
        sid = self._id(sid)
        with self._cond:
            slot = self._idle(sid)
            states = {k: [a[slot].copy() for a in arrays] for k, arrays in self._states.items()}
        return {"model": self._model_name, "states": states}

    def set_state(self, sid, state) -> None:
        """Set the stream's states from :meth:`get_state`'s form (checked first)."""
        sid = self._id(sid)
        checked = self._checked_state(state)
        with self._cond:
            slot = self._idle(sid)
            for key, arrays in self._states.items():
                for a, s in zip(arrays, checked[key]):
                    a[slot] = s

    def _checked_state(self, state) -> dict:
        states = state.get("states") if isinstance(state, dict) else None
        if not isinstance(states, dict):
            raise TypeError(
                "stream_pool.set_state: state must be a dict {'model': name, 'states': {layer "
                f"key: [arrays]}}}} as get_state returns, got {type(state).__name__}"
            )
        spec = self._plan.state_spec
        if set(states) != set(spec):
            raise ValueError(
                f"stream_pool.set_state: the state is for layers (position:kind) "
                f"{list(states)}, this pool's model {self._model_name!r} has {list(spec)}: "
                f"{_difference(list(states), list(spec))} (a state of another model?)"
            )
        out = {}
        for key, names in spec.items():
            given = states[key]
            if not isinstance(given, (list, tuple)) or len(given) != len(names):
                raise ValueError(
                    f"stream_pool.set_state: the layer at {key!r} has {len(names)} state(s) "
                    f"{[n for n, _ in names]}, got {given!r:.80}"
                )
            out[key] = []
            for (name, shape), s in zip(names, given):
                what = f"stream_pool.set_state: state {name!r} of the layer at {key!r}"
                a = as_float_array(s, self._plan.state_dtypes[key], what)
                if a.shape != shape:
                    raise ValueError(f"{what}: expected shape {shape}, got {a.shape}")
                out[key].append(a)
        return out

    # ---- stepping -------------------------------------------------------------------------

    def _checked_input(self, sid, x):
        """``(x as (T, *step_shape) in the input dtype, whether it was one step)``."""
        plan = self._plan
        step = plan.step_shape
        what = f"stream_pool.step: input of stream {sid}"
        if plan.input_dtype.kind in "biu":
            a = np.asarray(x)
            if a.dtype.kind not in "biu":
                raise TypeError(f"{what}: expected integer ids, got dtype {a.dtype}")
        else:
            a = as_float_array(x, plan.input_dtype, what)
        if a.shape == step:
            return a[None], True
        if a.ndim == len(step) + 1 and a.shape[1:] == step and a.shape[0] >= 1:
            return a, False
        raise ValueError(
            f"{what}: expected shape {step} (one step) or (timesteps,) + {step} (a chunk), "
            f"got {a.shape}"
        )

    def _requests(self, streams, x):
        """``(ids, groups, single)``: the ids in call order; ``groups`` a list of ``(ids,
        inputs (n, T, *step_shape))``, one per chunk length; ``single`` the ids given one
        timestep (their outputs lose the time axis)."""
        if x is None:
            if not isinstance(streams, dict):
                raise TypeError(
                    "stream_pool.step: give {id: x, ...}, or a list of ids and a stacked array"
                )
            items = list(streams.items())
            whole = self._same_arrays(streams)
            if whole is not None:
                return whole
        else:
            streams = list(streams)
            try:
                ids = list(map(operator.index, streams))
            except TypeError:
                ids = [self._id(s) for s in streams]  # the error names the id
            xs = np.asarray(x) if not isinstance(x, np.ndarray) else x
            if xs.ndim == 0 or xs.shape[0] != len(ids):
                raise ValueError(
                    f"stream_pool.step: {len(ids)} ids need an array of {len(ids)} rows, got "
                    f"shape {xs.shape}"
                )
            whole = self._checked_stack(ids, xs)
            if whole is not None:
                return whole
            items = list(zip(ids, xs))
        requests = {}
        for sid, xi in items:
            sid = self._id(sid)
            if sid in requests:
                raise ValueError(f"stream_pool.step: stream {sid} is given twice")
            requests[sid] = self._checked_input(sid, xi)
        by_length: dict[int, list] = {}  # chunk length -> ids, one batched call each
        for sid, (a, _) in requests.items():
            by_length.setdefault(a.shape[0], []).append(sid)
        groups = [(ids, np.stack([requests[s][0] for s in ids])) for ids in by_length.values()]
        return list(requests), groups, {sid for sid, (_, one) in requests.items() if one}

    def _same_arrays(self, streams: dict):
        """The dict form as one stacked array when every value is a NumPy array of one
        dtype and shape (the common case, checked once as in :meth:`_checked_stack`);
        else None (the per-row checks)."""
        values = list(streams.values())
        # (checked by C-level maps, not a Python loop over the streams)
        if not values or set(map(type, values)) != {np.ndarray}:
            return None
        if len(set(map(_dtype_and_shape, values))) != 1:
            return None
        try:
            ids = list(map(operator.index, streams))
        except TypeError:
            return None
        return self._checked_stack(ids, np.array(values))  # np.stack's values, in one C call

    def _checked_stack(self, ids, xs):
        """The stacked form checked as a whole, without splitting it into rows (the common
        case); None when it needs the per-row checks, whose errors name the stream at fault.
        The rows are those the per-row checks would stack: the same values, the same bits."""
        if not ids or len(set(ids)) != len(ids):
            return None
        plan = self._plan
        if plan.input_dtype.kind in "biu":
            if xs.dtype.kind not in "biu":
                return None
            a = xs
        else:
            try:
                a = as_float_array(xs, plan.input_dtype, "stream_pool.step")
            except TypeError:
                return None
        step = plan.step_shape
        if a.shape[1:] == step:
            return ids, [(ids, a[:, None])], set(ids)
        if a.ndim == len(step) + 2 and a.shape[2:] == step and a.shape[1] >= 1:
            return ids, [(ids, a)], set()
        return None

    def step(self, streams, x=None) -> dict:
        """Run the given streams' next step or chunk: ``step({id: x, ...})`` or
        ``step(ids, stacked)``; returns ``{id: output}`` (see the module's help)."""
        plan = self._current_plan()
        ids, groups, single = self._requests(streams, x)
        if not ids:
            return {}
        with self._cond:
            # (an id that is not open is never busy: the slots below name it at once)
            self._cond.wait_for(lambda: self._busy.isdisjoint(ids))
            slots = self._open_slots(ids)
            self._busy.update(ids)
        # The streams' rows of the table are this step's alone until it frees them (reset,
        # set_state, close and other steps wait for that), so they are read and written
        # outside the lock.
        try:
            if len(groups) == 1:
                rows = [np.array(slots, np.int64)]
            else:
                slot = dict(zip(ids, slots)).__getitem__
                rows = [np.fromiter(map(slot, g), np.int64, len(g)) for g, _ in groups]
            outputs = self._run(plan, [xs for _, xs in groups], rows)
        finally:
            with self._cond:
                self._busy.difference_update(ids)
                self._cond.notify_all()
        results = {}
        for (g, _), y in zip(groups, outputs):
            if not (plan.output_has_time and single):
                results.update(zip(g, y))
            elif single.issuperset(g):
                results.update(zip(g, y[:, 0]))
            else:
                for k, sid in enumerate(g):
                    results[sid] = y[k, 0] if sid in single else y[k]
        return results if len(groups) == 1 else {sid: results[sid] for sid in ids}

    def _run(self, plan, inputs, rows) -> list:
        """The outputs of each group of equal-length ``inputs`` (``rows``: its streams'
        slots), the final states left in those rows of the table.

        A native plan with one group (chunks of one length): one core call
        (StreamPlan.run_slots), which writes the states back only after every op ran. Else op
        by op (StreamPlan.run_steps) on the gathered states, scattered back only once every
        group has run: either way an error leaves every stream's states as they were (a
        second native call could fail after the first had advanced its streams)."""
        if plan.native is not None and len(inputs) == 1:
            native = [plan.native_input(xs) for xs in inputs]
            if all(x is not None for x in native):
                return [plan.run_slots(x, r, self._table) for x, r in zip(native, rows)]
        outputs, finals = [], []
        for xs, r in zip(inputs, rows):
            states = {k: [a.take(r, axis=0) for a in arrays] for k, arrays in self._states.items()}
            y, f = plan.run_steps(xs, states)
            outputs.append(y)
            finals.append(f)
        for r, f in zip(rows, finals):
            for key, arrays in self._states.items():
                for a, s in zip(arrays, f[key]):
                    a[r] = s
        return outputs


_dtype_and_shape = operator.attrgetter("dtype", "shape")


def _difference(given: list, want: list) -> str:
    """The first position whose kind differs, or the positions only one side has."""
    kinds = [dict(str(k).partition(":")[::2] for k in keys) for keys in (given, want)]
    for pos in sorted(kinds[0].keys() & kinds[1].keys(), key=str):
        if kinds[0][pos] != kinds[1][pos]:
            return f"position {pos} is {kinds[0][pos]} in the state, {kinds[1][pos]} in the model"
    extra = [k for k in given if k not in want]
    if extra:
        return f"the model has no layer with states at {extra}"
    return f"the state has none for {[k for k in want if k not in given]}"
