"""The stream pool's native step (issue 23): when the core chain runs every op of the model,
``pool.step`` is one core call that gathers the streams' states from the pool's table, runs
the chain and scatters the final states back (``Chain.run_slots``). It must give the bits of
the op-by-op path it replaces (``StreamPlan.run_steps``, forced here by clearing the plan's
``native``) and of each stream's own ``predict``, take and give the same states, and refuse
bad input with the same errors, leaving every stream as it was.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.errors import UnsupportedModelError

D, VOCAB = 5, 20


def _stack(dtype):
    return rnncore.Sequential([rnncore.Input((None, D), dtype=dtype),
                               L.LSTM(8, return_sequences=True, dtype=dtype),
                               L.GRU(16, return_sequences=True, dtype=dtype),
                               L.Dense(12, activation="tanh", dtype=dtype)])  # fmt: skip


def _masked(dtype):
    return rnncore.Sequential([rnncore.Input((None, D), dtype=dtype),
                               L.Masking(0.0, dtype=dtype), L.Dropout(0.3, dtype=dtype),
                               L.SimpleRNN(7, return_sequences=True, zero_output_for_mask=True,
                                           dtype=dtype),
                               L.TimeDistributed(L.Dense(4, dtype=dtype), dtype=dtype),
                               L.LSTM(6, dtype=dtype), L.Dense(3, dtype=dtype)])  # fmt: skip


def _tokens(dtype):
    return rnncore.Sequential([rnncore.Input((None,), dtype="int64"),
                               L.Embedding(VOCAB, D, mask_zero=True, dtype=dtype),
                               L.GRU(6, return_sequences=True, dtype=dtype),
                               L.LSTM(5, return_sequences=True, dtype=dtype),
                               L.Dense(2, dtype=dtype)])  # fmt: skip


def _functional(dtype):
    x = rnncore.Input((None, D), dtype=dtype)
    y = L.GRU(6, dtype=dtype)(L.LSTM(7, return_sequences=True, dtype=dtype)(x))
    return rnncore.Model(x, L.Dense(3, dtype=dtype)(y))


BUILDERS = {"stack": _stack, "masked": _masked, "tokens": _tokens, "functional": _functional}


def _model(name, dtype, seed=0):
    rnncore.utils.set_random_seed(seed)
    model = BUILDERS[name](dtype)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()])
    return model


def _pools(model, capacity):
    """A native pool and one forced onto the op-by-op path, over the same model."""
    native, python = model.stream_pool(capacity), model.stream_pool(capacity)
    assert native._plan.native is not None, "the model should run as one chain"
    python._plan.native = None
    return native, python


def _chunk(name, rng, steps, dtype, single=False):
    """One stream's input of ``steps`` steps (``single``: one step without a time axis).
    Masked steps (zeros, id 0) anywhere but a chunk's first step: a chunk then computes what
    the whole sequence computes (at a call's start Keras's "previous output" is zeros)."""
    if name == "tokens":
        x = rng.integers(0, VOCAB, steps)
        x[0] = max(x[0], 1)
        x[1:][rng.random(steps - 1) < 0.3] = 0
    else:
        x = rng.standard_normal((steps, D)).astype(dtype)
        x[1:][rng.random(steps - 1) < 0.3] = 0
    return x[0] if single else x


def _same(a, b):
    assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def _same_states(p, q, a, b):
    sa, sb = p.get_state(a), q.get_state(b)
    assert sa["states"].keys() == sb["states"].keys()
    for key in sa["states"]:
        for x, y in zip(sa["states"][key], sb["states"][key], strict=True):
            _same(x, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_native_pool_is_the_op_by_op_pool_and_predict(name, dtype):
    """Several streams in arbitrary order and subsets, one steps and chunks of several
    lengths in one call, a slot freed and taken again: the two pools give the same bits,
    the same states, and each stream's outputs are its own sequence's predict."""
    model = _model(name, dtype)
    native, python = _pools(model, 5)
    rng = np.random.default_rng(1)
    ids = [native.open() for _ in range(4)]
    assert [python.open() for _ in range(4)] == ids
    seen = {sid: [] for sid in ids}  # each stream's steps so far, and its outputs
    outs = {sid: [] for sid in ids}
    for round_ in range(8):
        if round_ == 4:  # a slot freed and taken by a new stream (its states zeroed)
            for pool in (native, python):
                pool.close(ids[1])
            assert native.open() == python.open() == 4
            del seen[ids[1]], outs[ids[1]]
            ids[1] = 4
            seen[4], outs[4] = [], []
        chosen = [ids[k] for k in rng.permutation(len(ids))[: rng.integers(1, len(ids) + 1)]]
        if round_ % 2:  # stacked: one length
            single, steps = bool(rng.integers(2)), int(rng.integers(1, 4))
            xs = np.stack([_chunk(name, rng, steps, dtype, single) for _ in chosen])
            got, want = native.step(chosen, xs), python.step(chosen, xs)
            request = dict(zip(chosen, xs))
        else:  # dict: lengths mixed (one call per length), one steps among them
            request = {}
            for sid in chosen:
                single = bool(rng.integers(2))
                request[sid] = _chunk(name, rng, 1 if single else int(rng.integers(1, 4)),
                                      dtype, single)  # fmt: skip
            got, want = native.step(request), python.step(request)
        assert list(got) == list(want) == chosen
        for sid in chosen:
            _same(got[sid], want[sid])
            x = request[sid]
            one = x.ndim == (0 if name == "tokens" else 1)
            seen[sid].append(x[None] if one else x)
            outs[sid].append(got[sid][None] if one and name != "masked" and name != "functional"
                             else got[sid])  # fmt: skip
    for sid in ids:
        _same_states(native, python, sid, sid)
        whole = np.concatenate(seen[sid])
        predicted = model.predict(whole[None], verbose=0)[0]
        if name in ("masked", "functional"):  # no time axis: the last output
            _same(outs[sid][-1], predicted)
        else:
            _same(np.concatenate(outs[sid]), predicted)


def test_a_stateful_model_steps_natively_from_the_pools_states():
    """A stateful model's pool runs streams carrying nothing over the same weights (the
    layers' own streams keep their states, untouched)."""
    rnncore.utils.set_random_seed(2)
    stateful = rnncore.Sequential([rnncore.Input(batch_shape=(1, None, D)),
                                   L.LSTM(6, return_sequences=True, stateful=True),
                                   L.Dense(2)])  # fmt: skip
    plain = rnncore.Sequential([rnncore.Input((None, D)), L.LSTM(6, return_sequences=True),
                                L.Dense(2)])  # fmt: skip
    plain.set_weights(stateful.get_weights())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, D)).astype(np.float32)
    stateful(x[:1])  # the layer's own states move on
    held = stateful.layers[0].states
    pool = stateful.stream_pool(3)
    assert pool._plan.native is not None
    ids = [pool.open() for _ in range(3)]
    out = pool.step(ids, x)
    np.testing.assert_array_equal(np.stack([out[i] for i in ids]), plain.predict(x, verbose=0))
    for a, b in zip(stateful.layers[0].states, held, strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_round_trips(rng):
    model = _model("stack", "float32")
    native, python = _pools(model, 4)
    a, b = native.open(), native.open()
    c = python.open()
    x1, x2 = (rng.standard_normal((3, D)).astype(np.float32) for _ in range(2))
    native.step({a: x1, b: x2})
    saved = native.get_state(a)
    first = native.step({a: x2})[a]
    native.set_state(a, saved)  # back to where it was
    _same(native.step({a: x2})[a], first)
    python.set_state(c, saved)  # the state moves between the two paths
    _same(python.step({c: x2})[c], first)
    _same_states(native, python, a, c)
    native.reset(b)  # a reset stream is a new one
    fresh = native.open()
    got = native.step({b: x1, fresh: x1})
    _same(got[b], got[fresh])
    new = native.open()
    native.set_state(b, native.get_state(new))  # zeros again
    got = native.step({new: x2, b: x2})
    _same(got[b], got[new])


def test_weights_and_options_changed_between_steps_are_seen(rng):
    """The next step runs the new weights (a new generation: the chain is built again
    over the repacked streams) and the new options (a new plan)."""
    model = _model("stack", "float32")
    native, python = _pools(model, 2)
    sid = native.open()
    python.open()
    x = rng.standard_normal((2, 3, D)).astype(np.float32)
    for change in ("weights", "assign", "activation"):
        if change == "weights":
            model.set_weights([w * 0.5 for w in model.get_weights()])
        elif change == "assign":
            model.layers[1].recurrent_kernel.assign(-model.layers[1].recurrent_kernel.numpy())
        else:
            model.layers[2].activation = "sigmoid"
        python._current_plan().native = None  # planned again after an option changed
        got, want = native.step({sid: x[0]})[sid], python.step({sid: x[0]})[sid]
        _same(got, want)
        assert native._plan.native is not None
    reference = copy.deepcopy(model)
    pool = reference.stream_pool(1)
    fresh = pool.open()
    for pool_, sid_ in ((native, sid), (pool, fresh)):
        pool_.reset(sid_)
    _same(native.step({sid: x[1]})[sid], pool.step({fresh: x[1]})[fresh])


def test_bad_input_raises_the_same_errors_and_leaves_the_streams(rng):
    for name in ("stack", "tokens"):
        model = _model(name, "float32")
        pools = _pools(model, 3)
        for pool in pools:
            a, b = pool.open(), pool.open()
            pool.close(pool.open())  # id 2: closed
            pool.step({a: _chunk(name, rng, 2, "float32"), b: _chunk(name, rng, 2, "float32")})
        good = _chunk(name, rng, 2, "float32")
        bad = [
            ({99: good}, None),  # never opened
            ({2: good}, None),  # closed
            ({0: good, 2: good}, None),
            ([0, 1], np.stack([good, good])[:1]),  # rows != ids
            ({"a": good}, None),  # not an int
        ]
        if name == "tokens":
            bad += [({0: good.astype(np.float32)}, None),  # not ids
                    ({0: np.array([3, VOCAB])}, None),  # out of range: the Embedding's error
                    ({0: good, 1: np.array([[1, 2]])}, None)]  # fmt: skip
        else:
            bad += [({0: good[:, :-1]}, None), ({0: good.astype(np.complex64)}, None),
                    ({0: good, 1: good[None]}, None), ({0: "x"}, None)]  # fmt: skip
        for streams, x in bad:
            errors = []
            for pool in pools:
                before = [pool.get_state(s) for s in (0, 1)]
                with pytest.raises(Exception) as info:
                    pool.step(streams, x)
                errors.append((type(info.value), str(info.value)))
                assert isinstance(info.value, (KeyError, ValueError, TypeError))
                for s, state in zip((0, 1), before):
                    for k, arrays in state["states"].items():
                        for got, want in zip(pool.get_state(s)["states"][k], arrays):
                            np.testing.assert_array_equal(got, want)
            assert errors[0] == errors[1], (name, streams)


# ---- the caches follow every weight change (issue 23's latent bug) ---------------------


def test_quantized_native_pool_follows_every_weight_change():
    """set_weights -> quantized_variables() -> set_weights -> pool.step gives predict's bits
    every round, on the native pool (the recurrent layers quantized, the Dense float: one
    chain). The pool's streams were keyed on the id()s of freed Quantized objects, so
    once CPython reused one the pool repacked the old quantized weights."""
    rnncore.utils.set_random_seed(11)
    model = rnncore.Sequential([rnncore.Input((None, 4)), L.LSTM(8, return_sequences=True),
                                L.GRU(6), L.Dense(3)])  # fmt: skip
    for layer in model.layers[:2]:
        layer.quantize("int8")
    pool = model.stream_pool(2)
    assert pool._plan.native is not None
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    for _ in range(40):
        weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.5
                   for w in model.get_weights()]  # fmt: skip
        model.set_weights(weights)
        model.quantized_variables()  # quantized again now: the last Quantized objects freed
        model.set_weights([w[::-1].copy() if w.ndim == 2 else w for w in weights])
        sid = pool.open()
        got = pool.step({sid: x})[sid]
        pool.close(sid)
        np.testing.assert_array_equal(got, model.predict(x[None], verbose=0)[0])
        # and a copy's, which shares no cache with the model (its predict could be as stale)
        np.testing.assert_array_equal(got, copy.deepcopy(model).predict(x[None], verbose=0)[0])


class DoubledLSTM(L.LSTM):
    def call(self, inputs, initial_state=None, mask=None, training=None):
        return 2 * super().call(inputs, initial_state, mask, training)


def test_an_overriding_lstm_is_refused_by_name():
    """In a model the chain would otherwise run whole: the pool carries the states itself,
    and the override's call would not hand them over."""
    model = rnncore.Sequential([rnncore.Input((None, 3)), DoubledLSTM(4), L.Dense(2)])
    with pytest.raises(UnsupportedModelError, match=r"'.*' \(DoubledLSTM\) overrides call"):
        model.stream_pool(2)


def test_one_stream_per_layer_and_one_cache_mechanism():
    """A layer that is not stateful packs its weights once for its calls and the pool's
    steps; the chain is built once per generation of the layers."""
    model = _model("stack", "float32")
    pool = model.stream_pool(2)
    sid = pool.open()
    x = np.zeros((2, D), np.float32)
    pool.step({sid: x})
    lstm = model.layers[0]
    assert lstm._free_stream() is lstm._stream_for(3) is lstm._stream
    chain = pool._plan._chain._held[1]
    pool.step({sid: x})
    assert pool._plan._chain._held[1] is chain
    lstm.kernel.assign(lstm.kernel.numpy())
    stream = lstm._stream
    pool.step({sid: x})
    assert pool._plan._chain._held[1] is not chain and lstm._stream is stream  # repacked


def test_run_slots_checks_its_arguments():
    """The core call refuses a table or slots that do not fit, before touching the table."""
    model = _model("stack", "float32")
    pool = model.stream_pool(3)
    pool.step({pool.open(): np.ones((1, D), np.float32)})
    chain = pool._plan._chain._held[1]
    table = pool._table  # LSTM h, c and GRU h
    kept = [t.copy() for t in table]
    x = np.ones((2, 1, D), np.float32)
    slots = np.array([0, 1])
    cases = [
        (x, slots, table[:2], ValueError, r"table: expected 3 state arrays .*, got 2"),
        (x, np.array([0, 3]), table, ValueError, r"slots: 3 is out of range or given twice"),
        (x, np.array([1, 1]), table, ValueError, r"slots: 1 is out of range or given twice"),
        (x, slots.astype(np.int32), table, ValueError, r"slots: expected 2 int64 slots"),
        (x, slots, [t[:, :-1] for t in table], ValueError, r"table\[0\]"),
        (x, slots, [t.astype(np.float64) for t in table], TypeError, r"table\[0\]"),
    ]
    for args in cases:
        with pytest.raises(args[3], match=args[4]):
            chain.run_slots(*args[:3])
    for t, k in zip(table, kept, strict=True):
        np.testing.assert_array_equal(t, k)
