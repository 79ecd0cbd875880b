"""A pool of streams and ragged batches (issue 16, "Measure"), side by side in one process.

    python3 bench/pool_ragged.py [--threads 1] [--repeats 7] [--only pool,ragged]
                                 [--out bench/results/pool-ragged-<cpu>.md]

**Pool**: 64 open streams of Input(None, 64) -> LSTM(128), each stepping once per round.
Rows (microseconds per round, all 64 streams one step):

* rnncore pool, stacked: ``pool.step(ids, X)`` with ``X`` ``(64, 64)``;
* rnncore pool, dict: ``pool.step({sid: x, ...})``;
* rnncore, 64 stateful batch-1 models called in turn (``model(x)``, as users do it today);
* onnxruntime batch 64: one ``session.run`` of the stateful batch-64 twin's export
  (``model.to_onnx()``: inputs ``<layer>_initial_h/_c``, outputs ``<layer>_Y_h/_c``), the
  states fed back.

Targets: the pool (stacked) >= 1.2x faster than onnxruntime's call, >= 4x faster than the
64 separate models. Before timing, 5 rounds from zero states are compared (max |diff| <=
1e-5; the pool and the separate models are expected to be bitwise equal).

**Ragged**: B=64, T=200, D=128, lengths uniform in [10, 200], LSTM(256) and GRU(256)
(``return_sequences=True``, the same weights everywhere). Rows (ms per batch):

* rnncore ragged: ``model.predict([a_1, ..., a_64], batch_size=64)`` (one array per sample);
* rnncore masked: the right-padded batch through Masking(0) -> the layer (the core skips
  the trailing padded steps);
* rnncore padded: the padded batch without a mask (all the work);
* PyTorch packed: ``pack_padded_sequence(enforce_sorted=False)`` -> nn.LSTM/GRU ->
  ``pad_packed_sequence``, under ``inference_mode`` (packing and unpacking timed);
* onnxruntime sequence_lens: a hand-built LSTM/GRU node (as bench/_impls.py's, between two
  Transposes) with its ``sequence_lens`` input.

Outputs are compared with the ragged predict's on each sample's valid steps before timing
(max |diff| <= 1e-4). Target: ragged >= 1.6x faster than rnncore padded, and ahead of
PyTorch and onnxruntime. Timing: bench/_timing.py's interleaved rounds (the start rotated),
samples of >= 0.1 s (a 150 ms pause before each with more than one thread), medians; the
spread is half the inter-quartile range. Prints a Markdown report (CPU, threads, load
average at start and end) and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import rnncore  # noqa: E402
from _impls import ONNX_OP, ONNX_ORDER, Runner, Weights, _blocks, ort_session, torch_module  # noqa: E402  # noqa: E402
from _machine import loadavg, machine_info  # noqa: E402
from _models import seeded  # noqa: E402
from _timing import time_interleaved  # noqa: E402
from rnncore import functional  # noqa: E402
from rnncore import layers as L  # noqa: E402

STREAMS, POOL_D, POOL_H = 64, 64, 128
B, T, D, H, MIN_LEN = 64, 200, 128, 256, 10
CHECK_ROUNDS = 5
_SEPARATE = f"rnncore, {STREAMS} stateful batch-1 models in turn: model(x)"
_ORT = f"onnxruntime, one batch-{STREAMS} call, states fed back"


def _lstm_model(batch=None):
    stateful = batch is not None
    return rnncore.Sequential([rnncore.Input((None, POOL_D), batch_size=batch),
                               L.LSTM(POOL_H, stateful=stateful)])  # fmt: skip


# ---- pool ---------------------------------------------------------------------------------


def pool_runners(threads, rng):
    """``{label: Runner}`` (``call()`` = one round: every stream one step; ``collect()`` =
    ``CHECK_ROUNDS`` rounds from zero states, stacked) and notes."""
    model = seeded(_lstm_model(), 0)
    weights = model.get_weights()
    xs = rng.standard_normal((CHECK_ROUNDS, STREAMS, POOL_D)).astype(np.float32)
    runners, notes = {}, []

    pool = model.stream_pool(STREAMS)
    sids = [pool.open() for _ in range(STREAMS)]

    def pool_collect(step):
        for s in sids:
            pool.reset(s)
        return np.stack([[out[s] for s in sids] for out in map(step, xs)])

    def stacked(x):
        return pool.step(sids, x)

    def by_dict(x):
        return pool.step({s: x[k] for k, s in enumerate(sids)})

    # the timed calls return what the user gets (a dict of outputs): no stacking timed
    runners["rnncore pool, stacked: pool.step(ids, X)"] = Runner(
        "pool", "lstm", "pool", lambda: stacked(xs[0]), lambda: pool_collect(stacked)
    )
    runners["rnncore pool, dict: pool.step({id: x})"] = Runner(
        "pool", "lstm", "pool", lambda: by_dict(xs[0]), lambda: pool_collect(by_dict))  # fmt: skip

    layer = model.layers[0]  # the pool's floor: its one core call, states carried by hand
    core = functional.stream("lstm", *(v.value for v in layer.weights))
    carried = []

    def core_step(x):
        out = core.run(x[:, None], None, False, carried[-1], True)
        carried.append(list(out[1:]))
        del carried[:-1]
        return out[0]

    def core_collect():
        carried.append([np.zeros((STREAMS, POOL_H), np.float32) for _ in range(2)])
        return np.stack([core_step(x) for x in xs])

    core_collect()
    runners["core alone: one stream.run (B=64, T=1), states by hand"] = Runner(
        "core", "lstm", "pool", lambda: core_step(xs[0]), core_collect
    )

    singles = [_lstm_model(1) for _ in range(STREAMS)]
    for m in singles:
        m.set_weights(weights)
    steps = [x[:, None, None, :] for x in xs]  # (streams, 1, 1, D): one call each

    def separate(x):
        return [m(x[k]) for k, m in enumerate(singles)]

    def separate_collect():
        for m in singles:
            m.reset_states()
        return np.stack([np.concatenate(separate(x)) for x in steps])

    runners[_SEPARATE] = Runner(
        "separate", "lstm", "pool", lambda: separate(steps[0]), separate_collect
    )

    try:
        runners[_ORT] = _ort_pool(weights, threads, xs, notes)
    except Exception as e:  # a missing peer is reported, not fatal
        notes.append(f"onnxruntime left out: {type(e).__name__}: {e}")
    return runners, notes


def _ort_pool(weights, threads, xs, notes):
    twin = _lstm_model(STREAMS)
    twin.set_weights(weights)
    sess = ort_session(twin.to_onnx(), threads)
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    state_in = ins[1:]
    back = {n: n.replace("_initial_", "_Y_") for n in state_in}
    missing = [v for v in back.values() if v not in outs]
    if missing or len(state_in) != 2:
        raise RuntimeError(f"export's state names: inputs {ins}, outputs {outs}")
    notes.append(f"onnxruntime: export inputs {ins}, outputs {outs} (states fed back "
                 f"{', '.join(f'{v} -> {k}' for k, v in back.items())})")  # fmt: skip
    feeds = {}

    def reset():
        for n in state_in:
            feeds[n] = np.zeros((STREAMS, POOL_H), np.float32)

    def step(x):
        res = dict(zip(outs, sess.run(outs, {ins[0]: x[:, None, :], **feeds})))
        for n in state_in:
            feeds[n] = res[back[n]]
        return res[outs[0]]

    def collect():
        reset()
        return np.stack([step(x) for x in xs])

    reset()
    return Runner("onnxruntime", "lstm", "pool", lambda: step(xs[0]), collect)


# ---- ragged -------------------------------------------------------------------------------


def _onnx_seq_lens(w: Weights):
    """An LSTM/GRU node with ``sequence_lens``: inputs X (B, T, D) float32 and seq_lens (B,)
    int32, output Y (B, T, H), zeros past each length (ONNX's rule)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    order, cell = ONNX_ORDER[w.cell], w.cell
    bias = (w.bias[0], w.bias[1]) if cell == "gru" else (w.bias, np.zeros_like(w.bias))
    arrays = {"W": _blocks(w.kernel, w.H, order).T[None],
              "R": _blocks(w.recurrent_kernel, w.H, order).T[None],
              "B": np.concatenate([_blocks(b, w.H, order) for b in bias])[None],
              "axes": np.array([2], np.int64)}  # fmt: skip
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), n) for n, a in arrays.items()]
    attrs = {"hidden_size": w.H, **({"linear_before_reset": 1} if cell == "gru" else {})}
    nodes = [
        helper.make_node("Transpose", ["X"], ["X_tm"], perm=[1, 0, 2]),
        helper.make_node(ONNX_OP[cell], ["X_tm", "W", "R", "B", "seq_lens"], ["Y_tm"], **attrs),
        helper.make_node("Transpose", ["Y_tm"], ["Y_bm"], perm=[2, 0, 1, 3]),
        helper.make_node("Squeeze", ["Y_bm", "axes"], ["Y"]),
    ]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, f"{cell}_seq_lens",
        [helper.make_tensor_value_info("X", f32, ["B", "T", w.D]),
         helper.make_tensor_value_info("seq_lens", TensorProto.INT32, ["B"])],
        [helper.make_tensor_value_info("Y", f32, ["B", "T", w.H])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ragged_runners(cell, threads, samples, padded, lengths):
    """``{label: Runner}`` for one cell (``collect()`` = the per-sample valid outputs)."""
    layer = {"lstm": L.LSTM, "gru": L.GRU}[cell]
    plain = rnncore.Sequential([rnncore.Input((None, D)), layer(H, return_sequences=True)])
    seeded(plain, 1)
    masked = rnncore.Sequential([rnncore.Input((None, D)), L.Masking(0.0),
                                 layer(H, return_sequences=True)])  # fmt: skip
    masked.set_weights(plain.get_weights())

    def valid(y):
        return [y[i, :n] for i, n in enumerate(lengths)]

    def run(f, post=lambda y: y):
        return Runner(cell, cell, "ragged", f, lambda: post(f()))

    runners = {
        "rnncore ragged: predict([a_1, ..., a_64])": run(
            lambda: plain.predict(samples, batch_size=B)),
        "rnncore masked: Masking -> layer, padded batch": run(
            lambda: masked.predict(padded, batch_size=B), valid),
        "rnncore padded, no mask (all the work)": run(
            lambda: plain.predict(padded, batch_size=B), valid),
    }  # fmt: skip
    notes = []
    w = Weights(cell, *plain.get_weights())
    try:
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        module, xt = torch_module(w), torch.from_numpy(padded)
        lens_t = torch.from_numpy(lengths.astype(np.int64))

        def torch_call():
            with torch.inference_mode():
                packed = pack_padded_sequence(xt, lens_t, batch_first=True, enforce_sorted=False)
                return pad_packed_sequence(module(packed)[0], batch_first=True)[0]

        runners["PyTorch PackedSequence"] = run(torch_call, lambda y: valid(y.numpy()))
    except Exception as e:
        notes.append(f"PyTorch left out: {type(e).__name__}: {e}")
    try:
        sess = ort_session(_onnx_seq_lens(w), threads)
        feed = {"X": padded, "seq_lens": lengths.astype(np.int32)}
        runners["onnxruntime, sequence_lens"] = run(
            lambda: sess.run(["Y"], feed)[0], valid)  # fmt: skip
    except Exception as e:
        notes.append(f"onnxruntime left out: {type(e).__name__}: {e}")
    return runners, notes


def ragged_data(rng):
    lengths = rng.integers(MIN_LEN, T + 1, B)
    samples = [rng.standard_normal((int(n), D)).astype(np.float32) for n in lengths]
    padded = np.zeros((B, T, D), np.float32)
    for i, s in enumerate(samples):
        padded[i, : len(s)] = s
    return samples, padded, lengths


# ---- checking, timing, report ---------------------------------------------------------------


def _max_diff(a, b) -> float:
    if isinstance(a, list):
        return max(_max_diff(x, y) for x, y in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise SystemExit(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.float64) - b).max())


def check(runners, tol):
    """Each runner's ``collect()`` against the first's; the max |diff| per runner."""
    ref = None
    diffs = {}
    for label, r in runners.items():
        got = r.collect()
        ref = got if ref is None else ref
        diffs[label] = _max_diff(got, ref)
        if diffs[label] > tol:
            raise SystemExit(f"{label}: outputs differ from the first row's by {diffs[label]}")
    return diffs


def timed(runners, repeats, threads, target_s):
    res = time_interleaved(runners, repeats, target_s, 0.15 if threads > 1 else 0.0)
    return {k: (v["median"], (v["q3"] - v["q1"]) / 2) for k, v in res.items()}


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def pool_section(threads, repeats, rng) -> list[str]:
    runners, notes = pool_runners(threads, rng)
    diffs = check(runners, 1e-5)
    times = timed(runners, repeats, threads, 0.1)
    labels = list(runners)
    base = times[labels[0]][0]
    lines = [f"### Pool: {STREAMS} streams, one step each per round, threads {threads}\n",
             f"Input(None, {POOL_D}) -> LSTM({POOL_H}); median of {repeats} interleaved "
             "samples; µs per round (all streams one step).\n",
             "| implementation | µs / round | ± | µs / stream step | time / pool's | "
             "max \\|Δ\\| vs pool |", "|---|---|---|---|---|---|"]  # fmt: skip
    for k in labels:
        med, spread = times[k]
        per = med * 1e6 / STREAMS
        lines.append(f"| {k} | {med * 1e6:.1f} | {spread * 1e6:.1f} | {per:.2f} | "
                     f"{med / base:.2f}× | {diffs[k]:.1e} |")  # fmt: skip
    sep = times[_SEPARATE][0] / base
    lines.append("")
    lines.append(f"- vs {STREAMS} separate batch-1 models: {sep:.2f}× (target ≥ 4×: "
                 f"{_verdict(sep >= 4)})")  # fmt: skip
    if _ORT in times:
        ort = times[_ORT][0] / base
        lines.append(f"- vs onnxruntime's batch-{STREAMS} call: {ort:.2f}× (target ≥ 1.2×: "
                     f"{_verdict(ort >= 1.2)})")  # fmt: skip
    return lines + [f"- {n}" for n in notes] + [""]


def ragged_section(threads, repeats, rng) -> list[str]:
    samples, padded, lengths = ragged_data(rng)
    lines = [f"### Ragged: B={B}, T={T}, D={D}, H={H}, lengths uniform in [{MIN_LEN}, {T}] "
             f"(mean {lengths.mean():.1f}: {lengths.sum() / (B * T):.0%} of the padded "
             f"steps), threads {threads}\n"]  # fmt: skip
    for cell in ("lstm", "gru"):
        runners, notes = ragged_runners(cell, threads, samples, padded, lengths)
        diffs = check(runners, 1e-4)
        times = timed(runners, repeats, threads, 0.1)
        labels = list(runners)
        base = times[labels[0]][0]
        lines += [f"**{cell.upper()}({H})** (ms per batch, median of {repeats})\n",
                  "| implementation | ms | ± | time / ragged's | max \\|Δ\\| vs ragged "
                  "(valid steps) |", "|---|---|---|---|---|"]  # fmt: skip
        for k in labels:
            med, spread = times[k]
            lines.append(f"| {k} | {med * 1e3:.2f} | {spread * 1e3:.2f} | {med / base:.2f}× | "
                         f"{diffs[k]:.1e} |")  # fmt: skip
        padded_x = times[labels[2]][0] / base
        peers = {k: times[k][0] / base for k in labels[3:]}
        lines += [
            "",
            f"- ragged vs rnncore padded: {padded_x:.2f}× (target ≥ 1.6×: "
            f"{_verdict(padded_x >= 1.6)}); vs masked {times[labels[1]][0] / base:.2f}×",
        ]
        for k, x in peers.items():
            lines.append(f"- ragged vs {k}: {x:.2f}× (target > 1×: {_verdict(x > 1)})")
        lines += [f"- {n}" for n in notes] + [""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default="pool,ragged", help="pool, ragged or both")
    ap.add_argument("--out", default="", help="also write the report to this file")
    a = ap.parse_args(argv)
    parts = {p.strip() for p in a.only.split(",")}
    load_start, t0 = loadavg(), time.time()
    body = []
    for n in (int(t) for t in a.threads.split(",")):
        rnncore.set_num_threads(n)
        try:
            import torch

            torch.set_num_threads(n)
        except ImportError:
            pass
        rng = np.random.default_rng(3)
        if "pool" in parts:
            body += pool_section(n, a.repeats, rng)
        if "ragged" in parts:
            body += ragged_section(n, a.repeats, rng)
    info = machine_info()
    v = info["versions"]
    head = [
        f"# Stream pool and ragged batches — {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n",
        f"`python3 bench/pool_ragged.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" ({time.time() - t0:.0f} s); CPU {info['cpu']} ({', '.join(info['cpu_flags'])}), "
        f"{info['physical_cores']} cores; rnncore {v['rnncore']} isa "
        f"{rnncore.build_info()['isa']} ({info['git']}); PyTorch {v['torch']}, onnxruntime "
        f"{v['onnxruntime']}, NumPy {v['numpy']}; threads {a.threads}; load average start "
        f"{load_start}, end {loadavg()} (a shared machine: compare ratios within one run).\n",
    ]
    text = "\n".join(head + body)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
