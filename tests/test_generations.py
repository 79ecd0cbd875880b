"""Layer generations (issue 23, weight ownership): every cache over a layer (its core stream,
a Sequential's native chain, a pool's plan and streams, ragged predict) follows every
change of what the layer computes, by comparing generation numbers (never ``id()``s), and a
subclass that overrides ``call`` is run through its call by every executor.

Each executor is compared bit for bit with a fresh copy of the model (``copy.deepcopy``
drops every cache) run layer by layer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.errors import UnsupportedModelError
from rnncore.models import native_chain, stream_plan
from test_native_chain import layer_by_layer, segments


def pool_outputs(model, x):
    """Each row of ``x`` stepped as one stream of a new pool (one chunk)."""
    pool = model.stream_pool(len(x))
    ids = [pool.open() for _ in x]
    out = pool.step(ids, x)
    return np.stack([out[i] for i in ids])


# ---- the quantized pool's stale weights -------------------------------------------------


def _quantized_model():
    rnncore.utils.set_random_seed(11)
    model = rnncore.Sequential([rnncore.Input((None, 4)), L.LSTM(8, return_sequences=True),
                                L.GRU(6), L.Dense(3)])  # fmt: skip
    model.quantize("int8")
    return model


def _check_pool_round(model, pool, rng, x):
    weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in model.get_weights()]
    model.set_weights(weights)
    model.quantized_variables()  # quantized again now: the last Quantized objects are freed
    model.set_weights([w[::-1].copy() if w.ndim == 2 else w for w in weights])
    sid = pool.open()
    try:
        got = pool.step({sid: x})[sid]
    finally:
        pool.close(sid)
    np.testing.assert_array_equal(got, model.predict(x[None], verbose=0)[0])


def test_quantized_pool_follows_every_weight_change():
    """set_weights -> quantized_variables() -> set_weights -> pool.step gives predict's bits
    every round (the pool's streams were keyed on the id()s of the freed Quantized objects,
    so once CPython reused one the pool repacked the old quantized weights)."""
    model = _quantized_model()
    pool = model.stream_pool(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    for _ in range(40):
        _check_pool_round(model, pool, rng, x)


def test_quantized_pool_with_ids_reused(monkeypatch):
    """The same with every id() equal, as when CPython reuses the freed objects' ids at each
    round: deterministic (no cache may depend on ids)."""
    monkeypatch.setattr(stream_plan, "id", lambda obj: 1, raising=False)
    model = _quantized_model()
    pool = model.stream_pool(2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    for _ in range(3):
        _check_pool_round(model, pool, rng, x)


# ---- a subclass that overrides call ---------------------------------------------------


class DoubledLSTM(L.LSTM):
    """Doubles the LSTM's output: every executor must run this call."""

    def call(self, inputs, initial_state=None, mask=None, training=None):
        return 2 * super().call(inputs, initial_state, mask, training)


class ShiftedDense(L.Dense):
    def call(self, inputs, mask=None, training=None):
        return super().call(inputs, mask, training) + 1


def _overriding(stateful=False):
    rnncore.utils.set_random_seed(3)
    shape = dict(batch_shape=(2, None, 3)) if stateful else dict(shape=(None, 3))
    lstm = DoubledLSTM(5, return_sequences=True, stateful=stateful)
    model = rnncore.Sequential([rnncore.Input(**shape), lstm, L.GRU(4, return_sequences=True,
                                stateful=stateful), ShiftedDense(2)])  # fmt: skip
    plain = L.LSTM(5, return_sequences=True, stateful=stateful)
    plain.build((2 if stateful else None, None, 3))
    plain.set_weights(lstm.get_weights())
    gru = copy.deepcopy(model.layers[1])
    dense = model.layers[2]

    def reference(x):  # the override's result, computed from plain layers
        y = gru._call(2 * plain(x), None, False)[0]
        return L.Dense.call(dense, y) + 1

    return model, reference


def test_overriding_subclass_is_run_through_its_call():
    model, reference = _overriding()
    assert not model.layers[0]._native_ok() and not model.layers[2]._native_ok()
    assert all(lstm is not model.layers[0] for s in segments(model) for lstm in s.layers)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reference(x))
    np.testing.assert_array_equal(model(x), reference(x))
    samples = [x[0, :4], x[1]]  # ragged predict: each as predicted alone
    for got, s in zip(model.predict(samples, verbose=0), samples):
        np.testing.assert_array_equal(got, reference(s[None])[0])
    # a functional model of the same layers
    inp = rnncore.Input((None, 3))
    functional = rnncore.Model(inp, model.layers[2](model.layers[1](model.layers[0](inp))))
    np.testing.assert_array_equal(functional.predict(x, verbose=0), reference(x))
    for got, s in zip(functional.predict(samples, verbose=0), samples):
        np.testing.assert_array_equal(got, reference(s[None])[0])


def test_pool_refuses_an_overriding_recurrent_layer():
    """The pool carries the states itself; the override's call does not hand them over."""
    model, _ = _overriding()
    with pytest.raises(UnsupportedModelError, match=r"\(DoubledLSTM\) overrides call"):
        model.stream_pool(2)


def test_overriding_subclass_steps_statefully():
    model, reference = _overriding(stateful=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    steps = np.concatenate([model(np.ascontiguousarray(x[:, t : t + 1])) for t in range(5)], 1)
    np.testing.assert_array_equal(steps, reference(x))


# ---- every mutator through every executor ---------------------------------------------


def _models():
    """A stateless model and a stateful one with the same layers' kinds."""
    rnncore.utils.set_random_seed(5)

    def layers(stateful):
        return [L.LSTM(6, return_sequences=True, stateful=stateful),
                L.GRU(5, return_sequences=True, stateful=stateful), L.Dense(2)]  # fmt: skip

    model = rnncore.Sequential([rnncore.Input((None, 3))] + layers(False))
    stateful = rnncore.Sequential([rnncore.Input(batch_shape=(2, None, 3))] + layers(True))
    stateful.set_weights(model.get_weights())
    return model, stateful


def _scaled(model):
    model.set_weights([w * 0.5 - 0.1 for w in model.get_weights()])


def _assign(model):
    lstm, gru, dense = model.layers
    lstm.recurrent_kernel.assign(-lstm.recurrent_kernel.numpy())
    gru.kernel.assign(gru.kernel.numpy()[:, ::-1] * 1.5)
    dense.bias.assign(dense.bias.numpy() + 0.25)


def _train(model):
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    model.train_on_batch(x, np.ones((2, 4, 2), np.float32))
    model.reset_states()


MUTATORS = {
    "assign": _assign,
    "set_weights": _scaled,
    "optimizer": _train,
    "quantize": lambda m: m.quantize("int8"),
    "quantized_then_set_weights": lambda m: (m.quantize("bf16"), _scaled(m)),
    "activation": lambda m: setattr(m.layers[0], "activation", "relu"),
    "recurrent_activation": lambda m: setattr(m.layers[1], "recurrent_activation", "tanh"),
    "dense_activation": lambda m: setattr(m.layers[2], "activation", "sigmoid"),
    "zero_output_for_mask": lambda m: setattr(m.layers[0], "zero_output_for_mask", True),
    "go_backwards": lambda m: setattr(m.layers[1], "go_backwards", True),
}


@pytest.mark.parametrize("mutate", list(MUTATORS))
def test_every_executor_follows_every_mutation(mutate):
    model, stateful = _models()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    x[1, 3:] = 0
    samples = [x[0], x[1, :3]]
    pool = model.stream_pool(2)
    ids = [pool.open(), pool.open()]

    def step_all(m, run=None):
        run = run or m
        return np.concatenate([run(np.ascontiguousarray(x[:, t : t + 1])) for t in range(5)], 1)

    # every cache built before the change
    model.predict(x, verbose=0), model.predict(samples, verbose=0), pool.step(ids, x)
    step_all(stateful)
    stateful.reset_states()

    MUTATORS[mutate](model)
    MUTATORS[mutate](stateful)
    ref, ref_stateful = copy.deepcopy(model), copy.deepcopy(stateful)  # no cache survives
    expected = layer_by_layer(ref, x)

    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    np.testing.assert_array_equal(model(x), expected)
    for got, s in zip(model.predict(samples, verbose=0), samples):
        np.testing.assert_array_equal(got, layer_by_layer(ref, s[None])[0])
    expected_steps = step_all(ref_stateful, lambda a: layer_by_layer(ref_stateful, a))
    np.testing.assert_array_equal(step_all(stateful), expected_steps)
    if mutate == "go_backwards":  # the pool reads each step once: it cannot go backwards
        with pytest.raises(UnsupportedModelError, match="go_backwards"):
            pool.step(ids, x)
    else:
        for sid in ids:
            pool.reset(sid)
        out = pool.step(ids, x)
        np.testing.assert_array_equal(np.stack([out[i] for i in ids]), expected)
        np.testing.assert_array_equal(pool_outputs(model, x), expected)


def test_quantize_keeps_the_recurrent_layers_chained():
    """After quantize the model plans again: the recurrent layers stay in one chain (a
    quantized Dense runs its own product), instead of the whole model falling back."""
    model, _ = _models()
    lstm, gru, dense = model.layers
    x = np.random.default_rng(7).standard_normal((2, 5, 3)).astype(np.float32)
    model.predict(x, verbose=0)
    assert [s.layers for s in segments(model)] == [[lstm, gru, dense]]
    model.quantize("int8")
    assert [s.layers for s in segments(model)] == [[lstm, gru]]
    (segment,) = segments(model)
    np.testing.assert_array_equal(model(x), layer_by_layer(copy.deepcopy(model), x))
    assert segment._chain is not None  # the chain ran


def test_generations_move_on_at_every_change():
    rnncore.utils.set_random_seed(8)
    lstm = L.LSTM(3)
    lstm.build((None, None, 2))
    seen = [lstm.generation]

    def moved(spec):
        g, s = lstm.generation, lstm.spec_generation
        assert g > seen[-1] and (s == g) == spec
        seen.append(g)

    lstm.kernel.assign(lstm.kernel.numpy())
    moved(spec=False)
    lstm.set_weights(lstm.get_weights())
    moved(spec=False)
    lstm.go_backwards = True
    moved(spec=True)
    lstm.return_sequences = True
    moved(spec=True)
    lstm.quantize("bf16")
    moved(spec=True)
    bi = L.Bidirectional(L.GRU(2))
    bi.build((None, None, 2))
    g = bi.generation
    bi.backward_layer.kernel.assign(bi.backward_layer.kernel.numpy())
    assert bi.generation > g  # a wrapper's covers the layers it wraps


def test_a_deep_copy_of_a_quantized_model_holds_its_quantized_weights():
    model = _quantized_model()
    x = np.random.default_rng(9).standard_normal((2, 5, 4)).astype(np.float32)
    copied = copy.deepcopy(model)
    assert all(layer._holds_quantized() for layer in copied._quantizable())
    np.testing.assert_array_equal(copied.predict(x, verbose=0), model.predict(x, verbose=0))


# ---- errors in the chain ---------------------------------------------------------------


class _BrokenChain:
    def run(self, x, mask=None):
        raise ValueError("chain: an internal error")


def test_an_error_in_the_chain_surfaces(monkeypatch):
    """Which inputs the chain takes is checked explicitly; an error the chain raises on an
    input it takes is a real one, raised, not hidden by running the layers instead."""
    model, _ = _models()
    x = np.zeros((2, 5, 3), np.float32)
    monkeypatch.setattr(native_chain._core, "make_chain", lambda ops, f64: _BrokenChain())
    with pytest.raises(ValueError, match="chain: an internal error"):
        model.predict(x, verbose=0)

    def broken_build(ops, f64):
        raise TypeError("chain: cannot build")

    monkeypatch.setattr(native_chain._core, "make_chain", broken_build)
    model.layers[2].kernel.assign(model.layers[2].kernel.numpy())  # built again
    with pytest.raises(TypeError, match="chain: cannot build"):
        model(x)
    monkeypatch.undo()
    # an input the chain does not take runs layer by layer, with the layer's own message
    with pytest.raises(ValueError, match="expected input of shape"):
        model(np.zeros((2, 5, 4), np.float32))
