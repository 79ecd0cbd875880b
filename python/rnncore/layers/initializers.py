"""Weight initializers with Keras's names, defaults and formulas, drawn with NumPy.

``get(identifier)`` accepts what Keras accepts for ``kernel_initializer=`` and friends: a
name (``"glorot_uniform"``, ``"GlorotUniform"``, ``"orthogonal"``, ...), a config dict
``{"class_name": ..., "config": {...}}``, an :class:`Initializer`, or any callable
``f(shape, dtype=None)`` returning an array (e.g. a Keras initializer object).

Values follow Keras's distributions but not its random streams: the same seed gives the
same weights in rnncore, not the weights Keras would draw. Keras weights are carried over
with ``set_weights``. An initializer without its own ``seed`` draws from the layer's
generator (seeded by the layer's ``seed`` argument, else fresh entropy).
"""

from __future__ import annotations

import math

import numpy as np

from ._args import to_snake_case

__all__ = [
    "Initializer",
    "Zeros",
    "Ones",
    "Constant",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "GlorotUniform",
    "GlorotNormal",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "Orthogonal",
    "Identity",
    "get",
    "serialize",
]


def _fans(shape):
    """Keras's fan-in / fan-out: receptive field times the last two dims."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng, shape, mean, stddev):
    """Normal values redrawn until within two standard deviations (Keras's truncation)."""
    out = rng.normal(mean, stddev, size=shape)
    bad = np.abs(out - mean) > 2 * stddev
    while bad.any():
        out[bad] = rng.normal(mean, stddev, size=int(bad.sum()))
        bad = np.abs(out - mean) > 2 * stddev
    return out


class Initializer:
    """Base class: ``init(shape, dtype=None, rng=None) -> ndarray``.

    ``rng`` is a ``numpy.random.Generator``; when the initializer has its own ``seed`` it
    uses that instead, so a seeded initializer always gives the same values.
    """

    seed = None
    #: the constructor arguments, which are also the attributes ``get_config`` returns
    _config: tuple = ()

    def __call__(self, shape, dtype=None, rng=None):
        if self.seed is not None or rng is None:
            rng = np.random.default_rng(self.seed)
        shape = tuple(int(d) for d in shape)
        return np.asarray(self.sample(shape, rng), dtype=dtype or np.float32)

    def sample(self, shape, rng):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {name: getattr(self, name) for name in self._config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def sample(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    def sample(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    _config = ("value",)

    def __init__(self, value=0.0):
        self.value = value

    def sample(self, shape, rng):
        return np.broadcast_to(np.asarray(self.value, dtype=np.float64), shape).copy()


class RandomNormal(Initializer):
    _config = ("mean", "stddev", "seed")

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def sample(self, shape, rng):
        return rng.normal(self.mean, self.stddev, size=shape)


class TruncatedNormal(RandomNormal):
    """A normal distribution with the draws beyond two standard deviations drawn again."""

    def sample(self, shape, rng):
        return _truncated_normal(rng, shape, self.mean, self.stddev)


class RandomUniform(Initializer):
    _config = ("minval", "maxval", "seed")

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, size=shape)


class VarianceScaling(Initializer):
    """``scale / n`` variance, ``n`` the fan-in, fan-out or their average (Keras's)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0.0:
            raise ValueError(f"VarianceScaling: scale must be positive, got {scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: invalid mode {mode!r}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: invalid distribution {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    _config = ("scale", "mode", "distribution", "seed")

    def sample(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = self.scale / max(1.0, n[self.mode])
        if self.distribution == "truncated_normal":
            # 0.879...: the standard deviation of a unit normal truncated to (-2, 2)
            return _truncated_normal(rng, shape, 0.0, math.sqrt(scale) / 0.87962566103423978)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(scale), size=shape)
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, size=shape)


def _scaling(name, scale, mode, distribution):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    return type(
        name,
        (VarianceScaling,),
        {
            "__init__": __init__,
            "_config": ("seed",),
            "__doc__": f"VarianceScaling({scale}, {mode!r}, {distribution!r}).",
        },
    )


GlorotUniform = _scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeNormal = _scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
HeUniform = _scaling("HeUniform", 2.0, "fan_in", "uniform")
LecunNormal = _scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")
LecunUniform = _scaling("LecunUniform", 1.0, "fan_in", "uniform")


class Orthogonal(Initializer):
    """An orthogonal matrix (QR of a normal matrix, signs fixed), times ``gain`` (Keras's)."""

    _config = ("gain", "seed")

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def sample(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of rank >= 2, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = rng.normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)


class Identity(Initializer):
    _config = ("gain",)

    def __init__(self, gain=1.0):
        self.gain = gain

    def sample(self, shape, rng):
        if len(shape) != 2:
            raise ValueError(f"Identity: needs a 2-D shape, got {shape}")
        return self.gain * np.eye(*shape)


_CLASSES = {
    c.__name__: c
    for c in (
        Zeros,
        Ones,
        Constant,
        RandomNormal,
        RandomUniform,
        TruncatedNormal,
        VarianceScaling,
        GlorotUniform,
        GlorotNormal,
        HeNormal,
        HeUniform,
        LecunNormal,
        LecunUniform,
        Orthogonal,
        Identity,
    )
}
_ALIASES = {to_snake_case(n): c for n, c in _CLASSES.items()}
_ALIASES.update(
    {
        "zero": Zeros,
        "one": Ones,
        "uniform": RandomUniform,
        "normal": RandomNormal,
        "identity": Identity,
        "orthogonal": Orthogonal,
    }
)


def get(identifier):
    """An initializer from a name, a config dict, an instance or a callable."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        cls = _CLASSES.get(identifier) or _ALIASES.get(identifier)
        if cls is None:
            raise ValueError(f"unknown initializer {identifier!r}; known: {sorted(_ALIASES)}")
        return cls()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _CLASSES.get(name) or _ALIASES.get(name)
        if cls is None:
            raise ValueError(f"unknown initializer class {name!r}")
        config = dict(identifier.get("config") or {})
        for k in ("input_axes", "output_axes"):  # Keras 3.x fan-axes options, default only
            if config.pop(k, None) is not None:
                raise ValueError(f"initializer {name}: option {k} is not supported by rnncore")
        return cls.from_config(config)
    if callable(identifier):
        return identifier
    raise TypeError(f"cannot interpret {identifier!r} as an initializer")


def materialize(init, shape, dtype, rng) -> np.ndarray:
    """The array an initializer gives for ``shape``, C-contiguous in ``dtype``."""
    if isinstance(init, Initializer):
        value = init(shape, dtype=dtype, rng=rng)
    else:  # a foreign callable, e.g. a Keras initializer object
        value = init(shape, dtype=str(dtype))
    value = np.array(value, dtype=dtype, order="C", copy=True)
    if value.shape != shape:
        raise ValueError(f"initializer {init!r} returned shape {value.shape}, expected {shape}")
    return value


def serialize(init):
    """A JSON-able description of an initializer (a name, or class name plus config)."""
    if isinstance(init, str):
        return init
    if isinstance(init, Initializer):
        return {"class_name": type(init).__name__, "config": init.get_config()}
    if isinstance(init, dict):
        return init
    raise TypeError(
        f"initializer {init!r} is not an rnncore initializer, so it cannot be serialized; "
        f"pass a name or an rnncore.layers.initializers object"
    )
