"""Shared fixtures and helpers of the forward-pass tests.

Fixtures:

* ``rng``: a NumPy generator with a fixed seed, fresh for every test.
* ``make_case``: builds a :class:`Case` (inputs of one layer call, Keras layouts) with random
  weights scaled as ``0.5 / sqrt(fan_in)`` so that gates stay in their useful range, even
  over long sequences and with unbounded activations.
* ``check``: :func:`assert_matches_reference` (rnncore's result against the reference).
* ``threads``: restores ``rnncore``'s thread count after the test.

Variants are named by strings so that test ids stay readable: ``simple_rnn``, ``lstm``,
``gru_reset_after`` (``reset_after=True``, bias ``(2, 3H)``) and ``gru_reset_before``
(``reset_after=False``, bias ``(3H,)``).

Every comparison with the reference goes through :func:`assert_matches_reference`, which also
records the largest errors seen; they are printed at the end of the run, with the largest
differences the interop tests record in their modules' ``MAX_ERR``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import rnncore
from rnncore import functional, reference

SEED = 20240611

VARIANTS = ("simple_rnn", "lstm", "gru_reset_after", "gru_reset_before")

# Tolerances against the reference. float64 is compared with the reference computed in
# float64 on the same inputs; float32 with the reference computed in float64 on the float32
# inputs upcast (so only the arithmetic differs, not the data).
TOL = {
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
}

MASK_PATTERNS = ("none", "right_pad", "left_pad", "holes", "full_row")


@dataclasses.dataclass(frozen=True)
class Spec:
    """How to call one variant: function name, gate and state counts, bias layout."""

    name: str
    cell: str  # the function's name in rnncore.functional / rnncore.reference
    gates: int
    n_states: int
    reset_after: bool | None = None  # GRU only

    def bias_shape(self, units: int) -> tuple[int, ...]:
        if self.reset_after:
            return (2, self.gates * units)
        return (self.gates * units,)

    def kwargs(self, **kw: Any) -> dict[str, Any]:
        """Call kwargs: ``reset_after`` added for the GRUs, ``recurrent_activation`` dropped
        for SimpleRNN (which has none)."""
        kw = dict(kw)
        if self.reset_after is not None:
            kw["reset_after"] = self.reset_after
        if self.cell == "simple_rnn":
            kw.pop("recurrent_activation", None)
        return kw


SPECS = {
    "simple_rnn": Spec("simple_rnn", "simple_rnn", 1, 1),
    "lstm": Spec("lstm", "lstm", 4, 2),
    "gru_reset_after": Spec("gru_reset_after", "gru", 3, 1, True),
    "gru_reset_before": Spec("gru_reset_before", "gru", 3, 1, False),
}


def spec(name: str) -> Spec:
    return SPECS[name]


@dataclasses.dataclass
class Case:
    """The inputs of one layer call, all float64; ``cast`` gives them in another dtype."""

    spec: Spec
    x: np.ndarray
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    initial_state: list[np.ndarray] | None
    mask: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        B, T, D = self.x.shape
        return B, T, D, self.recurrent_kernel.shape[0]

    def cast(self, dtype) -> Case:
        def c(a):
            return None if a is None else np.asarray(a, dtype=dtype)

        return dataclasses.replace(
            self,
            x=c(self.x),
            kernel=c(self.kernel),
            recurrent_kernel=c(self.recurrent_kernel),
            bias=c(self.bias),
            initial_state=None
            if self.initial_state is None
            else [c(s) for s in self.initial_state],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every input array by name (for layout and no-modification checks)."""
        out = {"x": self.x, "kernel": self.kernel, "recurrent_kernel": self.recurrent_kernel}
        if self.bias is not None:
            out["bias"] = self.bias
        for k, s in enumerate(self.initial_state or []):
            out[f"initial_state[{k}]"] = s
        if self.mask is not None:
            out["mask"] = self.mask
        return out

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> Case:
        """A copy whose inputs are replaced by ``arrays`` (names as in :meth:`arrays`)."""
        n = self.spec.n_states
        states = self.initial_state
        if states is not None:
            states = [arrays.get(f"initial_state[{k}]", states[k]) for k in range(n)]
        return dataclasses.replace(
            self,
            x=arrays.get("x", self.x),
            kernel=arrays.get("kernel", self.kernel),
            recurrent_kernel=arrays.get("recurrent_kernel", self.recurrent_kernel),
            bias=arrays.get("bias", self.bias),
            initial_state=states,
            mask=arrays.get("mask", self.mask),
        )

    def _call(self, module, **kw):
        fn = getattr(module, self.spec.cell)
        return fn(
            self.x,
            self.kernel,
            self.recurrent_kernel,
            self.bias,
            initial_state=self.initial_state,
            mask=self.mask,
            **self.spec.kwargs(**kw),
        )

    def run(self, **kw) -> tuple[np.ndarray, ...]:
        """rnncore's result: ``(output, *final_states)``."""
        return self._call(functional, **kw)

    def reference(self, **kw) -> tuple[np.ndarray, ...]:
        """The NumPy reference, always computed in float64 on these inputs upcast."""
        return self.cast(np.float64)._call(reference, **kw)


def make_mask(rng: np.random.Generator, pattern: str, B: int, T: int) -> np.ndarray | None:
    """A (B, T) bool mask: ``True`` where a step is used.

    * ``right_pad``: row b uses its first L_b steps (row 0 all of them)
    * ``left_pad``: row b uses its last L_b steps (row 0 all of them)
    * ``holes``: random unused steps anywhere (about a third)
    * ``full_row``: ``holes`` with the middle row entirely unused
    """
    if pattern == "none":
        return None
    if pattern in ("right_pad", "left_pad"):
        lengths = rng.integers(1, T + 1, size=B) if T > 0 else np.zeros(B, int)
        if B:
            lengths[0] = T
        steps = np.arange(T)[None, :]
        if pattern == "right_pad":
            return steps < lengths[:, None]
        return steps >= (T - lengths)[:, None]
    if pattern in ("holes", "full_row"):
        m = rng.random((B, T)) >= 0.35
        if pattern == "full_row" and B:
            m[B // 2] = False
        return m
    raise ValueError(pattern)


def make_weights(rng, s: Spec, D: int, H: int, *, use_bias: bool = True):
    """Kernel (D, G*H), recurrent kernel (H, G*H), bias: N(0, 1) * 0.5 / sqrt(fan_in).

    With that scale the pre-activations stay O(1): tanh/sigmoid do not saturate, and
    relu/linear states neither explode nor vanish over a thousand steps.
    """
    GH = s.gates * H
    kernel = rng.standard_normal((D, GH)) * (0.5 / np.sqrt(max(D, 1)))
    recurrent_kernel = rng.standard_normal((H, GH)) * (0.5 / np.sqrt(max(H, 1)))
    bias = rng.standard_normal(s.bias_shape(H)) * 0.1 if use_bias else None
    return kernel, recurrent_kernel, bias


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator, fresh for each test (tests are reproducible in isolation)."""
    return np.random.default_rng(SEED)


@pytest.fixture
def keras_float64():
    """Keras computes its losses, schedules and optimizers' scalars in floatx (its learning
    rate is a floatx variable): float64 for the test makes its arithmetic rnncore's, so the
    formulas compare far below float32's rounding. (Keras is imported by the test module.)"""
    import keras

    old = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(old)


@pytest.fixture
def make_case(rng) -> Callable[..., Case]:
    """``make_case(variant, B, T, D, H, *, use_bias, initial_state, mask)`` -> :class:`Case`.

    ``initial_state``: ``False`` (None) or ``True`` (random states, N(0, 0.5^2));
    ``mask``: a pattern of :func:`make_mask`, or an explicit array.
    """

    def make(variant, B, T, D, H, *, use_bias=True, initial_state=False, mask="none"):
        s = variant if isinstance(variant, Spec) else spec(variant)
        kernel, recurrent_kernel, bias = make_weights(rng, s, D, H, use_bias=use_bias)
        x = rng.standard_normal((B, T, D))
        states = None
        if initial_state:
            states = [0.5 * rng.standard_normal((B, H)) for _ in range(s.n_states)]
        m = make_mask(rng, mask, B, T) if isinstance(mask, str) else mask
        return Case(s, x, kernel, recurrent_kernel, bias, states, m)

    return make


@pytest.fixture
def check():
    """:func:`assert_matches_reference`, as a fixture."""
    return assert_matches_reference


@pytest.fixture
def threads():
    """Restores the thread count the test found (set_num_threads is process-wide)."""
    before = rnncore.get_num_threads()
    yield before
    rnncore.set_num_threads(0)
    if rnncore.get_num_threads() != before:
        rnncore.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# Comparison with the reference, with a record of the largest errors.

_WORST: dict[str, dict[str, Any]] = {}


def _record(dtype: np.dtype, actual: np.ndarray, desired: np.ndarray, tol: dict) -> None:
    finite = np.isfinite(desired) & np.isfinite(actual)
    if not finite.any():
        return
    a, d = actual[finite].astype(np.float64), desired[finite]
    err = np.abs(a - d)
    big = np.abs(d) >= 1e-3  # relative error is only meaningful away from zero
    rec = _WORST.setdefault(dtype.name, {"abs": 0.0, "rel": 0.0, "tol_used": 0.0})
    rec["abs"] = max(rec["abs"], float(err.max()))
    if big.any():
        rec["rel"] = max(rec["rel"], float((err[big] / np.abs(d[big])).max()))
    # Fraction of the allowed error actually used (1.0 = at the tolerance).
    rec["tol_used"] = max(
        rec["tol_used"], float((err / (tol["atol"] + tol["rtol"] * np.abs(d))).max())
    )


def assert_matches_reference(
    out, ref, dtype, *, atol: float | None = None, equal_nan: bool = False
) -> None:
    """``out`` (rnncore, in ``dtype``) against ``ref`` (the float64 reference), item by item:
    same count, shapes, dtype ``dtype``, values within :data:`TOL` (``atol`` overrides)."""
    dtype = np.dtype(dtype)
    tol = dict(TOL[dtype])
    if atol is not None:
        tol["atol"] = atol
    names = ["output", "h", "c"]
    assert len(out) == len(ref)
    for name, o, r in zip(names, out, ref):
        assert isinstance(o, np.ndarray), name
        assert o.dtype == dtype, f"{name}: dtype {o.dtype}, expected {dtype}"
        assert o.shape == r.shape, f"{name}: shape {o.shape}, expected {r.shape}"
        _record(dtype, o, r, tol)
        np.testing.assert_allclose(o, r, **tol, equal_nan=equal_nan, err_msg=name)


# The interop tests (test_interop_onnx / _keras / _torch) record the largest difference of
# each kind of comparison in a module-level ``MAX_ERR`` dict ({what: max abs error}); the
# collected modules that have one are remembered here and reported at the end of the run.
_MAX_ERR_TABLES: dict[str, dict[str, float]] = {}


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        module = getattr(item, "module", None)
        table = getattr(module, "MAX_ERR", None)
        if isinstance(table, dict):
            _MAX_ERR_TABLES[module.__name__] = table


def pytest_terminal_summary(terminalreporter):
    if _WORST:
        terminalreporter.section("rnncore vs reference: largest errors seen")
        for name, rec in sorted(_WORST.items()):
            terminalreporter.write_line(
                f"{name}: max abs err {rec['abs']:.3g}, max rel err (|ref| >= 1e-3) "
                f"{rec['rel']:.3g}, max err / (atol + rtol*|ref|) {rec['tol_used']:.3g}"
            )
    tables = {name: table for name, table in sorted(_MAX_ERR_TABLES.items()) if table}
    if tables:
        terminalreporter.section("interop: largest absolute differences seen")
        for name, table in tables.items():
            for what, err in sorted(table.items()):
                terminalreporter.write_line(f"{name}: {what}: {err:.3g}")
