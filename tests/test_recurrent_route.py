"""The recurrent layers' one route to the core: every call runs through the layer's core
stream, whose carried states are the stateful layer's only copy (go_backwards included),
and which follows the layer's weights and options.

test_layers.py checks every option against the reference; this file checks the route.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import rnncore
from rnncore import functional, reference
from rnncore.layers import GRU, LSTM, Dense, SimpleRNN

B, T, D, H = 3, 6, 4, 5

# variant -> (layer class, constructor kwargs, functional, functional/reference kwargs)
VARIANTS = {
    "simple_rnn": (SimpleRNN, {}, "simple_rnn", {}),
    "lstm": (LSTM, {}, "lstm", {}),
    "gru_reset_after": (GRU, {}, "gru", {"reset_after": True}),
    "gru_reset_before": (GRU, {"reset_after": False}, "gru", {"reset_after": False}),
}
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def make(variant, dtype="float32", seed=0, **kwargs):
    cls, extra, _, _ = VARIANTS[variant]
    layer = cls(H, dtype=dtype, **{**extra, **kwargs})
    layer.build((kwargs.get("stateful") and B or None, None, D))
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [
            rng.normal(0, 1 / np.sqrt(w.shape[0]) if w.ndim == 2 else 0.3, w.shape)
            for w in layer.get_weights()
        ]
    )
    return layer


def functional_call(variant, layer, x, **kwargs):
    _, _, name, options = VARIANTS[variant]
    return getattr(functional, name)(
        x, *layer.get_weights(), activation=layer.activation, **options, **kwargs
    )


def reference_call(variant, layer, x, **kwargs):
    _, _, name, options = VARIANTS[variant]
    w = [np.asarray(a, np.float64) for a in layer.get_weights()]
    return getattr(reference, name)(np.asarray(x, np.float64), *w, **options, **kwargs)


def never(*args, **kwargs):
    raise AssertionError("the layer left its core stream")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_inference_call_runs_through_the_stream(variant):
    """Plain, converted, masked, initial-state and go_backwards calls alike: the layer's
    functional (its training forward) is never used, and each result is the functional
    API's, bit for bit."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = rng.random((B, T)) > 0.3
    init = [rng.standard_normal((B, H)).astype(np.float32) for _ in make(variant).state_size]
    for go_backwards in (False, True):
        layer = make(variant, return_sequences=True, return_state=True, go_backwards=go_backwards)
        layer._functional = never
        calls = [
            ({}, layer(x)),
            ({}, layer(x.astype(np.float64))),  # converted to float32 first
            ({"mask": mask}, layer(x, mask=mask)),
            ({"initial_state": init}, layer(x, initial_state=init)),
        ]
        for kwargs, got in calls:
            want = functional_call(
                variant, layer, x, go_backwards=go_backwards, return_sequences=True, **kwargs
            )
            assert len(got) == len(want)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stateful_go_backwards_carries_its_states_in_the_stream(variant):
    """go_backwards no longer keeps a stateful layer off the core stream: its states live
    there (the layer keeps no copy), each call runs its chunk backwards from them."""
    layer = make(variant, stateful=True, go_backwards=True, return_sequences=True)
    rng = np.random.default_rng(2)
    chunks = [rng.standard_normal((B, t, D)).astype(np.float32) for t in (4, 1, 3)]
    states = None
    for x in chunks:
        y = layer(x)
        want, *states = reference_call(
            variant, layer, x, initial_state=states, go_backwards=True, return_sequences=True
        )
        np.testing.assert_allclose(y, want, **TOL[np.float32])
    assert layer._stream.batch_size == B and layer._stream.go_backwards
    assert not hasattr(layer, "_states")
    for a, e in zip(layer.states, states):
        np.testing.assert_allclose(a, e, **TOL[np.float32])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_changing_go_backwards_carries_the_states_over(variant):
    layer = make(variant, stateful=True, return_state=True)
    x = np.random.default_rng(3).standard_normal((B, 2, D)).astype(np.float32)
    out = layer(x)
    for a, b in zip(out[1:], layer.states):
        np.testing.assert_array_equal(a, b)
    before = layer.states
    layer.go_backwards = True
    out = layer(x)
    want = reference_call(variant, layer, x, initial_state=before, go_backwards=True)
    for a, b in zip(out, want):
        np.testing.assert_allclose(a, b, **TOL[np.float32])
    assert layer._stream.go_backwards


def test_changing_an_activation_carries_the_states_over():
    layer = make("lstm", stateful=True)
    x = np.random.default_rng(4).standard_normal((B, 3, D)).astype(np.float32)
    layer(x)
    before = layer.states
    layer.activation = "relu"
    layer.recurrent_activation = "hard_sigmoid"
    y = layer(x)
    want = reference.lstm(
        x.astype(np.float64),
        *[np.asarray(w, np.float64) for w in layer.get_weights()],
        activation="relu",
        recurrent_activation="hard_sigmoid",
        initial_state=before,
    )[0]
    np.testing.assert_allclose(y, want, **TOL[np.float32])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_stateful_stream_follows_set_weights(variant):
    """The stream packs a stateful layer's weights once; set_weights makes it read them
    again (they are updated in place)."""
    layer = make(variant, stateful=True)
    x = np.random.default_rng(5).standard_normal((B, T, D)).astype(np.float32)
    layer(x), layer(x)
    new = [w * 0.5 for w in layer.get_weights()]
    layer.set_weights(new)
    layer.reset_states()
    np.testing.assert_array_equal(layer(x), functional_call(variant, layer, x)[0])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_stateful_stream_follows_variable_assign(variant):
    """Variable.assign counts an update (Variable.version); the stream packs again."""
    layer = make(variant, stateful=True)
    x = np.random.default_rng(5).standard_normal((B, T, D)).astype(np.float32)
    layer(x)
    layer.recurrent_kernel.assign(layer.recurrent_kernel.numpy() * -0.5)
    layer.reset_states()
    np.testing.assert_array_equal(layer(x), functional_call(variant, layer, x)[0])


def test_a_stateful_stream_follows_an_optimizer_step():
    """An optimizer writes in place and counts the update: the next call uses it."""
    layer = LSTM(H, stateful=True, seed=2)
    x = np.random.default_rng(7).standard_normal((B, T, D)).astype(np.float32)
    layer(x)
    opt = rnncore.optimizers.SGD(0.5)
    opt.apply_gradients([(np.ones(v.shape), v) for v in layer.trainable_weights])
    layer.reset_states()
    np.testing.assert_array_equal(layer(x), functional.lstm(x, *layer.get_weights())[0])


def test_a_stateful_stream_follows_training():
    """fit updates the weights in place after each backward pass; the next inference call
    uses the updated weights."""
    model = rnncore.Sequential(
        [rnncore.Input((T, D), batch_size=B), LSTM(H, stateful=True, seed=1), Dense(1)]
    )
    x = np.random.default_rng(6).standard_normal((B, T, D)).astype(np.float32)
    model.predict(x, batch_size=B)  # the stream exists, packed with the first weights
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.ones((B, 1), np.float32), epochs=2, batch_size=B, verbose=0)
    lstm = model.layers[0]
    lstm.reset_states()
    np.testing.assert_array_equal(lstm(x), functional.lstm(x, *lstm.get_weights())[0])


@pytest.mark.parametrize("go_backwards", [False, True])
def test_pickled_stateful_layer_goes_on_from_its_states(go_backwards):
    layer = make("gru_reset_after", stateful=True, go_backwards=go_backwards)
    rng = np.random.default_rng(7)
    x1, x2 = (rng.standard_normal((B, 2, D)).astype(np.float32) for _ in range(2))
    layer(x1)
    clone = pickle.loads(pickle.dumps(layer))
    for a, b in zip(clone.states, layer.states):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clone(x2), layer(x2))
    assert clone._stream is not layer._stream


def test_reset_states_sets_the_stream_states():
    layer = make("lstm", stateful=True, go_backwards=True)
    rng = np.random.default_rng(8)
    h, c = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    layer.reset_states([h, c])
    x = rng.standard_normal((B, 3, D)).astype(np.float32)
    want = reference_call("lstm", layer, x, initial_state=[h, c], go_backwards=True)[0]
    np.testing.assert_allclose(layer(x), want, **TOL[np.float32])
    layer.reset_states()
    for s in layer.states:
        np.testing.assert_array_equal(s, 0)


def test_a_stateful_layer_built_without_batch_size_takes_the_first_call_s():
    layer = LSTM(H, stateful=True, go_backwards=True)
    layer.build((None, None, D))
    assert layer.states == []
    x = np.random.default_rng(9).standard_normal((2, 3, D)).astype(np.float32)
    layer(x)
    assert layer._stream.batch_size == 2 and len(layer.states) == 2
    with pytest.raises(ValueError, match="stateful with batch size 2; got input batch size 3"):
        layer(np.zeros((3, 3, D), np.float32))
