"""The benchmark's quick mode as a CI smoke run: correctness only, never timings.

``bench/run.py --quick`` runs S1 and S2 for every cell at 1 and 2 threads against the NumPy
reference, PyTorch and onnxruntime, checks every implementation's output against rnncore's
before timing it, and exits non-zero on any mismatch. This test runs it in a subprocess
(about 25 s) and asserts that it ran every implementation, agreed everywhere and wrote its
report. Timings and targets are printed by the run but asserted nowhere.
"""

import json
import subprocess
import sys
from pathlib import Path

import onnx  # noqa: F401  (declared test dependencies the run needs: fail, not skip)
import onnxruntime  # noqa: F401
import torch  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_mode_agrees_with_every_peer(tmp_path):
    out = tmp_path / "quick"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["failures"] == []
    assert "## Speed" in out.with_suffix(".md").read_text()  # the chart needs matplotlib
    rows = res["rows"]
    # every cell at both shapes and both thread counts, for every implementation
    for impl in ("rnncore", "reference", "torch", "onnxruntime"):
        got = {(r["shape"], r["cell"], r["threads"]) for r in rows if r["impl"] == impl}
        want = {
            (s, c, t) for s in ("S1", "S2") for c in ("simple_rnn", "lstm", "gru") for t in (1, 2)
        }
        assert got == want, f"{impl}: ran {sorted(got)}"
    for r in rows:
        assert r["check"] == "ok", r
        assert r["ms"] > 0 and r["max_abs_diff"] <= 1e-4, r
    # the peak-memory probe ran in its own process and measured something
    assert res["memory"] and all(m["process_peak_mib"] > 0 for m in res["memory"])
