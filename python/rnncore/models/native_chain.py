"""Runs of layers as one core call (issue 16): the fused ops of a model's plan.

At inference, consecutive layers the core runs natively — ``Masking``, ``SimpleRNN`` /
``LSTM`` / ``GRU`` (through their streams: weights packed once, a stateful layer's states
carried in the core), ``Dense`` and ``TimeDistributed(Dense)``, and the layers that are the
identity at inference (``Dropout``, ``SpatialDropout1D``, ``GaussianNoise``), and
``Bidirectional`` over those recurrent layers, ``LayerNormalization`` over the last axis and
an ``Embedding`` that starts a run — form a :class:`Segment` that runs as one call of a core
chain (``_core.make_chain``): one GIL release and no Python between the layers.
:mod:`rnncore.models.plan` decides which calls of a model (a Sequential's layers, a
functional model's graph) form a run, and builds its plan, hence its Segments, again
whenever a layer's generation moves on (weights, options, quantize); a Segment therefore
never checks generations itself. A stateful model fed one timestep at a time steps all its
layers in one native call per timestep.

The chain runs the same kernels on buffers allocated the same way as the layers' own calls,
so its results are the layer-by-layer results bit for bit (``tests/test_native_chain.py``,
``tests/test_plan.py``). Each layer declares whether and how the chain runs it
(``Layer._chain_kind``, ``_chainable``, ``_chain_op``); a subclass that overrides ``call`` is
not chained (its own call runs). Whatever it does not cover runs as before: other layers,
training calls, recurrent layers with ``return_state``, and inputs the chain would refuse
(another rank, width, dtype, stateful batch size, token ids out of range: checked here first,
so the layers' own checks raise with their messages). Any error the chain raises on an input
it was checked to accept is a real error and is raised, never hidden by a fallback.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import _core
from ..layers._windows import output_length

#: the chain's ops over windows of the time axis (Conv1D, pooling): they change its length
_WINDOW_KINDS = ("conv1d", "pool1d")

__all__ = ["Segment", "runs"]


class Segment:
    """Consecutive layers run as one core call: an op of a model's plan, reading its input
    and mask from value slot ``src`` and writing its output and mask to slot ``dst``.

    The core chain is built on the first call (a stateful layer's stream needs the batch
    size), under a lock, and published only once built; calls from several threads may run
    at once. What the chain accepts is read off the layers then, so each call checks its
    input against plain attributes."""

    __slots__ = ("layers", "name", "src", "dst", "_dtype", "_ids", "_flat_ok", "_width",
                 "_vocab", "_ndim", "_windows", "_batch", "_chain", "_lock")  # fmt: skip

    def __init__(self, layers, src=0, dst=1):
        self.layers = list(layers)
        self.name = self.layers[-1].name  # named in errors like the last layer it runs
        self.src, self.dst = src, dst
        first = self.layers[0]
        self._dtype = first._np_dtype
        kinds = [layer._chain_kind for layer in self.layers]
        self._ids = kinds[0] == "embedding"
        # a 2-D input (batch, features) only through Dense and LayerNormalization (the other
        # ops need time)
        self._flat_ok = all(k in ("dense", "identity", "layer_norm") for k in kinds)
        # what the chain accepts, read off the layers (the plan is compiled again when one
        # is built again or changes an option): the vocabulary of ids, else the input width
        self._vocab = first.input_dim if self._ids else None
        widths = [layer._build_input_shape for layer in self.layers if layer.built]
        self._width = widths[0][-1] if widths and widths[0] and not self._ids else None
        # a LayerNormalization on a non-negative axis (the last of the rank it was built for)
        # normalises another axis at another rank: the chain takes only the built rank
        fixed = any(
            k == "layer_norm" and layer.axis[0] >= 0 for k, layer in zip(kinds, self.layers)
        )
        self._ndim = len(widths[0]) if fixed and widths and widths[0] else None
        # Conv1D and pooling shorten the time axis: an input too short for one of them runs
        # layer by layer, where the layer refuses it with its own message
        self._windows = [layer for k, layer in zip(kinds, self.layers) if k in _WINDOW_KINDS]
        # a stateful layer's batch size: known once the chain is built (the layer's first
        # call may fix it, and refuses another itself)
        self._batch = None
        self._chain = None
        self._lock = threading.Lock()

    def __call__(self, values, masks, training):
        x, mask = values[self.src], masks[self.src]
        if not training and self._accepts(x, mask):
            chain = self._chain or self._build(x.shape[0])
            y, mask = chain.run(x, mask)  # an error here is a real one: raised as it is
        else:  # layer by layer: the layers' own checks and messages
            y = x
            for layer in self.layers:
                y, mask = layer._call(y, mask, training)
        values[self.dst], masks[self.dst] = y, mask

    def _build(self, batch):
        with self._lock:
            if self._chain is None:
                ops = [op for op in (layer._chain_op(batch) for layer in self.layers) if op]
                chain = _core.make_chain(ops, self._dtype == np.float64)
                self._batch = self._fixed_batch()
                self._chain = chain  # published last: a concurrent call reads it whole
            return self._chain

    def _fixed_batch(self):
        """The batch size a stateful recurrent layer of the segment is fixed to, or None."""
        for layer in self.layers:
            for sub in [layer] + layer.inner_layers():
                if sub._chain_kind == "recurrent" and sub.stateful:
                    return sub._batch_size
        return None

    def _accepts(self, x, mask) -> bool:
        """Whether the chain takes ``x`` and ``mask``: what it checks before it computes
        anything (type, layout, rank, dtype, mask, width, stateful batch size, token ids),
        checked here first, so that an input it refuses runs layer by layer and fails there
        with the layer's message, and any error the chain still raises is a real one."""
        if type(x) is not np.ndarray or not x.flags.c_contiguous:
            return False
        if mask is not None and (type(mask) is not np.ndarray or mask.dtype != np.bool_
                                 or x.ndim != 3 or mask.shape != x.shape[:2]):  # fmt: skip
            return False
        if self._batch is not None and x.shape[0] != self._batch:
            return False
        if self._ids:  # integer ids (B, T) in the vocabulary; the Embedding drops a mask
            return (x.dtype in (np.int32, np.int64) and x.ndim == 2 and x.size > 0
                    and bool(x.min() >= 0 and x.max() < self._vocab))  # fmt: skip
        if x.dtype != self._dtype or not (x.ndim == 3 or x.ndim == 2 and self._flat_ok):
            return False
        if self._ndim is not None and x.ndim != self._ndim:
            return False
        steps = x.shape[1] if x.ndim == 3 else None
        for layer in self._windows:
            size, stride, dilation = layer._geometry()
            steps = output_length(steps, size, stride, layer.padding, dilation)
            if steps is None or steps <= 0:
                return False
        return self._width is None or x.shape[-1] == self._width


def runs(layers) -> list:
    """``layers`` split into runs: a list of lists, each either two or more consecutive
    layers the chain can run (one of them not an identity, all of one float dtype, no layer
    twice) or a single layer run by its own call."""
    out, run = [], []

    def flush():
        if len(run) >= 2 and any(layer._chain_kind != "identity" for layer in run):
            out.append(list(run))
        else:
            out.extend([layer] for layer in run)
        run.clear()

    for layer in layers:
        if layer._chain_kind == "embedding" or any(layer is other for other in run):
            flush()  # an Embedding starts a chain: its input is the chain's ids
        if not layer._chainable() or layer._np_dtype not in (np.float32, np.float64):
            flush()
            out.append([layer])
            continue
        if run and layer._np_dtype != run[0]._np_dtype:
            flush()
        run.append(layer)
    flush()
    return out
