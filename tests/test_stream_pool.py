"""model.stream_pool: independent streams stepped together, each bit for bit what a stateful
copy of the model with batch size 1 computes on the same steps and chunks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import rnncore
from rnncore.errors import UnsupportedModelError
from rnncore.layers import (
    GRU,
    LSTM,
    Activation,
    Add,
    Attention,
    BatchNormalization,
    Bidirectional,
    Concatenate,
    Conv1D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAveragePooling1D,
    Input,
    LayerNormalization,
    Masking,
    SimpleRNN,
    Softmax,
    TimeDistributed,
)
from rnncore.models.stream_pool import PoolFullError
from support import stepped

D = 5


def _stack(stateful, dtype="float32"):
    return rnncore.Sequential(
        [
            Input((None, D), batch_size=1 if stateful else None, dtype=dtype),
            LSTM(8, return_sequences=True, stateful=stateful, dtype=dtype),
            GRU(16, return_sequences=True, stateful=stateful, dtype=dtype),
            Dense(12, dtype=dtype),  # large enough for Eigen's GEMM, whose bits vary by rows
        ]
    )


def _masked(stateful, dtype="float32"):
    return rnncore.Sequential(
        [
            Input((None, D), batch_size=1 if stateful else None),
            Masking(0.0),
            LayerNormalization(),
            Dropout(0.3),
            SimpleRNN(7, return_sequences=True, stateful=stateful, zero_output_for_mask=True),
            Activation("relu"),
            BatchNormalization(),
            TimeDistributed(Dense(4)),
            LSTM(6, stateful=stateful),
            Dense(3, activation="softmax"),
        ]
    )


def _variants(stateful, dtype="float32"):
    return rnncore.Sequential(
        [
            Input((None, D), batch_size=1 if stateful else None, dtype=dtype),
            LSTM(
                8,
                return_sequences=True,
                stateful=stateful,
                use_peepholes=True,
                projection_units=5,
                cell_clip=2.0,
                dtype=dtype,
            ),  # fmt: skip
            GRU(4, return_sequences=True, reset_after=False, stateful=stateful, dtype=dtype),
            Softmax(),
        ]
    )


def _tokens(stateful, dtype="float32"):
    return rnncore.Sequential(
        [
            Input((None,), batch_size=1 if stateful else None, dtype="int32"),
            Embedding(20, D, mask_zero=True),
            GRU(6, return_sequences=True, stateful=stateful),
            Dense(2),
        ]
    )


def _functional(stateful, dtype="float32"):
    x = Input((None, D), batch_size=1 if stateful else None, dtype=dtype)
    s = LSTM(6, return_sequences=True, stateful=stateful, dtype=dtype)(x)
    a = Dense(6, dtype=dtype)(s)
    b = GRU(6, return_sequences=True, stateful=stateful, dtype=dtype)(s)
    y = Concatenate(dtype=dtype)([Add(dtype=dtype)([a, b]), s])
    return rnncore.Model(x, Dense(2, dtype=dtype)(y))


BUILDERS = {"stack": _stack, "masked": _masked, "variants": _variants, "tokens": _tokens,
            "functional": _functional}  # fmt: skip


def _pair(name, rng, dtype="float32"):
    """The model, and a stateful batch-1 copy with the same weights."""
    model, twin = BUILDERS[name](False, dtype), BUILDERS[name](True, dtype)
    weights = [rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()]
    model.set_weights(weights)
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):  # a positive moving variance
            layer.moving_variance.assign(np.abs(layer.moving_variance.value) + 0.5)
    twin.set_weights(model.get_weights())
    return model, twin


def _input(name, rng, shape, dtype="float32"):
    if name == "tokens":
        return rng.integers(0, 20, shape[:-1]).astype(np.int32)
    x = rng.standard_normal(shape).astype(dtype)
    if name == "masked":  # masked steps, some at a chunk's start
        x[rng.random(shape[:-1]) < 0.3] = 0.0
    return x


def _alone(twin, chunks):
    """What the stateful copy outputs for one stream's calls (one step: no time axis)."""
    twin.reset_states()
    outs = []
    for c in chunks:
        one = c.ndim == len(twin.input_shape) - 2
        y = twin.predict_on_batch(c[None, None] if one else c[None])[0]
        outs.append(y[0] if one and y.ndim == 2 else y)
    return outs


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_stream_is_bitwise_the_stream_alone(name, threads, rng):
    rnncore.set_num_threads(threads)
    try:
        model, twin = _pair(name, rng)
        pool = model.stream_pool(6)
        ids = [pool.open() for _ in range(5)]
        calls = {s: [] for s in ids}
        got = {s: [] for s in ids}
        for _ in range(7):
            chosen = [s for s in ids if rng.random() < 0.7] or ids[:1]
            feeds = {}
            for s in chosen:
                t = int(rng.integers(0, 4))  # 0: one step, without a time axis
                feeds[s] = (
                    _input(name, rng, (max(t, 1), D))[0] if t == 0 else _input(name, rng, (t, D))
                )
                calls[s].append(feeds[s])
            out = pool.step(feeds)
            assert list(out) == chosen
            for s in chosen:
                got[s].append(out[s])
        for s in ids:
            for a, e in zip(got[s], _alone(twin, calls[s]), strict=True):
                assert a.shape == e.shape
                np.testing.assert_array_equal(a, e)
    finally:
        rnncore.set_num_threads(0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunks_of_a_recurrent_stack_equal_the_whole_sequence(dtype, rng):
    # no Dense at the end: the recurrent rows are bitwise whatever the chunking
    model = rnncore.Sequential(
        [Input((None, D), dtype=dtype), LSTM(8, return_sequences=True, dtype=dtype),
         GRU(5, return_sequences=True, dtype=dtype)]
    )  # fmt: skip
    x = rng.standard_normal((3, 11, D)).astype(dtype)
    want = model.predict(x)
    pool = model.stream_pool(3)
    ids = [pool.open() for _ in range(3)]
    got = stepped(pool, ids, x, [(0, 1), (1, 4), (4, 5), (5, 11)])
    for k, s in enumerate(ids):
        np.testing.assert_array_equal(got[s], want[k])
        assert pool.get_state(s)["states"]["1:GRU"][0].dtype == np.dtype(dtype)


def test_stacked_form_equals_dict_form_and_output_shapes(rng):
    model, _ = _pair("stack", rng)
    p1, p2 = model.stream_pool(2), model.stream_pool(2)
    a1, b1, a2, b2 = p1.open(), p1.open(), p2.open(), p2.open()
    x = rng.standard_normal((2, 3, D)).astype(np.float32)
    by_dict = p1.step({a1: x[0], b1: x[1]})
    stacked = p2.step([a2, b2], x)
    np.testing.assert_array_equal(by_dict[a1], stacked[a2])
    np.testing.assert_array_equal(by_dict[b1], stacked[b2])
    assert stacked[a2].shape == (3, 12)
    assert p2.step([a2], x[:1, 0])[a2].shape == (12,)  # one step: no time axis
    last = rnncore.Sequential([Input((None, D)), LSTM(4), Dense(2)])
    pool = last.stream_pool(1)
    s = pool.open()
    assert pool.step({s: x[0]})[s].shape == (2,)
    assert pool.step({s: x[0, 0]})[s].shape == (2,)


def test_weights_set_between_steps_are_used(rng):
    model, twin = _pair("stack", rng)
    pool = model.stream_pool(1)
    s = pool.open()
    x = rng.standard_normal((2, 4, D)).astype(np.float32)
    np.testing.assert_array_equal(pool.step({s: x[0]})[s], twin.predict_on_batch(x[:1])[0])
    new = [w * 0.5 for w in model.get_weights()]
    model.set_weights(new)
    twin.set_weights(new)
    np.testing.assert_array_equal(pool.step({s: x[1]})[s], twin.predict_on_batch(x[1:])[0])


def test_reset_close_capacity_and_ids(rng):
    model, _ = _pair("stack", rng)
    pool = model.stream_pool(2)
    a, b = pool.open(), pool.open()
    assert len(pool) == 2
    with pytest.raises(PoolFullError, match="all 2 streams are open"):
        pool.open()
    x = rng.standard_normal((3, D)).astype(np.float32)
    fresh = pool.step({a: x})[a]
    pool.step({a: x})
    pool.reset(a)
    np.testing.assert_array_equal(pool.step({a: x})[a], fresh)
    pool.close(a)
    with pytest.raises(KeyError, match=f"stream {a} is not open"):
        pool.step({a: x})
    c = pool.open()
    assert c not in (a, b)  # ids are never reused
    np.testing.assert_array_equal(pool.step({c: x})[c], fresh)  # a freed slot starts at zero
    with pytest.raises(KeyError, match="stream 99 is not open"):
        pool.close(99)


def test_bad_input_leaves_every_stream_intact(rng):
    model, _ = _pair("stack", rng)
    pool = model.stream_pool(3)
    a, b = pool.open(), pool.open()
    pool.step({a: rng.standard_normal((2, D)), b: rng.standard_normal((3, D))})
    before = {s: pool.get_state(s) for s in (a, b)}
    good = np.zeros(D, np.float32)
    bad = [
        ({a: good, 7: good}, KeyError, "stream 7 is not open"),
        ({a: good, b: np.zeros((2, D + 1))}, ValueError, rf"stream {b}: expected shape \(5,\)"),
        ({a: good, b: np.zeros((0, D))}, ValueError, "got \\(0, 5\\)"),
        ({a: good, b: np.zeros(D, complex)}, TypeError, f"stream {b}: expected real numbers"),
        ({a: good, b: np.array(["x"] * D)}, TypeError, "expected real numbers"),
        ({a: good, "b": good}, TypeError, "a stream id is an int"),
    ]
    for feeds, error, match in bad:
        with pytest.raises(error, match=match):
            pool.step(feeds)
    with pytest.raises(ValueError, match="given twice"):
        pool.step([a, a], np.zeros((2, D)))
    with pytest.raises(ValueError, match="2 ids need an array of 2 rows"):
        pool.step([a, b], np.zeros((3, D)))
    for s in (a, b):
        for k, arrays in before[s]["states"].items():
            for x, y in zip(arrays, pool.get_state(s)["states"][k]):
                np.testing.assert_array_equal(x, y)


def test_state_moves_through_pickle_to_another_pool(rng):
    model, _ = _pair("variants", rng)
    pool = model.stream_pool(2)
    s = pool.open()
    xs = rng.standard_normal((3, 4, D)).astype(np.float32)
    pool.step({s: xs[0]})
    saved = pickle.dumps(pool.get_state(s))
    want = [pool.step({s: x})[s] for x in xs[1:]]
    other = pickle.loads(pickle.dumps(model)).stream_pool(1)  # as in another process
    t = other.open()
    other.set_state(t, pickle.loads(saved))
    for x, w in zip(xs[1:], want):
        np.testing.assert_array_equal(other.step({t: x})[t], w)
    state = pickle.loads(saved)
    lstm = "0:LSTM"  # position and kind, not the generated name
    assert [a.shape for a in state["states"][lstm]] == [(5,), (8,)]  # projected h, c
    state["states"][lstm][1] = np.zeros(7)
    with pytest.raises(
        ValueError, match=r"state 'c' of the layer at '0:LSTM': expected shape \(8,\)"
    ):
        other.set_state(t, state)
    foreign = _pair("stack", rng)[0].stream_pool(1)  # an LSTM and a GRU too, other widths
    f = foreign.open()
    with pytest.raises(ValueError, match=r"'h' of the layer at '0:LSTM': expected shape \(8,\)"):
        foreign.set_state(f, pickle.loads(saved))
    with pytest.raises(TypeError, match="state must be a dict"):
        foreign.set_state(f, [np.zeros(3)])
    np.testing.assert_array_equal(other.step({t: xs[0]})[t], pool.step({s: xs[0]})[s])


_SAVER = """
import pickle, sys
import numpy as np
import rnncore
from rnncore.layers import GRU, LSTM, Input
sys.path.insert(0, {tests!r})
from test_stream_pool import _keyed_model
# a first model takes the names 'lstm', 'gru': the next model's layers get others
rnncore.Sequential([Input((None, 3)), LSTM(2, return_sequences=True), GRU(2)])
model = _keyed_model()
pool = model.stream_pool(1)
s = pool.open()
x = np.random.default_rng(1).standard_normal((2, 4, {d})).astype(np.float32)
pool.step({{s: x[0]}})
state = pool.get_state(s)
out = {{"state": state, "next": pool.step({{s: x[1]}})[s], "x": x,
       "names": [layer.name for layer in model.layers]}}
sys.stdout.buffer.write(pickle.dumps(out))
"""


def _keyed_model(last=GRU):
    model = rnncore.Sequential(
        [Input((None, D)), LSTM(6, return_sequences=True), Dense(4), last(5, return_sequences=True)]
    )
    weights = np.random.default_rng(7).standard_normal(sum(w.size for w in model.get_weights()))
    sizes = np.cumsum([w.size for w in model.get_weights()])[:-1]
    shaped = [
        p.reshape(w.shape) * 0.5 for p, w in zip(np.split(weights, sizes), model.get_weights())
    ]
    model.set_weights(shaped)
    return model


def test_a_state_saved_in_another_process_is_keyed_by_position_and_kind():
    # Another process that built another model first: its layers' generated names differ
    # from this process's, the states' keys (position and kind) do not.
    code = _SAVER.format(tests=os.path.dirname(os.path.abspath(__file__)), d=D)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    saved = pickle.loads(done.stdout)
    rnncore.Sequential([Input((None, D)), GRU(2), Dense(2)])  # other names here too
    model = _keyed_model()
    assert [layer.name for layer in model.layers] != saved["names"]
    assert list(saved["state"]["states"]) == ["0:LSTM", "2:GRU"]
    pool = model.stream_pool(2)
    s = pool.open()
    pool.set_state(s, saved["state"])
    np.testing.assert_array_equal(pool.step({s: saved["x"][1]})[s], saved["next"])
    # a genuinely different model: refused, naming what differs
    other = _keyed_model(last=SimpleRNN).stream_pool(1)
    with pytest.raises(ValueError, match="position 2 is GRU in the state, SimpleRNN in the model"):
        other.set_state(other.open(), saved["state"])
    shallow = rnncore.Sequential([Input((None, D)), LSTM(6, return_sequences=True)]).stream_pool(1)
    with pytest.raises(ValueError, match=r"the model has no layer with states at \['2:GRU'\]"):
        shallow.set_state(shallow.open(), saved["state"])
    wider = rnncore.Sequential(
        [Input((None, D)), LSTM(7, return_sequences=True), Dense(4), GRU(5)]
    ).stream_pool(1)
    with pytest.raises(ValueError, match=r"'h' of the layer at '0:LSTM': expected shape \(7,\)"):
        wider.set_state(wider.open(), saved["state"])


def test_threads_step_different_streams_at_once(rng):
    model, twin = _pair("stack", rng)
    pool = model.stream_pool(8)
    ids = [pool.open() for _ in range(8)]
    feeds = {s: [rng.standard_normal((int(n), D)).astype(np.float32)
                 for n in rng.integers(1, 4, 12)] for s in ids}  # fmt: skip
    got = {s: [] for s in ids}
    errors = []

    def work(mine):
        try:
            for k in range(12):
                out = pool.step({s: feeds[s][k] for s in mine})
                for s in mine:
                    got[s].append(out[s])
        except BaseException as e:  # reported below
            errors.append(e)

    workers = [threading.Thread(target=work, args=(ids[k::4],)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    for s in ids:
        for a, e in zip(got[s], _alone(twin, feeds[s]), strict=True):
            np.testing.assert_array_equal(a, e)


def test_threads_stepping_one_stream_do_not_corrupt_it(rng):
    model, twin = _pair("stack", rng)
    pool = model.stream_pool(1)
    s = pool.open()
    x = rng.standard_normal((2, D)).astype(np.float32)  # the same chunk: order is irrelevant

    def work():
        for _ in range(10):
            pool.step({s: x})

    workers = [threading.Thread(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    want = _alone(twin, [x] * 31)[-1]
    np.testing.assert_array_equal(pool.step({s: x})[s], want)


def _functional_refusal(kind):
    x = Input((None, D))
    if kind == "attention":
        return rnncore.Model(x, Attention()([x, x]))
    x2 = Input((None, D))
    return rnncore.Model([x, x2], Add()([x, x2]))


@pytest.mark.parametrize(
    "layers, match",
    [
        ([Bidirectional(LSTM(3, return_sequences=True))], "'bidirectional.*need the future"),
        ([Conv1D(3, 2)], "convolves a window"),
        ([LSTM(3, return_sequences=True), GlobalAveragePooling1D()], "pools, reshapes"),
        ([Flatten()], "pools, reshapes"),
        ([LSTM(3, go_backwards=True)], "go_backwards"),
        ([LSTM(3, return_state=True)], "return_state"),
        ([LayerNormalization(axis=1)], "across samples or timesteps"),
    ],
)
def test_refusals_name_the_layer_and_why(layers, match):
    model = rnncore.Sequential([Input((4, D))] + layers)
    with pytest.raises(UnsupportedModelError, match=match):
        model.stream_pool(2)


def test_refusals_of_functional_models():
    with pytest.raises(UnsupportedModelError, match="attends across timesteps"):
        _functional_refusal("attention").stream_pool(1)
    with pytest.raises(UnsupportedModelError, match="2 inputs and 1 outputs"):
        _functional_refusal("two").stream_pool(1)
    inner = rnncore.Sequential([Input((None, D)), LSTM(3, return_sequences=True)])
    x = Input((None, D))
    with pytest.raises(UnsupportedModelError, match="nested model"):
        rnncore.Model(x, inner(x)).stream_pool(1)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        rnncore.Sequential([Input((None, D)), LSTM(3)]).stream_pool(0)
