"""Optimizers with Keras 3's names, defaults and update rules: SGD, Adam, AdamW, RMSprop.

``apply_gradients([(grad, variable), ...])`` updates the variables (:class:`Variable`). It
is all or nothing: every gradient is checked (shape, finite values) before the first weight
changes, so an error never leaves a model half-updated. Gradient clipping is Keras's:
``clipnorm`` per gradient (``g * clipnorm / max(||g||, clipnorm)``), ``global_clipnorm``
over all gradients together, ``clipvalue`` element-wise. The update rules (``g`` the clipped
gradient, ``lr`` the learning rate, ``t`` the 1-based step) are in each class's docstring.

``learning_rate`` may be a float, a schedule (:mod:`rnncore.optimizers.schedules`,
evaluated at :attr:`Optimizer.iterations` before each update, 0 first) or a callable of no
arguments, as Keras. ``weight_decay`` is Keras's decoupled decay, applied before the update
with the same learning rate: ``w <- w - lr * weight_decay * w`` for every updated variable
except those named by :meth:`Optimizer.exclude_from_weight_decay`.

One step is one call into the core (``rnncore._core.optimizer_update``): it checks that every
gradient is finite, then updates every variable and its slots in place, threads splitting the
elements. It rounds as the NumPy formulas of :func:`rnncore.reference.apply_gradients` do,
operation for operation (the same bits, whatever the thread count); the scalars of a step
(learning rate, bias corrections, clipping norms) are computed here, in float64, as there.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .. import _core
from ..layers._base import require_default
from . import schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get", "schedules"]


class Optimizer:
    """Base class: learning rate, clipping, the step counter and per-variable slots."""

    #: names of the per-variable slots (arrays shaped like the variable, starting at zero)
    _slot_names: tuple = ()

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):  # fmt: skip
        owner = type(self).__name__
        if kwargs:
            raise TypeError(f"{owner}: unexpected keyword argument(s) {', '.join(kwargs)}")
        require_default(owner, use_ema=(use_ema, False),
                        ema_overwrite_frequency=(ema_overwrite_frequency, None),
                        loss_scale_factor=(loss_scale_factor, None),
                        gradient_accumulation_steps=(gradient_accumulation_steps,
                        None))  # fmt: skip
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"{owner}: give at most one of clipnorm, clipvalue, global_clipnorm")
        for arg, value in (
            ("clipnorm", clipnorm),
            ("clipvalue", clipvalue),
            ("global_clipnorm", global_clipnorm),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{owner}: {arg} must be positive, got {value!r}")
        if isinstance(learning_rate, dict) or type(learning_rate).__module__.startswith("keras"):
            learning_rate = schedules.get(learning_rate)  # a serialized or a Keras schedule
        if not callable(learning_rate):
            learning_rate = _non_negative(owner, "learning_rate", learning_rate)
        self._learning_rate = learning_rate
        self.weight_decay = (
            None if weight_decay is None else _non_negative(owner, "weight_decay", weight_decay)
        )
        self.exclude_from_weight_decay()
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.name = name or owner.lower()
        self.iterations = 0
        self._slots: dict[int, dict[str, np.ndarray]] = {}
        self._owners: dict[int, object] = {}  # keeps the variables alive while slots exist

    # ---- learning rate and weight decay ---------------------------------------------

    @property
    def learning_rate(self) -> float:
        """The rate of the next update: the schedule evaluated at :attr:`iterations`."""
        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            return float(lr(self.iterations))
        return float(lr()) if callable(lr) else lr

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(self._learning_rate, schedules.LearningRateSchedule):
            raise TypeError(
                f"{self.name}: the learning rate is a schedule "
                f"({type(self._learning_rate).__name__}), hence not settable"
            )
        self._learning_rate = value if callable(value) else _non_negative(
            self.name, "learning_rate", value)  # fmt: skip

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """No weight decay for the variables in ``var_list`` nor for those whose name
        contains one of the regular expressions ``var_names`` (e.g. ``["bias"]``), as Keras."""
        self._decay_excluded = {id(v): v for v in var_list or ()}  # (held: ids stay unique)
        self._decay_pattern = re.compile("|".join(set(var_names))) if var_names else None

    def _use_weight_decay(self, variable) -> bool:
        if self.weight_decay is None or id(variable) in self._decay_excluded:
            return False
        return self._decay_pattern is None or not self._decay_pattern.search(variable.name)

    # ---- clipping ----------------------------------------------------------------------

    def _clip_scales(self, grads: list[np.ndarray]) -> list[float | None]:
        """The factor each gradient is multiplied by (clipping by norm), or None each."""
        if self.clipnorm:
            return [self.clipnorm / max(math.sqrt(_sum_squares(g)), self.clipnorm) for g in grads]
        if self.global_clipnorm:
            norm = math.sqrt(sum(_sum_squares(g) for g in grads))
            return [self.global_clipnorm / max(norm, self.global_clipnorm)] * len(grads)
        return [None] * len(grads)

    # ---- applying ----------------------------------------------------------------------

    #: the update rule's name in the core (``_core.optimizer_update``'s ``kind``)
    _kind = ""

    def _coefficients(self, step: int, lr: float) -> dict:
        """The rule's scalars at 1-based step ``step`` and rate ``lr``, as keyword arguments
        of ``_core.optimizer_update``, in float64 as the NumPy formulas compute them."""
        raise NotImplementedError

    def apply_gradients(self, grads_and_vars) -> None:
        """One update of every variable from its gradient; nothing changes on an error."""
        grads, variables, seen = [], [], set()
        for g, v in grads_and_vars:
            g = np.asarray(g)
            if g.shape != v.shape:
                raise ValueError(
                    f"{self.name}: gradient of {v.path!r} has shape {g.shape}, "
                    f"the variable {v.shape}"
                )
            if id(v) in seen:  # two updates of one variable in one step: which would win?
                raise ValueError(f"{self.name}: variable {v.path!r} is given twice")
            seen.add(id(v))
            grads.append(g.astype(v.value.dtype, order="C", copy=False))
            variables.append(v)
        step = self.iterations + 1
        lr = self.learning_rate  # the schedule at iterations, before the update (Keras)
        slots = []  # a new variable's slots are kept only once the step succeeded
        for v in variables:
            own = self._slots.get(id(v))
            if own is None or self._owners.get(id(v)) is not v:
                own = {k: np.zeros_like(v.value) for k in self._slot_names}
            slots.append(own)
        # decoupled weight decay, before the update: w (1 - lr wd), one product as Keras's
        # torch backend rounds it
        decay = [1.0 - self.weight_decay * lr if self._use_weight_decay(v) else None
                 for v in variables]  # fmt: skip
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite one is refused below
            clip_scale = self._clip_scales(grads)
        bad = _core.optimizer_update(
            self._kind, [v.value for v in variables], grads,
            [[s[k] for k in self._slot_names] for s in slots], learning_rate=lr, decay=decay,
            clip_scale=clip_scale, clipvalue=self.clipvalue or 0.0,
            **self._coefficients(step, lr),
        )  # fmt: skip
        if bad >= 0:  # the core checked every gradient before writing anything
            raise FloatingPointError(
                f"{self.name}: the gradient of {variables[bad].path!r} is not finite "
                f"(NaN or inf); no weight was updated"
            )
        for v, own in zip(variables, slots):
            v.changed()  # the layer's caches pack the weights again (a new generation)
            self._slots[id(v)] = own
            self._owners[id(v)] = v
        self.iterations = step

    def get_slot(self, variable, name) -> np.ndarray:
        """The optimizer's state ``name`` (e.g. ``"m"``) for ``variable`` (a copy)."""
        return self._slots[id(variable)][name].copy()

    #: a subclass's own hyperparameters: Keras's name -> the type it is stored as
    _hyper: dict = {}

    def _set_hyper(self, **values) -> None:
        for name, convert in self._hyper.items():
            setattr(self, name, convert(values[name]))

    def get_config(self) -> dict:
        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            lr = schedules.serialize(lr)
        return {
            "name": self.name,
            "learning_rate": lr,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
            **{name: getattr(self, name) for name in self._hyper},
        }

    @classmethod
    def from_config(cls, config):
        """The optimizer of :meth:`get_config` (a schedule's dict deserialized), no state."""
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} learning_rate={self.learning_rate}>"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum (Keras 3)::

    momentum == 0:  w <- w - lr g
    otherwise:      m <- momentum m - lr g
                    w <- w + m                      (nesterov=False)
                    w <- w + momentum m - lr g      (nesterov=True)
    """

    _hyper = {"momentum": float, "nesterov": bool}

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum!r}")
        self._set_hyper(momentum=momentum, nesterov=nesterov)
        self._slot_names = ("m",) if self.momentum else ()

    _kind = "sgd"

    def _coefficients(self, step, lr):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba), as Keras 3 computes it (epsilon outside the square root)::

    m <- m + (g - m)(1 - beta_1)
    v <- v + (g^2 - v)(1 - beta_2)        (amsgrad: v_hat <- max(v_hat, v), used as v)
    alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
    w <- w - alpha m / (sqrt(v) + epsilon)
    """

    _hyper = {"beta_1": float, "beta_2": float, "epsilon": float, "amsgrad": bool}

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._set_hyper(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad)
        self._slot_names = ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    _kind = "adam"

    def _coefficients(self, step, lr):
        b1, b2 = self.beta_1, self.beta_2
        return {
            "one_minus_beta_1": 1 - b1,
            "one_minus_beta_2": 1 - b2,
            "alpha": lr * math.sqrt(1 - b2**step) / (1 - b1**step),
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), Keras 3's ``AdamW``::

    w <- w - lr * weight_decay * w,   then Adam's update of w
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):  # fmt: skip
        if weight_decay is None:
            raise ValueError("AdamW: weight_decay must be a float, got None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=weight_decay,
                         **kwargs)  # fmt: skip


class RMSprop(Optimizer):
    """RMSprop, as Keras 3 computes it (epsilon inside the square root)::

    v <- rho v + (1 - rho) g^2
    (centered: a <- rho a + (1 - rho) g;  denominator = v - a^2 + epsilon)
    denominator = v + epsilon
    increment = lr g / sqrt(denominator)
    w <- w - increment                   (momentum > 0: m <- momentum m + increment;
                                          w <- w - m)
    """

    _hyper = {"rho": float, "momentum": float, "epsilon": float, "centered": bool}

    def __init__(
        self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._set_hyper(rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)
        self._slot_names = (
            ("v",) + (("m",) if self.momentum > 0 else ()) + (("a",) if self.centered else ())
        )

    _kind = "rmsprop"

    def _coefficients(self, step, lr):
        return {
            "rho": self.rho,
            "one_minus_rho": 1 - self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }


def _sum_squares(g: np.ndarray) -> float:
    """The sum of ``g``'s squares, in float64 (the square of its Euclidean norm)."""
    return float(np.sum(np.square(g, dtype=np.float64)))


def _non_negative(owner, arg, value) -> float:
    """``value`` as a float, refused unless a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{owner}: {arg} must be a float, a schedule or a callable, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}: {arg} must be finite and >= 0, got {value!r}")
    return float(value)


_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(identifier) -> Optimizer:
    """An optimizer from a Keras name (``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``,
    defaults), a class, or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _NAMES[identifier.lower()]()
    raise ValueError(
        f"unknown optimizer {identifier!r}; rnncore has 'sgd', 'adam', 'adamw', 'rmsprop' "
        f"(or a rnncore.optimizers.Optimizer instance)"
    )
