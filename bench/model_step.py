"""Whole-model streaming and pooled streams (issue 16), side by side in one process.

    python3 bench/model_step.py [--threads 1] [--repeats 7] [--steps 2000] [--streams 16]

Model: LSTM(H) stateful -> Dense(H) on D inputs, fed one timestep per call (batch 1), the
state carried. Rows (median microseconds per step over --repeats samples of --steps steps):

* rnncore model(x_t): the Sequential, whose two layers run as one core chain
  (rnncore/models/native_chain.py);
* rnncore layer by layer: the same model with the chain turned off (today's path before it:
  each layer's call from Python);
* PyTorch: nn.LSTM + nn.Linear under inference_mode, (h, c) carried;
* onnxruntime: the model's own export (model.to_onnx: state inputs and outputs), states fed
  back.

Pool: --streams independent streams of the non-stateful twin model, one step each per
round: ``pool.step({sid: x_t})`` (one batched step) against one stateful batch-1 model per
stream stepped in turn. Times are per round (all streams one step).

Weights, inputs and outputs are the same for every implementation; the outputs are checked
against rnncore's before timing. Prints a Markdown table with the CPU, thread count and load
average; write it to bench/results/ by hand (`> bench/results/model_step-<cpu>.md`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import rnncore  # noqa: E402
from _machine import loadavg, machine_info  # noqa: E402
from rnncore import layers as L  # noqa: E402


def build(D, H, stateful, seed=0):
    batch = {"batch_size": 1} if stateful else {}
    model = rnncore.Sequential([
        rnncore.Input((None, D), **batch), L.LSTM(H, stateful=stateful, return_sequences=True),
        L.Dense(H)])  # fmt: skip
    rng = np.random.default_rng(seed)
    model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(w.shape[0])).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model


def per_step(step, xs, repeats):
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in xs:
            step(x)
        samples.append((time.perf_counter() - t0) / len(xs) * 1e6)
    return statistics.median(samples), samples


def torch_impl(model, threads):
    import torch

    torch.set_num_threads(threads)
    lstm_l, dense_l = model.layers
    W, U, b = lstm_l.get_weights()
    K, c = dense_l.get_weights()
    D, H = W.shape[0], U.shape[0]
    lstm = torch.nn.LSTM(D, H, batch_first=True)
    lin = torch.nn.Linear(H, K.shape[1])
    with torch.no_grad():  # Keras i, f, c, o is PyTorch's i, f, g, o
        lstm.weight_ih_l0.copy_(torch.from_numpy(W.T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(U.T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b))
        lstm.bias_hh_l0.zero_()
        lin.weight.copy_(torch.from_numpy(K.T.copy()))
        lin.bias.copy_(torch.from_numpy(c))
    state = [None]

    def step(x):
        with torch.inference_mode():
            y, state[0] = lstm(torch.from_numpy(x), state[0])
            return lin(y).numpy()

    def reset():
        state[0] = None

    return step, reset


def ort_impl(model, threads):
    import onnxruntime as ort

    proto = model.to_onnx()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    state_in = [n for n in ins if n != ins[0]]
    H = model.layers[0].units
    feeds = {n: np.zeros((1, H), np.float32) for n in state_in}

    def step(x):
        res = sess.run(None, {ins[0]: x, **feeds})
        named = dict(zip(outs, res))
        for n in state_in:  # <layer>_initial_h -> <layer>_Y_h
            feeds[n] = named[n.replace("_initial_", "_Y_")]
        return res[0]

    def reset():
        for n in state_in:
            feeds[n] = np.zeros((1, H), np.float32)

    return step, reset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--H", type=int, default=128)
    a = ap.parse_args(argv)
    rnncore.set_num_threads(a.threads)
    load_start = loadavg()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 1, a.D)).astype(np.float32) for _ in range(a.steps)]
    check = xs[:20]

    model = build(a.D, a.H, stateful=True)
    flat = build(a.D, a.H, stateful=True)
    flat._chain_plan = lambda: list(flat.layers)  # the chain off: layer by layer
    impls = {"rnncore model(x_t) [chain]": (model, model.reset_states),
             "rnncore layer by layer": (flat, flat.reset_states)}  # fmt: skip
    for name, make in (("PyTorch", torch_impl), ("onnxruntime", ort_impl)):
        try:
            impls[name] = make(model, a.threads)
        except Exception as e:  # a missing peer is reported, not fatal
            print(f"# {name} left out: {type(e).__name__}: {e}", file=sys.stderr)

    ref = None
    for name, (step, reset) in impls.items():  # same outputs before any timing
        reset()
        got = np.concatenate([np.asarray(step(x)).reshape(1, -1) for x in check])
        reset()
        if ref is None:
            ref = got
        err = float(np.abs(got - ref).max())
        if err > 1e-4:
            raise SystemExit(f"{name}: outputs differ from rnncore's by {err}")
    rows = []
    for name, (step, reset) in impls.items():
        reset()
        step(xs[0])
        med, samples = per_step(step, xs, a.repeats)
        rows.append((name, med, (max(samples) - min(samples)) / 2))

    # pool: N streams, one step each per round
    twin = build(a.D, a.H, stateful=False)
    pool = twin.stream_pool(a.streams)
    sids = [pool.open() for _ in range(a.streams)]
    singles = [build(a.D, a.H, stateful=True) for _ in range(a.streams)]
    xr = [rng.standard_normal((a.streams, a.D)).astype(np.float32) for _ in range(a.steps // 10)]
    out_pool = pool.step({sid: xr[0][k] for k, sid in enumerate(sids)})
    for k, (sid, m) in enumerate(zip(sids, singles)):
        np.testing.assert_array_equal(
            np.asarray(out_pool[sid]).reshape(-1), m(xr[0][k].reshape(1, 1, -1)).reshape(-1)
        )
    pool_med, _ = per_step(lambda x: pool.step({sid: x[k] for k, sid in enumerate(sids)}),
                           xr, a.repeats)  # fmt: skip
    singles_med, _ = per_step(
        lambda x: [m(x[k].reshape(1, 1, -1)) for k, m in enumerate(singles)], xr, a.repeats
    )

    info = machine_info()
    print(f"# Model streaming — {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    wait = os.environ.get("OMP_WAIT_POLICY")
    print(f"`python3 bench/model_step.py {' '.join(argv or sys.argv[1:])}`; CPU "
          f"{info['cpu']} ({', '.join(info['cpu_flags'])}), rnncore isa "
          f"{rnncore.build_info()['isa']}, threads {a.threads}; load average start "
          f"{load_start}, end {loadavg()}; OMP_WAIT_POLICY={wait}\n")  # fmt: skip
    print(f"LSTM({a.H}) stateful -> Dense({a.H}), D={a.D}, batch 1, one step per call; "
          f"median of {a.repeats} samples of {a.steps} steps.\n")  # fmt: skip
    print("| implementation | us/step | ± (half range) | × vs rnncore chain |")
    print("|---|---|---|---|")
    base = rows[0][1]
    for name, med, spread in rows:
        print(f"| {name} | {med:.2f} | {spread:.2f} | {med / base:.2f}× |")
    print(f"\nPool of {a.streams} streams, one step each per round (us per round): "
          f"pool.step {pool_med:.1f}, {a.streams} stateful batch-1 models stepped in turn "
          f"{singles_med:.1f} ({singles_med / pool_med:.2f}×).")  # fmt: skip


if __name__ == "__main__":
    main()
