"""The Python boundary of a model call (issue 23): S1's stateful one-timestep step,
Input(batch_shape=(1, 1, 64)) -> LSTM(128, stateful, return_sequences) -> LSTM(128, stateful)
-> Dense(8), float32, 1 thread, as a Sequential and as a functional Model.

    python3 bench/model_boundary.py [--calls 2000] [--rounds 5]

For each model it prints:
* ``model(x)``: the median of ``--rounds`` medians of ``--calls`` timed calls (µs);
* the bare core chain's ``run`` on the same input, timed the same way beside it (the model's
  layers run as that one chain: rnncore/models/plan.py), and their difference;
* the Python cost per call apart from the core: the model with its chain replaced by a Python
  stub returning a fixed output, minus a call of the stub alone (best of several timeit
  repeats: Python work only, so the least disturbed sample is the measure);
* Python function calls per ``model(x)`` (cProfile, built-ins included);
and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import timeit

import numpy as np

import rnncore
from rnncore import layers as L
from rnncore.models import native_chain


def s1(kind):
    if kind == "Sequential":
        return rnncore.Sequential([
            rnncore.Input(batch_shape=(1, 1, 64)),
            L.LSTM(128, stateful=True, return_sequences=True),
            L.LSTM(128, stateful=True), L.Dense(8)])  # fmt: skip
    inp = rnncore.Input(batch_shape=(1, 1, 64))
    h = L.LSTM(128, stateful=True, return_sequences=True)(inp)
    return rnncore.Model(inp, L.Dense(8)(L.LSTM(128, stateful=True)(h)))


def median_us(fn, x, calls, rounds):
    clock, medians = time.perf_counter_ns, []
    for _ in range(rounds):
        times = []
        for _ in range(calls):
            t0 = clock()
            fn(x)
            times.append(clock() - t0)
        medians.append(statistics.median(times) / 1e3)
    return statistics.median(medians)


class _Stub:
    """A chain that computes nothing: what is left of a call is its Python."""

    def __init__(self, y):
        self.y = y

    def run(self, x, mask=None):
        return self.y, None


def _python_calls(model, x):
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(100):
        model(x)
    profile.disable()
    return (pstats.Stats(profile).total_calls - 1) / 100  # less the profiler's own disable


def measure(kind, calls, rounds):
    rng = np.random.default_rng(0)
    model = s1(kind)
    model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(w.shape[0])).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    x = rng.standard_normal((1, 1, 64)).astype(np.float32)
    make_chain, chains = native_chain._core.make_chain, []
    try:
        native_chain._core.make_chain = lambda ops, f64: (
            chains.append(make_chain(ops, f64)) or (chains[-1])
        )
        for _ in range(200):
            model(x)
    finally:
        native_chain._core.make_chain = make_chain
    step = median_us(model, x, calls, rounds)
    if not chains:  # the model runs no chain (a build before the plan): its Python and time
        return step, None, None, _python_calls(model, x)
    (chain,) = chains  # the whole model: one chain, built once
    bare = median_us(lambda a: chain.run(a, None), x, calls, rounds)
    python_calls = _python_calls(model, x)

    stub = _Stub(np.zeros((1, 8), np.float32))
    stubbed = s1(kind)
    try:
        native_chain._core.make_chain = lambda ops, f64: stub
        stubbed(x)
        n = 5000
        python_us = (
            min(
                min(timeit.repeat(lambda: stubbed(x), number=n, repeat=5))
                - min(timeit.repeat(lambda: stub.run(x, None), number=n, repeat=5))
                for _ in range(3)
            )
            / n
            * 1e6
        )
    finally:
        native_chain._core.make_chain = make_chain
    return step, bare, python_us, python_calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rnncore.set_num_threads(1)
    print(
        "| model | model(x) µs | bare chain.run µs | difference µs | Python µs (stubbed) "
        "| Python calls per call |"
    )
    print("|---|---|---|---|---|---|")
    for kind in ("Sequential", "Model"):
        step, bare, python_us, python_calls = measure(kind, args.calls, args.rounds)
        if bare is None:
            print(f"| {kind} | {step:.2f} | (no chain) | | | {python_calls:.0f} |")
        else:
            print(f"| {kind} | {step:.2f} | {bare:.2f} | {step - bare:.2f} | {python_us:.2f} "
                  f"| {python_calls:.0f} |")  # fmt: skip
    with open("/proc/loadavg") as f:
        print(f"\nload average: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
