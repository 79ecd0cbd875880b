"""The cache of a recurrent layer's core stream (:class:`StreamCache`), over the one
generation-keyed cache mechanism (:class:`~rnncore.layers._variable.GenerationCache`)."""

from __future__ import annotations

from ._variable import GenerationCache

__all__ = ["StreamCache"]


class StreamCache:
    """One core stream over a recurrent layer's weights, kept with the layer's generation
    it packs (a :class:`~rnncore.layers._variable.GenerationCache`): the one mechanism
    behind the layer's own stream and the stream a pool or ragged predict runs
    (:meth:`RNN._free_stream`).

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
