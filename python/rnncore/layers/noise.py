"""Training-time noise: SpatialDropout1D and GaussianNoise (Keras's layers of those names).

Both are the identity at inference and pass a mask through. In training (``model.fit``, or a
direct call with ``training=True``) the noise comes from the layer's own generator when it
has a ``seed``, else from the one ``fit`` draws from (as :class:`~rnncore.layers.Dropout`).
"""

from __future__ import annotations

from ._base import Layer
from ._windows import check_3d
from .core import Dropout

__all__ = ["SpatialDropout1D", "GaussianNoise"]


class SpatialDropout1D(Dropout):
    """Dropout of whole channels: one keep/drop draw per ``(sample, channel)``, shared by
    every step of a ``(batch, steps, channels)`` input (Dropout with ``noise_shape=(batch,
    1, channels)``); kept channels are scaled by ``1 / (1 - rate)``."""

    def __init__(self, rate, seed=None, name=None, dtype=None):
        super().__init__(rate, noise_shape=(None, 1, None), seed=seed, name=name, dtype=dtype)

    def call_train(self, x, mask, rng):
        check_3d(self, x)
        return super().call_train(x, mask, rng)

    def get_config(self):  # Keras's: these four only
        return {"rate": self.rate, "seed": self.seed, "name": self.name, "dtype": self.dtype}


class GaussianNoise(Layer):
    """Adds ``N(0, stddev^2)`` noise in training: ``y = x + stddev * eps``; ``dx = dy``."""

    _config = ("stddev", "seed")
    _chain_kind = "identity"  # at inference

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= stddev <= 1:
            raise ValueError(f"GaussianNoise: stddev must be in [0, 1], got {stddev!r}")
        self.stddev = float(stddev)
        self.seed = seed

    def call(self, inputs, mask=None, training=None):
        # the identity at inference; a direct training call draws from the layer's seed
        return self.call_train(inputs, mask, None) if training else inputs

    def call_train(self, x, mask, rng):
        self._train_cache = ()
        if self.stddev <= 0:
            return x
        noise = self._noise_rng(rng).normal(0.0, self.stddev, x.shape)
        return (x + noise).astype(x.dtype, copy=False)

    def backward(self, dy):
        self._cached()
        self._grads = []
        return dy
