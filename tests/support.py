"""Helpers several test modules share (the tests folder is on sys.path under pytest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import rnncore

#: every loss rnncore has, with and without ``from_logits`` where it applies
LOSS_CASES = [(name, False) for name in ("mse", "mae")] + [
    (name, logits)
    for name in (
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    )
    for logits in (False, True)
]


def available_cpus() -> int:
    """The CPUs this process may run on, counted here apart from rnncore's own count (which
    ``set_num_threads`` caps at), so that tests check it against an independent value."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def seeded(seed=0):
    return np.random.default_rng(seed)


def randomize(model, rng):
    """Weights of a layer or model drawn at a scale that keeps activations unsaturated."""
    model.set_weights(
        [
            rng.normal(0, 1 / np.sqrt(w.shape[0]) if w.ndim == 2 else 0.3, w.shape)
            for w in model.get_weights()
        ]
    )


def model_of(inputs, layers, functional):
    """``layers`` one after the other on ``inputs`` (an ``rnncore.Input``): a Sequential, or
    with ``functional`` the same calls as an ``rnncore.Model``."""
    if not functional:
        return rnncore.Sequential([inputs, *layers])
    y = inputs
    for layer in layers:
        y = layer(y)
    return rnncore.Model(inputs, y)


def run_json_child(code: str, *args: str, timeout: float):
    """Run ``code`` in a fresh interpreter; returns the process and the merged JSON objects
    it printed one per line (so a crash part-way still leaves the results before it)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    return proc, results


def stepped(pool, ids, x, cuts) -> dict:
    """``{sid: output}``: the pool's streams ``ids`` stepped through ``x (len(ids), T, ...)``
    in the chunks of steps ``cuts`` (``[(t0, t1), ...]``), each stream's outputs joined."""
    parts = {s: [] for s in ids}
    for t0, t1 in cuts:
        out = pool.step(ids, x[:, t0:t1])
        for s in ids:
            parts[s].append(out[s])
    return {s: np.concatenate(parts[s]) for s in ids}
