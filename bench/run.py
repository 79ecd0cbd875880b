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
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _impls as impls  # noqa: E402
import _memory as memory  # noqa: E402
import _report as report  # noqa: E402
from _cases import CASES, CELLS, SHAPES  # noqa: E402
from _machine import loadavg, loaded_runtimes, machine_info  # noqa: E402
from _run_case import run_case  # noqa: E402
from _timing import measure_roofline  # noqa: E402

IMPL_MODULES = {  # what each implementation imports (all imported before anything is timed)
    "rnncore": ("rnncore",),
    "reference": ("rnncore",),
    "torch": ("torch",),
    "onnxruntime": ("onnx", "onnxruntime"),
}


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


def _import_impls(wanted) -> tuple[list[str], list[str]]:
    """The implementations whose libraries import (rnncore always), and a note for each
    one left out. Everything is imported up front so that imports are not timed."""
    selected, missing = [], []
    for i in impls.IMPLS:
        if i not in wanted and i != "rnncore":
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
            selected.append(i)
    return selected, missing


def _new_results(args, argv, sel_impls, missing) -> dict:
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
            "loadavg_start": loadavg(),
            "threadpoolctl": impls.blas_limit(1).available,
        },
        "machine": machine_info(),
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
    return res


def _run_speed(args, sel_impls, res) -> None:
    """Every selected case at every thread count, after that thread count's roofline."""
    cases = [c for c in CASES if c.shape in args.shapes and any(x in c.cells for x in args.cells)]
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_only:
        src = Path(args.report_only)
        res = json.loads(src.read_text())
        res["targets"] = report.evaluate_targets(res)
        for p in report.write_all(res, src.with_suffix("")):
            print(f"wrote {p}")
        return 0
    t_start = time.perf_counter()
    sel_impls, missing = _import_impls(args.impls)
    res = _new_results(args, argv, sel_impls, missing)
    print(
        f"rnncore bench: shapes {args.shapes}, cells {args.cells}, threads {args.threads}, "
        f"impls {sel_impls}, repeats {args.repeats}",
        flush=True,
    )
    _run_speed(args, sel_impls, res)
    memory.measure(args, sel_impls, res)
    res["meta"]["loadavg_end"] = loadavg()
    res["meta"]["runtimes_loaded"] = loaded_runtimes()
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
