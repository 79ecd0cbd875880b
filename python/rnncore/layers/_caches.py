"""The generation-keyed caches over layers (rnncore.layers._variable's generations).

:class:`GenerationCache` is the one check-generation / lock / rebuild mechanism;
:class:`StreamCache` keeps a recurrent layer's core stream with it (the layer's own stream
and the one a stream pool or ragged predict runs), and a pool's plan keeps its core chain
with it (rnncore.models.stream_plan).
"""

from __future__ import annotations

import threading

__all__ = ["GenerationCache", "StreamCache"]


class GenerationCache:
    """A value built over layers (a core stream, a chain), kept with the generation it was
    built at: the one check-generation / lock / rebuild mechanism of the caches.

    ``get(generation, build, *args)``: the caller reads the layers' current generation
    *before* anything is built; when it is the one the value was built at, the value is
    returned at once (one integer compared, no lock). Else, under the cache's lock,
    ``build(previous value or None, *args)`` makes the new value (or updates the previous
    one in place, e.g. a stream told to repack), published with the generation only once
    built, so a concurrent call gets the old value or the new one. A value built while a
    newer change was made is kept under the older number, so the next call builds again;
    one already built at a newer generation than the caller read is returned as it is
    (numbers only grow: it holds at least the caller's changes)."""

    __slots__ = ("_held", "_lock")

    def __init__(self):
        self._held = (-1, None)  # (generation, value): published together
        self._lock = threading.Lock()

    def get(self, generation: int, build, *args):
        held = self._held
        if held[0] == generation:
            return held[1]
        with self._lock:
            held = self._held
            if held[0] < generation:
                held = self._held = (generation, build(held[1], *args))
            return held[1]


class StreamCache:
    """One core stream over a recurrent layer's weights, kept with the layer's generation it
    packs (a :class:`GenerationCache`): the one mechanism behind the layer's own stream and
    the stream a pool or ragged predict runs (:meth:`RNN._free_stream`).

    :meth:`get` returns the cached stream while the layer's generation is the one it packs;
    after a change, a new stream when the layer has new arrays or options (a new spec
    generation: build, an option, quantize), else the same stream told to repack (new
    values in the same arrays: assign, set_weights, an optimizer). A carrying stream (a
    stateful layer's) hands its states to the new one."""

    __slots__ = ("stream", "_spec", "_cache")

    def __init__(self):
        self.stream = None  # the current stream (None until first used)
        self._spec = -1  # the spec generation it was built at
        self._cache = GenerationCache()

    def get(self, layer, batch_size):
        """The stream over ``layer``'s current weights and options, carrying ``batch_size``
        rows of states (None: carrying nothing)."""
        if layer._quant is not None:  # quantized again first if the weights changed
            layer.quantized_weights()
        return self._cache.get(layer._generation, self._build, layer, batch_size)

    def _build(self, stream, layer, batch_size):
        spec = layer._spec_generation
        if stream is not None and spec == self._spec:
            stream.repack()  # new values in the same arrays
            return stream
        new = layer._new_stream(batch_size)
        if stream is not None and None not in (stream.batch_size, new.batch_size):
            new.set_states(stream.get_states())  # an option changed: states go on
        self.stream, self._spec = new, spec
        return new
