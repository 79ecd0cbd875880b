"""``from_torch`` of ``nn.LSTM(proj_size=P)`` (LSTMP) against real PyTorch: every combination
of layers, directions, batch_first and bias; initial and final states (``h`` P wide, ``c`` H
wide); ``lengths=`` and ``PackedSequence``; the state dict without torch; ``to_sequential``
(predict, stateful-free save/load) and the refusals."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnncore
from rnncore.interop import from_torch

torch.set_num_threads(1)  # torch's work here is tiny; its pool would contend with rnncore's

# torch's own notice that its oneDNN path has no projection (it computes the plain way)
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

MAX_ERR: dict[str, float] = {}
D, H, P = 3, 6, 2


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(20240611)


def close(got, want, what, tol=1e-5):
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape)
    err = float(np.max(np.abs(got - want)))
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    assert err <= tol, f"{what}: max error {err:.3g}"


def make(num_layers=1, bidirectional=False, batch_first=False, bias=True):
    return torch.nn.LSTM(D, H, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, bias=bias, proj_size=P).eval()  # fmt: skip


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_matches_torch(num_layers, bidirectional, batch_first, bias):
    m = make(num_layers, bidirectional, batch_first, bias)
    B, T, LD = 4, 7, num_layers * (2 if bidirectional else 1)
    x = torch.randn((B, T, D) if batch_first else (T, B, D))
    h0, c0 = torch.randn(LD, B, P) * 0.5, torch.randn(LD, B, H) * 0.5
    with torch.no_grad():
        y, (h, c) = m(x, (h0, c0))
        y0, (h_zero, c_zero) = m(x)
    r = from_torch(m)
    assert r.proj_size == P and "proj_size=2" in repr(r)
    close(r(x.numpy()), y0, "proj output")
    ry, (rh, rc) = r(x.numpy(), (h0.numpy(), c0.numpy()), return_state=True)
    assert rh.shape == (LD, B, P) and rc.shape == (LD, B, H)
    close(ry, y, "proj output from states")
    close(rh, h, "proj h_n")
    close(rc, c, "proj c_n")
    _, (rh0, rc0) = r(x.numpy(), return_state=True)
    close(rh0, h_zero, "proj h_n")
    close(rc0, c_zero, "proj c_n")
    # unbatched: (T, D) with states (LD, P), (LD, H)
    xu = (x[0] if batch_first else x[:, 0]).numpy()
    with torch.no_grad():
        yu, (hu, cu) = m(torch.from_numpy(xu), (h0[:, 0], c0[:, 0]))
    ryu, (rhu, rcu) = r(xu, (h0[:, 0].numpy(), c0[:, 0].numpy()), return_state=True)
    close(ryu, yu, "proj unbatched")
    close(rhu, hu, "proj unbatched h_n")
    close(rcu, cu, "proj unbatched c_n")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lengths_and_packed_sequence(bidirectional):
    m = make(num_layers=2, bidirectional=bidirectional, batch_first=True)
    B, T = 4, 6
    lengths = torch.tensor([6, 2, 5, 3])
    x = torch.randn(B, T, D)
    LD = 2 * (2 if bidirectional else 1)
    hx = (torch.randn(LD, B, P) * 0.5, torch.randn(LD, B, H) * 0.5)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, (h, c) = m(packed, hx)
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    r = from_torch(m)
    ry, (rh, rc) = r(x.numpy(), tuple(s.numpy() for s in hx), lengths=lengths.numpy(),
                     return_state=True)  # fmt: skip
    close(ry, y, "proj lengths output")
    close(rh, h, "proj lengths h_n")
    close(rc, c, "proj lengths c_n")
    rout, (rh2, rc2) = r(packed, tuple(s.numpy() for s in hx), return_state=True)
    close(rout.data.numpy(), out.data, "proj packed output")
    np.testing.assert_array_equal(rout.batch_sizes.numpy(), out.batch_sizes.numpy())
    close(rh2, h, "proj packed h_n")
    close(rc2, c, "proj packed c_n")


def test_to_sequential():
    m = make(num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, D)
    with torch.no_grad():
        y, _ = m(x)
    seq = from_torch(m).to_sequential()
    lstm = seq.layers[0].forward_layer
    assert lstm.projection_units == P and lstm.state_size == [P, H]
    assert [w.shape for w in lstm.get_weights()] == [(D, 4 * H), (P, 4 * H), (4 * H,), (H, P)]
    close(seq.predict(x.numpy(), verbose=0), y, "proj to_sequential")


def test_from_state_dict_without_torch():
    """The state dict as NumPy arrays, converted in a process where torch cannot import."""
    m = make(num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, D)
    with torch.no_grad():
        y, (h, c) = m(x)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    code = """
import sys, pickle
sys.modules["torch"] = None  # any import of torch fails
import numpy as np
from rnncore.interop import from_torch
sd, x = pickle.loads(sys.stdin.buffer.read())
r = from_torch(sd, mode="LSTM", input_size=3, hidden_size=6, num_layers=2,
               bidirectional=True, proj_size=2)
y, (h, c) = r(x, return_state=True)
sys.stdout.buffer.write(pickle.dumps((y, h, c)))
"""
    proc = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((sd, x.numpy())),
                          capture_output=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    ry, rh, rc = pickle.loads(proc.stdout)
    close(ry, y, "proj state_dict output")
    close(rh, h, "proj state_dict h_n")
    close(rc, c, "proj state_dict c_n")


def test_float64():
    m = make(num_layers=2).double()
    x = torch.randn(5, 2, D, dtype=torch.float64)
    with torch.no_grad():
        y, (h, c) = m(x)
    ry, (rh, rc) = from_torch(m)(x.numpy(), return_state=True)
    close(ry, y, "proj float64", tol=1e-12)
    close(rh, h, "proj float64", tol=1e-12)


def test_refusals_name_what_is_wrong():
    m = make()
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="weight_hr_l0.*pass the module's proj_size"):
        from_torch(sd, mode="LSTM", input_size=D, hidden_size=H)
    with pytest.raises(ValueError, match="weight_hh_l0 has shape"):
        from_torch(sd, mode="LSTM", input_size=D, hidden_size=H, proj_size=3)
    with pytest.raises(ValueError, match="proj_size=6 must be smaller than hidden_size=6"):
        from_torch(sd, mode="LSTM", input_size=D, hidden_size=H, proj_size=H)
    with pytest.raises(ValueError, match="proj_size=2 is for an LSTM only"):
        from_torch({}, mode="GRU", input_size=D, hidden_size=H, proj_size=2)
    with pytest.raises(ValueError, match="proj_size must be an integer >= 0"):
        from_torch(sd, mode="LSTM", input_size=D, hidden_size=H, proj_size=-1)
    del sd["weight_hr_l0"]
    with pytest.raises(ValueError, match="lacks weight_hr_l0"):
        from_torch(sd, mode="LSTM", input_size=D, hidden_size=H, proj_size=P)
    r = from_torch(m)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(1, 2, 2\)"):
        r(np.zeros((3, 2, D), np.float32), (np.zeros((1, 2, H), "f4"), np.zeros((1, 2, H), "f4")))
    assert isinstance(rnncore.interop.TorchRNN, type)
