"""Low-precision inference benchmark (issue 17): rnncore float32 / bf16 / int8 against
PyTorch float32, bf16 (autocast and a bf16 module), quantize_dynamic int8, and onnxruntime
float32 and quantize_dynamic int8, side by side in one run; rnncore bf16 and int8 once per
low-precision path this build and CPU run (portable, and avx512_bf16 / avx512_vnni /
avx_vnni where present).

    python3 bench/lowp.py                        # S1 S2, LSTM and GRU, 1 and 2 threads
    python3 bench/lowp.py --shapes S1 S2 S3 S4
    python3 bench/lowp.py --no-peers             # rnncore's rows only
    RNNCORE_ISA=x86_64_v3 python3 bench/lowp.py  # the AVX2 build on an AVX-512 machine

Writes ``bench/results/lowp-<isa>.md`` and ``.json``. Every row says what ran (rnncore's ISA
level and low-precision path, the peer's API); "err" is the max |y - y_f32| against rnncore
float32 on the same inputs (relative: divided by max |y_f32|). S1 is one streamed step per
call (B = T = 1, the state carried: ``functional.stream`` for rnncore, the module call with
its state for PyTorch, ``session.run`` with initial_h/c fed back for onnxruntime), a sample
being 200 steps; S2-S4 are whole-sequence forwards. Timing: interleaved rounds, median
(bench/_timing.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _impls as impls  # noqa: E402
from _cases import SHAPES  # noqa: E402
from _machine import loadavg, machine_info  # noqa: E402
from _timing import time_interleaved  # noqa: E402

STEPS = 200  # S1: streamed steps per sample


def _rnncore_rows(w, x, stream: bool) -> dict:
    """rnncore float32, and bf16 / int8 on each low-precision path this build and CPU run
    (the stream packs its weights for the path capped when it is made)."""
    import rnncore
    from rnncore import _core
    from rnncore import functional as F

    isa = rnncore.build_info()["isa"]
    cases = [(None, None)] + [(mode, path) for mode in ("bf16", "int8")
                              for path in _core.lowp_paths if _serves(path, mode)]  # fmt: skip
    rows = {}
    for mode, lowp in cases:
        label = f"rnncore {mode or 'float32'}" + (f" {lowp}" if lowp else "")
        path = f"rnncore {isa}" + (f", lowp {lowp}" if lowp else "")
        _core.set_lowp_path(lowp or "portable")
        s = F.stream(w.cell, w.kernel, w.recurrent_kernel, w.bias, quantize=mode,
                     batch_size=1 if stream else None)  # fmt: skip
        assert not mode or _core.lowp_path_for(mode) == lowp
        if stream:
            xs = [np.ascontiguousarray(x[:, t : t + 1]) for t in range(x.shape[1])]
            rows[label] = impls._stream_runner(
                label, w.cell, len(xs), lambda t, s=s, xs=xs: s.run(xs[t], None, True),
                lambda s=s: s.set_states([]), np.asarray, path + ", functional.stream per step",
            )  # fmt: skip
        else:
            call = lambda s=s: s.run(x, None, True)  # noqa: E731
            rows[label] = impls.Runner(label, w.cell, "forward", call, call, path=path)
    _core.set_lowp_path(os.environ.get("RNNCORE_LOWP_PATH") or _core.lowp_paths[-1])
    return rows


def _serves(path: str, mode: str) -> bool:
    return path == "portable" or (path == "avx512_bf16") == (mode == "bf16")


def _torch_rows(w, x, stream: bool) -> dict:
    import torch

    base = impls.torch_module(w)
    variants = {
        "PyTorch float32": (base, None, torch.float32),
        "PyTorch bf16 autocast": (base, "autocast", torch.float32),
        "PyTorch bf16 module": (impls.torch_module(w).to(torch.bfloat16), None, torch.bfloat16),
        # quantize_dynamic swaps submodules only: the module goes in a container
        "PyTorch int8 quantize_dynamic": (
            torch.ao.quantization.quantize_dynamic(
                torch.nn.ModuleDict({"rnn": impls.torch_module(w)}),
                {torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN},
                torch.qint8,
            )["rnn"],
            None,
            torch.float32,
        ),
    }
    rows = {}
    for label, (m, autocast, dtype) in variants.items():
        # the module that runs (quantize_dynamic swaps in its own class when it quantizes)
        what = f"torch {torch.__version__}, {type(m).__module__}.{type(m).__name__}"

        def run(xt, state, m=m, autocast=autocast):
            with (
                torch.inference_mode(),
                torch.autocast("cpu", torch.bfloat16, autocast is not None),
            ):
                return m(xt, state)

        if stream:
            xs = [torch.from_numpy(x[:, t : t + 1]).to(dtype) for t in range(x.shape[1])]
            state = [None]

            def step(t, run=run, xs=xs, state=state):
                y, state[0] = run(xs[t], state[0])
                return y

            rows[label] = impls._stream_runner(
                label, w.cell, len(xs), step, lambda state=state: state.__setitem__(0, None),
                lambda y: y.float().numpy(), what + ", module call per step",
            )  # fmt: skip
        else:
            xt = torch.from_numpy(x).to(dtype)
            call = lambda run=run, xt=xt: run(xt, None)[0]  # noqa: E731
            rows[label] = impls.Runner(
                label, w.cell, "forward", call, lambda call=call: call().float().numpy(),
                path=what,
            )  # fmt: skip
    return rows


def _ort_rows(w, x, stream: bool, threads: int, tmp: Path) -> dict:
    import onnx
    import onnxruntime as ort

    models = {"onnxruntime float32": impls.onnx_model(w, stream=stream)}
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        quantize_dynamic = None
    if quantize_dynamic is not None:
        src, dst = tmp / f"{w.cell}.onnx", tmp / f"{w.cell}.int8.onnx"
        onnx.save(models["onnxruntime float32"], src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        models["onnxruntime int8 quantize_dynamic"] = onnx.load(dst)
    rows = {}
    for label, model in models.items():
        ops = sorted({n.op_type for n in model.graph.node} - {"Transpose", "Squeeze"})
        build = impls.ort_stream if stream else impls.ort_forward
        r = build(w, x, threads, model=model)
        rows[label] = dataclasses.replace(
            r, impl=label, path=f"onnxruntime {ort.__version__}, ops {'/'.join(ops)}"
        )
    return rows


def measure(shape, cell, threads, repeats, tmp, peers=True) -> list[dict]:
    import rnncore

    rnncore.set_num_threads(threads)
    s = SHAPES[shape]
    stream = shape == "S1"
    w = impls.make_weights(cell, s.D, s.H)
    x = impls.make_input(s.B, STEPS if stream else s.T, s.D)
    runners = _rnncore_rows(w, x, stream)
    if peers:
        import torch

        torch.set_num_threads(threads)
        runners |= {**_torch_rows(w, x, stream), **_ort_rows(w, x, stream, threads, tmp)}
    ref = np.asarray(runners["rnncore float32"].collect(), np.float64)
    errs = {}
    for label, r in runners.items():
        y = np.asarray(r.collect(), np.float64).reshape(ref.shape)
        errs[label] = float(np.abs(y - ref).max())
    timed = time_interleaved(runners, repeats, target_s=0.05, settle_s=0.1 if threads > 1 else 0)
    base = timed["rnncore float32"]["median"]  # seconds per call (S1: per step)
    scale = float(np.abs(ref).max())
    out = []
    for label, r in runners.items():
        t = timed[label]["median"]
        out.append({"shape": shape, "cell": cell, "threads": threads, "impl": label,
                    "ms": t * 1e3, "vs_rnncore_f32": base / t,
                    "max_abs_err": errs[label], "max_rel_err": errs[label] / scale,
                    "path": r.path})  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["S1", "S2"], choices=list(SHAPES))
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-peers", action="store_true", help="rnncore's rows only")
    args = p.parse_args(argv)
    import rnncore

    isa = rnncore.build_info()["isa"]
    rows, loads = [], [loadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            for threads in args.threads:
                for cell in args.cells:
                    peers = not args.no_peers
                    rows += measure(shape, cell, threads, args.repeats, Path(tmp), peers)
                    loads.append(loadavg())
                    print(f"{shape} {cell} {threads}t done (load {loads[-1]})", flush=True)
    results = Path(__file__).resolve().parent / "results"
    info = {"machine": machine_info(), "build_info": rnncore.build_info(), "loadavg": loads}
    (results / f"lowp-{isa}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    lines = [f"# Low-precision inference ({isa})", "",
             f"rnncore build_info: `{json.dumps(rnncore.build_info())}`  ",
             f"CPU: {info['machine'].get('cpu', '?')}; load average during the run: "
             f"{loads[0]} ... {loads[-1]}  ",
             f"command: `{'RNNCORE_ISA=' + os.environ['RNNCORE_ISA'] + ' ' if 'RNNCORE_ISA' in os.environ else ''}"  # noqa: E501
             f"python3 bench/lowp.py {' '.join(sys.argv[1:])}`", "",
             "| shape | cell | thr | implementation | ms/call | x rnncore f32 | max abs err | "
             "max rel err | path |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['shape']} | {r['cell']} | {r['threads']} | {r['impl']} | "
                     f"{r['ms']:.4g} | {r['vs_rnncore_f32']:.2f} | {r['max_abs_err']:.2e} | "
                     f"{r['max_rel_err']:.2e} | {r['path']} |")  # fmt: skip
    (results / f"lowp-{isa}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
