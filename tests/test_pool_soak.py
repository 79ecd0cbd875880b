"""A short run of bench/soak_pool.py: threads opening, stepping, resetting, saving, restoring
and closing streams of three pools at random, each output bitwise what a stateful batch-1
copy of the model gives for that stream's calls, bad calls refused with a clear error and
without changing any stream. Bounded by an operation count per thread (not by time): each
thread's operations are fixed by its seed (the pools never fill, so no thread's choices
depend on another's), only their interleaving varies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import rnncore

_PATH = Path(__file__).resolve().parents[1] / "bench" / "soak_pool.py"
_spec = importlib.util.spec_from_file_location("soak_pool", _PATH)
soak_pool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak_pool)


@pytest.mark.parametrize("core_threads", [1, 2])
def test_soak_every_output_matches_the_stream_alone(core_threads):
    rnncore.set_num_threads(core_threads)
    try:
        res = soak_pool.soak(seconds=None, threads=4, capacity=16, seed=7, ops=1500, per_thread=4)
    finally:
        rnncore.set_num_threads(0)
    assert res["failures"] == []
    c = res["counts"]
    assert c.get("open refused: pool full", 0) == 0  # 4 threads x 4 streams < 16 per pool
    assert c["stream step"] > 2000
    for op in ("open", "close", "reset", "get_state", "set_state"):
        assert c[op] > 50, (op, c)
    bad = {k for k in c if k.startswith("bad: ")}
    assert len(bad) == 13, sorted(bad)  # every kind of bad call ran
    assert res["max_in_flight"] >= 1


def test_soak_reports_a_failure(monkeypatch):
    # the check is live: a pool whose outputs are off by one ulp in one stream is caught
    real = soak_pool.Stream.expect

    def off(self, x):
        y = real(self, x)
        return np.nextafter(y, np.inf) if self.sid == 0 and self.kind.name == "lstm" else y

    monkeypatch.setattr(soak_pool.Stream, "expect", off)
    res = soak_pool.soak(seconds=None, threads=1, capacity=4, seed=1, ops=40, per_thread=3)
    assert any("lstm stream 0 call" in f for f in res["failures"]), res["failures"][:3]


@pytest.mark.parametrize("name", list(soak_pool.BUILDERS))
def test_whole_array_fast_paths_equal_the_per_row_path(name):
    # pool.step checks a stacked array, or a dict of arrays of one dtype and shape, as one
    # array; the bits must be those of the per-row checks (a dict of lists takes that path)
    rng = np.random.default_rng(5)
    kind = soak_pool.Kind(name, 3, rng)
    pools = [kind.model.stream_pool(3) for _ in range(3)]
    ids = [[p.open() for _ in range(3)] for p in pools]
    for n in (0, 1, 4, 0, 3):
        xs = np.stack([kind.step_input(rng, n) for _ in range(3)])
        if not kind.tokens and n == 4:
            xs = xs.astype(np.float64)  # cast once, as each row would be
        if not kind.tokens and n == 3:
            xs = np.repeat(xs, 2, axis=-1)[..., ::2]  # not contiguous
        per_row = pools[0].step({s: x.tolist() for s, x in zip(ids[0], xs)})
        stacked = pools[1].step(ids[1], xs)
        by_dict = pools[2].step(dict(zip(ids[2], xs)))
        for a, b, c in zip(per_row.values(), stacked.values(), by_dict.values(), strict=True):
            assert a.shape == b.shape == c.shape
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    p, s = pools[1], ids[1]
    before = [p.get_state(i) for i in s]
    bad = np.zeros((3, 2, 2), np.int32) if kind.tokens else np.zeros((3, 2, 17), np.float32)
    with pytest.raises(ValueError, match=f"input of stream {s[0]}: expected shape"):
        p.step(s, bad)
    with pytest.raises(ValueError, match=f"input of stream {s[0]}: expected shape"):
        p.step(dict(zip(s, bad)))
    wrong = np.zeros((3, 2), np.float32) if kind.tokens else np.zeros((3, 16), np.complex64)
    with pytest.raises(TypeError, match=f"input of stream {s[0]}: expected"):
        p.step(s, wrong)
    with pytest.raises(ValueError, match=f"stream {s[1]} is given twice"):
        p.step([s[1], s[1], s[0]], np.stack([kind.step_input(rng, 0)] * 3))
    for i, b in zip(s, before):
        assert soak_pool._same_state(p.get_state(i), b)
