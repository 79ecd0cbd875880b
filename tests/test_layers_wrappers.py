"""Bidirectional, TimeDistributed, Dense, Activation, Softmax, Dropout, Masking and the
initializers, against the NumPy reference and Keras's rules."""

from __future__ import annotations

import numpy as np
import pytest

from rnncore import reference
from rnncore.layers import (
    GRU,
    LSTM,
    Activation,
    Bidirectional,
    Dense,
    Dropout,
    Masking,
    SimpleRNN,
    Softmax,
    TimeDistributed,
    UnsupportedArgumentError,
    initializers,
)

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


def seeded(seed=0):
    return np.random.default_rng(seed)


def randomize(layer, rng):
    layer.set_weights(
        [
            rng.normal(0, 1 / np.sqrt(w.shape[0]) if w.ndim == 2 else 0.3, w.shape)
            for w in layer.get_weights()
        ]
    )


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


@pytest.mark.parametrize(
    "name,check",
    [
        ("zeros", lambda w: np.all(w == 0)),
        ("ones", lambda w: np.all(w == 1)),
        ("he_normal", lambda w: abs(w.std() - np.sqrt(2 / 200)) < 0.1 * np.sqrt(2 / 200)),
        ("he_uniform", lambda w: np.abs(w).max() <= np.sqrt(6 / 200)),
        ("lecun_normal", lambda w: np.abs(w).max() <= 2 * np.sqrt(1 / 200) / 0.8796 + 1e-6),
        ("lecun_uniform", lambda w: np.abs(w).max() <= np.sqrt(3 / 200)),
        ("glorot_normal", lambda w: abs(w.std() - np.sqrt(2 / 500)) < 0.1 * np.sqrt(2 / 500)),
        ("random_normal", lambda w: abs(w.std() - 0.05) < 0.005),
        ("random_uniform", lambda w: np.abs(w).max() <= 0.05),
        ("truncated_normal", lambda w: np.abs(w).max() <= 0.1),
        ("orthogonal", lambda w: np.allclose(w @ w.T, np.eye(200), atol=1e-5)),
        ("GlorotUniform", lambda w: np.abs(w).max() <= np.sqrt(6 / 500)),
        (
            {
                "class_name": "VarianceScaling",
                "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
            },
            lambda w: np.abs(w).max() <= np.sqrt(6 / 300),
        ),
        (initializers.Constant(0.25), lambda w: np.all(w == 0.25)),
        (
            initializers.RandomNormal(mean=1.0, stddev=0.01, seed=4),
            lambda w: abs(w.mean() - 1) < 0.01,
        ),
        (lambda shape, dtype=None: np.full(shape, 3.0), lambda w: np.all(w == 3)),
    ],
)
def test_initializers(name, check):
    init = initializers.get(name)
    w = initializers.materialize(init, (200, 300), np.dtype(np.float32), np.random.default_rng(0))
    assert w.dtype == np.float32 and w.shape == (200, 300) and w.flags.c_contiguous
    assert check(w.astype(np.float64))


def test_initializer_instances_with_their_own_seed_and_config_round_trip():
    a = initializers.GlorotNormal(seed=5)
    layer1, layer2 = Dense(4, kernel_initializer=a), Dense(4, kernel_initializer=a)
    layer1.build((None, 3)), layer2.build((None, 3))
    np.testing.assert_array_equal(layer1.get_weights()[0], layer2.get_weights()[0])
    config = Dense.from_config(layer1.get_config()).get_config()
    assert config["kernel_initializer"] == {"class_name": "GlorotNormal", "config": {"seed": 5}}
    with pytest.raises(ValueError, match="unknown initializer"):
        initializers.get("nope")
