"""One pool step of 64 streams (issue 23, item 2: the pool as one core call).

    PYTHONPATH=<rnncore's python dir> python3 bench/pool_step.py [--threads 1] [--rounds 31]

Model Input((1, 64)) -> LSTM(128) -> Dense(8), float32; 64 open streams, each fed one
timestep per round. Rows (microseconds per round):

* ``pool.step(ids, X)`` with ``X`` ``(64, 64)`` (stacked);
* ``pool.step({id: x})`` (the dict form);
* core alone: the LSTM's ``stream.run`` (B=64, T=1, the states carried by hand) and the
  Dense's ``functional.dense``: the floor of any pool step;
* onnxruntime: one ``session.run`` of the batch-64 stateful twin's ``to_onnx()`` export, its
  states fed back (as bench/pool_ragged.py).

Each round times every row once over a block of calls (interleaved, the start rotated);
medians and the quartiles of the rounds are printed with the load average. Run it once with
PYTHONPATH at the code before a change and once after, to compare.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np

import rnncore
from rnncore import functional
from rnncore import layers as L

STREAMS, D, H, OUT = 64, 64, 128, 8


def _model(batch=None):
    rnncore.utils.set_random_seed(0)
    model = rnncore.Sequential([rnncore.Input((1, D), batch_size=batch),
                                L.LSTM(H, stateful=batch is not None), L.Dense(OUT)])  # fmt: skip
    rng = np.random.default_rng(0)
    model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(w.shape[0])).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model


def _ort(model, threads):
    import onnxruntime as ort

    twin = _model(STREAMS)
    twin.set_weights(model.get_weights())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(twin.to_onnx().SerializeToString(), so,
                                providers=["CPUExecutionProvider"])  # fmt: skip
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    back = {n: n.replace("_initial_", "_Y_") for n in ins[1:]}
    feeds = {n: np.zeros((STREAMS, H), np.float32) for n in ins[1:]}

    def step(x):
        res = dict(zip(outs, sess.run(outs, {ins[0]: x[:, None, :], **feeds})))
        for n in back:
            feeds[n] = res[back[n]]
        return res[outs[0]]

    return step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--calls", type=int, default=200, help="calls per timed block")
    args = p.parse_args()
    rnncore.set_num_threads(args.threads)
    model = _model()
    pool = model.stream_pool(STREAMS)
    ids = [pool.open() for _ in range(STREAMS)]
    x = np.random.default_rng(1).standard_normal((STREAMS, D)).astype(np.float32)
    xd = dict(zip(ids, x))
    rows = {
        "pool.step(ids, X)": lambda: pool.step(ids, x),
        "pool.step({id: x})": lambda: pool.step(xd),
    }
    # the floor: the two layers' core calls alone, the states carried by hand
    lstm, dense = model.layers
    core = functional.stream("lstm", *(v.value for v in lstm.weights))
    carried = [[np.zeros((STREAMS, H), np.float32) for _ in range(2)]]
    x3 = np.ascontiguousarray(x[:, None])

    def core_step():
        out = core.run(x3, None, False, carried[0], True)
        carried[0] = list(out[1:])
        return functional.dense(out[0], dense.kernel.value, dense.bias.value, "linear")

    rows["core alone: stream.run + dense"] = core_step
    try:
        step = _ort(model, args.threads)
        rows["onnxruntime batch-64 call"] = lambda: step(x)
    except Exception as e:  # a missing peer is reported, not fatal
        print(f"onnxruntime left out: {type(e).__name__}: {e}")
    # the pool's outputs against the model's one-step predict of the same inputs
    for s in ids:
        pool.reset(s)
    got = pool.step(ids, x)
    want = model.predict(x[:, None], verbose=0)
    assert np.array_equal(np.stack([got[s] for s in ids]), want), "pool != predict"
    for call in rows.values():  # warm-up
        for _ in range(args.calls):
            call()
    samples = {k: [] for k in rows}
    keys = list(rows)
    load0 = open("/proc/loadavg").read().strip()
    gc.disable()
    for r in range(args.rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            for _ in range(args.calls):
                rows[k]()
            samples[k].append((time.perf_counter() - t0) / args.calls * 1e6)
    gc.enable()
    load1 = open("/proc/loadavg").read().strip()
    print(f"rnncore {rnncore.__file__} isa {rnncore._core.isa}, threads {args.threads}")
    print(f"loadavg start: {load0}; end: {load1}")
    med = {k: statistics.median(v) for k, v in samples.items()}
    for k, v in samples.items():
        q = statistics.quantiles(v, n=4)
        print(f"{k:32s} median {med[k]:8.1f} us  (q1 {q[0]:.1f}, q3 {q[2]:.1f})")
    ort_key = "onnxruntime batch-64 call"
    if ort_key in med:
        for k in keys[:2]:
            print(f"{k}: onnxruntime / rnncore = {med[ort_key] / med[k]:.2f}x")


if __name__ == "__main__":
    main()
