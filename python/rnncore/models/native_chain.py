"""Runs of a Sequential's layers as one core call (issue 16: a native plan for the model).

At inference, consecutive layers the core runs natively — ``Masking``, ``SimpleRNN`` /
``LSTM`` / ``GRU`` (through their streams: weights packed once, a stateful layer's states
carried in the core), ``Dense`` and ``TimeDistributed(Dense)``, and the layers that are the
identity at inference (``Dropout``, ``SpatialDropout1D``, ``GaussianNoise``), and
``Bidirectional`` over those recurrent layers and an ``Embedding`` that starts a run — form a
:class:`Segment` that runs as one call of a core chain (``_core.make_chain``): one GIL
release and no Python between the layers; the chain is kept until a stream or weight array
of its layers changes. A stateful model fed one timestep at a time therefore steps all its
layers in one native call per timestep.

The chain runs the same kernels on buffers allocated the same way as the layers' own calls,
so its results are the layer-by-layer results bit for bit (``tests/test_native_chain.py``).
Whatever it does not cover runs as before: other layers, training calls, recurrent layers
with ``return_state``, and inputs that are not already a C-contiguous array of the layers'
dtype (the layers' own conversion and checks then apply, with their messages).
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ..layers import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    GaussianNoise,
    InputLayer,
    Masking,
    SimpleRNN,
    SpatialDropout1D,
    TimeDistributed,
)

__all__ = ["Segment", "plan"]

_RECURRENT = (SimpleRNN, LSTM, GRU)
#: the identity at inference: skipped by the chain (their masks pass through unchanged)
_IDENTITY = (Dropout, SpatialDropout1D, GaussianNoise, InputLayer)


def _native(layer) -> bool:
    """Whether the chain can run ``layer`` at inference (its current options)."""
    kind = type(layer)
    if kind in _RECURRENT:
        return layer.built and not layer.return_state
    if kind is Bidirectional:
        return (layer.built and not layer.return_state and layer.merge_mode is not None
                and all(type(sub) in _RECURRENT for sub in _directions(layer)))  # fmt: skip
    if kind is Embedding:  # the first op of a chain only (plan starts a segment with it)
        return layer.built
    # a quantized Dense runs its own low-precision product (layers/core.py), not the chain's
    if kind is Dense:
        return layer.built and layer.quantization_mode is None
    if kind is TimeDistributed:
        inner = layer.layer
        return type(inner) is Dense and inner.built and inner.quantization_mode is None
    if kind is Masking:
        return isinstance(layer.mask_value, (int, float)) and not isinstance(layer.mask_value, bool)
    return kind in _IDENTITY


def _directions(bi):
    return bi.forward_layer, bi.backward_layer


def _op(layer, batch):
    """The chain's op for ``layer`` with its current stream and weights (None: identity)."""
    kind = type(layer)
    if kind in _RECURRENT:
        stream = layer._stream_for(batch)  # builds or repacks it as the layer's call would
        return ("recurrent", stream, layer.return_sequences, layer.zero_output_for_mask)
    if kind is Bidirectional:
        fwd, bwd = _directions(layer)
        return ("bidirectional", fwd._stream_for(batch), bwd._stream_for(batch),
                layer.return_sequences, fwd.zero_output_for_mask, bwd.zero_output_for_mask,
                layer.merge_mode)  # fmt: skip
    if kind is Embedding:
        return ("embedding", layer.embeddings.value, bool(layer.mask_zero))
    if kind is Masking:
        return ("masking", float(layer.mask_value))
    dense = layer.layer if kind is TimeDistributed else layer
    if kind in (Dense, TimeDistributed):
        bias = None if dense.bias is None else dense.bias.value
        return ("dense", dense.kernel.value, bias, dense.activation)
    return None


def _key(layer):
    """What ``layer``'s op depends on (see Segment._chain)."""
    kind = type(layer)
    if kind in _RECURRENT:
        return (id(layer._stream), layer._respec, layer._weight_versions(),
                layer.return_sequences, layer.zero_output_for_mask)  # fmt: skip
    if kind is Bidirectional:
        return (tuple(_key(sub) for sub in _directions(layer)), layer.return_sequences,
                layer.merge_mode)  # fmt: skip
    if kind is Embedding:
        return (id(layer.embeddings.value), layer.mask_zero)
    if kind is Masking:
        return layer.mask_value
    if kind in (Dense, TimeDistributed):
        dense = layer.layer if kind is TimeDistributed else layer
        return (id(dense.kernel.value), None if dense.bias is None else id(dense.bias.value),
                dense.activation)  # fmt: skip
    return None


class Segment:
    """Consecutive layers run as one core call; called like a layer (``_call``).

    It keeps the core's chain over the layers' current streams and weight arrays, and
    builds it again when one of those (or an option) changes: the ops are gathered on every
    call (``_stream_for`` also repacks a stream whose weights were updated) and compared by
    identity. Calls from several threads may run at once."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.name = self.layers[-1].name  # named in errors like the last layer it runs
        self._cached = (None, None)  # (key, chain)

    def _call(self, x, mask, training):
        if not training and self._runs_natively(x, mask):
            try:
                return self._chain(x).run(x, mask)
            except (ValueError, TypeError):
                # The chain checks every shape before it computes anything: nothing ran, and
                # the layers' own calls raise with their own messages.
                pass
        for layer in self.layers:  # today's path, layer by layer
            x, mask = layer._call(x, mask, training)
        return x, mask

    def _chain(self, x):
        # What the chain depends on, read cheaply every call: each recurrent layer's stream
        # and weight versions (a changed version makes _stream_for repack it), each array's
        # identity, and the options. Equal to the last call's: the kept chain runs as is.
        key = (x.dtype, tuple(_key(layer) for layer in self.layers))
        cached_key, chain = self._cached
        if key != cached_key:
            ops = [op for op in (_op(layer, x.shape[0]) for layer in self.layers) if op]
            chain = _core.make_chain(ops, self.layers[0]._np_dtype == np.float64)
            # read again: _op may have built or repacked a stream (the chain keeps the ops
            # alive, so no id in the key is reused while it is cached)
            self._cached = ((x.dtype, tuple(_key(layer) for layer in self.layers)), chain)
        return chain

    def _runs_natively(self, x, mask) -> bool:
        if type(x) is not np.ndarray or not x.flags.c_contiguous or x.ndim not in (2, 3):
            return False
        if mask is not None and (type(mask) is not np.ndarray or mask.dtype != np.bool_
                                 or mask.shape != x.shape[:2] or x.ndim != 3):  # fmt: skip
            return False
        dtype = self.layers[0]._np_dtype
        if dtype not in (np.float32, np.float64):
            return False
        if type(self.layers[0]) is Embedding:  # integer ids (B, T); the layer drops a mask
            if x.dtype not in (np.int32, np.int64) or x.ndim != 2:
                return False
        elif x.dtype != dtype:
            return False
        return all(_native(layer) and layer._np_dtype == dtype for layer in self.layers)


def plan(layers) -> list:
    """``layers`` with every run of two or more natively supported layers (one of them not
    an identity) replaced by one :class:`Segment`."""
    out, run = [], []

    def flush():
        if len(run) >= 2 and any(type(layer) not in _IDENTITY for layer in run):
            out.append(Segment(run))
        else:
            out.extend(run)
        run.clear()

    for layer in layers:
        if type(layer) is Embedding:
            flush()  # an Embedding starts a chain: its input is the chain's ids
        if _native(layer):
            run.append(layer)
        else:
            flush()
            out.append(layer)
    flush()
    return out
