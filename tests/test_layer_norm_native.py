"""LayerNormalization over the last axis in the core (norm.hpp) and in the native chain.

The layer's call (inference and training) takes its output from ``functional.layer_norm``
for the last axis; it must equal the NumPy formulas (``_forward(native=False)``; training
still computes its backward cache with them) within float rounding, and a
model's chain must give the layer-by-layer results bit for bit (the same C++ function), in
a Sequential, a functional model, a stateful model stepped one timestep at a time and a
stream pool's step. Keras itself is compared in tests/test_layers_normalization.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import functional
from rnncore import layers as L
from rnncore.models import plan
from rnncore.models.native_chain import Segment
from support import stepped

OPTIONS = {
    "center_scale": dict(),
    "no_center": dict(center=False),
    "no_scale": dict(scale=False),
    "neither": dict(center=False, scale=False),
    "rms_scaling": dict(rms_scaling=True),
}


def _layer(dtype, options, width, rng, **kwargs):
    layer = L.LayerNormalization(epsilon=1e-3, dtype=np.dtype(dtype).name, **options, **kwargs)
    layer.build((None, None, width))
    # weights away from 1 and 0, so that a dropped or misplaced gamma or beta shows
    layer.set_weights([rng.standard_normal(w.shape).astype(dtype) for w in layer.get_weights()])
    return layer


@pytest.fixture
def calls(monkeypatch):
    """Counts the layer's calls of the core's layer_norm (the native path taken)."""
    seen = []
    real = functional.layer_norm

    def spy(*args, **kwargs):
        seen.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(functional, "layer_norm", spy)
    return seen


@pytest.mark.parametrize("shape", [(7, 33), (3, 5, 130)], ids=["2d", "3d"])
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_native_equals_the_numpy_path(dtype, options, shape, calls):
    rng = np.random.default_rng(0)
    layer = _layer(dtype, OPTIONS[options], shape[-1], rng)
    # an offset mean and a spread of scales per row: the statistics must be computed well
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 5, shape[:-1] + (1,)) + 2).astype(dtype)
    before = x.copy()
    got = layer(x)
    assert calls == [shape] and got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(x, before)  # the input is not modified
    numpy = layer._forward(x, native=False)[0]
    if dtype == np.float64:
        np.testing.assert_allclose(got, numpy, rtol=0, atol=1e-12)
    else:
        # the core computes in double and rounds once: within one ulp of the float64 formula
        ref = _reference(x.astype(np.float64), layer)
        assert np.all(np.abs(got - ref) <= np.spacing(np.abs(ref).astype(dtype)))
        # NumPy rounds each float32 step: x - mean is off by ~ulp(x), which the division by
        # the row's deviation scales up; within a few such ulp of it
        std = np.sqrt(x.astype(np.float64).var(-1, keepdims=True) + layer.epsilon)
        gamma = 1 if layer.gamma is None else np.max(np.abs(layer.gamma.numpy()))
        beta = 0 if layer.beta is None else np.max(np.abs(layer.beta.numpy()))
        row = np.max(np.abs(x), -1, keepdims=True) / std * gamma + beta
        err = np.abs(got - numpy) / (np.finfo(dtype).eps * row)
        assert np.max(err) <= 4, np.max(err)


def _reference(x, layer):
    """The layer's formula in float64 from its float32 weights."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x if layer.rms_scaling else x - mean) / np.sqrt(var + layer.epsilon)
    if layer.gamma is not None:
        y = y * layer.gamma.numpy().astype(np.float64)
    if layer.beta is not None:
        y = y + layer.beta.numpy().astype(np.float64)
    return y


def test_other_axes_keep_the_numpy_path(calls):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    for axis in (1, [1, 2], -2):
        layer = L.LayerNormalization(axis=axis)
        np.testing.assert_array_equal(layer(x), layer._forward(x, native=False)[0])
        assert not layer._chainable()
    assert calls == []
    for axis in (-1, 2, [2], [-1]):  # each names the last axis of a 3-D input
        layer = L.LayerNormalization(axis=axis)
        layer(x)
        assert layer._chainable()
    assert len(calls) == 4


def test_non_contiguous_input_and_mask(calls):
    rng = np.random.default_rng(2)
    layer = _layer(np.float32, {}, 6, rng)
    x = rng.standard_normal((4, 10, 12)).astype(np.float32)
    view = x[:, ::2, ::2]  # neither C- nor F-contiguous
    before = x.copy()
    got = layer(view)
    np.testing.assert_array_equal(got, layer(np.ascontiguousarray(view)))
    np.testing.assert_array_equal(x, before)
    assert np.all(
        np.abs(got - layer._forward(view, native=False)[0]) <= 4 * np.spacing(np.float32(8))
    )
    mask = rng.random((4, 5)) < 0.6
    assert layer.compute_mask(view, mask) is mask  # Keras passes the mask through
    y = layer(view, mask=mask)
    np.testing.assert_array_equal(y, got)  # rows normalised alike, masked or not
    np.testing.assert_array_equal(y._keras_mask, mask)
    assert len(calls) == 3


@pytest.mark.parametrize("options", [dict(), dict(center=True, scale=False)])
def test_wrong_width_names_the_layer(options):
    layer = L.LayerNormalization(name="norm", **options)
    layer.build((None, 3, 6))
    x = np.ones((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"LayerNormalization 'norm': expected inputs of size "
                       r"\(6,\) on axis \[-1\], got shape \(2, 3, 5\)"):  # fmt: skip
        layer(x)
    model = rnncore.Sequential([rnncore.Input((3, 6)), L.Dense(6), L.LayerNormalization(**options)])
    assert _segments(model)
    with pytest.raises(ValueError, match="expected"):
        model(np.ones((2, 3, 5), np.float32))


# ---- the native chain ------------------------------------------------------------------


def _segments(model):
    return [op for op in plan.current(model).ops if isinstance(op, Segment)]


def _layer_by_layer(model, x, mask=None):
    for layer in model.layers:
        x, mask = layer._call(x, mask, False)
    return x


def _randomize(model, rng):
    model.set_weights(
        [rng.standard_normal(w.shape).astype(w.dtype) * 0.5 for w in model.get_weights()]
    )


def _stack(dtype, norm=None, last=True, **inputs):
    norm = norm or {}
    return [
        rnncore.Input((None, 6), dtype=dtype, **inputs),
        L.Masking(0.0, dtype=dtype),
        L.LSTM(16, return_sequences=True, dtype=dtype, stateful=bool(inputs)),
        L.LayerNormalization(dtype=dtype, **norm),
        L.GRU(12, return_sequences=not last, dtype=dtype, stateful=bool(inputs)),
        L.LayerNormalization(dtype=dtype, rms_scaling=True),  # on (batch, units) if last
        L.Dense(5, dtype=dtype),
    ]


@pytest.mark.parametrize("norm", [dict(), dict(center=False), dict(scale=False, axis=[2])])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sequential_runs_as_one_chain_bit_for_bit(dtype, norm, threads):
    rng = np.random.default_rng(3)
    model = rnncore.Sequential(_stack(dtype, norm))
    _randomize(model, rng)
    assert len(_segments(model)) == 1 and len(plan.current(model).ops) == 1
    x = rng.standard_normal((5, 9, 6)).astype(dtype)
    x[1, -3:] = 0  # masked steps: the mask passes the LayerNormalization on to the GRU
    x[2, :2] = 0
    want = _layer_by_layer(model, x)
    for n in (1, 2):
        rnncore.set_num_threads(n)
        np.testing.assert_array_equal(model(x), want)
        np.testing.assert_array_equal(
            model.predict(x, batch_size=3),
            np.concatenate([_layer_by_layer(model, x[:3]), _layer_by_layer(model, x[3:])]),
        )


def test_functional_model_runs_as_one_chain_bit_for_bit(threads):
    rng = np.random.default_rng(4)
    inputs = rnncore.Input((10, 8))
    h = L.LSTM(32, return_sequences=True)(inputs)
    h = L.LayerNormalization()(h)
    h = L.GRU(16)(h)
    model = rnncore.Model(inputs, L.Dense(4)(h))
    _randomize(model, rng)
    assert len(_segments(model)) == 1 and len(plan.current(model).ops) == 1
    x = rng.standard_normal((6, 10, 8)).astype(np.float32)
    want = x
    for layer in model.layers[1:]:
        want = layer(want)
    for n in (1, 2):
        rnncore.set_num_threads(n)
        np.testing.assert_array_equal(model.predict(x), want)


def test_stateful_model_steps_in_one_call():
    rng = np.random.default_rng(5)
    model = rnncore.Sequential(_stack("float32", last=False, batch_size=2))
    _randomize(model, rng)
    assert len(_segments(model)) == 1 and len(plan.current(model).ops) == 1
    x = rng.standard_normal((2, 7, 6)).astype(np.float32)
    xt = [np.ascontiguousarray(x[:, t : t + 1]) for t in range(7)]
    steps = np.concatenate([model(a) for a in xt], 1)
    model.reset_states()
    np.testing.assert_array_equal(steps, np.concatenate([_layer_by_layer(model, a) for a in xt], 1))
    model.reset_states()
    np.testing.assert_array_equal(steps, model(x))  # each row alike however many share it


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stream_pool_step_is_one_core_call(dtype):
    rng = np.random.default_rng(6)
    model = rnncore.Sequential([
        rnncore.Input((None, 6), dtype=dtype), L.LSTM(16, return_sequences=True, dtype=dtype),
        L.LayerNormalization(dtype=dtype), L.GRU(12, return_sequences=True, dtype=dtype),
        L.LayerNormalization(dtype=dtype, center=False)])  # fmt: skip
    _randomize(model, rng)
    x = rng.standard_normal((3, 11, 6)).astype(dtype)
    want = model.predict(x)
    pool = model.stream_pool(3)
    assert [type(layer).__name__ for layer in pool._current_plan().native] == [
        "LSTM", "LayerNormalization", "GRU", "LayerNormalization"]  # fmt: skip
    ids = [pool.open() for _ in range(3)]
    got = stepped(pool, ids, x, [(0, 1), (1, 4), (4, 5), (5, 11)])
    for k, s in enumerate(ids):
        np.testing.assert_array_equal(got[s], want[k])


def test_a_non_negative_axis_is_chained_at_its_built_rank_only():
    # axis=[2] of a 3-D model is not the last axis of a 2-D input, nor axis=1 of a 2-D model
    # the last of a 3-D one: the chain leaves those inputs to the layers, which refuse them
    model = rnncore.Sequential([rnncore.Input((None, 6)), L.Dense(6), L.LayerNormalization([2])])
    assert len(_segments(model)) == 1
    with pytest.raises(ValueError, match="axis 2 is out of range for inputs of rank 2"):
        model(np.ones((3, 6), np.float32))
    model = rnncore.Sequential([rnncore.Input((6,)), L.Dense(6), L.LayerNormalization(axis=1)])
    assert len(_segments(model)) == 1
    with pytest.raises(ValueError, match=r"expected inputs of size \(6,\) on axis \[1\]"):
        model(np.ones((3, 4, 6), np.float32))
