"""Bit-identical results whatever the thread count: forward and backward, every cell.

The core splits work between threads by output (batch shards in the time loops, output rows
in the products after the backward loop), never by the sum over k, so each value is the same
chain of FMAs for 1 or 2 threads. The shapes are large enough that the thread split happens
(split_rows in threads.hpp asks for about 2^19 multiply-adds a shard): B*T*G*H*(D+H) is
several million per call, and H, D are not multiples of the register block or panel widths,
so edge blocks and the partial last panel are split too.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import _core
from rnncore import functional as F
from test_backward import core_forward, make_case

KINDS = ["simple_rnn", "lstm", "gru", "gru_v1"]


@pytest.fixture
def threads_restored():
    before = rnncore.get_num_threads()
    yield
    rnncore.set_num_threads(before)


def _forward_backward(kind, case, options, threads, seed):
    # the core's own setter: rnncore.set_num_threads caps n at the CPUs (with a warning),
    # and more threads than cores are the point here (uneven shards on a 2-core machine)
    rnncore._core._module.set_num_threads(threads)
    *outputs, ws = core_forward(kind, case, options, training=True)
    rng = np.random.default_rng(seed)
    dtype = case["x"].dtype
    d_out = rng.standard_normal(outputs[0].shape).astype(dtype)
    d_states = [rng.standard_normal(s.shape).astype(dtype) for s in outputs[1:]]
    g = F.backward(ws, d_out, d_states)
    inference = core_forward(kind, case, options)
    return {
        "output": outputs[0],
        **{f"state{k}": s for k, s in enumerate(outputs[1:])},
        "inference_output": inference[0],
        "dx": g.x,
        "dW": g.kernel,
        "dU": g.recurrent_kernel,
        "db": g.bias,
        **{f"d_initial{k}": s for k, s in enumerate(g.initial_state)},
    }


@pytest.mark.parametrize("mask", [None, "holes"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_one_and_more_threads_bit_identical(kind, dtype, go_backwards, mask, rng, threads_restored):
    # D = 45, H = 37: not multiples of MR (6) nor of any panel width (8 .. 32 values).
    case = make_case(kind, rng, B=24, T=30, D=45, H=37, mask=mask, dtype=dtype)
    options = {"go_backwards": go_backwards, "return_sequences": True}
    one = _forward_backward(kind, case, options, 1, seed=7)
    for threads in (2, 3):  # 3: uneven shards (more threads than cores is allowed)
        other = _forward_backward(kind, case, options, threads, seed=7)
        for name, a in one.items():
            b = other[name]
            assert a.dtype == b.dtype == dtype, name
            assert np.array_equal(a, b), (
                f"{name}: max |1 thread - {threads} threads| = {np.abs(a - b).max()}"
            )


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("kc", [0, 64], ids=["derived_kc", "kc64"])
def test_panel_aligned_units_bit_identical(kind, kc, rng, threads_restored):
    """H = 64, D = 32: whole panels and register blocks, B*T = 320 rows of dG packed in
    several KC-row chunks when KC is small (set_blocking), the chunks' partial sums carried
    in the weight gradients exactly."""
    case = make_case(kind, rng, B=16, T=20, D=32, H=64, mask="holes", dtype=np.float32)
    options = {"return_sequences": True}
    results = {}
    try:
        for k in (0, kc):  # the derived blocking, then (kc64) 64-row chunks
            _core.set_blocking("float32", k, 0)
            for threads in (1, 2):
                results[k, threads] = _forward_backward(kind, case, options, threads, seed=3)
    finally:
        _core.set_blocking("float32", 0, 0)
    first = results[0, 1]
    for key, other in results.items():
        for name, a in first.items():
            assert np.array_equal(a, other[name]), (key, name)


@pytest.mark.parametrize("H", [37, 48], ids=["H37_tail", "H48_whole_vectors"])
@pytest.mark.parametrize("kind", KINDS)
def test_backward_each_row_alone_bit_identical(kind, H, rng, threads_restored):
    """A row's output, dx and d_initial do not depend on the rows sharing the call nor on
    its position: the fused element-wise passes (cells.hpp) give every unit the same vector
    code (H = 37 ends each row in a zero-padded partial vector), whatever the row's address."""
    case = make_case(kind, rng, B=9, T=6, D=13, H=H, mask="holes", dtype=np.float32)
    options = {"return_sequences": True}
    d_out = rng.standard_normal((9, 6, H)).astype(np.float32)
    rnncore.set_num_threads(2)
    *outputs, ws = core_forward(kind, case, options, training=True)
    batch = F.backward(ws, d_out)
    for r in (0, 4, 8):
        row = {k: (v[r : r + 1] if k in ("x", "mask") else v) for k, v in case.items()}
        row["initial_state"] = [s[r : r + 1] for s in case["initial_state"]]
        *alone, ws_r = core_forward(kind, row, options, training=True)
        g = F.backward(ws_r, d_out[r : r + 1])
        assert np.array_equal(alone[0][0], outputs[0][r]), r
        assert np.array_equal(g.x[0], batch.x[r]), r
        for k, s in enumerate(g.initial_state):
            assert np.array_equal(s[0], batch.initial_state[k][r]), (r, k)


@pytest.mark.parametrize("units", [3, 5, 7, 13, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dense_softmax_each_row_alone_bit_identical(units, dtype, rng):
    # softmax runs row by row in one scalar pass: a row's bits do not depend on its place
    # in the batch (its address), which the ragged, pool and chain paths rely on; SIMD exp
    # and sums over a row's unaligned head, packets and tail broke it with SSE2 (baseline)
    x = rng.standard_normal((9, 6, 11)).astype(dtype)
    kernel = (rng.standard_normal((11, units)) * 2).astype(dtype)
    bias = rng.standard_normal(units).astype(dtype)
    whole = F.dense(x, kernel, bias, activation="softmax")
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            alone = F.dense(x[b : b + 1, t : t + 1], kernel, bias, activation="softmax")
            np.testing.assert_array_equal(alone[0, 0], whole[b, t])
    np.testing.assert_allclose(whole.sum(axis=-1), 1.0, rtol=1e-6)
