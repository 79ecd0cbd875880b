"""LayerNormalization at inference, 1 thread (issue 24): the layer's call at (1, 1, 128) and
(64, 100, 128), the model Input(100, 32) -> LSTM(128, seq) -> LayerNormalization -> GRU(128)
-> Dense(10) predicted at batch 64 (with ``--ort``: against onnxruntime on its ``to_onnx()``
export), and a stateful step at batch 1 of the same stack with and without the
LayerNormalization (the issue's target: at most 1.3x).

Run against any checkout: ``PYTHONPATH=<checkout>/python python bench/layer_norm.py --ort``.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import rnncore
from rnncore import layers as L


def median_us(fn, n, repeats=7):
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples), min(samples)


def build(stateful=False, norm=True):
    steps = None if stateful else 100
    layers = [rnncore.Input((steps, 32), batch_size=1 if stateful else None)]
    layers.append(L.LSTM(128, return_sequences=True, stateful=stateful))
    layers += [L.LayerNormalization()] if norm else []
    layers += [L.GRU(128, return_sequences=stateful, stateful=stateful), L.Dense(10)]
    model = rnncore.Sequential(layers)
    rng = np.random.default_rng(1)
    model.set_weights(
        [rng.standard_normal(w.shape).astype(np.float32) * 0.2 for w in model.get_weights()]
    )
    return model


def main(argv):
    rnncore.set_num_threads(1)
    load = open("/proc/loadavg").read().split()[:3]
    print(f"rnncore from {rnncore.__file__}; loadavg {' '.join(load)}")
    rng = np.random.default_rng(0)
    norm = L.LayerNormalization()
    norm.build((None, None, 128))
    norm.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in norm.weights])
    for shape, n in (((1, 1, 128), 2000), ((64, 100, 128), 30)):
        x = rng.standard_normal(shape).astype(np.float32)
        m, lo = median_us(lambda x=x: norm(x), n)
        print(f"LayerNormalization call {shape}: median {m:.1f} us (min {lo:.1f})")
    model = build()
    x = rng.standard_normal((64, 100, 32)).astype(np.float32)
    m, lo = median_us(lambda: model.predict(x, batch_size=64, verbose=0), 5)
    print(f"model predict, batch 64: median {m:.0f} us (min {lo:.0f})")
    if "--ort" in argv:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        session = ort.InferenceSession(
            model.to_onnx().SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: x}
        diff = np.max(np.abs(session.run(None, feed)[0] - model.predict(x, verbose=0)))
        m, lo = median_us(lambda: session.run(None, feed), 5)
        print(f"onnxruntime, batch 64: median {m:.0f} us (min {lo:.0f}); max |diff| {diff:.2e}")
    for with_norm in (True, False):
        stateful = build(stateful=True, norm=with_norm)
        xs = rng.standard_normal((1, 1, 32)).astype(np.float32)
        m, lo = median_us(lambda s=stateful, xs=xs: s(xs), 2000)
        which = "with" if with_norm else "without"
        print(
            f"stateful step, batch 1, {which} LayerNormalization: median {m:.1f} us (min {lo:.1f})"
        )
    print(f"loadavg after: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main(sys.argv[1:])
