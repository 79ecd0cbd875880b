"""Conv1D and 1-D pooling at inference in the core (windows.hpp, issue 24 item 1).

Conv1D: one product per tap accumulating into the output, against the product of the
unfolded windows (the layer's ``_unfold`` + ``_product``, which ran before and still runs a
stream's causal steps): bit for bit, since each output is the same FMA chain over (tap,
channel). Pooling: against the training forward (argmax over the padded windows, NumPy's
sum), bit for bit, NaN and infinities included.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import layers as L
from support import model_of


def _built(layer, x, seed=0):
    layer(x)  # builds
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in layer.get_weights()])
    return layer


def _unfolded(layer, x):
    """The Conv1D's output through the unfolded windows (the path before the core op)."""
    last = x.transpose(0, 2, 1) if layer.data_format == "channels_first" else x
    y = layer._product(layer._unfold(np.ascontiguousarray(last))[0], x.shape[0])
    return y.transpose(0, 2, 1) if layer.data_format == "channels_first" else y


CONV_CASES = [
    dict(padding=p, strides=s, dilation_rate=d, groups=g, activation=a)
    for p, s, d, g, a in itertools.product(
        ["valid", "same", "causal"], [1, 3], [1, 2], [1, 2], ["linear", "relu", "tanh"]
    )
    if not (p == "causal" and s > 1) and not (s > 1 and d > 1)  # Keras refuses those
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_conv1d_native_equals_the_unfolded_product(case, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 17, 4)).astype(dtype)
    layer = _built(L.Conv1D(6, 3, dtype=np.dtype(dtype).name, **case), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), _unfolded(layer, x))


@pytest.mark.parametrize("threads", [1, 2])
def test_conv1d_native_channels_first_softmax_and_threads(threads):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6, 50)).astype(np.float32)  # (B, C, T): channels_first
    before = rnncore.get_num_threads()
    rnncore.set_num_threads(threads)
    try:
        layer = _built(L.Conv1D(8, 5, padding="same", data_format="channels_first"), x)
        np.testing.assert_array_equal(np.asarray(layer(x)), _unfolded(layer, x))
        soft = _built(L.Conv1D(8, 5, activation="softmax"), x.transpose(0, 2, 1))
        xt = np.ascontiguousarray(x.transpose(0, 2, 1))
        np.testing.assert_array_equal(np.asarray(soft(xt)), _unfolded(soft, xt))
    finally:
        rnncore.set_num_threads(before)


def test_conv1d_split_between_threads_gives_the_one_thread_bits():
    """Big enough for two shards (threads.hpp split_rows: ~1 MFLOP each), so a worker runs
    samples: the packed taps must reach it (a thread_local read inside the work crashed)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 400, 64)).astype(np.float32)
    kernel = (0.1 * rng.standard_normal((3, 64, 64))).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    before = rnncore.get_num_threads()
    try:
        rnncore.set_num_threads(1)
        want = F.conv1d(x, kernel, bias, padding=(2, 0), activation="tanh")
        rnncore.set_num_threads(2)
        for _ in range(5):
            got = F.conv1d(x, kernel, bias, padding=(2, 0), activation="tanh")
            np.testing.assert_array_equal(got, want)
    finally:
        rnncore.set_num_threads(before)


def test_conv1d_native_matches_numpy_float64():
    """Against the training forward (np.matmul over the unfolded windows), float64."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 30, 5))
    layer = _built(L.Conv1D(7, 4, padding="causal", dilation_rate=3, dtype="float64"), x)
    want = layer._forward(x)[0]
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-12, atol=1e-12)


def test_conv1d_native_does_not_modify_its_input_and_refuses_bad_shapes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 3)).astype(np.float32)
    keep = x.copy()
    layer = _built(L.Conv1D(4, 3), x)
    layer(x)
    np.testing.assert_array_equal(x, keep)
    with pytest.raises(ValueError, match=r"Conv1D 'conv1d.*': expected input .* 3 channels"):
        layer(x[:, :, :2])
    with pytest.raises(ValueError, match="the output would have"):
        layer(x[:, :2])
    with pytest.raises(ValueError, match="x: expected a 3-D array"):
        F.conv1d(x[0], layer.kernel.value)
    with pytest.raises(ValueError, match="kernel: expected"):
        F.conv1d(x, np.zeros((3, 2, 4), np.float32))
    with pytest.raises(TypeError, match="kernel: expected dtype float32"):
        F.conv1d(x, layer.kernel.value.astype(np.float64))
    with pytest.raises(TypeError, match="activation: expected an activation name"):
        F.conv1d(x, layer.kernel.value, activation=None)


def _special(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=flat.size // 6, replace=False)
    flat[picks[0::4]] = np.nan
    flat[picks[1::4]] = np.inf
    flat[picks[2::4]] = -np.inf
    flat[picks[3::4]] = -0.0
    return x


POOL_CASES = [
    dict(pool_size=k, strides=s, padding=p)
    for k, s, p in itertools.product([1, 2, 3], [1, 2, 3], ["valid", "same"])
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", [L.MaxPooling1D, L.AveragePooling1D])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_pooling_native_equals_the_training_forward(case, kind, dtype):
    rng = np.random.default_rng(5)
    for x in (rng.standard_normal((3, 11, 5)).astype(dtype), _special(rng, (3, 11, 5), dtype)):
        layer = kind(**case, dtype=np.dtype(dtype).name)
        with np.errstate(invalid="ignore"):  # inf - inf in the average's sum
            want = layer.call_train(x, None, None)
            got = np.asarray(layer(x))
        np.testing.assert_array_equal(got, want)


def test_pooling_native_channels_first_and_bad_input():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 9)).astype(np.float32)  # (B, C, T)
    layer = L.MaxPooling1D(2, data_format="channels_first")
    np.testing.assert_array_equal(np.asarray(layer(x)), layer.call_train(x, None, None))
    with pytest.raises(ValueError, match="the output would have"):
        L.MaxPooling1D(4)(x[:, :3, :1].transpose(0, 2, 1).copy())
    with pytest.raises(ValueError, match="x: expected a 3-D array"):
        F.pool1d(x[0], 2, strides=2)
    # a window of padding alone has nothing to reduce: refused, never uninitialised memory
    with pytest.raises(ValueError, match="padding: expected fewer steps than pool_size = 2"):
        F.pool1d(np.ascontiguousarray(x.transpose(0, 2, 1)), 2, strides=1, padding=(3, 0))
    with pytest.raises(ValueError, match="padding: expected fewer steps than pool_size = 2"):
        F.pool1d(np.ascontiguousarray(x.transpose(0, 2, 1)), 2, strides=1, padding=(0, 2))


def _window_stack(dtype, conv, pool, functional=False):
    layers = [L.Conv1D(6, 3, dtype=dtype, **conv), pool, L.LSTM(5, dtype=dtype),
              L.Dense(2, dtype=dtype)]  # fmt: skip
    return model_of(rnncore.Input((None, 4), dtype=dtype), layers, functional)


CHAIN_CASES = [
    (dict(padding="causal", dilation_rate=2), lambda d: L.MaxPooling1D(2, dtype=d)),
    (
        dict(padding="same", strides=2, groups=2),
        lambda d: L.AveragePooling1D(3, padding="same", dtype=d),
    ),
    (dict(padding="valid"), lambda d: L.MaxPooling1D(2, strides=1, padding="same", dtype=d)),
]


@pytest.mark.parametrize("functional", [False, True], ids=["Sequential", "Model"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(CHAIN_CASES)))
def test_conv_and_pooling_run_in_the_chain_bit_for_bit(case, dtype, functional):
    """Conv1D -> pooling -> LSTM -> Dense is one core call (one Segment in the model's
    plan), bit for bit the layers called one by one, each op with its own time length."""
    from rnncore.models import plan

    conv, pool = CHAIN_CASES[case]
    rng = np.random.default_rng(8)
    model = _window_stack(dtype, conv, pool(dtype), functional)
    model.set_weights([rng.standard_normal(w.shape).astype(dtype) for w in model.get_weights()])
    for batch, steps in [(1, 23), (5, 17)]:
        x = rng.standard_normal((batch, steps, 4)).astype(dtype)
        got = np.asarray(model(x))
        assert [type(op).__name__ for op in plan.current(model).ops] == ["Segment"]
        want = x
        for layer in model.layers:
            if not isinstance(layer, L.InputLayer):
                want = np.asarray(layer(want))
        np.testing.assert_array_equal(got, want)


def test_the_chain_leaves_a_too_short_input_to_the_layers_message():
    model = _window_stack("float32", dict(padding="valid"), L.MaxPooling1D(2))
    x = np.zeros((1, 2, 4), np.float32)  # 2 steps: the valid Conv1D of 3 has no output step
    with pytest.raises(ValueError, match="Conv1D .*: the output would have 0 steps"):
        model(x)


def test_a_channels_first_conv_runs_its_own_call():
    layer = L.Conv1D(3, 2, data_format="channels_first")
    layer.build((None, 4, None))
    assert not layer._chainable()
    assert L.MaxPooling1D(2)._chain_kind == "pool1d"
