"""What the layers called on a LIST of arrays share (merges, ``Dot``, attention), and
:class:`ForwardCache`, for the new layers whose inference and training forward are one.

For them, as in Keras, ``inputs`` is a list of arrays, ``mask`` None or a list with one
entry per input (each None or a bool array), ``build`` and ``compute_output_shape`` take a
list of shapes, and ``backward(dy)`` returns a list of input gradients, one per input.
"""

from __future__ import annotations

import numpy as np

from ._base import Layer, as_float_array, shape_tuple

__all__ = ["MultiInputLayer", "ForwardCache"]


class ForwardCache:
    """Mixin (before the layer's base) for a layer whose call and training forward are one
    ``_forward(inputs) -> (outputs, what backward needs)``."""

    def call(self, inputs, mask=None, training=None):
        return self._forward(inputs)[0]

    def call_train(self, x, mask, rng):
        y, self._train_cache = self._forward(x)
        return y


class MultiInputLayer(Layer):
    """Base of the layers whose input is a list of arrays (``_multi_input = True``)."""

    _abstract = True  # a base class: not in LAYER_CLASSES

    _multi_input = True
    #: how many inputs the layer takes, (fewest, most); most None for any number
    _n_inputs: tuple = (1, None)
    #: how many mask entries it takes; None: one per input
    _n_masks: tuple | None = None

    def _owner(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    def _count(self, n: int, what: str, bounds) -> None:
        lo, hi = bounds
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
            raise ValueError(f"{self._owner()}: expects a list of {want} {what}, got {n}")

    def _convert(self, inputs) -> list[np.ndarray]:
        """Each input as an array of the layer's dtype."""
        if not isinstance(inputs, (list, tuple)):
            shape = getattr(inputs, "shape", None)
            raise ValueError(
                f"{self._owner()}: expects a list of inputs, got a single "
                f"{type(inputs).__name__}" + (f" of shape {shape}" if shape is not None else "")
            )
        self._count(len(inputs), "inputs", self._n_inputs)
        return [
            as_float_array(a, self._np_dtype, f"{self._owner()}: inputs[{i}]")
            for i, a in enumerate(inputs)
        ]

    def _masks(self, mask, xs: list) -> list | None:
        """``mask`` as a list of None or bool arrays, each of its input's shape less the last
        axis (Keras's ``(batch, timesteps)`` for a ``(batch, timesteps, features)`` input);
        None when no input has a mask."""
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)):
            raise ValueError(
                f"{self._owner()}: mask must be a list with one entry (None or a bool array) "
                f"per input, got {type(mask).__name__}"
            )
        self._count(len(mask), "masks", self._n_masks or (len(xs), len(xs)))
        out = []
        for i, m in enumerate(mask):
            if m is not None:
                m = np.asarray(m)
                if m.dtype != np.bool_:
                    m = m != 0
                if i < len(xs) and m.shape != xs[i].shape[:-1]:
                    raise ValueError(
                        f"{self._owner()}: mask[{i}] must have shape {xs[i].shape[:-1]} "
                        f"(inputs[{i}].shape {xs[i].shape} less the last axis), got {m.shape}"
                    )
            out.append(m)
        return out if any(m is not None for m in out) else None

    def _shapes(self, input_shape) -> list[tuple]:
        """A list of shapes (``build``, ``compute_output_shape``) as a list of tuples."""
        if not isinstance(input_shape, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in input_shape
        ):
            raise ValueError(
                f"{self._owner()}: expects a list of input shapes, got {input_shape!r}"
            )
        self._count(len(input_shape), "input shapes", self._n_inputs)
        return [shape_tuple(s, f"{self._owner()}: input shape") for s in input_shape]

    def build(self, input_shape) -> None:
        self._build_input_shape = self._shapes(input_shape)
        self.built = True

    def _build_from_weights(self, weights) -> None:
        if weights:  # a layer without weights (the merges) takes an empty list unbuilt
            super()._build_from_weights(weights)

    def _prepare(self, inputs, mask) -> tuple[list, list | None]:
        xs = self._convert(inputs)
        mask = self._masks(mask, xs)
        if not self.built:
            self.build([x.shape for x in xs])
        return xs, mask

    def _call(self, inputs, mask, training, *args, **kwargs):
        if mask is None and isinstance(inputs, (list, tuple)):  # the arrays' own masks
            mask = [getattr(a, "_keras_mask", None) for a in inputs]
        xs, mask = self._prepare(inputs, mask)
        outputs = self.call(xs, *args, mask=mask, training=training, **kwargs)
        return outputs, self.compute_mask(xs, mask)

    def forward_train(self, inputs, mask=None, rng=None, **kwargs):
        """``(output, output_mask)`` of a training call; ``kwargs`` are the layer's call
        arguments (e.g. Attention's ``use_causal_mask``)."""
        xs, mask = self._prepare(inputs, mask)
        y = self.call_train(xs, mask, rng, **kwargs)
        return y, self.compute_mask(xs, mask)

    def compute_output_shape(self, input_shape):
        return self._shapes(input_shape)[0]
