"""Thread scaling (issue 23, "Measure"): every model case at 1 and at 2 threads, interleaved
in one process, on a quiet machine and with a busy neighbour.

    python3 bench/threads.py [--repeats 9] [--busy] [--out bench/results/threads-<cpu>.md]

Cases (float32, weights fixed by seed):

* S1 step: Input(batch_shape=(1, 1, 64)) -> LSTM(128, stateful, seq) -> LSTM(128, stateful)
  -> Dense(8), ``model(x_t)`` one timestep per call;
* pool 64: ``pool.step(ids, X)``, 64 streams of Input(None, 64) -> LSTM(128), one step each;
* S2: LSTM(128) over (1, 100, 64), ``model(x)``;
* S3: LSTM(256) over (32, 100, 128), ``model(x)``;
* ragged: ``predict([a_1 .. a_64])``, D=128, LSTM(256, seq), lengths uniform in [10, 200];
* text classifier: Embedding(20000, 64, mask_zero) -> Bidirectional(LSTM(64)) -> Dense(1),
  batch 64, T=200 right-padded ids, ``model(ids)``;
* W1 train step: Input(50, 8) -> LSTM(64) -> Dense(1), ``train_on_batch`` on 32 rows (Adam).

Each case's 1- and 2-thread runners alternate (bench/_timing.py: the start rotated each
round), samples of >= 0.1 s, medians; the 2-thread result is checked bit for bit against the
1-thread one before timing (the team must not change the numbers). Target: time at 2 threads
<= 1.02 x time at 1 thread for every case. ``--busy`` runs the same with a neighbour
process spinning on one core for the whole run (a shared server), the case the issue
measured 2 threads 20x slower in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import rnncore  # noqa: E402
from _machine import loadavg, machine_info  # noqa: E402
from _models import seeded  # noqa: E402
from _timing import time_interleaved  # noqa: E402
from rnncore import layers as L  # noqa: E402


class Runner:
    def __init__(self, call, threads):
        self.threads = threads
        self._call = call
        self.fixed_calls = 0

    def call(self):
        rnncore.set_num_threads(self.threads)
        return self._call()


def _s1():
    model = seeded(rnncore.Sequential([
        rnncore.Input(batch_shape=(1, 1, 64)),
        L.LSTM(128, stateful=True, return_sequences=True),
        L.LSTM(128, stateful=True),
        L.Dense(8),
    ]))  # fmt: skip
    x = np.random.default_rng(1).standard_normal((1, 1, 64)).astype(np.float32)

    def step():
        return model(x)

    def check():
        model.reset_states()
        return np.concatenate([np.asarray(step()) for _ in range(5)])

    return step, check


def _pool():
    model = seeded(rnncore.Sequential([rnncore.Input((None, 64)), L.LSTM(128)]))
    pool = model.stream_pool(64)
    ids = [pool.open() for _ in range(64)]
    x = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)

    def step():
        return pool.step(ids, x)

    def check():
        for s in ids:
            pool.reset(s)
        return np.stack([np.stack([out[s] for s in ids]) for out in (step() for _ in range(3))])

    return step, check


def _layer_call(layer, shape):
    model = seeded(rnncore.Sequential([rnncore.Input(shape[1:]), layer]))
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    return (lambda: model(x)), (lambda: np.asarray(model(x)))


def _ragged():
    model = seeded(rnncore.Sequential([rnncore.Input((None, 128)),
                                        L.LSTM(256, return_sequences=True)]))  # fmt: skip
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((int(n), 128)).astype(np.float32)
          for n in rng.integers(10, 201, 64)]  # fmt: skip

    def run():
        return model.predict(xs, batch_size=64, verbose=0)

    return run, lambda: np.concatenate([np.ravel(y) for y in run()])


def _text():
    model = seeded(rnncore.Sequential([
        rnncore.Input((200,), dtype="int32"),
        L.Embedding(20000, 64, mask_zero=True),
        L.Bidirectional(L.LSTM(64)),
        L.Dense(1, activation="sigmoid"),
    ]))  # fmt: skip
    rng = np.random.default_rng(5)
    ids = rng.integers(1, 20000, (64, 200)).astype(np.int32)
    for b, n in enumerate(rng.integers(10, 201, 64)):
        ids[b, n:] = 0
    return (lambda: model(ids)), (lambda: np.asarray(model(ids)))


def _w1():
    def fresh():
        model = seeded(rnncore.Sequential([rnncore.Input((50, 8)), L.LSTM(64), L.Dense(1)]))
        model.compile(optimizer="adam", loss="mse")
        return model

    model = fresh()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((32, 50, 8)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)

    def check():  # three steps of a fresh model: the weights it ends with
        m = fresh()
        for _ in range(3):
            m.train_on_batch(x, y)
        return np.concatenate([w.ravel() for w in m.get_weights()])

    return (lambda: model.train_on_batch(x, y)), check


CASES = {
    "S1 step: LSTM(128)->LSTM(128)->Dense(8), model(x_t)": _s1,
    "pool 64 x LSTM(128): pool.step(ids, X)": _pool,
    "S2 LSTM(128), (1, 100, 64): model(x)": lambda: _layer_call(L.LSTM(128), (1, 100, 64)),
    "S3 LSTM(256), (32, 100, 128): model(x)": lambda: _layer_call(L.LSTM(256), (32, 100, 128)),
    "ragged 64 x LSTM(256): predict(list)": _ragged,
    "text classifier, batch 64: model(ids)": _text,
    "W1 train step (batch 32, Adam)": _w1,
}


def _checked(check):
    """The case's check at 1 and at 2 threads: equal bit for bit."""
    out = {}
    for t in (1, 2):
        rnncore.set_num_threads(t)
        out[t] = check()
    if not np.array_equal(out[1], out[2]):
        raise AssertionError(f"2 threads differ from 1: max |diff| {np.abs(out[1] - out[2]).max()}")


def run(repeats: int) -> list:
    rows = []
    for name, make in CASES.items():
        call, check = make()
        _checked(check)
        res = time_interleaved({t: Runner(call, t) for t in (1, 2)}, repeats, 0.1, 0.0)
        one, two = res[1]["median"], res[2]["median"]
        rows.append((name, one, two))
        print(f"  {name}: 1t {one * 1e3:.3f} ms, 2t {two * 1e3:.3f} ms, 2t/1t {two / one:.2f}",
              file=sys.stderr, flush=True)  # fmt: skip
    return rows


def _table(rows) -> list[str]:
    out = ["| case | 1 thread (ms) | 2 threads (ms) | 2t / 1t | target ≤ 1.02 |",
           "|---|---|---|---|---|"]  # fmt: skip
    for name, one, two in rows:
        ok = "met" if two <= 1.02 * one else "**missed**"
        out.append(f"| {name} | {one * 1e3:.3f} | {two * 1e3:.3f} | {two / one:.2f} | {ok} |")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--busy", action="store_true", help="also run with a busy neighbour process")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    m = machine_info()
    lines = [
        f"# Thread scaling — {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        "",
        f"`python3 bench/threads.py {' '.join(sys.argv[1:])}`; CPU {m.get('cpu', '?')}, "
        f"{m.get('usable_cpus', '?')} usable CPUs; rnncore isa {rnncore.build_info()['isa']}; "
        f"RNNCORE_SPIN_US={os.environ.get('RNNCORE_SPIN_US', 'default')}; median of "
        f"{args.repeats} interleaved samples.",
        "",
    ]
    start = loadavg()
    rows = run(args.repeats)
    lines += [f"## Quiet (load average start {start}, end {loadavg()})", "", *_table(rows), ""]
    if args.busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)
            start = loadavg()
            rows = run(args.repeats)
        finally:
            spinner.kill()
            spinner.wait()
        lines += [f"## A neighbour process spinning on one core (load average start {start}, "
                  f"end {loadavg()})", "", *_table(rows), ""]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
