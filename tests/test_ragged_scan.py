"""Trailing-padding masks skip the padded work (issue 16, item 4).

When every row's mask is a run of used steps followed by masked ones in processing order
(a right-padded batch; left padding with go_backwards), the core drops each row from the
step's products once its sequence has ended. The results must be Keras's rule (the
reference), each row bit for bit what it gives alone on its own length, the same with any
thread count, and the carried states of a stream must be those of the last used step.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import reference as R

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
B, T, D, H = 9, 11, 4, 6


def weights(cell, rng, dtype):
    G = GATES[cell]
    W = (rng.standard_normal((D, G * H)) * 0.5).astype(dtype)
    U = (rng.standard_normal((H, G * H)) * 0.5).astype(dtype)
    b = (rng.standard_normal((2, G * H) if cell == "gru" else G * H) * 0.3).astype(dtype)
    return W, U, b


def trailing_mask(rng, go_backwards, leading=False):
    """Used steps first in processing order (or last, with ``leading``)."""
    lengths = rng.integers(0, T + 1, B)
    lengths[0], lengths[1] = T, 0  # a full row and an empty one
    used = np.arange(T)[None, :] < lengths[:, None]
    return (used[:, ::-1] if go_backwards != leading else used).copy(), lengths


@pytest.mark.parametrize("leading", [False, True], ids=["trailing", "leading"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", list(GATES))
def test_matches_reference_and_each_row_alone(cell, dtype, go_backwards, leading, threads):
    """trailing: right padding forwards, left padding backwards; leading: left padding
    forwards, right padding backwards (a Bidirectional's backward layer)."""
    rng = np.random.default_rng(3)
    W, U, b = weights(cell, rng, dtype)
    x = rng.standard_normal((B, T, D)).astype(dtype)
    mask, lengths = trailing_mask(rng, go_backwards, leading)
    s0 = [rng.standard_normal((B, H)).astype(dtype) for _ in range(2 if cell == "lstm" else 1)]
    kw = {"mask": mask, "go_backwards": go_backwards, "initial_state": s0}
    results = []
    for n in (1, 2):
        rnncore.set_num_threads(n)
        results.append(getattr(F, cell)(x, W, U, b, return_sequences=True, **kw))
    for a, e in zip(*results, strict=True):
        np.testing.assert_array_equal(a, e)  # the same with any thread count
    y, *finals = results[0]
    want = getattr(R, cell)(x.astype(np.float64), W.astype(np.float64), U.astype(np.float64),
                            b.astype(np.float64), return_sequences=True, mask=mask,
                            go_backwards=go_backwards,
                            initial_state=[s.astype(np.float64) for s in s0])  # fmt: skip
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for a, e in zip([y, *finals], want, strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=tol)
    # each row alone, on its own steps only (no mask): the same bits
    for k in range(B):
        n = int(lengths[k])
        if n == 0:
            np.testing.assert_array_equal(y[k], 0)
            for f, s in zip(finals, s0, strict=True):
                np.testing.assert_array_equal(f[k], s[k])
            continue
        steps = slice(T - n, T) if go_backwards != leading else slice(0, n)
        alone = getattr(F, cell)(np.ascontiguousarray(x[k : k + 1, steps]), W, U, b,
                                 return_sequences=True, go_backwards=go_backwards,
                                 initial_state=[s[k : k + 1] for s in s0])  # fmt: skip
        run = slice(T - n, T) if leading else slice(0, n)  # the run, in processing order
        np.testing.assert_array_equal(y[k, run], alone[0][0])
        if leading:
            np.testing.assert_array_equal(y[k, : T - n], 0)
        else:
            np.testing.assert_array_equal(y[k, n:], np.broadcast_to(alone[0][0, -1], (T - n, H)))
        for f, a in zip(finals, alone[1:], strict=True):
            np.testing.assert_array_equal(f[k], a[0])


def test_last_output_and_a_carrying_stream():
    rng = np.random.default_rng(4)
    W, U, b = weights("lstm", rng, np.float32)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    mask, lengths = trailing_mask(rng, False)
    last = F.lstm(x, W, U, b, mask=mask)
    seq = F.lstm(x, W, U, b, mask=mask, return_sequences=True)
    np.testing.assert_array_equal(last[0], seq[0][:, -1])
    s = F.stream("lstm", W, U, b, batch_size=B)
    first = s.run(np.ascontiguousarray(x[:, :5]), mask=np.ascontiguousarray(mask[:, :5]))
    s.run(np.ascontiguousarray(x[:, 5:]), mask=np.ascontiguousarray(mask[:, 5:]))
    np.testing.assert_array_equal(first, F.lstm(x[:, :5], W, U, b, mask=mask[:, :5])[0])
    for a, e in zip(s.get_states(), last[1:], strict=True):
        np.testing.assert_array_equal(a, e)


def test_holes_still_follow_keras():
    """A used step after a masked one is not trailing padding: every row computes."""
    rng = np.random.default_rng(5)
    W, U, b = weights("gru", rng, np.float64)
    x = rng.standard_normal((B, T, D))
    mask, _ = trailing_mask(rng, False)
    mask[2, -1] = True  # a used step after the padding
    mask[3, 0] = False
    got = F.gru(x, W, U, b, mask=mask, return_sequences=True)
    want = R.gru(x, W, U, b, mask=mask, return_sequences=True)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-13)
