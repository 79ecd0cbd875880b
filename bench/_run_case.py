"""One case at one thread count: build every implementation's runner for each cell, check
its output against rnncore's before anything is timed, time the ones that agree
interleaved, and append one result row per (cell, implementation)."""

from __future__ import annotations

import gc

import numpy as np

import _impls as impls
from _cases import SHAPES, Case
from _timing import time_interleaved


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


def _build_and_check(case: Case, cell, case_impls, threads: int, args, res, runners, info):
    """Runners of ``cell`` for every implementation of the case, checked against rnncore's
    output; those that agree go into ``runners``, every check into ``info``."""
    shape = SHAPES[case.shape]
    T = args.steps if case.mode == "stream" else shape.T
    builders = impls.BUILDERS[case.mode]
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
            return
        built[impl] = r
    if "rnncore" not in built:
        return
    # correctness: every implementation against rnncore, before any timing
    try:
        want = impls.to_numpy(built["rnncore"].collect())
    except Exception as e:
        res["failures"].append(
            f"{case.key} {cell} rnncore t={threads}: run failed: {type(e).__name__}: {e}"
        )
        return
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


def run_case(case: Case, cells, selected_impls, threads: int, args, roof: dict, res: dict):
    shape = SHAPES[case.shape]
    case_impls = [i for i in case.impls if i in selected_impls or i == "rnncore"]
    runners, info = {}, {}
    for cell in cells:
        if cell in case.cells:
            _build_and_check(case, cell, case_impls, threads, args, res, runners, info)
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
    T = 1 if case.mode == "stream" else shape.T  # per call: one step in stream mode
    for (cell, impl), t in timing.items():
        per_call = t["median"]
        fl = impls.forward_flops(cell, shape.B, T, shape.D, shape.H)
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
