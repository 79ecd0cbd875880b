"""TorchRNN with ``lengths=`` and ``PackedSequence`` inputs against real PyTorch.

``nn.RNN`` (tanh, relu), ``nn.LSTM`` and ``nn.GRU``, 2 layers, uni- and bidirectional,
``batch_first`` both ways, packed with ``enforce_sorted`` True (lengths sorted) and False
(unsorted, ties included), float32 within 1e-5 and float64 within 1e-12: the packed output
(same ``batch_sizes``, ``sorted_indices``, ``unsorted_indices``) and ``h_n`` / ``c_n``; the
``lengths=`` output equals ``pad_packed_sequence(..., total_length=T)`` (zeros past each
length) with the same states.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnncore import from_torch

torch.set_num_threads(1)

KINDS = {
    "rnn_tanh": lambda **kw: torch.nn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: torch.nn.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: torch.nn.LSTM(**kw),
    "gru": lambda **kw: torch.nn.GRU(**kw),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def states(kind, n, B, dtype):
    h = torch.randn(n, B, 5, dtype=dtype) * 0.5
    return (h, torch.randn(n, B, 5, dtype=dtype) * 0.5) if kind == "lstm" else h


def np_states(hx):
    return tuple(t.numpy() for t in hx) if isinstance(hx, tuple) else hx.numpy()


def max_err(got, want):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    errs = []
    for g, w in zip(got, want):
        w = w.detach().numpy()
        g = g.detach().numpy() if isinstance(g, torch.Tensor) else g
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        errs.append(float(np.max(np.abs(g - w))))
    return max(errs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("sorted_", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_and_lengths_match_torch(kind, batch_first, bidirectional, sorted_, dtype):
    torch.manual_seed(7)
    m = KINDS[kind](
        input_size=3,
        hidden_size=5,
        num_layers=2,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    m = m.to(dtype).eval()
    B, T = 5, 7
    lengths = torch.tensor([7, 5, 5, 3, 1] if sorted_ else [3, 7, 1, 5, 3])
    x = torch.randn((B, T, 3) if batch_first else (T, B, 3), dtype=dtype)
    hx = states(kind, 2 * (2 if bidirectional else 1), B, dtype)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=sorted_)
    with torch.no_grad():
        want_y, want_s = m(packed, hx)
        want_y0, want_s0 = m(packed)
    want_pad, _ = pad_packed_sequence(want_y, batch_first=batch_first, total_length=T)
    r = from_torch(m)
    tol = TOL[dtype]

    got_y, got_s = r(packed, np_states(hx), return_state=True)
    assert isinstance(got_y, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(got_y.batch_sizes, want_y.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        a, b = getattr(got_y, name), getattr(want_y, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    assert max_err(got_y.data, want_y.data) <= tol
    assert max_err(got_s, want_s) <= tol
    assert max_err(r(packed).data, want_y0.data) <= tol  # zero initial states
    assert max_err(r(packed, return_state=True)[1], want_s0) <= tol

    # lengths=: the padded output, zeros past each length, and the same states
    got_pad, got_s = r(x.numpy(), np_states(hx), lengths=lengths.numpy(), return_state=True)
    assert max_err(got_pad, want_pad) <= tol
    assert max_err(got_s, want_s) <= tol
    mask = np.arange(T)[None, :] < lengths.numpy()[:, None]
    pad = got_pad if batch_first else got_pad.transpose(1, 0, 2)
    assert np.all(pad[~mask] == 0)
    # a torch tensor of lengths and full-length sequences (no padding) as without lengths
    want_pad0, _ = pad_packed_sequence(want_y0, batch_first=batch_first, total_length=T)
    assert max_err(r(x.numpy(), lengths=lengths), want_pad0) <= tol
    full = np.full(B, T)
    np.testing.assert_array_equal(r(x.numpy(), lengths=full), r(x.numpy()))
    with torch.no_grad():
        assert max_err(r(x.numpy(), lengths=full), m(x)[0]) <= tol  # and as torch


def test_lengths_checked():
    r = from_torch(torch.nn.LSTM(3, 5))
    x = np.zeros((4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="lengths must be a 1-D array of 2"):
        r(x, lengths=[1, 2, 3])
    for bad in ([np.inf, 2.0], [np.nan, 2.0], [2.5, 2.0]):  # refused, without a NumPy warning
        with pytest.raises(ValueError, match="lengths must be a 1-D array of 2"):
            r(x, lengths=np.array(bad))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        r(x, lengths=[0, 4])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        r(x, lengths=[5, 4])
    with pytest.raises(ValueError, match="batched input"):
        r(x[:, 0], lengths=[4])
    packed = pack_padded_sequence(torch.zeros(4, 2, 3), torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="carries its lengths"):
        r(packed, lengths=[4, 2])
