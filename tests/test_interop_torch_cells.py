"""rnncore.from_torch on ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` against real PyTorch.

The converted cell is called as torch's: ``cell(input, hx=None)``, batched ``(B, D)`` or
unbatched ``(D,)``, returning ``h'`` or ``(h', c')``; float32 within 1e-5, float64 within
1e-12, ``bias`` both ways, ``relu`` and ``tanh`` RNN cells, a stepped loop equal to the
matching ``nn.RNN``/``LSTM``/``GRU``, and the state-dict path without torch.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from rnncore import from_torch
from rnncore.interop import TorchCell

torch.set_num_threads(1)

CELLS = {
    "rnn_tanh": ("RNNCell", dict(nonlinearity="tanh")),
    "rnn_relu": ("RNNCell", dict(nonlinearity="relu")),
    "lstm": ("LSTMCell", {}),
    "gru": ("GRUCell", {}),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def make(kind, dtype, bias=True):
    name, kw = CELLS[kind]
    return getattr(torch.nn, name)(3, 5, bias=bias, **kw).to(dtype)


def to_np(s):
    return tuple(to_np(t) for t in s) if isinstance(s, tuple) else s.detach().numpy()


def check(got, want, tol):
    want = to_np(want)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert isinstance(got, tuple) and len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        assert np.max(np.abs(g - w)) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_torch(kind, bias, dtype):
    torch.manual_seed(3)
    m = make(kind, dtype, bias)
    c = from_torch(m)
    assert isinstance(c, TorchCell)
    x = torch.randn(4, 3, dtype=dtype)
    h = torch.randn(4, 5, dtype=dtype)
    hx = (h, torch.randn(4, 5, dtype=dtype)) if kind == "lstm" else h
    first = (lambda s: tuple(t[0] for t in s)) if kind == "lstm" else (lambda s: s[0])
    tol = TOL[dtype]
    with torch.no_grad():
        check(c(x.numpy(), to_np(hx)), m(x, hx), tol)
        check(c(x.numpy()), m(x), tol)  # zero state
        check(c(x[0].numpy(), to_np(first(hx))), m(x[0], first(hx)), tol)  # unbatched
        check(c(x[0].numpy()), m(x[0]), tol)


@pytest.mark.parametrize("kind", list(CELLS))
def test_stepping_equals_the_sequence_module(kind):
    """A cell stepped over time, with the module's layer-0 weights, is the whole module."""
    torch.manual_seed(5)
    name, kw = CELLS[kind]
    seq = getattr(torch.nn, name[: -len("Cell")])(3, 5, **kw)
    cell = getattr(torch.nn, name)(3, 5, **kw)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in seq.state_dict().items()})
    c = from_torch(cell)
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        y, _ = seq(x)
    s = None
    for t in range(6):
        s = c(x[t].numpy(), s)
        h = s[0] if kind == "lstm" else s
        assert np.max(np.abs(h - y[t].numpy())) <= 1e-5


def test_cell_state_dict_without_torch():
    torch.manual_seed(9)
    m = torch.nn.LSTMCell(3, 5)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    with torch.no_grad():
        want = to_np(m(torch.from_numpy(x)))
    lists = {k: v.tolist() for k, v in sd.items()}
    code = f"""
import sys, numpy as np
sys.modules["torch"] = None  # any import of torch fails
from rnncore import from_torch
sd = {{k: np.array(v, np.float32) for k, v in {lists!r}.items()}}
c = from_torch(sd, mode="lstmcell", input_size=3, hidden_size=5)
h, cc = c(np.array({x.tolist()!r}, np.float32))
assert np.max(np.abs(h - np.array({want[0].tolist()!r}))) < 1e-5
assert np.max(np.abs(cc - np.array({want[1].tolist()!r}))) < 1e-5
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    rnn = torch.nn.RNNCell(3, 5, nonlinearity="relu", bias=False)
    c = from_torch(
        rnn.state_dict(),
        mode="RNNCell",
        input_size=3,
        hidden_size=5,
        bias=False,
        nonlinearity="relu",
    )
    with torch.no_grad():
        check(c(x), rnn(torch.from_numpy(x)), 1e-5)


def test_cell_errors():
    m = torch.nn.GRUCell(3, 5)
    c = from_torch(m)
    with pytest.raises(ValueError, match=r"input must have shape \(B, 3\)"):
        c(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"hx h must have shape \(2, 5\)"):
        c(np.zeros((2, 3), np.float32), np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"hx must be \(h, c\)"):
        from_torch(torch.nn.LSTMCell(3, 5))(
            np.zeros((2, 3), np.float32), np.zeros((2, 5), np.float32)
        )
    with pytest.raises(TypeError, match="takes none of"):
        from_torch(m, num_layers=2)
    with pytest.raises(TypeError, match="read from the module"):
        from_torch(m, hidden_size=5)
    with pytest.raises(TypeError, match="input_size and hidden_size are required"):
        from_torch(m.state_dict(), mode="GRUCell")
    with pytest.raises(ValueError, match="lacks bias_ih_l0"):
        from_torch(
            {k: v for k, v in m.state_dict().items() if k != "bias_ih"},
            mode="GRUCell",
            input_size=3,
            hidden_size=5,
        )
