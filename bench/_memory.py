"""Peak memory: one fresh subprocess per (implementation, cell, thread count), running this
file, which imports only NumPy, the case definitions and the implementation it measures.

    python3 bench/_memory.py '{"impl": "torch", "cell": "lstm", "shape": "S4", "threads": 1,
                               "seed": 0}'

prints one JSON line: the RSS after the data, the growth while the implementation is built
(setup), the peak RSS growth during two forwards (the peak is reset first via clear_refs)
and the process's peak.
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from pathlib import Path

import _impls as impls
from _cases import MEMORY_SHAPE, SHAPES


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
    """One probe subprocess per (thread count, cell, implementation); results (or failures)
    appended to ``res``, one line printed per probe."""
    for threads in thread_list:
        for cell in cells:
            for impl in impls.IMPLS:
                if impl not in selected_impls:
                    continue
                spec = dict(impl=impl, cell=cell, shape=shape, threads=threads, seed=seed)
                cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
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


def measure(args, selected_impls, res) -> None:
    """The memory part of a run: S4 for every cell and thread count when S4 is selected;
    quick mode: the last selected forward shape (S2), the first cell, the last thread count;
    nothing with ``--no-memory``."""
    shape = MEMORY_SHAPE
    if args.quick:
        shape = ([s for s in args.shapes if s != "S1"][-1:] or [None])[0]
    if args.no_memory or not shape or not (args.quick or shape in args.shapes):
        return
    cells = args.cells[:1] if args.quick else args.cells
    threads = args.threads[-1:] if args.quick else args.threads
    print(f"peak memory at {shape} (fresh subprocess per implementation)", flush=True)
    run_memory(cells, selected_impls, threads, shape, args.seed, res)
    res["meta"]["memory_shape"] = shape


if __name__ == "__main__":
    print(json.dumps(memory_probe(json.loads(sys.argv[1]))), flush=True)
