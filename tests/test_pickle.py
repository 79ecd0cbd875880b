"""Pickling layers and models: weights and config only, exact round trips, states kept."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import rnncore
from rnncore.layers import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Dropout,
    Masking,
    SimpleRNN,
    TimeDistributed,
)


def _models():
    return {
        "lstm_dense": lambda: rnncore.Sequential(
            [rnncore.Input((7, 3)), LSTM(5, seed=1), Dense(2, seed=2)]
        ),
        "stacked_masked": lambda: rnncore.Sequential(
            [
                rnncore.Input((7, 3)),
                Masking(0.0),
                GRU(4, return_sequences=True, seed=3),
                Dropout(0.3),
                SimpleRNN(3, return_sequences=True, seed=4),
                TimeDistributed(Dense(2, activation="softmax", seed=5)),
            ]
        ),
        "bidirectional": lambda: rnncore.Sequential(
            [rnncore.Input((7, 3)), Bidirectional(LSTM(4, seed=6), merge_mode="ave"), Dense(1)]
        ),
        "float64_gru_v1": lambda: rnncore.Sequential(
            [
                rnncore.Input((7, 3), dtype="float64"),
                GRU(4, reset_after=False, dtype="float64", seed=7),
            ]
        ),
    }


def _x(rng, dtype=np.float32):
    x = rng.standard_normal((4, 7, 3)).astype(dtype)
    x[1, 5:] = 0.0  # padding for the masked model
    return x


@pytest.mark.parametrize("kind", list(_models()))
def test_model_round_trip_is_bit_identical(kind, rng):
    model = _models()[kind]()
    x = _x(rng, np.dtype(model.dtype))
    before = model.predict(x)  # the layers now hold their cached core calls
    blob = pickle.dumps(model)
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.predict(x), before)
    np.testing.assert_array_equal(model.predict(x), before)  # the original still works
    for a, b in zip(model.get_weights(), clone.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("kind", list(_models()))
def test_pickle_is_cheap_and_holds_no_core_objects(kind, rng):
    model = _models()[kind]()
    model.predict(_x(rng, np.dtype(model.dtype)))
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    weight_bytes = sum(w.nbytes for w in model.get_weights())
    assert len(blob) < weight_bytes + 12_000  # the weights plus a little config
    assert b"rnncore._core" not in blob and b"_Stream" not in blob
    assert b"<locals>" not in blob


@pytest.mark.parametrize("cell", [SimpleRNN, LSTM, GRU])
def test_stateful_layer_keeps_its_states(cell, rng):
    layer = cell(4, stateful=True, seed=0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    layer(x)  # the states now live in the core's stream
    states = [s.copy() for s in layer.states]
    clone = pickle.loads(pickle.dumps(layer))
    for a, b in zip(clone.states, states):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clone(x), layer(x))  # both continue from the same states
    for a, b in zip(clone.states, layer.states):
        np.testing.assert_array_equal(a, b)


def test_unbuilt_and_stateful_model(rng):
    unbuilt = pickle.loads(pickle.dumps(rnncore.Sequential([LSTM(3), Dense(1)])))
    assert not unbuilt.built
    model = rnncore.Sequential(
        [rnncore.Input((None, 3), batch_size=2), LSTM(3, stateful=True, seed=1), Dense(1)]
    )
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    model.predict(x, batch_size=2)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(x, batch_size=2), model.predict(x, batch_size=2))


def test_trained_model_pickles_without_its_training_state(rng):
    model = rnncore.Sequential([rnncore.Input((7, 3)), LSTM(4, seed=1, dropout=0.2), Dense(1)])
    model.compile("adam", "mse")
    x = _x(rng)
    model.fit(x, np.zeros((4, 1)), epochs=2, verbose=0)
    model.layers[0].forward_train(x)  # a live core workspace in the layer's training cache
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    assert not clone.compiled and clone.optimizer is None  # compile again to train further
    clone.compile("sgd", "mse")
    clone.fit(x, np.zeros((4, 1)), epochs=1, verbose=0)
