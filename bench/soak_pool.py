"""Soak test of ``model.stream_pool`` (issue 16, "Reliability"): threads opening, stepping,
resetting, saving, restoring and closing streams at random, every output checked.

    python3 bench/soak_pool.py [--seconds 60] [--threads 8] [--capacity 32] [--seed 0]

Three pools run at once, one per model (non-stateful, float32, random weights):

* ``lstm``: Input(None, 16) -> LSTM(32) -> Dense(8) (output ``(8,)`` per call);
* ``masked``: Input(None, 16) -> Masking(0) -> GRU(32, return_sequences=True) -> Dense(8),
  fed inputs whose timesteps are all zeros (masked) now and then;
* ``tokens``: Input(None,) int32 -> Embedding(50, 16, mask_zero=True) -> LSTM(32) -> Dense(8).

Each thread owns the streams it opens (up to ``--per-thread``, in any pool) and draws its
next operation at random: open, step (a random subset of its streams of one pool, each one
timestep or a chunk of 1-8; the dict form or the stacked form), reset, get_state (kept in a
bag shared by all threads), set_state (a saved state of the same pool, perhaps another
thread's), close, or a bad call. Every output is compared, bit for bit, with a stateful
batch-1 copy of that model (one per stream) fed the same steps and chunks since the
stream's last reset; ``set_state`` replays the saved stream's history into the copy (so a
restored stream must continue exactly as the saved one would have) and checks that
``get_state`` returns the restored state. Bad calls (an unknown or closed id, a wrong shape
or dtype, a zero-length chunk, a state of another model or of a wrong shape, a non-integer
id) must raise the expected error with a message naming the problem, and leave the
thread's streams in that pool exactly as they were (``get_state`` before and after);
streams of other threads are checked by their own outputs. A stream's history is cut by a
reset after 64 calls, so that the script's own memory stays bounded.

RSS (``VmRSS`` of /proc/self/status) is sampled every second; the report gives it at the
start (models built, before the threads), after the first quarter of the run (warm) and at
the end, and calls it flat when the end is within 4 MiB of the warm value. The exit status
is 1 on any mismatch, any unexpected error or a bad call that was accepted or changed a
stream. ``soak()`` is what tests/test_pool_soak.py runs (briefly, with an operation count).
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

import rnncore
from rnncore import layers as L
from rnncore.models.stream_pool import PoolFullError

D, VOCAB, HISTORY = 16, 50, 64


def _lstm(stateful):
    return [rnncore.Input((None, D), batch_size=1 if stateful else None),
            L.LSTM(32, stateful=stateful), L.Dense(8)]  # fmt: skip


def _masked(stateful):
    return [rnncore.Input((None, D), batch_size=1 if stateful else None), L.Masking(0.0),
            L.GRU(32, return_sequences=True, stateful=stateful), L.Dense(8)]  # fmt: skip


def _tokens(stateful):
    return [rnncore.Input((None,), batch_size=1 if stateful else None, dtype="int32"),
            L.Embedding(VOCAB, D, mask_zero=True), L.LSTM(32, stateful=stateful),
            L.Dense(8)]  # fmt: skip


BUILDERS = {"lstm": _lstm, "masked": _masked, "tokens": _tokens}


def rss_mib() -> float:
    """This process's resident set (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Kind:
    """One model, its pool, and stateful batch-1 copies handed out to streams."""

    def __init__(self, name, capacity, rng):
        self.name = name
        self.model = rnncore.Sequential(BUILDERS[name](False), name=f"soak_{name}")
        weights = [(rng.standard_normal(w.shape) * 0.4).astype(np.float32)
                   for w in self.model.get_weights()]  # fmt: skip
        self.model.set_weights(weights)
        self.pool = self.model.stream_pool(capacity)
        self.tokens = name == "tokens"
        self._spare: list = []
        self._lock = threading.Lock()

    def twin(self):
        """A stateful batch-1 copy at zero states (reused after a stream closes)."""
        with self._lock:
            if self._spare:
                return self._spare.pop()
        twin = rnncore.Sequential(BUILDERS[self.name](True))
        twin.set_weights(self.model.get_weights())
        return twin

    def give_back(self, twin):
        twin.reset_states()
        with self._lock:
            self._spare.append(twin)

    def step_input(self, rng, n):
        """One timestep (``n == 0``: no time axis) or a chunk of ``n``."""
        shape = (max(n, 1),) if self.tokens else (max(n, 1), D)
        if self.tokens:
            x = rng.integers(0, VOCAB, shape).astype(np.int32)  # 0: masked
        else:
            x = rng.standard_normal(shape).astype(np.float32)
            if self.name == "masked":
                x[rng.random(shape[0]) < 0.25] = 0.0
        return x[0] if n == 0 else x


class Stream:
    def __init__(self, kind, sid, twin):
        self.kind, self.sid, self.twin, self.history = kind, sid, twin, []

    def expect(self, x):
        """The stateful copy's output for the next call ``x`` (a step or a chunk)."""
        one = x.ndim == (0 if self.kind.tokens else 1)
        y = self.twin.predict_on_batch(x[None, None] if one else x[None])[0]
        return y[0] if one and y.ndim == 2 else y

    def replay(self, history):
        self.twin.reset_states()
        self.history = list(history)
        for x in history:
            self.expect(x)


class Shared:
    """What all workers share: the pools, the saved-state bag, counters, failures."""

    def __init__(self, kinds, per_thread):
        self.kinds = kinds
        self.per_thread = per_thread
        self.saved = collections.deque(maxlen=32)  # (kind name, state, history)
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.failures: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def fail(self, text):
        with self.lock:
            self.failures.append(text)

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n


def _same_state(a, b) -> bool:
    return a["states"].keys() == b["states"].keys() and all(
        np.array_equal(x, y) for k in a["states"] for x, y in zip(a["states"][k], b["states"][k])
    )


class Worker:
    def __init__(self, shared, index, seed):
        self.sh = shared
        self.index = index
        self.rng = np.random.default_rng(seed)
        self.streams: list[Stream] = []
        # kind name -> the last ids closed in that pool (bounded: the memory check is the pool's)
        self.closed = collections.defaultdict(lambda: collections.deque(maxlen=8))

    # ---- operations -----------------------------------------------------------------------

    def op_open(self):
        kind = self.sh.kinds[int(self.rng.integers(len(self.sh.kinds)))]
        try:
            sid = kind.pool.open()
        except PoolFullError:
            self.sh.count("open refused: pool full")
            return
        self.streams.append(Stream(kind, sid, kind.twin()))
        self.sh.count("open")

    def op_step(self):
        kind = self.streams[int(self.rng.integers(len(self.streams)))].kind
        mine = [s for s in self.streams if s.kind is kind]
        chosen = [s for s in mine if self.rng.random() < 0.6] or mine[:1]
        stacked = self.rng.random() < 0.3
        n = int(self.rng.integers(0, 9))  # 0: one timestep
        feeds = {}
        for s in chosen:
            feeds[s.sid] = kind.step_input(self.rng, n if stacked else int(self.rng.integers(9)))
        with self.sh.lock:
            self.sh.in_flight += 1
            self.sh.max_in_flight = max(self.sh.max_in_flight, self.sh.in_flight)
        try:
            if stacked:
                out = kind.pool.step([s.sid for s in chosen], np.stack(list(feeds.values())))
            else:
                out = kind.pool.step(feeds)
        finally:
            with self.sh.lock:
                self.sh.in_flight -= 1
        if list(out) != [s.sid for s in chosen]:
            self.sh.fail(f"{kind.name}: step returned ids {list(out)} for {list(feeds)}")
        for s in chosen:
            x = feeds[s.sid]
            want, got = s.expect(x), out.get(s.sid)
            s.history.append(x)
            if got is None or got.shape != want.shape or not np.array_equal(got, want):
                err = "missing" if got is None else f"shape {got.shape} vs {want.shape}"
                if got is not None and got.shape == want.shape:
                    err = f"max |diff| {float(np.abs(got - want).max()):.3g}"
                self.sh.fail(f"{kind.name} stream {s.sid} call {len(s.history)}: {err}")
        self.sh.count("step call")
        self.sh.count("stream step", len(chosen))
        for s in chosen:
            if len(s.history) >= HISTORY:
                self._reset(s)

    def _reset(self, s):
        s.kind.pool.reset(s.sid)
        s.twin.reset_states()
        s.history = []
        self.sh.count("reset")

    def op_reset(self):
        self._reset(self.streams[int(self.rng.integers(len(self.streams)))])

    def op_get_state(self):
        s = self.streams[int(self.rng.integers(len(self.streams)))]
        state = s.kind.pool.get_state(s.sid)
        with self.sh.lock:
            self.sh.saved.append((s.kind.name, state, list(s.history)))
        self.sh.count("get_state")

    def op_set_state(self):
        s = self.streams[int(self.rng.integers(len(self.streams)))]
        with self.sh.lock:
            same = [item for item in self.sh.saved if item[0] == s.kind.name]
        if not same:
            return
        _, state, history = same[int(self.rng.integers(len(same)))]
        s.kind.pool.set_state(s.sid, state)
        s.replay(history)
        if not _same_state(s.kind.pool.get_state(s.sid), state):
            self.sh.fail(f"{s.kind.name} stream {s.sid}: get_state after set_state differs")
        self.sh.count("set_state")

    def op_close(self):
        s = self.streams.pop(int(self.rng.integers(len(self.streams))))
        s.kind.pool.close(s.sid)
        s.kind.give_back(s.twin)
        self.closed[s.kind.name].append(s.sid)
        self.sh.count("close")

    def _bad_calls(self, s):
        """``(name, call, error type, message fragment)`` for stream ``s``'s pool."""
        kind, pool, rng = s.kind, s.kind.pool, self.rng
        good = kind.step_input(rng, 0)
        closed = self.closed[kind.name][-1] if self.closed[kind.name] else None
        other = [k for k in self.sh.kinds if k is not kind][0]
        with self.sh.lock:
            foreign = [st for name, st, _ in self.sh.saved if name == other.name]
        foreign = foreign[-1] if foreign else {"model": "x", "states": {"lstm_x": [np.zeros(3)]}}
        mine = pool.get_state(s.sid)
        cut = {"model": mine["model"], "states": {k: [a[:-1] for a in v]
                                                  for k, v in mine["states"].items()}}  # fmt: skip
        wrong_dtype = good.astype(np.float32) if kind.tokens else good.astype(np.complex64)
        wrong_shape = np.zeros((2, 2), np.int32) if kind.tokens else np.zeros(D + 1, np.float32)
        feeds = {t.sid: good for t in self.streams if t.kind is kind}  # the others: valid

        def step_with(sid, x):
            return lambda: pool.step({**feeds, sid: x})

        calls = [
            ("unknown id", step_with(10**9 + self.index, good), KeyError, "is not open"),
            ("wrong shape", step_with(s.sid, wrong_shape), ValueError, "expected shape"),
            ("wrong dtype", step_with(s.sid, wrong_dtype), TypeError, "expected"),
            ("zero-length chunk", step_with(s.sid, good[None][:0]), ValueError,
             "expected shape"),
            ("stacked rows", lambda: pool.step([s.sid], np.stack([good, good])), ValueError,
             "1 ids need an array of 1 rows"),
            ("id not an int", lambda: pool.step({"s": good}), TypeError, "a stream id is an int"),
            ("state of another model", lambda: pool.set_state(s.sid, foreign), ValueError,
             "another model"),
            ("state of a wrong shape", lambda: pool.set_state(s.sid, cut), ValueError,
             "expected shape"),
            ("state not a dict", lambda: pool.set_state(s.sid, [1, 2]), TypeError,
             "state must be a dict"),
        ]  # fmt: skip
        if closed is not None:
            calls += [
                ("closed id in a step", step_with(closed, good), KeyError, "is not open"),
                ("reset of a closed id", lambda: pool.reset(closed), KeyError, "is not open"),
                ("get_state of a closed id", lambda: pool.get_state(closed), KeyError,
                 "is not open"),
                ("close of a closed id", lambda: pool.close(closed), KeyError, "is not open"),
            ]  # fmt: skip
        return calls

    def op_bad(self):
        s = self.streams[int(self.rng.integers(len(self.streams)))]
        calls = self._bad_calls(s)
        name, call, error, fragment = calls[int(self.rng.integers(len(calls)))]
        mine = [t for t in self.streams if t.kind is s.kind]
        before = [s.kind.pool.get_state(t.sid) for t in mine]
        try:
            call()
        except error as e:
            if fragment not in str(e) or "stream_pool" not in str(e):
                self.sh.fail(f"{s.kind.name} bad call {name!r}: unclear message {e!r}")
        except Exception as e:  # the wrong error type
            self.sh.fail(f"{s.kind.name} bad call {name!r}: {type(e).__name__}: {e}")
        else:
            self.sh.fail(f"{s.kind.name} bad call {name!r} was accepted")
        for t, b in zip(mine, before):
            if not _same_state(s.kind.pool.get_state(t.sid), b):
                self.sh.fail(f"{s.kind.name} bad call {name!r} changed stream {t.sid}")
        self.sh.count(f"bad: {name}")

    # ---- the loop -------------------------------------------------------------------------

    OPS = (("open", 0.08), ("step", 0.55), ("reset", 0.06), ("get_state", 0.06),
           ("set_state", 0.06), ("close", 0.06), ("bad", 0.13))  # fmt: skip

    def run(self, deadline, ops, stop):
        names = [n for n, _ in self.OPS]
        p = np.array([w for _, w in self.OPS])
        done = 0
        try:
            while not stop.is_set() and (ops is None or done < ops):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                op = str(self.rng.choice(names, p=p / p.sum()))
                if not self.streams or (op == "open" and len(self.streams) < self.sh.per_thread):
                    op = "open"
                elif op == "open":
                    op = "close"
                getattr(self, f"op_{op}")()
                done += 1
        except Exception:
            self.sh.fail(f"worker {self.index}: {traceback.format_exc()}")
            stop.set()
        for s in self.streams:  # close what is left: the pools end empty
            s.kind.pool.close(s.sid)
            s.kind.give_back(s.twin)
        self.streams = []


def soak(seconds=60.0, threads=8, capacity=32, seed=0, ops=None, per_thread=6, rss_every=1.0):
    """Run the soak; returns a dict with ``failures`` (empty when all held), ``counts``,
    ``rss`` samples ``[(seconds, MiB)]`` and the summary numbers."""
    rng = np.random.default_rng(seed)
    kinds = [Kind(name, capacity, rng) for name in BUILDERS]
    shared = Shared(kinds, per_thread)
    stop = threading.Event()
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    rss = [(0.0, rss_mib())]
    workers = [Worker(shared, k, seed * 1000 + k + 1) for k in range(threads)]
    pool_threads = [threading.Thread(target=w.run, args=(deadline, ops, stop)) for w in workers]
    for t in pool_threads:
        t.start()
    while alive := [t for t in pool_threads if t.is_alive()]:
        alive[0].join(rss_every)
        rss.append((time.monotonic() - start, rss_mib()))
    elapsed = time.monotonic() - start
    rss.append((elapsed, rss_mib()))
    left_open = {k.name: len(k.pool) for k in kinds if len(k.pool)}
    if left_open:
        shared.failures.append(f"streams left open after every worker closed its own: {left_open}")
    warm = next((m for t, m in rss if t >= elapsed / 4), rss[-1][1])
    return {
        "failures": shared.failures,
        "counts": dict(shared.counts),
        "rss": rss,
        "rss_start": rss[0][1],
        "rss_warm": warm,
        "rss_end": rss[-1][1],
        "flat": rss[-1][1] - warm <= 4.0,
        "elapsed": elapsed,
        "max_in_flight": shared.max_in_flight,
        "threads": threads,
        "capacity": capacity,
    }


def _every(samples, step):
    """The samples about ``step`` seconds apart (and the last)."""
    out, next_t = [], 0.0
    for t, m in samples:
        if t >= next_t:
            out.append((t, m))
            next_t = t + step
    return out if out[-1] == samples[-1] else out + [samples[-1]]


def report(res) -> str:
    c = res["counts"]
    bad = sum(v for k, v in c.items() if k.startswith("bad: "))
    lines = [
        f"soak_pool: {res['elapsed']:.1f} s, {res['threads']} threads, 3 pools of capacity "
        f"{res['capacity']} ({', '.join(BUILDERS)}); rnncore threads "
        f"{rnncore.get_num_threads() if hasattr(rnncore, 'get_num_threads') else '?'}",
        f"calls: {c.get('step call', 0)} pool.step ({c.get('stream step', 0)} stream steps), "
        f"{c.get('open', 0)} open, {c.get('close', 0)} close, {c.get('reset', 0)} reset, "
        f"{c.get('get_state', 0)} get_state, {c.get('set_state', 0)} set_state, {bad} bad calls "
        f"({len([k for k in c if k.startswith('bad: ')])} kinds), "
        f"{c.get('open refused: pool full', 0)} opens refused (pool full); up to "
        f"{res['max_in_flight']} pool.step calls in flight at once",
        f"RSS: start {res['rss_start']:.1f} MiB, warm (1/4 of the run) {res['rss_warm']:.1f} "
        f"MiB, end {res['rss_end']:.1f} MiB: {'flat' if res['flat'] else 'GREW'} "
        f"(end - warm {res['rss_end'] - res['rss_warm']:+.1f} MiB); every ~10 s: "
        + ", ".join(f"{t:.0f} s {m:.1f}" for t, m in _every(res["rss"], 10.0)),
        f"result: {'PASS' if not res['failures'] else 'FAIL'} ({len(res['failures'])} failures)",
    ]
    lines += [f"  FAIL: {f}" for f in res["failures"][:20]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--capacity", type=int, default=32)
    ap.add_argument("--per-thread", type=int, default=6, help="streams a thread keeps open")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    res = soak(a.seconds, a.threads, a.capacity, a.seed, per_thread=a.per_thread)
    print(report(res))
    return 1 if res["failures"] or not res["flat"] else 0


if __name__ == "__main__":
    sys.exit(main())
