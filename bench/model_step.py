"""Whole models (issue 16): streaming per step, and a text classifier's predict, side by
side in one process.

    python3 bench/model_step.py [--threads 1] [--repeats 7] [--steps 2000]

1. S1 whole model per step: Input(1, 64) -> LSTM(128) -> LSTM(128) -> Dense(8), stateful,
   batch 1, one timestep per call, the states carried:
   * rnncore ``model(x_t)``: the Sequential, its layers one core chain
     (rnncore/models/plan.py, native_chain.py);
   * rnncore layer by layer: the same model with the chain turned off (each layer's call from
     Python, as before the chain);
   * PyTorch: nn.LSTM(num_layers=2) + nn.Linear under inference_mode, (h, c) carried;
   * onnxruntime: the model's own export (``model.to_onnx()``: state inputs and outputs),
     the states fed back.
   Then a one-layer LSTM(128) model's step against the bare ``stream.run`` of its layer, and
   the fixed cost per call: the step minus its math (the math: one ``stream.run`` over 1000
   timesteps, per timestep).
2. Whole-model predict of the text classifier Embedding(10000, 32, mask_zero) ->
   Bidirectional(LSTM(64)) -> Dense(1, sigmoid), batch 32, T=200 right-padded ids: the chain,
   layer by layer, onnxruntime (``model.to_onnx()``) and PyTorch (nn.Embedding, a
   bidirectional nn.LSTM over a PackedSequence, nn.Linear).

The outputs are checked against rnncore's before anything is timed. Times are the median of
--repeats samples. Prints Markdown with the CPU, threads and load average.
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
from _models import seeded  # noqa: E402
from rnncore import layers as L  # noqa: E402
from rnncore.models import plan  # noqa: E402


def stack(layers_units, D=64, out=8, stateful=True):
    batch = {"batch_size": 1} if stateful else {}
    model = rnncore.Sequential([rnncore.Input((None, D), **batch)] + [
        L.LSTM(h, stateful=stateful, return_sequences=True) for h in layers_units] + (
        [L.Dense(out)] if out else []))  # fmt: skip
    return seeded(model, 0)


def layer_by_layer(model):
    model._compile_plan = lambda: plan.linear(model.layers, model, fuse=False)  # chain off
    model._plan = plan.STALE
    return model


def median_us(fn, items, repeats):
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        samples.append((time.perf_counter() - t0) / len(items) * 1e6)
    return statistics.median(samples), (max(samples) - min(samples)) / 2


def keras_lstm_to_torch(lstm_torch, layers, suffix=""):
    """Keras LSTM weights (i, f, c, o) into a torch LSTM's layer k (i, f, g, o: the same)."""
    import torch

    with torch.no_grad():
        for k, (W, U, b) in enumerate(layers):
            getattr(lstm_torch, f"weight_ih_l{k}{suffix}").copy_(torch.from_numpy(W.T.copy()))
            getattr(lstm_torch, f"weight_hh_l{k}{suffix}").copy_(torch.from_numpy(U.T.copy()))
            getattr(lstm_torch, f"bias_ih_l{k}{suffix}").copy_(torch.from_numpy(b))
            getattr(lstm_torch, f"bias_hh_l{k}{suffix}").zero_()


def torch_stack(model, threads):
    import torch

    torch.set_num_threads(threads)
    *lstms, dense = model.layers
    D, H = lstms[0].kernel.shape[0], lstms[0].units
    net = torch.nn.LSTM(D, H, num_layers=len(lstms), batch_first=True)
    keras_lstm_to_torch(net, [layer.get_weights() for layer in lstms])
    lin = torch.nn.Linear(H, dense.units)
    K, c = dense.get_weights()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(K.T.copy()))
        lin.bias.copy_(torch.from_numpy(c))
    state = [None]

    def step(x):
        with torch.inference_mode():
            y, state[0] = net(torch.from_numpy(x), state[0])
            return lin(y).numpy()

    return step, lambda: state.__setitem__(0, None)


def ort_session(model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.to_onnx().SerializeToString(), so,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def ort_stack(model, threads):
    sess = ort_session(model, threads)
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    state_in = ins[1:]
    H = model.layers[0].units
    feeds = {}

    def reset():
        for n in state_in:
            feeds[n] = np.zeros((1, H), np.float32)

    def step(x):
        named = dict(zip(outs, sess.run(None, {ins[0]: x, **feeds})))
        for n in state_in:  # <layer>_initial_h -> <layer>_Y_h
            feeds[n] = named[n.replace("_initial_", "_Y_")]
        return named[outs[0]]

    reset()
    return step, reset


def streaming(a, rng):
    xs = [rng.standard_normal((1, 1, 64)).astype(np.float32) for _ in range(a.steps)]
    model = stack([128, 128])
    flat = layer_by_layer(stack([128, 128]))
    impls = {"rnncore model(x_t) [chain]": (model, model.reset_states),
             "rnncore layer by layer": (flat, flat.reset_states)}  # fmt: skip
    for name, make in (("PyTorch", torch_stack), ("onnxruntime", ort_stack)):
        try:
            impls[name] = make(model, a.threads)
        except Exception as e:  # a missing peer is reported, not fatal
            print(f"# {name} left out: {type(e).__name__}: {e}", file=sys.stderr)
    ref = None
    for name, (step, reset) in impls.items():  # the same outputs before any timing
        reset()
        got = np.concatenate([np.asarray(step(x)).reshape(1, -1) for x in xs[:20]])
        reset()
        ref = got if ref is None else ref
        if float(np.abs(got - ref).max()) > 1e-4:
            raise SystemExit(f"{name}: outputs differ from rnncore's")
    rows = []
    for name, (step, reset) in impls.items():
        reset()
        rows.append((name, *median_us(step, xs, a.repeats)))

    one = stack([128], out=0)
    stream = one.layers[0]._stream_for(1)
    step_one = median_us(one, xs, a.repeats)[0]
    bare = median_us(lambda x: stream.run(x, None, True), xs, a.repeats)[0]
    long = rng.standard_normal((1, 1000, 64)).astype(np.float32)
    math = median_us(lambda x: stream.run(x, None, True), [long] * 5, a.repeats)[0] / 1000
    return rows, {"step": step_one, "bare": bare, "math": math}


def classifier(a, rng):
    V, E, H, B, T = 10000, 32, 64, 32, 200

    def build():
        m = rnncore.Sequential([
            rnncore.Input((T,), dtype="int32"), L.Embedding(V, E, mask_zero=True),
            L.Bidirectional(L.LSTM(H)), L.Dense(1, activation="sigmoid")])  # fmt: skip
        return seeded(m, 1)

    model, flat = build(), layer_by_layer(build())
    lengths = rng.integers(10, T + 1, B)
    ids = rng.integers(1, V, (B, T)).astype(np.int32)
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    impls = {"rnncore predict [chain]": lambda: model.predict(ids, batch_size=B),
             "rnncore layer by layer": lambda: flat.predict(ids, batch_size=B)}  # fmt: skip
    try:
        sess = ort_session(model, a.threads)
        feed = {sess.get_inputs()[0].name: ids}  # the export keeps the int32 input
        impls["onnxruntime"] = lambda: sess.run(None, feed)[0]
    except Exception as e:
        print(f"# onnxruntime left out: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        import torch

        torch.set_num_threads(a.threads)
        emb = torch.nn.Embedding(V, E)
        lstm = torch.nn.LSTM(E, H, batch_first=True, bidirectional=True)
        lin = torch.nn.Linear(2 * H, 1)
        Wf, Uf, bf, Wb, Ub, bb = model.layers[1].get_weights()
        keras_lstm_to_torch(lstm, [(Wf, Uf, bf)])
        keras_lstm_to_torch(lstm, [(Wb, Ub, bb)], "_reverse")
        K, c = model.layers[2].get_weights()
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(model.layers[0].get_weights()[0]))
            lin.weight.copy_(torch.from_numpy(K.T.copy()))
            lin.bias.copy_(torch.from_numpy(c))
        tids, tlen = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths)

        def torch_predict():
            with torch.inference_mode():
                packed = torch.nn.utils.rnn.pack_padded_sequence(
                    emb(tids), tlen, batch_first=True, enforce_sorted=False)  # fmt: skip
                _, (h, _) = lstm(packed)
                return torch.sigmoid(lin(torch.cat([h[0], h[1]], 1))).numpy()

        impls["PyTorch (PackedSequence)"] = torch_predict
    except Exception as e:
        print(f"# PyTorch left out: {type(e).__name__}: {e}", file=sys.stderr)
    ref = impls["rnncore predict [chain]"]()
    for name, fn in impls.items():
        if float(np.abs(np.asarray(fn()).reshape(ref.shape) - ref).max()) > 1e-4:
            raise SystemExit(f"{name}: outputs differ from rnncore's")
    rows = []
    for name, fn in impls.items():
        med, spread = median_us(lambda _, fn=fn: fn(), [None] * 5, a.repeats)
        rows.append((name, med / 1000, spread / 1000))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2000)
    a = ap.parse_args(argv)
    rnncore.set_num_threads(a.threads)
    load_start = loadavg()
    rng = np.random.default_rng(1)
    rows, one = streaming(a, rng)
    cls = classifier(a, rng)
    info = machine_info()
    wait = os.environ.get("OMP_WAIT_POLICY")
    print(f"# Whole models — {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    print(f"`python3 bench/model_step.py {' '.join(argv or sys.argv[1:])}`; CPU "
          f"{info['cpu']} ({', '.join(info['cpu_flags'])}), rnncore isa "
          f"{rnncore.build_info()['isa']}, threads {a.threads}; load average start "
          f"{load_start}, end {loadavg()}; OMP_WAIT_POLICY={wait}\n")  # fmt: skip
    print("## S1 whole model per step\n")
    print("Input(1, 64) -> LSTM(128) -> LSTM(128) -> Dense(8), stateful, batch 1; median of "
          f"{a.repeats} samples of {a.steps} steps.\n")  # fmt: skip
    print("| implementation | us/step | ± (half range) | × vs rnncore chain |")
    print("|---|---|---|---|")
    for name, med, spread in rows:
        print(f"| {name} | {med:.2f} | {spread:.2f} | {med / rows[0][1]:.2f}× |")
    print(f"\nOne LSTM(128) layer: model step {one['step']:.2f} us, bare stream.run "
          f"{one['bare']:.2f} us ({one['step'] / one['bare']:.2f}×); its math (stream.run over "
          f"1000 steps, per step) {one['math']:.2f} us, so the fixed cost per call is "
          f"{one['step'] - one['math']:.2f} us (stream.run alone: "
          f"{one['bare'] - one['math']:.2f} us).\n")  # fmt: skip
    print("## Whole-model predict: text classifier\n")
    print("Embedding(10000, 32, mask_zero) -> Bidirectional(LSTM(64)) -> Dense(1, sigmoid), "
          "batch 32, T=200, lengths uniform in [10, 200] (right padding).\n")  # fmt: skip
    print("| implementation | ms/batch | ± (half range) | × vs rnncore chain |")
    print("|---|---|---|---|")
    for name, med, spread in cls:
        print(f"| {name} | {med:.3f} | {spread:.3f} | {med / cls[0][1]:.2f}× |")


if __name__ == "__main__":
    main()
