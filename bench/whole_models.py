"""Whole real models (issue 24, "Every layer native"): rnncore against onnxruntime and
OpenVINO on the same model, side by side in one process.

    python3 bench/whole_models.py [--threads 1] [--repeats 9] [--out FILE]

Models (float32, weights fixed by seed), each at batch 1 and batch 64:

* conv forecaster: Input(200, 8) -> Conv1D(32, 5, causal, relu) -> MaxPooling1D(2) ->
  LSTM(64) -> Dense(1);
* text classifier: Input(200) ids -> Embedding(20000, 64, mask_zero) ->
  Bidirectional(LSTM(64)) -> Dense(1, sigmoid), right-padded ids (lengths in [10, 200]);
* norm stack: Input(100, 32) -> LSTM(128, seq) -> LayerNormalization -> GRU(128) ->
  Dense(10);
* tagger: Input(80, 16) -> Bidirectional(GRU(64, seq)) -> TimeDistributed(Dense(8));
* attention encoder: Input(50) ids -> Embedding(5000, 64) -> LSTM(64, seq) ->
  Attention([h, h]) -> GlobalAveragePooling1D -> Dense(4).

rnncore runs ``model(x)``; onnxruntime and OpenVINO (when installed: ``pip install
openvino``) run the model's own ``model.to_onnx()`` export with the same thread count. Every
output is compared with rnncore's before timing (max |diff| printed; over 1e-4 leaves the
peer out). Timing: bench/_timing.py's interleaved rounds, samples of >= 0.1 s, medians.
Ratios are the peer's time over rnncore's (> 1: rnncore faster). Prints Markdown with the
CPU and load average; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
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
    fixed_calls = 0

    def __init__(self, call):
        self.call = call


def _ids(rng, batch, steps, vocab, padded):
    ids = rng.integers(1, vocab, (batch, steps)).astype(np.int32)
    if padded:
        for b, n in enumerate(rng.integers(10, steps + 1, batch)):
            ids[b, n:] = 0
    return ids


def conv_forecaster(batch, rng):
    m = rnncore.Sequential([rnncore.Input((200, 8)),
                            L.Conv1D(32, 5, padding="causal", activation="relu"),
                            L.MaxPooling1D(2), L.LSTM(64), L.Dense(1)])  # fmt: skip
    return seeded(m), rng.standard_normal((batch, 200, 8)).astype(np.float32)


def text_classifier(batch, rng):
    m = rnncore.Sequential([rnncore.Input((200,), dtype="int32"),
                            L.Embedding(20000, 64, mask_zero=True),
                            L.Bidirectional(L.LSTM(64)),
                            L.Dense(1, activation="sigmoid")])  # fmt: skip
    return seeded(m), _ids(rng, batch, 200, 20000, padded=True)


def norm_stack(batch, rng):
    m = rnncore.Sequential([rnncore.Input((100, 32)), L.LSTM(128, return_sequences=True),
                            L.LayerNormalization(), L.GRU(128), L.Dense(10)])  # fmt: skip
    return seeded(m), rng.standard_normal((batch, 100, 32)).astype(np.float32)


def tagger(batch, rng):
    m = rnncore.Sequential([rnncore.Input((80, 16)),
                            L.Bidirectional(L.GRU(64, return_sequences=True)),
                            L.TimeDistributed(L.Dense(8))])  # fmt: skip
    return seeded(m), rng.standard_normal((batch, 80, 16)).astype(np.float32)


def attention_encoder(batch, rng):
    ids = rnncore.Input((50,), dtype="int32")
    h = L.LSTM(64, return_sequences=True)(L.Embedding(5000, 64)(ids))
    y = L.Dense(4)(L.GlobalAveragePooling1D()(L.Attention()([h, h])))
    return seeded(rnncore.Model(ids, y)), _ids(rng, batch, 50, 5000, padded=False)


MODELS = {
    "conv forecaster: Conv1D(causal) -> MaxPooling1D -> LSTM(64) -> Dense": conv_forecaster,
    "text classifier: Embedding(mask_zero) -> Bidirectional(LSTM(64)) -> Dense": text_classifier,
    "norm stack: LSTM(128) -> LayerNormalization -> GRU(128) -> Dense": norm_stack,
    "tagger: Bidirectional(GRU(64)) -> TimeDistributed(Dense(8))": tagger,
    "attention encoder: Embedding -> LSTM(64) -> Attention -> pooling -> Dense": attention_encoder,
}


def _peers(model, x, threads):
    """``{name: call}`` for onnxruntime and OpenVINO on the model's export, and notes."""
    proto = model.to_onnx().SerializeToString()
    peers, notes = {}, []
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(proto, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        peers["onnxruntime"] = lambda: sess.run(None, feed)[0]
    except Exception as e:  # noqa: BLE001 (reported)
        notes.append(f"onnxruntime left out: {type(e).__name__}: {e}")
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(proto, b""), "CPU",
                                      {"INFERENCE_NUM_THREADS": threads,
                                       "INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
        request = compiled.create_infer_request()
        peers["OpenVINO"] = lambda: request.infer([x])[compiled.outputs[0]]
    except Exception as e:  # noqa: BLE001 (reported)
        notes.append(f"OpenVINO left out: {type(e).__name__}: {e}")
    return peers, notes


def run(threads: int, repeats: int) -> list[str]:
    rnncore.set_num_threads(threads)
    lines = ["| model | batch | rnncore ms | onnxruntime ms | OpenVINO ms | × best peer "
             "| max |Δ| |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    notes = []
    for name, make in MODELS.items():
        for batch in (1, 64):
            model, x = make(batch, np.random.default_rng(1))
            want = np.asarray(model(x))
            peers, why = _peers(model, x, threads)
            notes += [f"{name}, batch {batch}: {n}" for n in why]
            diffs = {}
            for peer, call in list(peers.items()):
                diffs[peer] = float(np.abs(np.asarray(call()).reshape(want.shape) - want).max())
                if diffs[peer] > 1e-4:
                    notes.append(f"{name}, batch {batch}: {peer} left out, max |diff| "
                                 f"{diffs[peer]:.1e}")  # fmt: skip
                    del peers[peer]
            runners = {"rnncore": Runner(lambda m=model, x=x: m(x))}
            runners.update({k: Runner(v) for k, v in peers.items()})
            res = time_interleaved(runners, repeats, 0.1, 0.0)
            t = {k: v["median"] * 1e3 for k, v in res.items()}
            best = min((t[k] for k in peers), default=None)
            ratio = f"**{best / t['rnncore']:.2f}×**" if best else "–"
            cells = [f"{t[k]:.3f}" if k in t else "–" for k in ("onnxruntime", "OpenVINO")]
            worst = max(diffs.values(), default=0.0)
            lines.append(f"| {name} | {batch} | {t['rnncore']:.3f} | {cells[0]} | {cells[1]} | "
                         f"{ratio} | {worst:.1e} |")  # fmt: skip
            print(lines[-1], file=sys.stderr, flush=True)
    return lines + [""] + [f"- {n}" for n in notes]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    m = machine_info()
    start = loadavg()
    body = run(args.threads, args.repeats)
    versions = []
    for mod in ("onnxruntime", "openvino"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} not installed")
    text = "\n".join([
        f"# Whole models — {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "",
        f"`python3 bench/whole_models.py {' '.join(sys.argv[1:])}`; CPU {m.get('cpu', '?')}, "
        f"{m.get('usable_cpus', '?')} usable CPUs; rnncore isa {rnncore.build_info()['isa']}; "
        f"threads {args.threads}; {', '.join(versions)}; load average start {start}, end "
        f"{loadavg()}; median of {args.repeats} interleaved samples; × best peer = the faster "
        f"peer's time / rnncore's.", "", *body])  # fmt: skip
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
