"""Streams (carried state between calls): the core path of stateful layers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rnncore import functional as F

CELLS = {"simple_rnn": 1, "lstm": 4, "gru": 3}


def weights(cell, rng, D, H, dtype):
    G = CELLS[cell]
    W = (rng.standard_normal((D, G * H)) / np.sqrt(D)).astype(dtype)
    U = (rng.standard_normal((H, G * H)) / np.sqrt(H)).astype(dtype)
    b = (rng.standard_normal((2, G * H) if cell == "gru" else G * H) * 0.3).astype(dtype)
    return W, U, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS))
def test_one_step_at_a_time_equals_whole_sequence(cell, dtype, rng):
    B, T, D, H = 3, 9, 4, 5
    W, U, b = weights(cell, rng, D, H, dtype)
    x = rng.standard_normal((B, T, D)).astype(dtype)
    mask = rng.random((B, T)) > 0.3
    whole = getattr(F, cell)(x, W, U, b, mask=mask, return_sequences=True)
    s = F.stream(cell, W, U, b, batch_size=B)
    steps = [
        s.run(
            np.ascontiguousarray(x[:, t : t + 1]),
            np.ascontiguousarray(mask[:, t : t + 1]),
            return_sequences=True,
        )
        for t in range(T)
    ]
    got = np.concatenate(steps, axis=1)
    # The "previous output" of a masked step restarts at zero in each call, so compare the
    # outputs at used steps and the final states. Not bit for bit: one step per call makes
    # other GEMM shapes than the whole sequence (the input projection is one product).
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-14}
    np.testing.assert_allclose(got[mask], whole[0][mask], **tol)
    for a, e in zip(s.get_states(), whole[1:]):
        np.testing.assert_allclose(a, e, **tol)


def test_states_set_get_reset(rng):
    W, U, b = weights("lstm", rng, 3, 2, np.float64)
    s = F.stream("lstm", W, U, b, batch_size=2)
    assert s.batch_size == 2
    for st in s.get_states():
        np.testing.assert_array_equal(st, 0)
    h0, c0 = rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
    s.set_states([h0, c0])
    x = rng.standard_normal((2, 4, 3))
    y = s.run(x)
    want = F.lstm(x, W, U, b, initial_state=[h0, c0])
    np.testing.assert_array_equal(y, want[0])
    np.testing.assert_array_equal(s.get_states()[1], want[2])
    s.set_states([])
    for st in s.get_states():
        np.testing.assert_array_equal(st, 0)


def test_stream_rejects_bad_input(rng):
    W, U, b = weights("gru", rng, 3, 2, np.float32)
    s = F.stream("gru", W, U, b, batch_size=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 1, 3\), got \(3, 1, 3\)"):
        s.run(np.zeros((3, 1, 3), np.float32))
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        s.run(np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="states: expected 1"):
        s.set_states([np.zeros((2, 2), np.float32)] * 2)
    with pytest.raises(ValueError, match=r"bias: expected shape \(2, 6\)"):
        F.stream("gru", W, U, b[0], batch_size=2)


def test_concurrent_calls_are_serialised(rng):
    """Threads feeding one stream never interleave inside a call: each call advances the
    state by exactly its own steps, so the final state matches a serial run over the same
    number of identical chunks."""
    W, U, b = weights("lstm", rng, 8, 16, np.float64)
    x = rng.standard_normal((4, 5, 8))
    s = F.stream("lstm", W, U, b, batch_size=4)
    calls_per_thread, n_threads = 20, 4

    def work():
        for _ in range(calls_per_thread):
            s.run(x)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    serial = F.stream("lstm", W, U, b, batch_size=4)
    for _ in range(calls_per_thread * n_threads):
        serial.run(x)
    for a, e in zip(s.get_states(), serial.get_states()):
        np.testing.assert_array_equal(a, e)
