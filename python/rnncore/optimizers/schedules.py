"""Learning-rate schedules with Keras 3's names, arguments and formulas.

An optimizer given a schedule as ``learning_rate`` evaluates it at its iteration count
``step`` (0 for the first update) before each update, as Keras does. The formulas (``lr0``
the initial learning rate) are written above each ``__call__``; values are computed in
float64 (Keras computes them in the initial rate's dtype, float32 from a Python float).

Reached as ``rnncore.optimizers.schedules`` (Keras's path, also importable by that name).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "LearningRateSchedule",
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "InverseTimeDecay",
    "CosineDecay",
    "serialize",
    "deserialize",
    "get",
]


class LearningRateSchedule:
    """Base class: ``schedule(step) -> learning rate``; ``get_config``/``from_config``."""

    #: the constructor's arguments, in Keras's order (get_config returns them)
    _config: tuple = ()

    def __call__(self, step) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(step)")

    def _store(self, args: dict) -> None:
        """Keep the constructor's arguments (its ``locals()``) named in ``_config``."""
        for k in self._config:
            setattr(self, k, args[k])

    def get_config(self) -> dict:
        return {k: getattr(self, k) for k in self._config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._config if k != "name")
        return f"{type(self).__name__}({args})"


def _positive_steps(owner, decay_steps):
    if not decay_steps > 0:
        raise ValueError(f"{owner}: decay_steps must be > 0, got {decay_steps!r}")


class _StepDecay(LearningRateSchedule):
    """The two decays of ``p = step / decay_steps`` (floored when ``staircase``)."""

    _config = ("initial_learning_rate", "decay_steps", "decay_rate", "staircase", "name")

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase, name):
        _positive_steps(type(self).__name__, decay_steps)
        self._store(locals())

    def _p(self, step):
        p = float(step) / self.decay_steps
        return math.floor(p) if self.staircase else p


class ExponentialDecay(_StepDecay):
    """``lr0 * decay_rate ** p``, ``p = step / decay_steps`` (floored when ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):  # fmt: skip
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def __call__(self, step):
        return self.initial_learning_rate * np.float64(self.decay_rate) ** self._p(step)


class InverseTimeDecay(_StepDecay):
    """``lr0 / (1 + decay_rate * p)``, ``p = step / decay_steps`` (floored when
    ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="InverseTimeDecay"):  # fmt: skip
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def __call__(self, step):
        return self.initial_learning_rate / (1.0 + self.decay_rate * self._p(step))


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` for ``step <= boundaries[0]``, ``values[i]`` for
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    _config = ("boundaries", "values", "name")

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1 or not boundaries:
            raise ValueError(
                f"PiecewiseConstantDecay: boundaries must be one shorter than values (and not "
                f"empty), got {len(boundaries)} boundaries and {len(values)} values"
            )
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"PiecewiseConstantDecay: boundaries must increase, got {list(boundaries)}"
            )
        self._store(locals())

    def __call__(self, step):
        # the first boundary >= step picks the value (Keras: low < step <= high)
        return self.values[int(np.searchsorted(self.boundaries, step, side="left"))]


class PolynomialDecay(LearningRateSchedule):
    """``(lr0 - end) * (1 - s / decay_steps) ** power + end`` with ``s = min(step,
    decay_steps)``; ``cycle``: ``decay_steps`` times ``ceil(step / decay_steps)`` (1 at
    step 0) and ``s = step``."""

    _config = ("initial_learning_rate", "decay_steps", "end_learning_rate", "power", "cycle",
               "name")  # fmt: skip

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0,
                 cycle=False, name="PolynomialDecay"):  # fmt: skip
        _positive_steps(type(self).__name__, decay_steps)
        self._store(locals())

    def __call__(self, step):
        step, steps = float(step), float(self.decay_steps)
        if self.cycle:
            steps *= 1.0 if step == 0 else math.ceil(step / steps)
        else:
            step = min(step, steps)
        end = self.end_learning_rate
        return (self.initial_learning_rate - end) * (1.0 - step / steps) ** self.power + end


class CosineDecay(LearningRateSchedule):
    """Cosine decay with an optional linear warmup (Keras 3)::

    no warmup_target:  s = min(step, decay_steps)
                       lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi s / decay_steps)) + alpha)
    warmup_target:     s = min(step, decay_steps + warmup_steps)
                       s < warmup_steps:  lr0 + (warmup_target - lr0) * s / warmup_steps
                       else: the decay above from warmup_target, at s - warmup_steps
    """

    _config = ("initial_learning_rate", "decay_steps", "alpha", "name", "warmup_target",
               "warmup_steps")  # fmt: skip

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):  # fmt: skip
        _positive_steps(type(self).__name__, decay_steps)
        self._store(locals())

    def _decay(self, step, start):
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        step, lr0 = float(step), self.initial_learning_rate
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), lr0)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            return lr0 + (self.warmup_target - lr0) * step / self.warmup_steps
        return self._decay(step - self.warmup_steps, self.warmup_target)


_CLASSES = {
    c.__name__: c
    for c in (
        ExponentialDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        InverseTimeDecay,
        CosineDecay,
    )
}


def serialize(schedule) -> dict:
    """Keras's serialized form: ``{"module", "class_name", "config", "registered_name"}``."""
    return {
        "module": "keras.optimizers.schedules",
        "class_name": type(schedule).__name__,
        "config": schedule.get_config(),
        "registered_name": None,
    }


def deserialize(config) -> LearningRateSchedule:
    """A schedule from :func:`serialize`'s form (or Keras's)."""
    name = config.get("class_name") if isinstance(config, dict) else None
    if name not in _CLASSES:
        raise ValueError(
            f"unknown learning-rate schedule {name!r}; rnncore has {', '.join(_CLASSES)}"
        )
    return _CLASSES[name].from_config(dict(config.get("config", {})))


def get(identifier) -> LearningRateSchedule:
    """A schedule from a schedule, its serialized dict, or a Keras schedule object of one
    of the classes here (converted through its config)."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if type(identifier).__module__.startswith("keras") and hasattr(identifier, "get_config"):
        return deserialize({"class_name": type(identifier).__name__,
                            "config": identifier.get_config()})  # fmt: skip
    raise ValueError(f"not a learning-rate schedule: {identifier!r}")
