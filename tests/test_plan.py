"""One plan per model (issue 23, rnncore/models/plan.py): a functional Model runs the same
compiled plan as a Sequential, its chainable runs fused into one core call.

Each graph below is checked bit for bit (float32 and float64) against its layers called one
by one, by hand, with Keras's mask rules written out for that graph; the ops of the plan are
checked too (which calls were fused), and a fused run must really be one ``Chain.run``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.models import native_chain, plan
from rnncore.models.native_chain import Segment
from support import model_of, randomize


def call(layer, x, mask=None):
    """One layer's own call at inference: ``(output, output mask)``."""
    return layer._call(x, mask, False)


def fused(model) -> list:
    """The layers of each fused run of the model's plan, by name."""
    return [[layer.name for layer in op.layers] for op in plan.current(model).ops
            if isinstance(op, Segment)]  # fmt: skip


def padded(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x[1, -2:] = 0  # right padding
    x[2, :2] = 0  # left padding
    x[3, 3] = 0  # a hole
    return x


# ---- the graphs: (model, reference(x) -> (outputs, masks), input, fused runs) ----------------


def linear(dt, rng):
    """A linear functional model: the same as a Sequential of its layers."""
    names = ["mask", "lstm", "drop", "gru", "dense"]
    inp = rnncore.Input((8, 5), dtype=dt)
    layers = [L.Masking(0.0, dtype=dt, name="mask"),
              L.LSTM(6, return_sequences=True, dtype=dt, name="lstm"),
              L.Dropout(0.3, dtype=dt, name="drop"),
              L.GRU(5, return_sequences=True, go_backwards=True, dtype=dt, name="gru"),
              L.Dense(3, activation="softmax", dtype=dt, name="dense")]  # fmt: skip
    model = model_of(inp, layers, functional=True)
    randomize(model, rng)

    def reference(x):
        m = None
        for layer in layers:
            x, m = call(layer, x, m)
        return [x], [m]

    return model, reference, [padded(rng, (6, 8, 5), dt)], [names]


def branch_merge(dt, rng):
    """A masked LSTM read by two branches, merged by Add then Concatenate with it."""
    inp = rnncore.Input((7, 4), dtype=dt)
    mask = L.Masking(0.0, dtype=dt, name="mask")
    lstm = L.LSTM(6, return_sequences=True, dtype=dt, name="lstm")
    d1 = L.Dense(5, activation="tanh", dtype=dt, name="d1")
    gru = L.GRU(5, return_sequences=True, dtype=dt, name="gru")
    add = L.Add(dtype=dt, name="add")
    cat = L.Concatenate(dtype=dt, name="cat")
    last = L.LSTM(3, dtype=dt, name="last")
    out = L.Dense(2, dtype=dt, name="out")
    h = lstm(mask(inp))
    s = add([d1(h), gru(h)])
    model = rnncore.Model(inp, out(last(cat([s, h]))))
    randomize(model, rng)

    def reference(x):
        h, m = call(lstm, *call(mask, x))
        a, ma = call(d1, h, m)
        b, mb = call(gru, h, m)
        s, ms = call(add, [a, b], [ma, mb])
        c, mc = call(cat, [s, h], [ms, m])
        return [call(out, *call(last, c, mc))[0]], [None]

    return model, reference, [padded(rng, (5, 7, 4), dt)], [["mask", "lstm"], ["last", "out"]]


def shared(dt, rng):
    """One encoder (and one Dense) called on two inputs; the results concatenated."""
    x1, x2 = rnncore.Input((6, 3), dtype=dt), rnncore.Input((6, 3), dtype=dt)
    masking = L.Masking(0.0, dtype=dt, name="mask")
    enc = L.GRU(4, return_sequences=True, dtype=dt, name="enc")
    proj = L.Dense(4, activation="relu", dtype=dt, name="proj")
    pool = L.LSTM(3, dtype=dt, name="pool")
    cat = L.Concatenate(dtype=dt, name="cat")
    a = proj(enc(masking(x1)))
    b = proj(enc(x2))
    model = rnncore.Model([x1, x2], cat([pool(a), pool(b)]))
    randomize(model, rng)

    def reference(xa, xb):
        a, ma = call(proj, *call(enc, *call(masking, xa)))
        b, mb = call(proj, *call(enc, xb))
        pa, pb = call(pool, a, ma)[0], call(pool, b, mb)[0]
        return [call(cat, [pa, pb])[0]], [None]

    xs = [padded(rng, (4, 6, 3), dt), rng.standard_normal((4, 6, 3)).astype(dt)]
    runs = [["mask", "enc", "proj", "pool"], ["enc", "proj", "pool"]]
    return model, reference, xs, runs


def two_outputs(dt, rng):
    """Outputs: a Dense over a GRU over an LSTM, and the LSTM's own sequence (so the LSTM
    cannot be fused away: its output is read twice)."""
    inp = rnncore.Input((6, 4), dtype=dt)
    mask = L.Masking(0.0, dtype=dt, name="mask")
    lstm = L.LSTM(5, return_sequences=True, dtype=dt, name="lstm")
    gru = L.GRU(3, return_sequences=True, dtype=dt, name="gru")
    dense = L.Dense(2, dtype=dt, name="dense")
    h = lstm(mask(inp))
    model = rnncore.Model(inp, [dense(gru(h)), h])
    randomize(model, rng)

    def reference(x):
        h, m = call(lstm, *call(mask, x))
        y, my = call(dense, *call(gru, h, m))
        return [y, h], [my, m]

    return model, reference, [padded(rng, (4, 6, 4), dt)], [["mask", "lstm"], ["gru", "dense"]]


def mask_zero(dt, rng):
    """The text classifier: ids -> Embedding(mask_zero) -> Bidirectional(LSTM) -> Dense."""
    inp = rnncore.Input((9,), dtype="int32")
    emb = L.Embedding(30, 6, mask_zero=True, dtype=dt, name="emb")
    bi = L.Bidirectional(L.LSTM(4, return_sequences=True, dtype=dt), dtype=dt, name="bi")
    dense = L.Dense(3, dtype=dt, name="dense")
    model = rnncore.Model(inp, dense(bi(emb(inp))))
    randomize(model, rng)
    ids = rng.integers(1, 30, (4, 9)).astype(np.int32)
    ids[0, -3:] = 0
    ids[2, :2] = 0

    def reference(x):
        y, m = call(dense, *call(bi, *call(emb, x)))
        return [y], [m]

    return model, reference, [ids], [["emb", "bi", "dense"]]


def nested(dt, rng):
    """A Sequential inside a Model: a call of the outer plan running its own plan."""
    inner = rnncore.Sequential([rnncore.Input((None, 6), dtype=dt),
                                L.LSTM(5, return_sequences=True, dtype=dt, name="in_lstm"),
                                L.Dense(4, dtype=dt, name="in_dense")], name="inner")  # fmt: skip
    inp = rnncore.Input((7, 3), dtype=dt)
    mask = L.Masking(0.0, dtype=dt, name="mask")
    pre = L.Dense(6, dtype=dt, name="pre")
    gru = L.GRU(3, dtype=dt, name="gru")
    post = L.Dense(2, dtype=dt, name="post")
    model = rnncore.Model(inp, post(gru(inner(pre(mask(inp))))))
    randomize(model, rng)

    def reference(x):
        h, m = call(pre, *call(mask, x))
        h, m = call(inner.layers[1], *call(inner.layers[0], h, m))
        return [call(post, *call(gru, h, m))[0]], [None]

    assert fused(inner) == [["in_lstm", "in_dense"]]
    return model, reference, [padded(rng, (5, 7, 3), dt)], [["mask", "pre"], ["gru", "post"]]


GRAPHS = {f.__name__: f for f in (linear, branch_merge, shared, two_outputs, mask_zero, nested)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_plan_is_bit_identical_to_layer_by_layer(name, dtype):
    rng = np.random.default_rng(sorted(GRAPHS).index(name))
    model, reference, xs, runs = GRAPHS[name](dtype, rng)
    assert fused(model) == runs
    want, want_masks = reference(*xs)
    got = model(xs if len(xs) > 1 else xs[0])
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want)
    for g, w, m in zip(got, want, want_masks):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(g, w)
        if m is None:
            assert getattr(g, "_keras_mask", None) is None
        else:
            np.testing.assert_array_equal(g._keras_mask, m)
    predicted = model.predict(xs if len(xs) > 1 else xs[0], batch_size=3, verbose=0)
    predicted = predicted if isinstance(predicted, list) else [predicted]
    for p, w in zip(predicted, want):
        np.testing.assert_array_equal(p, w)


def test_linear_functional_equals_sequential():
    rng = np.random.default_rng(11)
    model, _, (x,), _ = linear("float32", rng)
    seq = rnncore.Sequential([rnncore.Input((8, 5))] + [
        L.Masking(0.0), L.LSTM(6, return_sequences=True), L.Dropout(0.3),
        L.GRU(5, return_sequences=True, go_backwards=True),
        L.Dense(3, activation="softmax")])  # fmt: skip
    seq.set_weights(model.get_weights())
    assert [type(op) for op in plan.current(seq).ops] == [Segment]
    np.testing.assert_array_equal(model(x), seq(x))
    np.testing.assert_array_equal(model(x)._keras_mask, seq(x)._keras_mask)


class _Counting:
    """A core chain that counts its runs."""

    def __init__(self, chain, counts):
        self.chain, self.counts = chain, counts

    def run(self, x, mask=None):
        self.counts["run"] += 1
        return self.chain.run(x, mask)


def test_functional_chainable_run_is_one_core_call(monkeypatch):
    """Input(ids) -> Embedding(mask_zero) -> Bidirectional(LSTM) -> Dense: one Chain.run per
    call, and none of the layers' own calls."""
    rng = np.random.default_rng(3)
    model, reference, (ids,), _ = mask_zero("float32", rng)
    want = reference(ids)[0][0]
    counts = {"run": 0, "make": 0}
    make_chain = native_chain._core.make_chain

    def counting(ops, f64):
        counts["make"] += 1
        assert [op[0] for op in ops] == ["embedding", "bidirectional", "dense"]
        return _Counting(make_chain(ops, f64), counts)

    def refused(*args, **kwargs):
        raise AssertionError("a fused layer ran its own call")

    monkeypatch.setattr(native_chain._core, "make_chain", counting)
    for layer in model.layers[1:]:
        monkeypatch.setattr(layer, "_call", refused)  # the instance's, not the class's
    for k in range(1, 4):
        np.testing.assert_array_equal(model(ids), want)
        assert counts == {"run": k, "make": 1}


def test_stateful_functional_model_steps_in_one_call(monkeypatch):
    """S1 as a functional model: each timestep one Chain.run, the states carried, equal to
    the whole sequence at once and to the Sequential of the same layers."""
    rng = np.random.default_rng(5)
    inp = rnncore.Input(batch_shape=(2, None, 4))
    h = L.LSTM(6, stateful=True, return_sequences=True)(inp)
    model = rnncore.Model(inp, L.Dense(3)(L.LSTM(5, stateful=True)(h)))
    randomize(model, rng)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    counts = {"run": 0}
    make_chain = native_chain._core.make_chain
    monkeypatch.setattr(native_chain._core, "make_chain",
                        lambda ops, f64: _Counting(make_chain(ops, f64), counts))  # fmt: skip
    steps = [model(np.ascontiguousarray(x[:, : t + 1][:, -1:])) for t in range(5)]
    assert counts["run"] == 5
    model.reset_states()
    lstm1, lstm2, dense = model.layers[1:]
    whole = call(dense, call(lstm2, call(lstm1, x)[0])[0])[0]
    np.testing.assert_array_equal(steps[-1], whole)


def test_plan_follows_generations():
    """The plan is kept while nothing changes (the same object, even when another model
    changes), compiled again after set_weights and after an option changes."""
    rng = np.random.default_rng(7)
    model, reference, (x,), _ = branch_merge("float32", rng)
    first = model(x)
    compiled = model._plan
    other = rnncore.Sequential([rnncore.Input((3, 2)), L.Dense(2)])
    other.set_weights([w + 1 for w in other.get_weights()])  # another model's change
    np.testing.assert_array_equal(model(x), first)
    assert model._plan is compiled

    model.set_weights([w * 0.5 for w in model.get_weights()])
    second = model(x)
    assert model._plan is not compiled
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, reference(x)[0][0])

    compiled = model._plan
    model.get_layer("lstm").go_backwards = True  # an option: the plan and its chains again
    third = model(x)
    assert model._plan is not compiled
    assert not np.array_equal(second, third)
    np.testing.assert_array_equal(third, reference(x)[0][0])

    model.get_layer("last").return_state = True  # not chainable now: a call of its own
    assert fused(model) == [["mask", "lstm"]]


def test_sequential_structure_change_compiles_again():
    rng = np.random.default_rng(8)
    model = rnncore.Sequential([rnncore.Input((5, 3)), L.LSTM(4, return_sequences=True),
                                L.Dense(2)])  # fmt: skip
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    model(x)
    model.add(L.Dense(1))
    assert model._plan is plan.STALE
    lstm, d1, d2 = model.layers
    np.testing.assert_array_equal(model(x), call(d2, call(d1, call(lstm, x)[0])[0])[0])
    assert fused(model) == [[lstm.name, d1.name, d2.name]]
    model.pop()
    np.testing.assert_array_equal(model(x), call(d1, call(lstm, x)[0])[0])


def test_a_copy_compiles_its_own_plan():
    import copy
    import pickle

    rng = np.random.default_rng(9)
    model, reference, (x,), _ = two_outputs("float64", rng)
    want = model(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone._plan is plan.STALE
        for g, w in zip(clone(x), want):
            np.testing.assert_array_equal(g, w)


def test_a_training_call_runs_the_layers(monkeypatch):
    """model(x, training=True) runs each fused layer's own call (Dropout active), never the
    chain, which computes inference only."""
    rng = np.random.default_rng(10)
    model, reference, (x,), _ = linear("float32", rng)
    want = reference(x)[0][0]
    np.testing.assert_array_equal(model(x), want)  # the chain built and run once

    def refused(*args, **kwargs):
        raise AssertionError("the chain ran a training call")

    (segment,) = [op for op in plan.current(model).ops if isinstance(op, Segment)]
    monkeypatch.setattr(segment, "_chain", type("Refusing", (), {"run": refused})())
    trained = model(x, training=True)
    assert trained.shape == want.shape and not np.array_equal(trained, want)
