"""Concurrency: many Python threads on one model / layer / stream.

ThreadSanitizer cannot instrument CPython, so this is the "equivalent stress loop": many
threads x many calls, each result compared *bit for bit* with the serial result of the same
call (the core releases the GIL and its calls are bit-reproducible), mixing float32/float64
inputs and different shapes on the same model. Stateful layers and shared streams are
checked for lost or mixed states: every thread feeds the *same* input, so whatever order the
calls run in, N calls must leave the state of N serial calls, and a call's returned state
must be the state its output came from.

Scale with the environment: RNNCORE_THREADS (default 8) threads, RNNCORE_CALLS (default
40) calls each; scripts/leakcheck.py and README's Robustness section give a heavier run.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import layers as L
from support import model_of

THREADS = int(os.environ.get("RNNCORE_THREADS", "8"))
CALLS = int(os.environ.get("RNNCORE_CALLS", "40"))


def _run_threads(target, n=THREADS):
    errors = []
    barrier = threading.Barrier(n)

    def wrap(k):
        try:
            barrier.wait()
            target(k)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def _inputs(rng, d=6):
    """Different shapes and dtypes for one model (float64 inputs are cast by the layers)."""
    out = []
    for b, t, dt in [
        (1, 1, np.float32),
        (3, 7, np.float64),
        (16, 12, np.float32),
        (5, 30, np.float64),
        (33, 3, np.float32),
        (2, 50, np.float32),
    ]:
        out.append(rng.standard_normal((b, t, d)).astype(dt))
    return out


def _model():
    return rnncore.Sequential(
        [
            rnncore.Input((None, 6)),
            L.Masking(0.0),
            L.Bidirectional(L.LSTM(8, return_sequences=True)),
            L.GRU(7, return_sequences=True),
            L.SimpleRNN(5),
            L.Dense(3, activation="softmax"),
        ]
    )


def test_predict_many_threads_equals_serial():
    rng = np.random.default_rng(1)
    model = _model()
    xs = _inputs(rng)
    serial = [model.predict(x, batch_size=8) for x in xs]
    serial_call = [model(x) for x in xs]

    def work(k):
        r = np.random.default_rng(k)
        for _ in range(CALLS):
            i = int(r.integers(len(xs)))
            if r.random() < 0.5:
                np.testing.assert_array_equal(model.predict(xs[i], batch_size=8), serial[i])
            else:
                np.testing.assert_array_equal(np.asarray(model(xs[i])), serial_call[i])

    _run_threads(work)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_functional_many_threads_mixed_dtypes(cell):
    rng = np.random.default_rng(2)
    g = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    cases = []
    for dt in (np.float32, np.float64):
        for b, t in ((1, 1), (4, 9), (9, 20)):
            x = rng.standard_normal((b, t, 5)).astype(dt)
            W = (0.3 * rng.standard_normal((5, g * 6))).astype(dt)
            U = (0.3 * rng.standard_normal((6, g * 6))).astype(dt)
            m = rng.random((b, t)) < 0.7
            cases.append((x, W, U, m))
    fn = getattr(F, cell)

    def call(c, training):
        x, W, U, m = c
        out = fn(x, W, U, mask=m, return_sequences=True, training=training)
        if not training:
            return out
        *ys, ws = out
        g_ = F.backward(ws, np.ones_like(ys[0]))
        return (*ys, g_.x, g_.kernel, g_.recurrent_kernel)

    serial = [[call(c, tr) for c in cases] for tr in (False, True)]

    def work(k):
        r = np.random.default_rng(100 + k)
        for _ in range(CALLS):
            i, tr = int(r.integers(len(cases))), int(r.integers(2))
            for got, want in zip(call(cases[i], bool(tr)), serial[tr][i]):
                np.testing.assert_array_equal(got, want)

    _run_threads(work)


def _counter_layer(cls, go_backwards, **kw):
    """A stateful layer whose state *counts* calls (no fixed point that would hide a lost
    update): SimpleRNN with a linear activation and an identity recurrent kernel; LSTM with
    saturated input/forget/output gates (hard_sigmoid -> exactly 1), so c grows by the same
    amount at every step."""
    rng = np.random.default_rng(3)
    H, D = 6, 5
    if cls is L.SimpleRNN:
        layer = cls(H, activation="linear", stateful=True, go_backwards=go_backwards, **kw)
        layer.build((4, None, D))
        layer.set_weights(
            [
                (0.1 * rng.standard_normal((D, H))).astype(np.float32),
                np.eye(H, dtype=np.float32),
                np.zeros(H, np.float32),
            ]
        )
    else:
        layer = cls(
            H,
            activation="linear",
            recurrent_activation="hard_sigmoid",
            stateful=True,
            go_backwards=go_backwards,
            **kw,
        )
        layer.build((4, None, D))
        W = np.zeros((D, 4 * H), np.float32)
        W[:, 2 * H : 3 * H] = 0.1 * rng.standard_normal((D, H))
        b = np.full(4 * H, 10.0, np.float32)
        b[2 * H : 3 * H] = 0.01
        layer.set_weights([W, np.zeros((H, 4 * H), np.float32), b])
    return layer


@pytest.mark.parametrize("go_backwards", [False, True], ids=["stream", "go_backwards"])
@pytest.mark.parametrize("cls", [L.SimpleRNN, L.LSTM])
def test_shared_stateful_layer_loses_no_update(cls, go_backwards):
    """N threads x K calls of the same x on one stateful layer end in the state of N*K
    serial calls (the calls must be serialised, e.g. by a lock) -- never a lost update."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 40, 5)).astype(np.float32)
    n_threads, calls = THREADS, max(CALLS // 2, 5)
    ref = _counter_layer(cls, go_backwards)
    for _ in range(n_threads * calls):
        ref(x)
    want = ref.states
    shared = _counter_layer(cls, go_backwards)

    def work(k):
        for _ in range(calls):
            shared(x)

    _run_threads(work, n_threads)
    for s, w in zip(shared.states, want):
        np.testing.assert_allclose(
            s, w, rtol=1e-4, atol=1e-5, err_msg="a call's state update was lost or mixed"
        )


@pytest.mark.parametrize("cls", [L.SimpleRNN, L.LSTM, L.GRU])
def test_shared_stateful_layer_return_state_is_atomic(cls):
    """With return_state, the returned h is the output's own final state (the call's
    output and states are read under one lock, not interleaved with another thread's)."""
    rng = np.random.default_rng(4)
    layer = cls(6, stateful=True, return_state=True)
    layer.build((4, None, 5))
    xs = [rng.standard_normal((4, 2, 5)).astype(np.float32) for _ in range(THREADS)]

    def work(k):
        for _ in range(CALLS):
            y, h, *_ = layer(xs[k])
            np.testing.assert_array_equal(y, h, err_msg="returned state of another call")

    _run_threads(work)


def test_shared_stream_is_serialised():
    rng = np.random.default_rng(5)
    W = (0.3 * rng.standard_normal((5, 24))).astype(np.float64)
    U = (0.3 * rng.standard_normal((6, 24))).astype(np.float64)
    x = rng.standard_normal((3, 4, 5))
    n = THREADS * CALLS
    ref = F.stream("lstm", W, U, batch_size=3)
    for _ in range(n):
        ref.run(x)
    s = F.stream("lstm", W, U, batch_size=3)

    def work(k):
        for _ in range(CALLS):
            s.run(x)
            if k == 0:
                s.get_states()

    _run_threads(work)
    for a, b in zip(s.get_states(), ref.get_states()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_independent_streams_in_threads_equal_serial():
    rng = np.random.default_rng(6)
    W = (0.3 * rng.standard_normal((5, 18))).astype(np.float32)
    U = (0.3 * rng.standard_normal((6, 18))).astype(np.float32)
    b = (0.1 * rng.standard_normal((2, 18))).astype(np.float32)
    chunks = [rng.standard_normal((2, 5, 5)).astype(np.float32) for _ in range(CALLS)]
    one = F.stream("gru", W, U, b, batch_size=2)
    want = [one.run(c, None, True) for c in chunks]
    results = {}

    def work(k):
        s = F.stream("gru", W, U, b, batch_size=2)
        results[k] = [s.run(c, None, True) for c in chunks]

    _run_threads(work)
    for k in range(THREADS):
        for got, w in zip(results[k], want):
            np.testing.assert_array_equal(got, w)


class _Yield(L.Activation):
    """The identity, through an overridden call that gives the GIL away (the plan runs an
    overriding subclass through its call, between the chains): a step of the model is then
    several Python steps that other threads can interleave with."""

    def call(self, inputs, mask=None, training=None):
        time.sleep(0.0002)
        return inputs


@pytest.mark.parametrize("functional", [False, True], ids=["Sequential", "Model"])
def test_a_stateful_models_step_is_atomic(functional):
    """Threads stepping one stateful model (LSTM -> a Python layer -> GRU -> Dense) with
    the same input: every step's output is one of the serial steps' outputs, each exactly
    once, and the final states are the serial ones. Interleaved steps (layer 1 with call A
    then B while layer 2 sees B then A) would give outputs no serial run gives."""
    rng = np.random.default_rng(9)

    def build():
        layers = [L.LSTM(6, stateful=True, return_sequences=True), _Yield("linear"),
                  L.GRU(4, stateful=True), L.Dense(3)]  # fmt: skip
        return model_of(rnncore.Input(batch_shape=(2, 1, 5)), layers, functional)

    ref, shared = build(), build()
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    shared.set_weights(weights)
    x = rng.standard_normal((2, 1, 5)).astype(np.float32)
    n_threads, steps = 4, 10
    want = [np.asarray(ref(x)) for _ in range(n_threads * steps)]
    got = [[] for _ in range(n_threads)]

    def work(k):
        for _ in range(steps):
            got[k].append(np.asarray(shared(x)))

    _run_threads(work, n_threads)
    keys = sorted(y.tobytes() for ys in got for y in ys)
    assert keys == sorted(y.tobytes() for y in want), "a step mixed two calls' layers"
    mine = [s for layer in shared.stateful_layers() for s in layer.states]
    theirs = [s for layer in ref.stateful_layers() for s in layer.states]
    for s, w in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(s, w)
