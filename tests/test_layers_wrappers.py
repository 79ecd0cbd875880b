"""Bidirectional, TimeDistributed, Dense, Activation, Softmax, Dropout, Masking and the
initializers, against the NumPy reference and Keras's rules."""

from __future__ import annotations

import numpy as np
import pytest

from rnncore import reference
from rnncore.layers import UnsupportedArgumentError, initializers
from rnncore.layers.core import Activation, Dense, Dropout, Masking, Softmax
from rnncore.layers.recurrent import GRU, LSTM, SimpleRNN
from rnncore.layers.wrappers import Bidirectional, TimeDistributed
from support import randomize, seeded

B, T, D, H = 4, 7, 3, 5
CELLS = {
    "lstm": (LSTM, reference.lstm, {}),
    "gru": (GRU, reference.gru, {}),
    "simple_rnn": (SimpleRNN, reference.simple_rnn, {}),
}
MERGE = {
    "concat": lambda a, b: np.concatenate([a, b], -1),
    "sum": np.add,
    "mul": np.multiply,
    "ave": lambda a, b: (a + b) / 2,
}


def padded_batch(rng, kind):
    """Variable-length sequences, zero-padded; returns (x, mask)."""
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    lengths = [T, 5, 2, 1]
    mask = np.zeros((B, T), bool)
    for b, n in enumerate(lengths):
        if kind == "post":
            mask[b, :n] = True
        elif kind == "pre":
            mask[b, T - n :] = True
        else:  # holes
            mask[b] = rng.random(T) < 0.6
            mask[b, 0] = True
    x[~mask] = 0.0
    return x, mask


# ---------------------------------------------------------------------------------------
# Bidirectional
# ---------------------------------------------------------------------------------------


def make_bidi(cell, merge_mode="concat", seed=0, **kwargs):
    layer = Bidirectional(CELLS[cell][0](H, **kwargs), merge_mode=merge_mode)
    layer.build((None, None, D))
    randomize(layer, seeded(seed))
    return layer


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kind", ["post", "pre", "holes"])
def test_bidirectional_with_mask_equals_each_direction_on_unpadded_sequences(
    cell, merge_mode, kind
):
    """Masked steps are skipped: each direction equals running it on the sequence without
    the masked steps; with return_sequences masked outputs are zeros (Keras's rule)."""
    x, mask = padded_batch(seeded(1), kind)
    bidi = make_bidi(cell, merge_mode, return_sequences=True, return_state=True)
    out = bidi(x, mask=mask)
    n_states = 2 if cell == "lstm" else 1
    if merge_mode is None:
        y_f, y_b, states = out[0], out[1], out[2:]
    else:
        y, states = out[0], out[1:]
    assert len(states) == 2 * n_states
    fwd, bwd = bidi.forward_layer, bidi.backward_layer
    for b in range(B):
        used = x[b : b + 1, mask[b]]  # the sequence without its masked steps
        f = fwd.__class__.from_config({**fwd.get_config(), "name": None, "stateful": False})
        f.set_weights(fwd.get_weights())
        bk = bwd.__class__.from_config({**bwd.get_config(), "name": None})
        bk.set_weights(bwd.get_weights())
        f_out = f(used, mask=None)
        b_out = bk(used, mask=None)
        want_f = np.zeros((T, H), np.float32)
        want_b = np.zeros((T, H), np.float32)
        want_f[mask[b]] = f_out[0][0]
        want_b[mask[b]] = b_out[0][0][::-1]  # back to input time order
        if merge_mode is None:
            np.testing.assert_allclose(y_f[b], want_f, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(y_b[b], want_b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(
                y[b], MERGE[merge_mode](want_f, want_b), rtol=1e-5, atol=1e-6
            )
        for k in range(n_states):
            np.testing.assert_allclose(states[k][b], f_out[1 + k][0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(
                states[n_states + k][b], b_out[1 + k][0], rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_matches_reference(cell, merge_mode, return_sequences):
    rng = seeded(2)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    bidi = make_bidi(cell, merge_mode, return_sequences=return_sequences)
    w = [a.astype(np.float64) for a in bidi.get_weights()]
    fn = CELLS[cell][1]
    f = fn(x.astype(np.float64), *w[:3], return_sequences=return_sequences)[0]
    b = fn(x.astype(np.float64), *w[3:], return_sequences=return_sequences, go_backwards=True)[0]
    if return_sequences:
        b = b[:, ::-1]
    out = bidi(x)
    if merge_mode is None:
        assert isinstance(out, tuple) and len(out) == 2
        np.testing.assert_allclose(out[0], f, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[1], b, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(out, MERGE[merge_mode](f, b), rtol=1e-5, atol=1e-6)
        assert out.dtype == np.float32


def test_bidirectional_shapes_weights_and_params():
    bidi = Bidirectional(LSTM(H, return_sequences=True))
    bidi.build((None, None, D))
    assert len(bidi.get_weights()) == 6
    assert bidi.count_params() == 2 * 4 * (H * (D + H) + H)
    assert bidi.forward_layer.name.startswith("forward_")
    assert bidi.backward_layer.name.startswith("backward_")
    assert bidi.backward_layer.go_backwards and not bidi.forward_layer.go_backwards
    assert bidi.compute_output_shape((None, T, D)) == (None, T, 2 * H)
    state = Bidirectional(GRU(H, return_state=True), merge_mode=None)
    assert state.compute_output_shape((None, T, D)) == ((None, H), (None, H), (None, H), (None, H))
    with pytest.raises(ValueError, match=r"has 6 weight\(s\)"):
        bidi.set_weights(bidi.get_weights()[:3])
    bad = bidi.get_weights()
    bad[4] = np.zeros((H + 1, 4 * H))
    with pytest.raises(
        ValueError,
        match=r"'recurrent_kernel' expects shape \(5, 20\), "
        r"got \(6, 20\)",
    ):
        bidi.set_weights(bad)


def test_bidirectional_initial_state_split_and_weights_argument():
    rng = seeded(3)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    bidi = make_bidi("lstm", return_state=True)
    states = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(4)]
    out = bidi(x, initial_state=states)
    w = [a.astype(np.float64) for a in bidi.get_weights()]
    f = reference.lstm(x.astype(np.float64), *w[:3], initial_state=states[:2])
    b = reference.lstm(x.astype(np.float64), *w[3:], initial_state=states[2:], go_backwards=True)
    np.testing.assert_allclose(out[0], np.concatenate([f[0], b[0]], -1), rtol=1e-5, atol=1e-6)
    for got, want in zip(out[1:], f[1:] + b[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Bidirectional(..., weights=...) sets them when it builds
    again = Bidirectional(LSTM(H, return_state=True), weights=bidi.get_weights())
    for a, c in zip(again(x, initial_state=states), out):
        np.testing.assert_array_equal(a, c)


def test_bidirectional_backward_layer_and_errors():
    fwd = LSTM(H, return_sequences=True)
    bwd = GRU(3, go_backwards=True, return_sequences=True, activation="relu")
    bidi = Bidirectional(fwd, backward_layer=bwd)
    assert bidi.backward_layer is bwd
    x = seeded(4).standard_normal((B, T, D)).astype(np.float32)
    assert bidi(x).shape == (B, T, H + 3)
    with pytest.raises(ValueError, match="go_backwards"):
        Bidirectional(LSTM(H), backward_layer=LSTM(H))
    with pytest.raises(ValueError, match="return_sequences"):
        Bidirectional(LSTM(H), backward_layer=LSTM(H, go_backwards=True, return_sequences=True))
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(H), merge_mode="max")
    with pytest.raises(ValueError, match="recurrent layer"):
        Bidirectional(Dense(3))


def test_bidirectional_seeded_directions_differ_and_stateful():
    bidi = Bidirectional(GRU(H, seed=7))
    bidi.build((None, None, D))
    w = bidi.get_weights()
    assert not np.array_equal(w[0], w[3])
    again = Bidirectional(GRU(H, seed=7))
    again.build((None, None, D))
    for a, b in zip(w, again.get_weights()):  # seeded: reproducible
        np.testing.assert_array_equal(a, b)
    x = seeded(5).standard_normal((B, 8, D)).astype(np.float32)
    st = Bidirectional(GRU(H, stateful=True, return_sequences=True))
    st.set_weights(w)
    first = st(x[:, :4])
    st(x[:, 4:])
    st.reset_states()
    np.testing.assert_array_equal(st(x[:, :4]), first)
    assert len(st.states) == 2


# ---------------------------------------------------------------------------------------
# Dense, TimeDistributed, Activation, Softmax, Dropout, Masking
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation", [None, "linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "softmax"]
)
@pytest.mark.parametrize("shape", [(B, D), (B, T, D), (2, B, T, D)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_matches_reference(activation, shape, dtype):
    rng = seeded(6)
    layer = Dense(6, activation=activation, dtype=dtype)
    x = rng.standard_normal(shape)
    y = layer(x)
    assert y.dtype == np.dtype(dtype) and y.shape == shape[:-1] + (6,)
    kernel, bias = layer.get_weights()
    bias = rng.normal(size=bias.shape)
    layer.set_weights([kernel, bias])
    want = reference.ACTIVATIONS[activation or "linear"](
        x.astype(dtype).astype(np.float64) @ kernel.astype(np.float64)
        + bias.astype(dtype).astype(np.float64)
    )
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(layer(x), want, rtol=tol, atol=tol)


def test_dense_weights_params_and_errors():
    layer = Dense(4, use_bias=False)
    layer.build((None, 3))
    assert [v.name for v in layer.weights] == ["kernel"]
    assert layer.count_params() == 12
    assert Dense(4, input_shape=(3,)).input_shape == (None, 3)
    full = Dense(4)
    full.set_weights([np.ones((3, 4)), np.zeros(4)])  # builds from the weights
    assert full.count_params() == 16
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., 3\)"):
        full(np.zeros((2, 5)))
    with pytest.raises(UnsupportedArgumentError, match="elu"):
        Dense(3, activation="elu")
    with pytest.raises(UnsupportedArgumentError, match="kernel_regularizer"):
        Dense(3, kernel_regularizer="l2")
    with pytest.raises(UnsupportedArgumentError, match="lora_rank"):
        Dense(3, lora_rank=4)


def test_time_distributed_dense_equals_dense_per_timestep():
    rng = seeded(7)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    td = TimeDistributed(Dense(6, activation="softmax"))
    y = td(x)
    inner = td.layer
    assert y.shape == (B, T, 6)
    for t in range(T):
        np.testing.assert_allclose(y[:, t], inner(x[:, t]), rtol=1e-6, atol=1e-7)
    assert td.count_params() == inner.count_params() == D * 6 + 6
    assert td.compute_output_shape((None, None, D)) == (None, None, 6)
    assert [w.shape for w in td.get_weights()] == [(D, 6), (6,)]
    td2 = TimeDistributed(Dense(6, activation="softmax"))
    td2.set_weights(td.get_weights())
    np.testing.assert_array_equal(td2(x), y)
    with pytest.raises(ValueError, match="3-D"):
        td(x[:, 0])


def test_time_distributed_passes_the_mask_on():
    x, mask = padded_batch(seeded(8), "post")
    y = TimeDistributed(Dense(2))(Masking()(x))
    np.testing.assert_array_equal(y._keras_mask, mask)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid", "hard_sigmoid", "linear", "softmax"])
def test_activation_layer(name):
    x = seeded(9).standard_normal((B, T, D)).astype(np.float32)
    y = Activation(name)(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(
        y, reference.ACTIVATIONS[name](x.astype(np.float64)), rtol=1e-6, atol=1e-7
    )


def test_softmax_layer_with_and_without_mask():
    x = seeded(10).standard_normal((B, 6)).astype(np.float32)
    np.testing.assert_allclose(Softmax()(x), reference.ACTIVATIONS["softmax"](x), rtol=1e-6)
    mask = np.array([True, True, False, True, False, False])
    y = Softmax()(x, mask=mask)
    assert np.all(y[:, ~mask] == 0)
    np.testing.assert_allclose(y[:, mask], reference.ACTIVATIONS["softmax"](x[:, mask]), rtol=1e-6)
    with pytest.raises(ValueError, match="broadcastable"):
        Softmax()(x, mask=np.ones(5, bool))


def test_dropout_layer():
    x = seeded(11).standard_normal((B, D)).astype(np.float32)
    layer = Dropout(0.5, seed=1)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = layer(x, training=True)  # Keras's training semantics: zeros, the rest scaled 1/(1-rate)
    np.testing.assert_array_equal(y[y != 0], 2 * x[y != 0])
    assert 0.2 < np.mean(y == 0) < 0.8
    np.testing.assert_array_equal(Dropout(0.0)(x, training=True), x)
    with pytest.raises(ValueError, match="rate"):
        Dropout(2.0)


def test_masking_layer_keras_semantics():
    x = seeded(12).standard_normal((B, T, D)).astype(np.float32)
    x[0, 2] = 7.0  # all features equal mask_value: masked
    x[1, 3, 0] = 7.0  # only one feature: not masked
    layer = Masking(mask_value=7.0)
    y = layer(x)
    mask = y._keras_mask
    assert mask.shape == (B, T) and mask.sum() == B * T - 1 and not mask[0, 2]
    assert np.all(y[0, 2] == 0)  # masked steps are zeroed in the output, as Keras
    np.testing.assert_array_equal(np.delete(y[0], 2, 0), np.delete(x[0], 2, 0))
    assert Masking().get_config()["mask_value"] == 0.0


# ---------------------------------------------------------------------------------------
# initializers
# ---------------------------------------------------------------------------------------


def test_glorot_uniform_and_orthogonal_defaults():
    layer = LSTM(16, seed=3)
    layer.build((None, None, 8))
    kernel, recurrent, bias = layer.get_weights()
    limit = np.sqrt(6 / (8 + 64))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    # orthogonal (16, 64): orthonormal rows
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(16), atol=1e-5)
    # unit_forget_bias: the forget gate (second quarter) starts at one, the rest at zero
    np.testing.assert_array_equal(bias, np.r_[np.zeros(16), np.ones(16), np.zeros(32)])
    no_forget = LSTM(16, unit_forget_bias=False)
    no_forget.build((None, None, 8))
    assert np.all(no_forget.get_weights()[2] == 0)


def test_seed_makes_weights_reproducible():
    def weights(**kwargs):
        layer = GRU(6, **kwargs)
        layer.build((None, None, 4))
        return layer.get_weights()

    for a, b in zip(weights(seed=1), weights(seed=1)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights(seed=1)[0], weights(seed=2)[0])
    assert not np.array_equal(weights()[0], weights()[0])


# Every initializer drawn on a (200, 300) kernel: fan_in 200, fan_out 300, fan_avg 250.
# Expected distributions from Keras's definitions: ("uniform", low, high), ("normal", mean,
# stddev, bound or None) with ``bound`` the truncation half-width (2 * the pre-truncation
# stddev; the drawn values' stddev is then 0.87962566103423978 of it), or ("exact", array).
# With 60000 values the sample stddev is within 2% (about 7 standard errors), the sample
# extremes of a uniform within 1% of its bounds, and a truncated normal's extremes within
# 1% of its bound, with overwhelming probability.
_TRUNC = 0.87962566103423978  # stddev of a unit normal truncated to (-2, 2)
_SHAPE = (200, 300)
_FAN_IN, _FAN_OUT, _FAN_AVG = 200, 300, 250


def _vs_uniform(scale, n):
    limit = np.sqrt(3 * scale / n)
    return ("uniform", -limit, limit)


def _vs_truncated(scale, n):
    stddev = np.sqrt(scale / n)  # the drawn values' stddev
    return ("normal", 0.0, stddev, 2 * stddev / _TRUNC)


INITIALIZER_CASES = {
    "zeros": ("zeros", ("exact", np.zeros(_SHAPE))),
    "ones": ("ones", ("exact", np.ones(_SHAPE))),
    "constant": (initializers.Constant(0.25), ("exact", np.full(_SHAPE, 0.25))),
    "callable": (lambda shape, dtype=None: np.full(shape, 3.0), ("exact", np.full(_SHAPE, 3.0))),
    "identity": ("identity", ("exact", np.eye(*_SHAPE))),
    "identity_gain": (initializers.Identity(gain=0.5), ("exact", 0.5 * np.eye(*_SHAPE))),
    "glorot_uniform": ("glorot_uniform", _vs_uniform(1.0, _FAN_AVG)),
    "GlorotUniform": ("GlorotUniform", _vs_uniform(1.0, _FAN_AVG)),
    "glorot_normal": ("glorot_normal", _vs_truncated(1.0, _FAN_AVG)),
    "he_uniform": ("he_uniform", _vs_uniform(2.0, _FAN_IN)),
    "he_normal": ("he_normal", _vs_truncated(2.0, _FAN_IN)),
    "lecun_uniform": ("lecun_uniform", _vs_uniform(1.0, _FAN_IN)),
    "lecun_normal": ("lecun_normal", _vs_truncated(1.0, _FAN_IN)),
    "variance_scaling_default": ("variance_scaling", _vs_truncated(1.0, _FAN_IN)),
    "variance_scaling_fan_out_uniform": (
        {
            "class_name": "VarianceScaling",
            "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
        },
        _vs_uniform(2.0, _FAN_OUT),
    ),
    "variance_scaling_fan_avg_untruncated": (
        initializers.VarianceScaling(0.5, "fan_avg", "untruncated_normal", seed=2),
        ("normal", 0.0, np.sqrt(0.5 / _FAN_AVG), None),
    ),
    "variance_scaling_normal_is_truncated": (
        initializers.VarianceScaling(3.0, "fan_out", "normal"),
        _vs_truncated(3.0, _FAN_OUT),
    ),
    "random_normal": ("random_normal", ("normal", 0.0, 0.05, None)),
    "random_normal_mean": (
        initializers.RandomNormal(mean=1.0, stddev=0.01, seed=4),
        ("normal", 1.0, 0.01, None),
    ),
    "random_uniform": ("random_uniform", ("uniform", -0.05, 0.05)),
    "random_uniform_bounds": (initializers.RandomUniform(0.5, 2.0), ("uniform", 0.5, 2.0)),
    "truncated_normal": ("truncated_normal", ("normal", 0.0, 0.05 * _TRUNC, 0.1)),
    "truncated_normal_mean": (
        initializers.TruncatedNormal(mean=-1.0, stddev=0.2),
        ("normal", -1.0, 0.2 * _TRUNC, 0.4),
    ),
}


def _check_distribution(w, expected):
    kind = expected[0]
    n = w.size
    slack = 1e-6  # float32 rounding of a value just inside a bound
    if kind == "exact":
        np.testing.assert_array_equal(w, expected[1])
        return
    if kind == "uniform":
        low, high = expected[1], expected[2]
        mean, stddev = (low + high) / 2, (high - low) / np.sqrt(12)
        width = high - low
        assert w.min() >= low - slack * abs(low) and w.max() <= high + slack * abs(high)
        assert w.min() < low + 0.01 * width and w.max() > high - 0.01 * width, (
            w.min(),
            w.max(),
            (low, high),
        )
    else:
        _, mean, stddev, bound = expected
        if bound is not None:
            dev = np.abs(w - mean)
            assert dev.max() <= bound * (1 + slack), (dev.max(), bound)
            assert w.max() - mean > 0.99 * bound and mean - w.min() > 0.99 * bound
        else:  # untruncated: values well past two standard deviations occur
            assert np.abs(w - mean).max() > 3.5 * stddev
    assert abs(w.mean() - mean) < 6 * stddev / np.sqrt(n), (w.mean(), mean)
    assert abs(w.std() - stddev) < 0.02 * stddev, (w.std(), stddev)


@pytest.mark.parametrize("case", list(INITIALIZER_CASES))
def test_initializers(case):
    name, expected = INITIALIZER_CASES[case]
    init = initializers.get(name)
    w = initializers.materialize(init, _SHAPE, np.dtype(np.float32), np.random.default_rng(0))
    assert w.dtype == np.float32 and w.shape == _SHAPE and w.flags.c_contiguous
    _check_distribution(w.astype(np.float64), expected)


@pytest.mark.parametrize("gain", [1.0, 0.7])
@pytest.mark.parametrize("shape", [(200, 300), (300, 200), (3, 40, 50)])
def test_orthogonal(shape, gain):
    """Orthonormal rows or columns (whichever are fewer) of the (prod(shape[:-1]), shape[-1])
    matrix, times ``gain``."""
    w = initializers.materialize(
        initializers.Orthogonal(gain=gain), shape, np.dtype(np.float64), np.random.default_rng(1)
    )
    assert w.shape == shape
    m = w.reshape(-1, shape[-1]) / gain
    small = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(small, np.eye(len(small)), atol=1e-12)
    # the default: get("orthogonal") has gain 1
    w1 = initializers.materialize(
        initializers.get("orthogonal"), (20, 30), np.dtype(np.float64), np.random.default_rng(1)
    )
    np.testing.assert_allclose(w1 @ w1.T, np.eye(20), atol=1e-12)


@pytest.mark.parametrize(
    "shape,fan_in,fan_out",
    [((7,), 7, 7), ((4, 9), 4, 9), ((3, 40, 50), 120, 150), ((2, 3, 40, 50), 240, 300)],
)
def test_variance_scaling_fans(shape, fan_in, fan_out):
    """Keras's fans: the receptive field (all but the last two dims) times the last two."""
    rng = np.random.default_rng(3)
    for mode, n in (("fan_in", fan_in), ("fan_out", fan_out), ("fan_avg", (fan_in + fan_out) / 2)):
        init = initializers.VarianceScaling(2.0, mode, "uniform")
        w = initializers.materialize(init, shape, np.dtype(np.float64), rng)
        limit = np.sqrt(6.0 / n)
        assert np.abs(w).max() <= limit
        if w.size >= 1000:
            assert np.abs(w).max() > 0.99 * limit


def test_initializer_instances_with_their_own_seed_and_config_round_trip():
    a = initializers.GlorotNormal(seed=5)
    layer1, layer2 = Dense(4, kernel_initializer=a), Dense(4, kernel_initializer=a)
    layer1.build((None, 3)), layer2.build((None, 3))
    np.testing.assert_array_equal(layer1.get_weights()[0], layer2.get_weights()[0])
    config = Dense.from_config(layer1.get_config()).get_config()
    assert config["kernel_initializer"] == {"class_name": "GlorotNormal", "config": {"seed": 5}}
    with pytest.raises(ValueError, match="unknown initializer"):
        initializers.get("nope")
