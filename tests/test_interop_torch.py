"""rnncore.from_torch against real PyTorch (a test-only dependency).

Modules with random weights (torch's default initialization), random inputs and initial
states: rnncore's ``output``, ``h_n`` and ``c_n`` equal torch's within float32 tolerance, for
``nn.RNN`` (tanh, relu), ``nn.LSTM`` and ``nn.GRU`` with every combination of
``num_layers``, ``bidirectional``, ``batch_first`` and ``bias``. Also: the state-dict path
in a process without torch, the Sequential form, ``torch.onnx.export`` graphs read by
``load_onnx``, and the refusals.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import rnncore
from rnncore.interop import UnsupportedModelError, from_torch, load_onnx

# Torch's own thread pool and rnncore's threads contend on small machines (a torch
# call can take a second instead of milliseconds); torch's work here is tiny.
torch.set_num_threads(1)

ATOL = 2e-6
MAX_ERR: dict[str, float] = {}
MODULES = {
    "rnn_tanh": lambda **kw: torch.nn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: torch.nn.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: torch.nn.LSTM(**kw),
    "gru": lambda **kw: torch.nn.GRU(**kw),
}


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(20240611)


def make(kind, *, D=3, H=5, **kw):
    return MODULES[kind](input_size=D, hidden_size=H, **kw).eval()


def close(got, want, what="from_torch vs torch", atol=ATOL):
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape)
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), float(np.max(np.abs(got - want))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)


def torch_states(kind, L, B, H):
    h0 = torch.randn(L, B, H) * 0.5
    return (h0, torch.randn(L, B, H) * 0.5) if kind == "lstm" else h0


def as_numpy(hx):
    return tuple(t.numpy() for t in hx) if isinstance(hx, tuple) else hx.numpy()


@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_matches_torch(kind, num_layers, bidirectional, batch_first, bias):
    m = make(
        kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias
    )
    B, T = 4, 6
    x = torch.randn((B, T, 3) if batch_first else (T, B, 3))
    hx = torch_states(kind, num_layers * (2 if bidirectional else 1), B, 5)
    with torch.no_grad():
        y, states = m(x, hx)
        y0, _ = m(x)
    r = from_torch(m)
    close(r(x.numpy()), y0)  # output only, zero initial states
    ry, rstates = r(x.numpy(), as_numpy(hx), return_state=True)
    close(ry, y)
    if kind == "lstm":
        close(rstates[0], states[0], "from_torch vs torch (h_n, c_n)")
        close(rstates[1], states[1], "from_torch vs torch (h_n, c_n)")
    else:
        close(rstates, states, "from_torch vs torch (h_n, c_n)")
    # the same network as an rnncore Sequential (batch-major)
    seq = r.to_sequential()
    xb = x.numpy() if batch_first else x.numpy().transpose(1, 0, 2)
    yb = y0.numpy() if batch_first else y0.numpy().transpose(1, 0, 2)
    close(seq.predict(xb), yb, "from_torch(...).to_sequential() vs torch")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unbatched_input(kind):
    m = make(kind, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3)
    with torch.no_grad():
        y, states = m(x)
    ry, rstates = from_torch(m, return_state=True)(x.numpy())
    close(ry, y)
    for g, w in zip(
        rstates if kind == "lstm" else [rstates], states if kind == "lstm" else [states]
    ):
        close(g, w, "from_torch vs torch (h_n, c_n)")


def test_float64_module():
    m = make("gru", num_layers=2, bidirectional=True).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
    got = from_torch(m)(x.numpy())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, y.numpy(), rtol=1e-12, atol=1e-12)


def test_sequential_save_and_load(tmp_path):
    m = make("lstm", num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 6, 3)
    with torch.no_grad():
        y, _ = m(x)
    seq = from_torch(m).to_sequential()
    seq.save(tmp_path / "m.rnncore")
    close(
        rnncore.load_model(tmp_path / "m.rnncore").predict(x.numpy()),
        y,
        "from_torch(...).to_sequential() vs torch",
    )


def test_state_dict_without_torch(tmp_path):
    """The state-dict path in a fresh process that never imports torch."""
    m = make("gru", num_layers=2, bidirectional=True, batch_first=True, bias=False)
    x = torch.randn(3, 6, 3)
    with torch.no_grad():
        y, h = m(x)
    np.savez(tmp_path / "sd.npz", **{k: v.numpy() for k, v in m.state_dict().items()})
    np.save(tmp_path / "x.npy", x.numpy())
    code = f"""
import sys, numpy as np
from rnncore.interop import from_torch
sd = dict(np.load({str(tmp_path / "sd.npz")!r}))
r = from_torch(sd, mode="GRU", input_size=3, hidden_size=5, num_layers=2, bias=False,
               batch_first=True, bidirectional=True, return_state=True)
y, h = r(np.load({str(tmp_path / "x.npy")!r}))
np.savez({str(tmp_path / "out.npz")!r}, y=y, h=h)
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    out = np.load(tmp_path / "out.npz")
    close(out["y"], y)
    close(out["h"], h, "from_torch vs torch (h_n, c_n)")


def test_state_dict_of_tensors():
    m = make("rnn_relu", num_layers=2)
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        y, _ = m(x)
    r = from_torch(
        m.state_dict(), mode="RNN", nonlinearity="relu", input_size=3, hidden_size=5, num_layers=2
    )
    close(r(x.numpy()), y)


# ---------------------------------------------------------------------------------------
# Refusals and inconsistent state dicts


# proj_size converts now: tests/test_interop_torch_proj.py


def test_every_layer_converted_or_error():
    sd = make("lstm", num_layers=3).state_dict()
    with pytest.raises(ValueError, match="weight_ih_l2"):  # num_layers too small
        from_torch(sd, mode="LSTM", input_size=3, hidden_size=5, num_layers=2)
    with pytest.raises(ValueError, match="lacks weight_ih_l3"):
        from_torch(sd, mode="LSTM", input_size=3, hidden_size=5, num_layers=4)
    with pytest.raises(ValueError, match="bias_ih_l0"):  # has biases: bias=False is wrong
        from_torch(sd, mode="LSTM", input_size=3, hidden_size=5, num_layers=3, bias=False)
    with pytest.raises(ValueError, match="_reverse"):
        from_torch(sd, mode="LSTM", input_size=3, hidden_size=5, num_layers=3, bidirectional=True)


def test_shapes_checked():
    sd = make("gru").state_dict()
    with pytest.raises(ValueError, match=r"weight_ih_l0 has shape \(15, 3\), expected \(15, 4\)"):
        from_torch(sd, mode="GRU", input_size=4, hidden_size=5)
    with pytest.raises(ValueError, match="hidden_size=4"):
        from_torch(sd, mode="GRU", input_size=3, hidden_size=4)
    with pytest.raises(UnsupportedModelError, match="mode"):
        from_torch(sd, mode="QRNN", input_size=3, hidden_size=5)
    with pytest.raises(TypeError, match="float16"):
        from_torch(make("gru").half())


def test_call_checks():
    r = from_torch(make("lstm", num_layers=2))
    with pytest.raises(ValueError, match="input"):
        r(np.zeros((6, 2, 4), np.float32))
    with pytest.raises(ValueError, match="h_0 must have shape"):
        r(np.zeros((6, 2, 3), np.float32), (np.zeros((1, 2, 5), np.float32),) * 2)


# ---------------------------------------------------------------------------------------
# torch.onnx.export graphs, read by load_onnx


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_torch_onnx_export_loads(kind, tmp_path):
    m = make(kind, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 5, 3)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            m,
            (x,),
            path,
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch", 1: "time"}},
        )
    with torch.no_grad():
        y, _ = m(x)
    x2 = torch.randn(3, 7, 3)  # other batch and time sizes than the export's
    with torch.no_grad():
        y2, states2 = m(x2)
    om = load_onnx(path)
    close(om.run(None, {"x": x.numpy()})[0], y, "torch.onnx.export + load_onnx vs torch")
    got = om.run(None, {"x": x2.numpy()})
    close(got[0], y2, "torch.onnx.export + load_onnx vs torch")
    close(
        got[1], states2[0] if kind == "lstm" else states2, "torch.onnx.export + load_onnx vs torch"
    )
