"""Streams (carried state between calls): the core path of stateful layers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rnncore import functional as F
from rnncore import reference

CELLS = {"simple_rnn": 1, "lstm": 4, "gru": 3}


def weights(cell, rng, D, H, dtype):
    G = CELLS[cell]
    W = (rng.standard_normal((D, G * H)) / np.sqrt(D)).astype(dtype)
    U = (rng.standard_normal((H, G * H)) / np.sqrt(H)).astype(dtype)
    b = (rng.standard_normal((2, G * H) if cell == "gru" else G * H) * 0.3).astype(dtype)
    return W, U, b


def masked_case(cell, rng, dtype, B, T, D, H):
    """Weights, an input and a mask with holes for a ``(B, T, D)`` call of ``H`` units."""
    x = rng.standard_normal((B, T, D)).astype(dtype)
    return (*weights(cell, rng, D, H, dtype), x, rng.random((B, T)) > 0.3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS))
def test_one_step_at_a_time_equals_whole_sequence(cell, dtype, rng):
    B, T = 3, 9
    W, U, b, x, mask = masked_case(cell, rng, dtype, B, T, 4, 5)
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


# ---------------------------------------------------------------------------------------
# go_backwards, initial_state, return_state, streams without carried states
# ---------------------------------------------------------------------------------------

REF_TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _reference_chunks(cell, chunks, masks, W, U, b, **options):
    """The reference over consecutive chunks, each from the previous chunk's final states
    (float64 arithmetic on the same inputs): what a carried stream must give."""
    w = [a.astype(np.float64) for a in (W, U, b)]
    states, outputs = None, []
    for x, m in zip(chunks, masks):
        y, *states = getattr(reference, cell)(
            x.astype(np.float64), *w, initial_state=states, mask=m, **options
        )
        outputs.append(y)
    return outputs, states


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_go_backwards_stream_equals_reference_chunk_by_chunk(cell, masked, dtype, rng):
    """A go_backwards stream runs each chunk from its last step to its first, from the
    states the previous chunk left (Keras's stateful go_backwards layer)."""
    B, D, H = 3, 4, 5
    W, U, b = weights(cell, rng, D, H, dtype)
    chunks = [rng.standard_normal((B, T, D)).astype(dtype) for T in (6, 1, 4)]
    masks = [(rng.random(c.shape[:2]) > 0.3) if masked else None for c in chunks]
    s = F.stream(cell, W, U, b, batch_size=B, go_backwards=True)
    assert s.go_backwards and s.batch_size == B
    got = [s.run(c, m, True) for c, m in zip(chunks, masks)]
    want, finals = _reference_chunks(
        cell, chunks, masks, W, U, b, go_backwards=True, return_sequences=True
    )
    for g, w_ in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w_, **REF_TOL[dtype])
    for a, e in zip(s.get_states(), finals):
        np.testing.assert_allclose(a, e, **REF_TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS))
def test_go_backwards_stream_equals_the_functional_call(cell, dtype, rng):
    """One chunk: bit for bit the functional call with go_backwards (same scan)."""
    B = 2
    W, U, b, x, mask = masked_case(cell, rng, dtype, B, 7, 3, 4)
    s = F.stream(cell, W, U, b, batch_size=B, go_backwards=True)
    y = s.run(x, mask, True)
    want = getattr(F, cell)(x, W, U, b, mask=mask, go_backwards=True, return_sequences=True)
    np.testing.assert_array_equal(y, want[0])
    for a, e in zip(s.get_states(), want[1:]):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_run_with_initial_state_and_return_state(cell, go_backwards, rng):
    """initial_state replaces the carried states for one run; return_state returns the
    final states the stream keeps."""
    B, T, D, H = 2, 5, 3, 4
    n = 2 if cell == "lstm" else 1
    W, U, b = weights(cell, rng, D, H, np.float64)
    x = rng.standard_normal((B, T, D))
    init = [rng.standard_normal((B, H)) for _ in range(n)]
    s = F.stream(cell, W, U, b, batch_size=B, go_backwards=go_backwards)
    s.run(x)  # carried states that initial_state must override
    out = s.run(x, None, False, init, True)
    assert isinstance(out, tuple) and len(out) == 1 + n
    want = getattr(reference, cell)(x, W, U, b, initial_state=init, go_backwards=go_backwards)
    for a, e in zip(out, want):
        np.testing.assert_allclose(a, e, **REF_TOL[np.float64])
    for a, e in zip(s.get_states(), out[1:]):
        np.testing.assert_array_equal(a, e)
        assert a is not e  # copies: the stream's states stay its own


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", list(CELLS))
def test_stream_without_batch_size_carries_nothing(cell, dtype, rng):
    """batch_size=None: any batch size, every run from its initial_state or zeros, the
    weights packed once (repack() after changing them in place); the result is the
    functional call's, bit for bit."""
    D, H = 3, 4
    W, U, b = weights(cell, rng, D, H, dtype)
    s = F.stream(cell, W, U, b, go_backwards=True)
    assert s.batch_size is None and s.get_states() == []
    for B in (1, 4, 0):
        x = rng.standard_normal((B, 6, D)).astype(dtype)
        out = s.run(x, None, True, None, True)
        want = getattr(F, cell)(x, W, U, b, go_backwards=True, return_sequences=True)
        for a, e in zip(out, want):
            np.testing.assert_array_equal(a, e)
        np.testing.assert_array_equal(s.run(x, None, True), want[0])  # no state was kept
    x = rng.standard_normal((2, 3, D)).astype(dtype)
    before = s.run(x)
    U *= 0.5  # in place: the packed weights stay until repack()
    np.testing.assert_array_equal(s.run(x), before)
    s.repack()
    np.testing.assert_array_equal(s.run(x), getattr(F, cell)(x, W, U, b, go_backwards=True)[0])
    with pytest.raises(ValueError, match=r"set_states: this stream carries no states"):
        s.set_states([])


def test_repack_reads_weights_modified_in_place(rng):
    """A carrying stream packs its weights once: in-place changes count after repack()."""
    W, U, b = weights("lstm", rng, 3, 4, np.float64)
    x = rng.standard_normal((2, 3, 3))
    s = F.stream("lstm", W, U, b, batch_size=2)
    first = s.run(x)
    s.set_states([])
    U *= 0.5
    s.repack()
    np.testing.assert_array_equal(s.run(x), F.lstm(x, W, U, b)[0])
    assert not np.array_equal(first, F.lstm(x, W, U, b)[0])


def test_stream_rejects_bad_states_and_batch_size(rng):
    W, U, b = weights("lstm", rng, 3, 2, np.float32)
    s = F.stream("lstm", W, U, b, batch_size=2)
    with pytest.raises(ValueError, match=r"initial_state: expected 2 array\(s\) for lstm, got 1"):
        s.run(np.zeros((2, 1, 3), np.float32), None, False, [np.zeros((2, 2), np.float32)])
    with pytest.raises(ValueError, match=r"initial_state\[1\]: expected shape \(2, 2\)"):
        s.run(
            np.zeros((2, 1, 3), np.float32),
            None,
            False,
            [np.zeros((2, 2), np.float32), np.zeros((3, 2), np.float32)],
        )
    with pytest.raises(TypeError, match=r"initial_state\[0\]: expected dtype float32"):
        s.run(np.zeros((2, 1, 3), np.float32), None, False, [np.zeros((2, 2))] * 2)
    with pytest.raises(ValueError, match=r"batch_size: expected >= 0 or None, got -1"):
        F.stream("lstm", W, U, b, batch_size=-1)
