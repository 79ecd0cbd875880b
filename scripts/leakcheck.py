#!/usr/bin/env python3
"""Leak check: resident memory over many calls of every entry point.

Each phase warms up, then measures the resident set size (/proc/self/statm) before and
after N iterations of: functional forward, forward+backward (training workspace), a stream
fed one step per call, Sequential.predict (also from several threads), model save +
load_model, load_keras-free paths (load_weights), to_onnx + load_onnx, and the error paths
(bad arguments raising), and Sequential.fit where it exists.
A phase fails when the RSS grows by more than --limit MiB (default
8) -- a leak of even 100 bytes per call over 20000 calls shows.

    python3 scripts/leakcheck.py                    # default sizes (about a minute)
    python3 scripts/leakcheck.py --scale 5          # 5x the iterations
    python3 scripts/leakcheck.py --single-steps 1000000   # + a 10**6 single-step stream

Exit status 1 when a phase grows more than the limit.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time

import numpy as np

import rnncore
from rnncore import functional as F
from rnncore import layers as L


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def phase(name, fn, n, results):
    for _ in range(max(n // 10, 3)):  # warm-up: caches, allocator pools
        fn()
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    gc.collect()
    grown = rss() - before
    dt = time.perf_counter() - t0
    results.append((name, n, grown, dt))
    print(
        f"{name:40s} {n:8d} calls  RSS {before / 2**20:8.1f} MiB -> "
        f"{(before + grown) / 2**20:8.1f} MiB  ({grown / 2**10:+9.0f} KiB)  {dt:6.1f} s",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--limit", type=float, default=8.0, help="MiB of growth allowed per phase")
    ap.add_argument("--single-steps", type=int, default=0)
    args = ap.parse_args()
    n = lambda k: max(int(k * args.scale), 10)  # noqa: E731
    rng = np.random.default_rng(0)
    results = []

    B, T, D, H = 8, 20, 6, 16
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    W = (0.3 * rng.standard_normal((D, 4 * H))).astype(np.float32)
    U = (0.3 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    mask = rng.random((B, T)) < 0.8

    phase(
        "functional.lstm forward",
        lambda: F.lstm(x, W, U, b, mask=mask, return_sequences=True),
        n(20000),
        results,
    )
    phase(
        "functional.gru forward (float64, view)",
        lambda: F.gru(
            x[:, ::-1].astype(np.float64),
            W[:, : 3 * H].astype(np.float64),
            U[:, : 3 * H].astype(np.float64),
        ),
        n(10000),
        results,
    )

    def fwd_bwd():
        y, h, c, ws = F.lstm(x, W, U, b, mask=mask, return_sequences=True, training=True)
        F.backward(ws, np.ones_like(y), [np.ones_like(h), np.ones_like(c)])

    phase("functional.lstm forward+backward", fwd_bwd, n(10000), results)
    s = F.stream("lstm", W, U, b, batch_size=B)
    x1 = np.ascontiguousarray(x[:, :1])
    phase("stream.run one step", lambda: s.run(x1), n(50000), results)
    phase("stream get/set_states", lambda: s.set_states(s.get_states()), n(20000), results)

    model = rnncore.Sequential(
        [
            rnncore.Input((T, D)),
            L.Bidirectional(L.LSTM(H, return_sequences=True)),
            L.GRU(H),
            L.Dense(3, activation="softmax"),
        ]
    )
    phase("Sequential.predict", lambda: model.predict(x, batch_size=4), n(3000), results)

    def threaded_predict():
        ts = [threading.Thread(target=model.predict, args=(x,)) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    phase("Sequential.predict, 4 threads", threaded_predict, n(500), results)
    stateful = L.LSTM(H, stateful=True)
    stateful.build((B, None, D))
    phase("stateful LSTM layer call", lambda: stateful(x), n(10000), results)

    if hasattr(model, "compile"):
        try:
            tm = rnncore.Sequential([rnncore.Input((T, D)), L.LSTM(H), L.Dense(3)])
            tm.compile(optimizer="adam", loss="mse")
            yt = rng.standard_normal((B, 3)).astype(np.float32)
            tm.fit(x, yt, epochs=1, batch_size=4, verbose=0)
            phase(
                "Sequential.fit (1 epoch, 2 batches)",
                lambda: tm.fit(x, yt, epochs=1, batch_size=4, verbose=0),
                n(1000),
                results,
            )
        except NotImplementedError as e:
            print("fit phase skipped:", e)

    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "m.rnncore")
    model.save(path)
    phase("load_model", lambda: rnncore.load_model(path), n(500), results)
    wpath = os.path.join(tmp, "w.npz")
    model.save_weights(wpath)
    phase("load_weights", lambda: model.load_weights(wpath), n(1000), results)
    try:
        proto = model.to_onnx()
        data = proto.SerializeToString()
        om = rnncore.load_onnx(data)
        phase("load_onnx", lambda: rnncore.load_onnx(data), n(300), results)
        phase("OnnxModel call", lambda: om(x), n(2000), results)
    except ImportError as e:
        print("onnx phases skipped:", e)

    def errors():
        for bad in (
            lambda: F.lstm(x.astype(np.float64), W, U),
            lambda: F.lstm(x[0], W, U),
            lambda: s.run(x[:1]),
            lambda: model.predict(x[..., :2]),
        ):
            try:
                bad()
            except (TypeError, ValueError):
                pass

    phase("error paths", errors, n(5000), results)

    if args.single_steps:
        layer = L.LSTM(H, stateful=True)
        layer.build((1, None, D))
        xs = rng.standard_normal((1, 1, D)).astype(np.float32)
        phase(
            f"{args.single_steps} single-step stateful calls",
            lambda: layer(xs),
            args.single_steps,
            results,
        )
        assert all(np.isfinite(st).all() for st in layer.states)

    bad = [r for r in results if r[2] > args.limit * 2**20]
    total = sum(r[1] for r in results)
    print(
        f"\n{len(results)} phases, {total} calls; largest growth "
        f"{max(r[2] for r in results) / 2**10:+.0f} KiB; limit {args.limit} MiB per phase"
    )
    if bad:
        print("LEAK?", ", ".join(r[0] for r in bad))
        return 1
    print("leakcheck: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
