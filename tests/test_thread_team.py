"""The core's thread team (cpp/include/rnncore/threads.hpp): items claimed by the caller
and persistent workers, one run at a time, the caller alone when the team is busy.

Shapes here are big enough that the kernels split their work (threads.hpp split_rows: at
least about 1 MFLOP per shard), so the team really runs; every result is compared bit for
bit with the one-thread result, which the team must reproduce whoever runs which item.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest

import rnncore
from rnncore import _core
from rnncore import functional as F
from support import available_cpus
from test_threads import _run_threads

pytestmark = pytest.mark.skipif(available_cpus() < 2, reason="needs 2 CPUs for a team")


def _weights(rng, d, h, g=4, dtype=np.float32):
    return (
        (0.1 * rng.standard_normal((d, g * h))).astype(dtype),
        (0.1 * rng.standard_normal((h, g * h))).astype(dtype),
        (0.1 * rng.standard_normal(g * h)).astype(dtype),
    )


@pytest.fixture
def two_threads():
    before = rnncore.get_num_threads()
    rnncore.set_num_threads(2)
    yield
    rnncore.set_num_threads(before)


def _alone(fn):
    rnncore.set_num_threads(1)
    try:
        return fn()
    finally:
        rnncore.set_num_threads(2)


def test_python_threads_sharing_the_team_get_the_one_thread_bits(two_threads):
    """Four Python threads call kernels that each split in two: whichever of them holds the
    team, the others run alone, and every result is the one-thread result bit for bit
    (forward, training forward and backward, Dense, float32 and float64)."""
    rng = np.random.default_rng(3)
    cases = []
    for dtype in (np.float32, np.float64):
        W, U, b = _weights(rng, 32, 64, dtype=dtype)
        x = rng.standard_normal((48, 6, 32)).astype(dtype)
        mask = rng.random((48, 6)) < 0.8
        kernel = (0.1 * rng.standard_normal((32, 256))).astype(dtype)
        cases.append((x, W, U, b, mask, kernel))

    def compute(case):
        x, W, U, b, mask, kernel = case
        y = F.lstm(x, W, U, b, mask=mask, return_sequences=True)[0]
        *ys, ws = F.lstm(x, W, U, b, return_sequences=True, training=True)
        grads = F.backward(ws, np.ones_like(ys[0]))
        dense = F.dense(x, kernel, activation="relu")
        return [y, ys[0], grads.x, grads.kernel, grads.recurrent_kernel, dense]

    want = [_alone(lambda c=c: compute(c)) for c in cases]

    def work(k):
        for i in range(6):
            c = (k + i) % len(cases)
            for got, ref in zip(compute(cases[c]), want[c], strict=True):
                np.testing.assert_array_equal(got, ref)

    _run_threads(work, 4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_computes_with_threads(two_threads):
    """A child forked after the team started has none of its workers (only the forking
    thread survives a fork): it must start its own team and still compute the same bits,
    not wait forever for workers that do not exist."""
    rng = np.random.default_rng(4)
    W, U, b = _weights(rng, 32, 64)
    x = rng.standard_normal((64, 20, 32)).astype(np.float32)
    want = F.lstm(x, W, U, b, return_sequences=True)[0]  # the parent's team now has a worker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork in a threaded process
        pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if it computed the parent's bits
        ok = False
        try:
            for _ in range(3):
                ok = np.array_equal(F.lstm(x, W, U, b, return_sequences=True)[0], want)
                if not ok:
                    break
        finally:
            os._exit(0 if ok else 1)
    for _ in range(600):  # up to 60 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung computing with 2 threads")
    assert os.waitstatus_to_exitcode(status) == 0, "the child computed different numbers"


@pytest.mark.parametrize("threads", [2, 3])
def test_every_item_runs_once_in_back_to_back_runs(threads):
    """20,000 runs of 1..9 items one after the other, the count changing every run (where a
    worker's stale claim of one run could take an item of the next): every item ran exactly
    once, and none after its run returned. 3 threads: more threads than items sometimes."""
    assert _core.team_check(20000, threads) == 0


def test_a_kernel_split_across_threads_gives_the_one_thread_bits(two_threads):
    """Repeated runs, so that the items land on different threads from run to run (the
    worker sometimes awake, sometimes not): always the one-thread bits."""
    rng = np.random.default_rng(5)
    W, U, b = _weights(rng, 64, 128, g=3)
    x = rng.standard_normal((64, 3, 64)).astype(np.float32)
    want = _alone(lambda: F.gru(x, W, U, np.stack([b, b]), return_sequences=True)[0])
    for _ in range(50):
        got = F.gru(x, W, U, np.stack([b, b]), return_sequences=True)[0]
        np.testing.assert_array_equal(got, want)
