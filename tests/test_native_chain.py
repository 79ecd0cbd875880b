"""A Sequential's runs of core-supported layers as one native call (issue 16, the model plan).

The chain must give the layer-by-layer results bit for bit, fall back for what it does not
cover, follow weight updates (set_weights, fit), carry stateful layers' states, refuse bad
input like the layers do, and be safe for concurrent calls.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.models import plan
from rnncore.models.native_chain import Segment


def layer_by_layer(model, x, mask=None):
    for layer in model.layers:
        x, mask = layer._call(x, mask, False)
    return x


def plan_ops(model):
    """The ops of the model's current plan (compiled if stale)."""
    return plan.current(model).ops


def segments(model):
    return [op for op in plan_ops(model) if isinstance(op, Segment)]


def padded(rng, shape, dtype=np.float32):
    x = rng.standard_normal(shape).astype(dtype)
    x[1, -2:] = 0  # right padding
    x[2, :2] = 0  # left padding
    x[3, 3] = 0  # a hole
    return x


MODELS = {
    "masking_lstm_gru_dense": lambda dt: [
        L.Masking(0.0, dtype=dt),
        L.LSTM(6, return_sequences=True, dtype=dt),
        L.Dropout(0.3, dtype=dt),
        L.GRU(5, return_sequences=True, go_backwards=True, dtype=dt),
        L.Dense(3, activation="softmax", dtype=dt),
    ],
    "simple_rnn_last_dense": lambda dt: [
        L.Masking(0.0, dtype=dt),
        L.SimpleRNN(7, activation="relu", dtype=dt),
        L.Dense(4, activation="tanh", dtype=dt),
        L.Dense(2, dtype=dt),
    ],
    "gru_v1_time_distributed": lambda dt: [
        L.GRU(6, return_sequences=True, reset_after=False, zero_output_for_mask=False, dtype=dt),
        L.TimeDistributed(L.Dense(3, activation="sigmoid", use_bias=False, dtype=dt), dtype=dt),
        L.GaussianNoise(0.5, dtype=dt),
        L.LSTM(4, go_backwards=True, dtype=dt),
    ],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_bit_identical_to_layer_by_layer(name, dtype, threads):
    rng = np.random.default_rng(0)
    model = rnncore.Sequential([rnncore.Input((8, 5)), *MODELS[name](np.dtype(dtype).name)])
    assert len(segments(model)) == 1 and len(plan_ops(model)) == 1
    x = padded(rng, (6, 8, 5), dtype)
    want = layer_by_layer(model, x)
    for n in (1, 2):
        rnncore.set_num_threads(n)
        np.testing.assert_array_equal(model.predict(x, batch_size=4), np.concatenate(
            [layer_by_layer(model, x[:4]), layer_by_layer(model, x[4:])]))  # fmt: skip
        np.testing.assert_array_equal(model(x), want)
        assert model(x).dtype == dtype


def test_embedding_starts_a_chain():
    """An Embedding (mask_zero) runs in the chain on integer ids; its mask goes on."""
    rng = np.random.default_rng(1)
    model = rnncore.Sequential([
        rnncore.Input((9,), dtype="int32"), L.Embedding(20, 4, mask_zero=True),
        L.LSTM(5, return_sequences=True), L.Dense(3), L.GRU(4)])  # fmt: skip
    assert len(plan_ops(model)) == 1 and len(segments(model)) == 1
    ids = rng.integers(1, 20, (4, 9))
    ids[0, -3:] = 0
    ids[2, :2] = 0
    for a in (ids, ids.astype(np.int32)):
        np.testing.assert_array_equal(model.predict(a), layer_by_layer(model, a))
    for bad in (20, -1):  # the layer's own error, from its own call
        with pytest.raises(ValueError, match=f"token id {bad} at index"):
            model.predict(np.full((2, 9), bad))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul"])
def test_bidirectional_in_the_chain(merge_mode):
    rng = np.random.default_rng(7)
    model = rnncore.Sequential([
        rnncore.Input((8, 5)), L.Masking(0.0),
        L.Bidirectional(L.LSTM(6, return_sequences=True), merge_mode=merge_mode),
        L.Bidirectional(L.GRU(4), merge_mode=merge_mode), L.Dense(2)])  # fmt: skip
    assert len(segments(model)) == 1 and len(plan_ops(model)) == 1
    x = padded(rng, (6, 8, 5))
    np.testing.assert_array_equal(model.predict(x), layer_by_layer(model, x))


def test_text_classifier_runs_as_one_chain():
    """The issue's pattern: Embedding -> Bidirectional(LSTM) -> Dense, one native call."""
    rng = np.random.default_rng(8)
    model = rnncore.Sequential([
        rnncore.Input((30,), dtype="int32"), L.Embedding(100, 16, mask_zero=True),
        L.Bidirectional(L.LSTM(8)), L.Dense(1, activation="sigmoid")])  # fmt: skip
    assert len(plan_ops(model)) == 1
    ids = rng.integers(1, 100, (5, 30))
    ids[1, 20:] = 0
    np.testing.assert_array_equal(model.predict(ids), layer_by_layer(model, ids))


def test_unsupported_layers_split_the_chain():
    rng = np.random.default_rng(2)
    model = rnncore.Sequential([
        rnncore.Input((6, 3)), L.LSTM(4, return_sequences=True), L.Dense(4),
        L.Activation("relu"),  # NumPy, not the core: ends the first run
        L.Bidirectional(L.GRU(3, return_sequences=True)),
        L.SimpleRNN(5, return_sequences=True), L.Dense(2)])  # fmt: skip
    ops = plan_ops(model)
    assert [type(op).__name__ for op in ops] == ["Segment", "_Step", "Segment"]
    assert type(ops[1].layer).__name__ == "Activation"
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), layer_by_layer(model, x))


def test_return_state_and_lists_fall_back():
    rng = np.random.default_rng(3)
    lstm = L.LSTM(4, return_sequences=True)
    model = rnncore.Sequential([rnncore.Input((5, 3)), lstm, L.Dense(2)])
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x.tolist()), layer_by_layer(model, x))  # converted
    np.testing.assert_array_equal(model(np.asfortranarray(x)), layer_by_layer(model, x))
    (segment,) = segments(model)
    assert segment._accepts(x, None)
    assert not segment._accepts(x.tolist(), None)  # the layers convert it instead
    assert not segment._accepts(np.asfortranarray(x), None)
    lstm.return_state = True  # the chain does not return states: the model plans again
    assert segments(model) == []  # and the LSTM runs through its own call
    assert isinstance(model.layers[0]._call(x, None, False)[0], tuple)


def test_follows_weight_updates():
    rng = np.random.default_rng(4)
    model = rnncore.Sequential([rnncore.Input((5, 3)), L.GRU(4, return_sequences=True),
                                L.Dense(2)])  # fmt: skip
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    first = model.predict(x)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    second = model.predict(x)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, layer_by_layer(model, x))
    model.layers[0].recurrent_kernel.assign(-model.layers[0].recurrent_kernel.numpy())
    np.testing.assert_array_equal(model.predict(x), layer_by_layer(model, x))
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, np.ones((3, 5, 2), np.float32), epochs=2, verbose=0)
    np.testing.assert_array_equal(model.predict(x), layer_by_layer(model, x))


def test_stateful_model_steps_in_one_call():
    """A stateful model fed one timestep at a time: all its layers in one native call per
    step, with the states carried, equal to the whole sequence at once."""
    rng = np.random.default_rng(5)

    def build():
        m = rnncore.Sequential([
            rnncore.Input((None, 4), batch_size=2), L.LSTM(6, stateful=True,
            return_sequences=True), L.GRU(5, stateful=True, return_sequences=True),
            L.Dense(3)])  # fmt: skip
        m.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in m.get_weights()])  # fmt: skip
        return m

    model = build()
    assert len(segments(model)) == 1
    x = rng.standard_normal((2, 7, 4)).astype(np.float32)
    xt = [np.ascontiguousarray(x[:, t : t + 1]) for t in range(7)]
    steps = np.concatenate([model(a) for a in xt], 1)
    model.reset_states()
    np.testing.assert_array_equal(steps, np.concatenate([layer_by_layer(model, a) for a in xt], 1))
    model.reset_states()
    whole = model(x)
    # each row's result is the same FMA chain however many rows share the call
    np.testing.assert_array_equal(steps, whole)
    model.reset_states()
    np.testing.assert_array_equal(layer_by_layer(model, x), whole)
    with pytest.raises(ValueError, match="stateful with batch size 2; got input batch size 3"):
        model(np.zeros((3, 1, 4), np.float32))


def test_bad_input_names_the_layer():
    model = rnncore.Sequential([rnncore.Input((5, 3)), L.LSTM(4, return_sequences=True),
                                L.Dense(2)])  # fmt: skip
    with pytest.raises(ValueError, match="expected input of shape"):
        model(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError):
        model(np.zeros((2, 5), np.float32))


def test_concurrent_calls(threads):
    rng = np.random.default_rng(6)
    model = rnncore.Sequential([rnncore.Input((20, 8)), L.Masking(0.0),
                                L.LSTM(16, return_sequences=True), L.Dense(4)])  # fmt: skip
    xs = [padded(rng, (5, 20, 8)) for _ in range(4)]
    want = [layer_by_layer(model, x) for x in xs]
    rnncore.set_num_threads(2)
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(20):
                results[k] = model.predict(xs[k])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for k in range(4):
        np.testing.assert_array_equal(results[k], want[k])
