"""A causal Conv1D in a stream pool: each stream carries the conv's last ``(kernel_size - 1) *
dilation_rate`` inputs as state, so its outputs, step by step or chunk by chunk, equal
``predict`` on the whole sequence (bit for bit) and real Keras on it (float32 rounding);
a stateful model's own calls keep Keras's per-chunk semantics."""

from __future__ import annotations

import os
import pickle

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore.errors import UnsupportedModelError  # noqa: E402
from rnncore.layers import (  # noqa: E402
    GRU,
    LSTM,
    Add,
    BatchNormalization,
    Conv1D,
    Dense,
    Input,
    LayerNormalization,
    MaxPooling1D,
)

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
KERAS_ARRAY = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
D = 8
WINDOW = (5 - 1) * 2  # kernel 5, dilation 2: the steps each stream carries


def _forecaster(stateful=False, batch=None, conv=True):
    """The Conv1D forecaster of issue 24 without its pooling (which halves the time rate)."""
    layers = [Input((None, D), batch_size=batch)]
    if conv:
        layers.append(Conv1D(16, 5, padding="causal", dilation_rate=2, activation="relu"))
    layers += [LSTM(32, return_sequences=True, stateful=stateful), LayerNormalization(), Dense(1)]
    return rnncore.Sequential(layers)


def _weights(model, rng):
    model.set_weights([rng.standard_normal(w.shape) * 0.3 for w in model.get_weights()])
    return model


def _feed(pool, ids, rng, rounds, lengths=(0, 1, 2, 3, 7, 11)):
    """Steps and chunks of mixed lengths (0: one step without a time axis) to random
    subsets of ``ids``; ``(inputs, outputs)`` per id, as ``(T, D)`` / ``(T, 1)`` pieces."""
    fed = {s: [] for s in ids}
    got = {s: [] for s in ids}
    for _ in range(rounds):
        chosen = [s for s in ids if rng.random() < 0.8] or ids[:1]
        step = {}
        for s in chosen:
            n = int(rng.choice(lengths))
            x = rng.standard_normal((max(n, 1), D)).astype(np.float32)
            step[s] = x[0] if n == 0 else x
            fed[s].append(x)
        out = pool.step(step)
        assert list(out) == chosen
        for s in chosen:
            y = out[s]
            assert y.shape == ((1,) if step[s].ndim == 1 else (len(step[s]), 1))
            got[s].append(y.reshape(-1, 1))
    return {s: np.concatenate(v) for s, v in fed.items()}, {
        s: np.concatenate(v) for s, v in got.items()
    }


def test_streams_equal_predict_on_the_whole_sequence(rng):
    model = _weights(_forecaster(), rng)
    pool = model.stream_pool(6)
    ids = [pool.open() for _ in range(5)]
    fed, got = _feed(pool, ids, rng, rounds=12)
    assert sum(len(fed[s]) > WINDOW for s in ids) >= 3  # windows that rolled over
    for s in ids:
        np.testing.assert_array_equal(got[s], model.predict(fed[s][None])[0])


def test_stacked_steps_and_single_stream(rng):
    """``step(ids, stacked)`` one step at a time, and a pool of one stream: the way to step
    the model statefully with the window carried."""
    model = _weights(_forecaster(), rng)
    x = rng.standard_normal((3, 20, D)).astype(np.float32)
    pool = model.stream_pool(3)
    ids = [pool.open() for _ in range(3)]
    steps = [pool.step(ids, x[:, t]) for t in range(20)]
    want = model.predict(x)
    for k, s in enumerate(ids):
        np.testing.assert_array_equal(np.stack([o[s] for o in steps]), want[k])
    one = model.stream_pool(1)
    s = one.open()
    outs = [one.step({s: x[1, a:b]})[s] for a, b in ((0, 1), (1, 9), (9, 10), (10, 20))]
    np.testing.assert_array_equal(np.concatenate(outs), want[1])


@KERAS_ARRAY
def test_matches_real_keras(rng):
    keras = pytest.importorskip("keras")
    model = _weights(_forecaster(), rng)
    twin = keras.Sequential(
        [
            keras.Input((None, D)),
            keras.layers.Conv1D(16, 5, padding="causal", dilation_rate=2, activation="relu"),
            keras.layers.LSTM(32, return_sequences=True),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(1),
        ]
    )
    twin.set_weights(model.get_weights())
    pool = model.stream_pool(4)
    ids = [pool.open() for _ in range(4)]
    fed, got = _feed(pool, ids, rng, rounds=6)
    for s in ids:
        want = np.asarray(twin.predict(fed[s][None], verbose=0))[0]
        np.testing.assert_allclose(got[s], want, rtol=1e-5, atol=1e-5)


def test_window_state_round_trips_across_a_pickle(rng):
    model = _weights(_forecaster(), rng)
    pool = model.stream_pool(2)
    a = pool.open()
    x = rng.standard_normal((30, D)).astype(np.float32)
    pool.step({a: x[:3]})
    state = pool.get_state(a)
    assert list(state["states"]) == ["0:Conv1D", "1:LSTM"]
    (window,) = state["states"]["0:Conv1D"]
    # oldest first: the causal zero padding, then the 3 steps seen
    assert window.shape == (WINDOW, D) and window.dtype == np.float32
    np.testing.assert_array_equal(window[: WINDOW - 3], 0)
    np.testing.assert_array_equal(window[WINDOW - 3 :], x[:3])
    pool.step({a: x[3:17]})
    saved = pickle.loads(pickle.dumps(pool.get_state(a)))
    np.testing.assert_array_equal(saved["states"]["0:Conv1D"][0], x[17 - WINDOW : 17])
    rest = pool.step({a: x[17:]})[a]
    # the same model built again (other generated names), in another pool: it continues
    again = _forecaster()
    again.set_weights(model.get_weights())
    other = again.stream_pool(3)
    b = other.open()
    other.set_state(b, saved)
    np.testing.assert_array_equal(other.step({b: x[17:]})[b], rest)
    np.testing.assert_array_equal(rest, model.predict(x[None])[0, 17:])


def test_reset_and_close_zero_the_window(rng):
    model = _weights(_forecaster(), rng)
    pool = model.stream_pool(1)
    x = rng.standard_normal((2, 12, D)).astype(np.float32)
    s = pool.open()
    pool.step({s: x[0]})
    pool.reset(s)
    np.testing.assert_array_equal(pool.step({s: x[1]})[s], model.predict(x[1:])[0])
    pool.close(s)
    t = pool.open()  # the same slot, at zeros again
    np.testing.assert_array_equal(pool.get_state(t)["states"]["0:Conv1D"][0], 0)
    np.testing.assert_array_equal(pool.step({t: x[0]})[t], model.predict(x[:1])[0])


def test_set_state_checks_the_window(rng):
    pool = _weights(_forecaster(), rng).stream_pool(1)
    s = pool.open()
    state = pool.get_state(s)
    state["states"]["0:Conv1D"] = [np.zeros((WINDOW + 1, D), np.float32)]
    with pytest.raises(ValueError, match=r"'window' of the layer at '0:Conv1D': expected shape "
                       r"\(8, 8\), got \(9, 8\)"):  # fmt: skip
        pool.set_state(s, state)
    plain = _weights(_forecaster(conv=False), rng).stream_pool(1)
    with pytest.raises(ValueError, match="position 0 is Conv1D in the state, LSTM in the model"):
        plain.set_state(plain.open(), pool.get_state(s))


def test_functional_merge_groups_and_batch_norm(rng):
    """A causal Conv1D beside a Dense, merged, into a GRU and an inference BatchNormalization
    (per timestep ops): dilation, groups, no bias."""
    x = Input((None, D))
    c = Conv1D(8, 3, padding="causal", dilation_rate=3, groups=2, activation="tanh")(x)
    c = Conv1D(8, 2, padding="causal", use_bias=False)(c)
    y = GRU(6, return_sequences=True)(Add()([c, Dense(8)(x)]))
    model = _weights(rnncore.Model(x, Dense(2)(BatchNormalization()(y))), rng)
    bn = model.layers[-2]
    bn.moving_variance.assign(np.abs(bn.moving_variance.value) + 0.5)
    pool = model.stream_pool(3)
    ids = [pool.open() for _ in range(3)]
    fed, got = {s: [] for s in ids}, {s: [] for s in ids}
    for n in (1, 4, 2, 9, 1, 5):
        xs = rng.standard_normal((3, n, D)).astype(np.float32)
        out = pool.step(ids, xs)
        for k, s in enumerate(ids):
            fed[s].append(xs[k])
            got[s].append(out[s])
    states = pool.get_state(ids[0])["states"]
    assert [(k, [a.shape for a in v]) for k, v in states.items()] == [
        ("0:Conv1D", [(6, D)]),
        ("1:Conv1D", [(1, 8)]),
        ("4:GRU", [(6,)]),
    ]
    for s in ids:
        want = model.predict(np.concatenate(fed[s])[None])[0]
        np.testing.assert_array_equal(np.concatenate(got[s]), want)


@KERAS_ARRAY
def test_stateful_model_keeps_keras_per_chunk_semantics(rng):
    """A stateful model's calls convolve each chunk alone (Keras 3 carries no window), as real
    Keras does; the pool is the way to carry it."""
    keras = pytest.importorskip("keras")
    model = _weights(_forecaster(), rng)
    ours = _forecaster(stateful=True, batch=1)
    ours.set_weights(model.get_weights())
    twin = keras.Sequential(
        [
            keras.Input((None, D), batch_size=1),
            keras.layers.Conv1D(16, 5, padding="causal", dilation_rate=2, activation="relu"),
            keras.layers.LSTM(32, return_sequences=True, stateful=True),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(1),
        ]
    )
    twin.set_weights(model.get_weights())
    x = rng.standard_normal((1, 16, D)).astype(np.float32)
    chunks = [x[:, :10], x[:, 10:]]
    mine = [ours.predict_on_batch(c) for c in chunks]
    theirs = [np.asarray(twin.predict_on_batch(c)) for c in chunks]
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(m, t, rtol=1e-5, atol=1e-5)
    pool = model.stream_pool(1)
    s = pool.open()
    streamed = [pool.step({s: c[0]})[s] for c in chunks]
    whole = model.predict(x)[0]
    np.testing.assert_array_equal(np.concatenate(streamed), whole)
    # the second chunk's first steps differ: the stateful model's conv restarts at zeros
    assert not np.allclose(mine[1][0, :WINDOW], whole[10 : 10 + WINDOW], atol=1e-4)


@pytest.mark.parametrize(
    ("layer", "why"),
    [
        (lambda: Conv1D(4, 3, padding="same"), r"padding='same': its outputs need later steps"),
        (lambda: Conv1D(4, 3), r"padding='valid': its outputs need later steps"),
        (lambda: Conv1D(4, 3, padding="causal", strides=2), r"strides=2: one output per 2"),
        (
            lambda: Conv1D(4, 3, padding="causal", data_format="channels_first"),
            r"channels_first",
        ),
        (lambda: MaxPooling1D(2), r"MaxPooling1D\).*pools, reshapes"),
    ],
)
def test_refusals_name_the_layer_and_why(layer, why):
    built = layer()
    shape = (D, None) if getattr(built, "data_format", "") == "channels_first" else (None, D)
    model = rnncore.Sequential([Input(shape), built])
    with pytest.raises(UnsupportedModelError, match=rf"layer {built.name!r} .*{why}"):
        model.stream_pool(2)


def test_the_issue_forecaster_with_pooling_is_refused():
    model = rnncore.Sequential(
        [
            Input((None, D)),
            Conv1D(32, 5, padding="causal", activation="relu"),
            MaxPooling1D(2),
            LSTM(64),
            Dense(1),
        ]
    )
    with pytest.raises(UnsupportedModelError, match=r"\(MaxPooling1D\) is not a per-timestep"):
        model.stream_pool(4)


def test_new_weights_reach_the_streams(rng):
    model = _weights(_forecaster(), rng)
    pool = model.stream_pool(2)
    x = rng.standard_normal((1, 9, D)).astype(np.float32)
    before = pool.step({pool.open(): x[0]})
    conv = model.layers[0]
    conv.kernel.assign(conv.kernel.value * 2)
    s = pool.open()
    after = pool.step({s: x[0]})[s]
    np.testing.assert_array_equal(after, model.predict(x)[0])
    assert not np.allclose(after, next(iter(before.values())))


def test_layer_norm_alone_streams(rng):
    """LayerNormalization over features between two recurrent layers: a per-timestep op."""
    model = _weights(
        rnncore.Sequential(
            [Input((None, D)), LSTM(6, return_sequences=True), LayerNormalization(), LSTM(5)]
        ),
        rng,
    )
    pool = model.stream_pool(2)
    s = pool.open()
    x = rng.standard_normal((7, D)).astype(np.float32)
    pool.step({s: x[:3]})
    np.testing.assert_array_equal(pool.step({s: x[3:]})[s], model.predict(x[None])[0])
