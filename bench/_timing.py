"""Timing: implementations timed interleaved (repeat loop outside, implementation loop
inside, the start rotated each round) with medians and quartiles, and the float32 matmul
roofline measured in the same process."""

from __future__ import annotations

import gc
import math
import statistics
import time

import numpy as np


def _stats(samples: list[float]) -> dict:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return {
        "median": statistics.median(s),
        "min": s[0],
        "max": s[-1],
        "q1": q[0],
        "q3": q[2],
        "n": len(s),
    }


def _sample(call, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t0) / n


def time_interleaved(
    runners: dict, repeats: int, target_s: float, settle_s: float, warmup: bool = True
) -> dict:
    """Warm-up and calibrate each runner, then ``repeats`` rounds, each timing every runner
    once (the starting runner rotates); seconds per call for each sample. ``settle_s``: a
    pause before each sample, so that the worker threads of the previous implementation's
    runtime (OpenBLAS spins ~0.1 s after a call, OpenMP and onnxruntime briefly) have gone
    to sleep and do not take cores from the implementation being timed. ``warmup=False``
    (quick mode) skips the warm-up sample after the calibration call."""
    calls = {}
    for key, r in runners.items():
        if r.fixed_calls:
            calls[key] = r.fixed_calls
            if warmup:
                _sample(r.call, r.fixed_calls)  # warm-up round
            continue
        t = _sample(r.call, 1)  # the first timed call is also a warm-up
        n = max(1, math.ceil(target_s / max(t, 1e-9)))
        if warmup and n * t < 2.0:
            t = _sample(r.call, n)  # one more warm-up sample at the calibrated size
            n = max(1, math.ceil(target_s / max(t, 1e-9)))
        calls[key] = n
    keys = list(runners)
    samples = {k: [] for k in keys}
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for rep in range(repeats):
            shift = rep % len(keys)
            for key in keys[shift:] + keys[:shift]:
                if settle_s:
                    time.sleep(settle_s)
                samples[key].append(_sample(runners[key].call, calls[key]))
    finally:
        if gc_was:
            gc.enable()
    return {
        k: {"samples_s": samples[k], "calls_per_sample": calls[k], **_stats(samples[k])}
        for k in keys
    }


def measure_roofline(threads: int, repeats: int, use_torch: bool, size: int = 2048) -> dict:
    """float32 ``size x size @ size x size`` with NumPy (and PyTorch), interleaved, median."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    calls = {"numpy": lambda: np.matmul(a, b, out=c)}
    if use_torch:
        import torch

        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(size, size)
        calls["torch"] = lambda: torch.mm(ta, tb, out=tc)
    for f in calls.values():
        f()  # warm-up
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            times[k].append(_sample(f, 1))
    flops = 2.0 * size**3
    out = {"size": size, "threads": threads}
    for k, ts in times.items():
        out[k] = {"ms": statistics.median(ts) * 1e3, "gflops": flops / statistics.median(ts) / 1e9}
    best = max(calls, key=lambda k: out[k]["gflops"])
    out["best"] = best
    out["gflops"] = out[best]["gflops"]
    out["fma_peak_gflops"] = fma_peak_gflops(threads)
    return out


def fma_peak_gflops(threads: int, dtype: str = "float32") -> float | None:
    """The physical limit: rnncore's register-only FMA loop in the imported ISA module's
    vector width, each thread's rate over its own CPU time, summed (None for a core
    without it)."""
    from rnncore import _core

    peak = getattr(_core, "peak_flops", None)
    return None if peak is None else peak(threads, dtype) / 1e9
