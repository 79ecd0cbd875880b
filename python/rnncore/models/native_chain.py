"""Runs of a Sequential's layers as one core call (issue 16: a native plan for the model).

At inference, consecutive layers the core runs natively — ``Masking``, ``SimpleRNN`` /
``LSTM`` / ``GRU`` (through their streams: weights packed once, a stateful layer's states
carried in the core), ``Dense`` and ``TimeDistributed(Dense)``, and the layers that are the
identity at inference (``Dropout``, ``SpatialDropout1D``, ``GaussianNoise``), and
``Bidirectional`` over those recurrent layers and an ``Embedding`` that starts a run — form a
:class:`Segment` that runs as one call of a core chain (``_core.make_chain``): one GIL
release and no Python between the layers; the chain is kept while the layers' generation
(rnncore.layers._variable) stays the same, and built again after any change (weights,
options, quantize). A stateful model fed one timestep at a time therefore steps all its
layers in one native call per timestep.

The chain runs the same kernels on buffers allocated the same way as the layers' own calls,
so its results are the layer-by-layer results bit for bit (``tests/test_native_chain.py``).
Each layer declares whether and how the chain runs it (``Layer._chain_kind``,
``_chainable``, ``_chain_op``); a subclass that overrides ``call`` is not chained (its own
call runs). Whatever it does not cover runs as before: other layers, training calls,
recurrent layers with ``return_state``, and inputs the chain would refuse (another rank,
width, dtype, stateful batch size, token ids out of range: checked here first, so the
layers' own checks raise with their messages). Any error the chain raises on an input it
was checked to accept is a real error and is raised, never hidden by a fallback.
"""

from __future__ import annotations

import operator
import threading

import numpy as np

from .. import _core

__all__ = ["Segment", "plan"]

_generation = operator.attrgetter("generation")


class Segment:
    """Consecutive layers run as one core call; called like a layer (``_call``).

    It keeps the core's chain over the layers' current streams and weight arrays with the
    layers' generation when it was built, and builds it again (under its lock, publishing
    the new chain with its generation only once built) when that generation moved on.
    Calls from several threads may run at once."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.name = self.layers[-1].name  # named in errors like the last layer it runs
        self._dtype = self.layers[0]._np_dtype
        kinds = [layer._chain_kind for layer in self.layers]
        self._ids = kinds[0] == "embedding"
        # a 2-D input (batch, features) only through Dense layers (the other ops need time)
        self._flat_ok = all(k in ("dense", "identity") for k in kinds)
        self._cached = (-1, None, None)  # (generation, chain, what the chain accepts)
        self._lock = threading.Lock()

    def _call(self, x, mask, training):
        if not training and self._takes(x, mask):
            chain, accepts = self._chain(x)
            if self._fits(accepts, x):
                return chain.run(x, mask)  # an error here is a real one: raised as it is
        for layer in self.layers:  # layer by layer: the layers' own checks and messages
            x, mask = layer._call(x, mask, training)
        return x, mask

    def _chain(self, x):
        generation = max(map(_generation, self.layers))
        cached = self._cached
        if cached[0] == generation:
            return cached[1], cached[2]
        with self._lock:
            generation = max(map(_generation, self.layers))  # before anything is packed
            cached = self._cached
            if cached[0] != generation:
                ops = [op for op in (layer._chain_op(x.shape[0]) for layer in self.layers) if op]
                chain = _core.make_chain(ops, self._dtype == np.float64)
                cached = self._cached = (generation, chain, self._accepted())
            return cached[1], cached[2]

    def _accepted(self):
        """``(input width or None, fixed batch or None, vocabulary or None)``: what the
        chain's checks accept, read off the layers it was built over."""
        first = self.layers[0]
        if self._ids:
            return None, self._fixed_batch(), first.input_dim
        widths = [layer._build_input_shape for layer in self.layers if layer.built]
        width = widths[0][-1] if widths and widths[0] else None
        return width, self._fixed_batch(), None

    def _fixed_batch(self):
        """The batch size a stateful recurrent layer of the segment is fixed to, or None."""
        for layer in self.layers:
            for sub in [layer] + layer.inner_layers():
                if sub._chain_kind == "recurrent" and sub.stateful:
                    return sub._batch_size
        return None

    # What the chain checks before it computes anything, checked here first (explicitly,
    # so that an input it refuses runs layer by layer and fails there with the layer's
    # message, and any error the chain still raises is a real one).

    def _takes(self, x, mask) -> bool:
        """The input's type, layout, rank, dtype and mask."""
        if type(x) is not np.ndarray or not x.flags.c_contiguous:
            return False
        if mask is not None and (type(mask) is not np.ndarray or mask.dtype != np.bool_
                                 or x.ndim != 3 or mask.shape != x.shape[:2]):  # fmt: skip
            return False
        if self._ids:  # integer ids (B, T); the Embedding drops a mask
            return x.dtype in (np.int32, np.int64) and x.ndim == 2 and x.size > 0
        return x.dtype == self._dtype and (x.ndim == 3 or x.ndim == 2 and self._flat_ok)

    @staticmethod
    def _fits(accepts, x) -> bool:
        """The input's width, stateful batch size and token ids, against the layers."""
        width, batch, vocab = accepts
        if batch is not None and x.shape[0] != batch:
            return False
        if vocab is not None:
            return bool(x.min() >= 0 and x.max() < vocab)
        return width is None or x.shape[-1] == width


def plan(layers) -> list:
    """``layers`` with every run of two or more layers the chain can run (one of them not
    an identity, all of one dtype) replaced by one :class:`Segment`."""
    out, run = [], []

    def flush():
        if len(run) >= 2 and any(layer._chain_kind != "identity" for layer in run):
            out.append(Segment(run))
        else:
            out.extend(run)
        run.clear()

    for layer in layers:
        if layer._chain_kind == "embedding":
            flush()  # an Embedding starts a chain: its input is the chain's ids
        if not layer._chainable() or layer._np_dtype not in (np.float32, np.float64):
            flush()
            out.append(layer)
            continue
        if run and layer._np_dtype != run[0]._np_dtype:
            flush()
        run.append(layer)
    flush()
    return out
