#!/usr/bin/env python3
"""Benchmark rnncore against the NumPy reference, PyTorch and onnxruntime.

    python3 bench/run.py                 # full run: S1-S4, 1 and 2 threads -> bench/results/
    python3 bench/run.py --quick         # CI smoke run (< 1 min) -> bench/results/quick.*

See bench/README.md for what is measured and how to read the results. In short: for each
case (shape x mode), thread count and cell, every implementation gets the same weights and
inputs, its output is checked against rnncore's, then the implementations are timed
interleaved (repeat loop outside, implementation loop inside, start rotated each repeat)
after a warm-up, and the median of the repeats is reported with GFLOP/s, the ratio
peer time / rnncore time for each peer, and the float32 2048^2 matmul throughput measured in
the same process as the roofline. Peak memory at S4 is measured in a fresh subprocess per
implementation. Exit status 1 when a check failed or an implementation could not run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _impls as impls  # noqa: E402
import _report as report  # noqa: E402

CELLS = ("simple_rnn", "lstm", "gru")


@dataclass(frozen=True)
class Shape:
    name: str
    label: str
    B: int
    T: int
    D: int
    H: int


SHAPES = {
    "S1": Shape("S1", "streaming", 1, 1, 64, 128),  # T = 1 per call; `steps` calls
    "S2": Shape("S2", "small", 1, 100, 64, 128),
    "S3": Shape("S3", "medium", 32, 100, 128, 256),
    "S4": Shape("S4", "large", 128, 200, 256, 512),
}


@dataclass(frozen=True)
class Case:
    """What is timed: a shape, a mode (``stream`` / ``forward`` / ``train``, see _impls),
    the cells and the implementations taking part (rnncore always first)."""

    shape: str
    mode: str
    cells: tuple = CELLS
    impls: tuple = impls.IMPLS

    @property
    def key(self) -> str:
        return f"{self.shape}-{self.mode}"


# Every case the benchmark knows; --shapes/--cells select among them. A case whose rnncore
# builder returns None (no such API yet) is reported as skipped, never timed.
CASES = [
    Case("S1", "stream"),
    Case("S2", "forward"),
    Case("S3", "forward"),
    Case("S4", "forward"),
    # The backward issue: forward+backward (loss = out.sum(), grads for the weights and the
    # input) against PyTorch autograd. Skipped until _impls.rnncore_train_runner exists.
    Case("S3", "train", cells=("lstm", "gru"), impls=("rnncore", "torch")),
]

MEMORY_SHAPE = "S4"
IMPL_MODULES = {
    "rnncore": ("rnncore",),
    "reference": ("rnncore",),
    "torch": ("torch",),
    "onnxruntime": ("onnx", "onnxruntime"),
}


# --------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------


def _cpuinfo() -> dict:
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    cores = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    phys = core = None
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "model name":
            info["model"] = v
        elif k == "flags":
            fl = set(v.split())
            info["flags"] = [
                f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in fl
            ]
        elif k == "physical id":
            phys = v
        elif k == "core id":
            core = v
        elif not line.strip() and core is not None:
            cores.add((phys, core))
            phys = core = None
    if core is not None:
        cores.add((phys, core))
    info["physical_cores"] = len(cores) or None
    return info


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _versions(selected_impls) -> dict:
    v = {"python": platform.python_version(), "numpy": np.__version__}
    import rnncore

    v["rnncore"] = getattr(rnncore, "__version__", "?")
    for mod, key in (
        ("torch", "torch"),
        ("onnxruntime", "onnxruntime"),
        ("onnx", "onnx"),
        ("threadpoolctl", "threadpoolctl"),
        ("matplotlib", "matplotlib"),
    ):
        try:
            v[key] = __import__(mod).__version__
        except Exception:
            v[key] = "not installed"
    return v


def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [
            f"{d.get('internal_api')} {d.get('version')} ({d.get('threading_layer')}, "
            f"{d.get('architecture')})"
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ]
        return "; ".join(libs) or "?"
    except Exception:
        return "? (threadpoolctl not installed)"


def _loaded_runtimes() -> list[str]:
    """Threading/BLAS runtimes mapped in this process (one shared libgomp matters: rnncore
    and PyTorch then share one OpenMP thread pool)."""
    names = set()
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            p = line.split()[-1] if line.split() else ""
            base = os.path.basename(p)
            if any(s in base for s in ("gomp", "iomp", "omp.so", "openblas", "mkl_rt", "tbb")):
                names.add(base)  # the library's name only: no machine paths in results
    except OSError:
        pass
    return sorted(names)


def _where(path: Path) -> str:
    """Where rnncore was imported from: relative to this checkout, else 'site-packages'."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return "an installed copy (site-packages)"


def _git_state() -> str:
    """The checkout's commit (and whether it has uncommitted changes), or '?'."""
    try:
        root = HERE.parent
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return f"{commit}{' + uncommitted changes' if dirty.strip() else ''}" if commit else "?"
    except Exception:
        return "?"


def machine_info(selected_impls) -> dict:
    import rnncore

    cpu = _cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "logical_cpus": os.cpu_count(),
        "physical_cores": cpu.get("physical_cores"),
        "usable_cpus": affinity,
        "memory_gib": _meminfo_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "rnncore_build": rnncore.build_info(),
        "rnncore_from": _where(Path(rnncore.__file__).parent),
        "git": _git_state(),
        "versions": _versions(selected_impls),
        "numpy_blas": _blas_info(),
    }


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


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
    return out


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def _max_abs_diff(got, want) -> float:
    """max |got - want|; for a dict (train: output and gradients) the largest over its
    arrays, each scaled by max(1, max |want|) since gradients sum over B*T terms."""
    if isinstance(want, dict):
        return max(
            _max_abs_diff(got[k], want[k])
            / max(1.0, float(np.max(np.abs(np.asarray(want[k], np.float64)))))
            for k in want
        )
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape {got.shape} != expected {want.shape}")
    d = float(np.max(np.abs(got - want))) if got.size else 0.0
    return d if np.isfinite(d) else float("inf")


# --------------------------------------------------------------------------------------
# One case at one thread count
# --------------------------------------------------------------------------------------


def run_case(case: Case, cells, selected_impls, threads: int, args, roof: dict, res: dict):
    shape = SHAPES[case.shape]
    case_impls = [i for i in case.impls if i in selected_impls or i == "rnncore"]
    builders = impls.BUILDERS[case.mode]
    T = args.steps if case.mode == "stream" else shape.T
    flops_call = impls.forward_flops  # per call: one step in stream mode
    runners, info = {}, {}
    for cell in cells:
        if cell not in case.cells:
            continue
        w = impls.make_weights(cell, shape.D, shape.H, seed=args.seed)
        x = impls.make_input(shape.B, T, shape.D, seed=args.seed + 1)
        built = {}
        for impl in case_impls:
            try:
                r = builders[impl](w, x, threads)
            except Exception as e:
                res["failures"].append(
                    f"{case.key} {cell} {impl} t={threads}: build failed: {type(e).__name__}: {e}"
                )
                continue
            if r is None:
                msg = f"{case.key} {cell}: {impl} has no {case.mode} API (not timed)"
                if msg not in res["skipped"]:
                    res["skipped"].append(msg)
                built = {}
                break
            built[impl] = r
        if "rnncore" not in built:
            continue
        # correctness: every implementation against rnncore, before any timing
        try:
            want = impls.to_numpy(built["rnncore"].collect())
        except Exception as e:
            res["failures"].append(
                f"{case.key} {cell} rnncore t={threads}: run failed: {type(e).__name__}: {e}"
            )
            continue
        for impl, r in list(built.items()):
            try:
                err = 0.0 if impl == "rnncore" else _max_abs_diff(impls.to_numpy(r.collect()), want)
            except Exception as e:
                err, msg = float("inf"), f"{type(e).__name__}: {e}"
            else:
                msg = ""
            ok = err <= args.tol
            info[(cell, impl)] = {
                "path": r.path,
                "notes": r.notes,
                "max_abs_diff": err,
                "check": "ok" if ok else "MISMATCH",
            }
            if not ok:
                res["failures"].append(
                    f"{case.key} {cell} {impl} t={threads}: output differs "
                    f"from rnncore by {err:.3g} > {args.tol:g} {msg}"
                )
                del built[impl]
                continue
            runners[(cell, impl)] = r
        for note in built["rnncore"].notes if "rnncore" in built else []:
            note = f"{case.key} {cell}: {note}"
            if note not in res["notes"]:
                res["notes"].append(note)
    if not runners:
        return
    target = args.sample_s
    settle = args.settle_s if threads > 1 else 0.0  # 1 thread: no worker threads to spin
    try:
        timing = time_interleaved(runners, args.repeats, target, settle, warmup=not args.quick)
    except Exception as e:  # an implementation failed after passing its check
        res["failures"].append(f"{case.key} t={threads}: timing failed: {type(e).__name__}: {e}")
        return
    roof_gflops = roof.get("gflops")
    for (cell, impl), t in timing.items():
        per_call = t["median"]
        fl = flops_call(cell, shape.B, 1 if case.mode == "stream" else shape.T, shape.D, shape.H)
        if case.mode == "train":
            fl = None  # the FLOP count is for the forward only
        row = {
            "case": case.key,
            "shape": case.shape,
            "mode": case.mode,
            "cell": cell,
            "impl": impl,
            "threads": threads,
            "ms": per_call * 1e3,
            "gflops": fl / per_call / 1e9 if fl else None,
            "roofline_frac": (fl / per_call / 1e9 / roof_gflops) if fl and roof_gflops else None,
            "iqr_pct": 100 * (t["q3"] - t["q1"]) / per_call if per_call else None,
            "calls_per_sample": t["calls_per_sample"],
            "samples_ms": [s * 1e3 for s in t["samples_s"]],
            **info[(cell, impl)],
        }
        res["rows"].append(row)
    del runners
    gc.collect()


# --------------------------------------------------------------------------------------
# Peak memory (one fresh subprocess per implementation)
# --------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_probe(spec: dict) -> dict:
    """Runs in a fresh process: RSS after the data, after building the implementation, and
    the peak RSS while it runs two forwards (the peak is reset first via clear_refs)."""
    impl, cell, shape, threads = spec["impl"], spec["cell"], SHAPES[spec["shape"]], spec["threads"]
    impls.set_threads(threads, [impl])
    with impls.blas_limit(threads):
        w = impls.make_weights(cell, shape.D, shape.H, seed=spec["seed"])
        x = impls.make_input(shape.B, shape.T, shape.D, seed=spec["seed"] + 1)
        rss_data = _status_kib("VmRSS")
        r = impls.FORWARD_BUILDERS[impl](w, x, threads)
        gc.collect()
        rss_setup = _status_kib("VmRSS")
        hwm_setup = _status_kib("VmHWM") or 0
        method = "VmHWM after clear_refs"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        except OSError:
            method = "ru_maxrss (peak may include the setup)"
        for _ in range(2):
            r.call()
        hwm = _status_kib("VmHWM")
    # (ru_maxrss is not used for the process peak: after fork+exec it carries the parent's)
    peak_kib = (
        hwm
        if method.startswith("VmHWM") and hwm
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    return {
        **spec,
        "rss_data_mib": rss_data / 1024,
        "setup_mib": (rss_setup - rss_data) / 1024,
        "forward_peak_mib": (peak_kib - rss_setup) / 1024,
        "process_peak_mib": max(hwm_setup, hwm or 0) / 1024,
        "method": method,
    }


def run_memory(cells, selected_impls, thread_list, shape, seed, res):
    for threads in thread_list:
        for cell in cells:
            for impl in impls.IMPLS:
                if impl not in selected_impls:
                    continue
                spec = {
                    "impl": impl,
                    "cell": cell,
                    "shape": shape,
                    "threads": threads,
                    "seed": seed,
                }
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--memprobe",
                    json.dumps(spec),
                ]
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                    line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
                    if p.returncode != 0 or not line.startswith("{"):
                        tail = p.stderr.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
                        raise RuntimeError(tail[0])
                    m = json.loads(line)
                    res["memory"].append(m)
                    msg = (
                        f"forward peak {m['forward_peak_mib']:8.1f} MiB, setup "
                        f"{m['setup_mib']:6.1f} MiB, process {m['process_peak_mib']:7.1f} MiB"
                    )
                except Exception as e:
                    res["failures"].append(f"memory {shape} {cell} {impl} t={threads}: {e}")
                    msg = f"failed: {e}"
                print(f"  memory {shape} {cell:10s} t={threads} {impl:12s} {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _csv(s: str, allowed, what: str):
    items = [t.strip() for t in s.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(
            f"--{what}: unknown {bad or s!r}; expected a comma list of {', '.join(allowed)}"
        )
    return items


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: S1 (50 steps) and S2, 3 repeats, memory probe at S2 "
        "for one cell; writes bench/results/quick.*; correctness still checked",
    )
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--shapes", default=None, help="S1,S2,S3,S4 (default all; quick: S1,S2)")
    p.add_argument("--cells", default=",".join(CELLS), help="lstm,gru,simple_rnn")
    p.add_argument(
        "--impls", default=",".join(impls.IMPLS), help="implementations (rnncore always runs)"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (10; quick 3)")
    p.add_argument("--steps", type=int, default=None, help="S1 steps per sample (1000; quick 50)")
    p.add_argument(
        "--sample-ms",
        type=float,
        default=None,
        help="target duration of one timing sample, ms (50; quick 5)",
    )
    p.add_argument(
        "--settle-ms",
        type=float,
        default=None,
        help="pause before each timing sample when threads > 1, so the previous "
        "implementation's spinning worker threads sleep (150; quick 0)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--out",
        default=None,
        help="output path stem (default bench/results/results, quick: .../quick)",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=1e-4,
        help="max |difference| from rnncore accepted in the checks (float32)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--report-only",
        metavar="JSON",
        default=None,
        help="rewrite the .md and .png next to a results JSON of an earlier run (no measuring)",
    )
    p.add_argument("--memprobe", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.threads = [int(t) for t in _csv(a.threads, [str(i) for i in range(1, 257)], "threads")]
    a.shapes = _csv(a.shapes or ("S1,S2" if a.quick else "S1,S2,S3,S4"), list(SHAPES), "shapes")
    a.cells = _csv(a.cells, CELLS, "cells")
    a.impls = _csv(a.impls, impls.IMPLS, "impls")
    a.repeats = a.repeats or (3 if a.quick else 10)
    a.steps = a.steps or (50 if a.quick else 1000)
    a.sample_s = (a.sample_ms or (5.0 if a.quick else 50.0)) / 1e3
    a.settle_s = (a.settle_ms if a.settle_ms is not None else (0.0 if a.quick else 150.0)) / 1e3
    a.out = Path(a.out) if a.out else HERE / "results" / ("quick" if a.quick else "results")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memprobe:
        print(json.dumps(memory_probe(json.loads(args.memprobe))), flush=True)
        return 0
    if args.report_only:
        src = Path(args.report_only)
        res = json.loads(src.read_text())
        res["targets"] = report.evaluate_targets(res)
        for p in report.write_all(res, src.with_suffix("")):
            print(f"wrote {p}")
        return 0
    t_start = time.perf_counter()
    sel_impls, missing = [], []
    for i in impls.IMPLS:  # import everything up front so that imports are not timed
        if i not in args.impls and i != "rnncore":
            continue
        try:
            for mod in IMPL_MODULES[i]:
                __import__(mod)
        except ImportError as e:
            if i == "rnncore":
                raise
            missing.append(
                f"{impls.IMPL_LABELS[i]} not measured: {e} (pip install -r bench/requirements.txt)"
            )
            print(f"WARNING: {missing[-1]}", file=sys.stderr)
        else:
            sel_impls.append(i)
    res = {
        "meta": {
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": "python3 bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "quick": args.quick,
            "repeats": args.repeats,
            "threads": args.threads,
            "shapes": args.shapes,
            "cells": args.cells,
            "impls": sel_impls,
            "stream_steps": args.steps,
            "sample_ms": args.sample_s * 1e3,
            "tol": args.tol,
            "settle_ms": args.settle_s * 1e3,
            "loadavg_start": _loadavg(),
            "threadpoolctl": impls.blas_limit(1).available,
        },
        "machine": machine_info(sel_impls),
        "shapes": {k: vars(v) for k, v in SHAPES.items()},
        "roofline": {},
        "rows": [],
        "memory": [],
        "skipped": [],
        "failures": [],
        "notes": missing,
    }
    if not res["meta"]["threadpoolctl"]:
        res["notes"].append(
            "threadpoolctl is not installed: NumPy's BLAS threads (NumPy "
            "reference, NumPy matmul roofline) are not limited to the thread "
            "count (pip install threadpoolctl)."
        )
    cases = [c for c in CASES if c.shape in args.shapes and any(x in c.cells for x in args.cells)]
    print(
        f"rnncore bench: shapes {args.shapes}, cells {args.cells}, threads {args.threads}, "
        f"impls {sel_impls}, repeats {args.repeats}",
        flush=True,
    )
    for threads in args.threads:
        impls.set_threads(threads, sel_impls)
        with impls.blas_limit(threads):
            roof = measure_roofline(threads, 1 if args.quick else 5, "torch" in sel_impls)
            res["roofline"][str(threads)] = roof
            print(
                f"[t={threads}] roofline: {roof['gflops']:.1f} GFLOP/s ({roof['best']} "
                f"2048^2 matmul)",
                flush=True,
            )
            for case in cases:
                t0 = time.perf_counter()
                n0 = len(res["rows"])
                run_case(case, args.cells, sel_impls, threads, args, roof, res)
                print(f"[t={threads}] {case.key}: {time.perf_counter() - t0:.1f} s", flush=True)
                for row in res["rows"][n0:]:
                    print(
                        f"    {row['cell']:10s} {row['impl']:12s} {row['ms']:10.4f} ms"
                        + (f" {row['gflops']:8.2f} GFLOP/s" if row["gflops"] else "")
                        + f"  (iqr {row['iqr_pct']:.0f}%)",
                        flush=True,
                    )
    mem_shape = MEMORY_SHAPE
    if args.quick:
        mem_shape = [s for s in args.shapes if s != "S1"][-1:] or None
        mem_shape = mem_shape[0] if mem_shape else None
    if not args.no_memory and mem_shape and (args.quick or mem_shape in args.shapes):
        mem_cells = args.cells[:1] if args.quick else args.cells
        mem_threads = args.threads[-1:] if args.quick else args.threads
        print(f"peak memory at {mem_shape} (fresh subprocess per implementation)", flush=True)
        run_memory(mem_cells, sel_impls, mem_threads, mem_shape, args.seed, res)
        res["meta"]["memory_shape"] = mem_shape
    res["meta"]["loadavg_end"] = _loadavg()
    res["meta"]["runtimes_loaded"] = _loaded_runtimes()
    res["meta"]["seconds"] = round(time.perf_counter() - t_start, 1)
    res["targets"] = report.evaluate_targets(res)
    paths = report.write_all(res, args.out)
    for p in paths:
        print(f"wrote {p}")
    for t in res["targets"]:
        print(f"  target {t['status']:4s} {t['target']} [{t['scope']}] {t['measured']}")
    for f in res["failures"]:
        print(f"FAILURE: {f}", file=sys.stderr)
    print(
        f"done in {res['meta']['seconds']} s"
        + (" -- FAILED (see above)" if res["failures"] else ""),
        flush=True,
    )
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
