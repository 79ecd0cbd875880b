"""The LSTM variants of the core (issue 18): peepholes, ONNX clip, input_forget, a separate
activation of c_t, and PyTorch's projection (proj_size).

Forward and backward against the float64 NumPy reference (which writes the equations out
once more), finite differences in float64 for every new weight, the carried stream against
one whole-sequence call, bit-identical results across thread counts, refusals of bad
arguments, and the projection against real PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import reference as R

# torch warns that its oneDNN path has no projection (it falls back to its own)
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

MAX_ERR: dict[str, float] = {}

B, T, D, H, P = 3, 6, 4, 5, 3

VARIANTS = {
    "peephole": {"peephole": True},
    "projection": {"projection": True},
    "clip": {"cell_clip": 0.6},
    "input_forget": {"input_forget": True},
    "output_relu": {"output_activation": "relu"},
    "all": {
        "peephole": True,
        "projection": True,
        "cell_clip": 0.8,
        "input_forget": True,
        "output_activation": "sigmoid",
    },
}


def _record(name, value):
    MAX_ERR[name] = max(MAX_ERR.get(name, 0.0), float(value))


def make(variant, rng, dtype=np.float64, mask=True):
    """Inputs, weights and the variant keywords of one LSTM call."""
    spec = VARIANTS[variant]
    Hp = P if spec.get("projection") else H
    kw = {k: v for k, v in spec.items() if k not in ("peephole", "projection")}
    if spec.get("peephole"):
        kw["peephole"] = rng.standard_normal((3, H)) * 0.7
    if spec.get("projection"):
        kw["projection"] = rng.standard_normal((H, P)) * 0.7
    m = None
    if mask:
        m = rng.random((B, T)) > 0.3
        m[0, -2:] = False  # right padding
        m[1, :2] = False  # left padding
    case = {
        "x": rng.standard_normal((B, T, D)),
        "kernel": rng.standard_normal((D, 4 * H)) * 0.6,
        "recurrent_kernel": rng.standard_normal((Hp, 4 * H)) * 0.6,
        "bias": rng.standard_normal(4 * H) * 0.5,
        "initial_state": [rng.standard_normal((B, Hp)), rng.standard_normal((B, H))],
        "mask": m,
    }
    cast = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in {**case, **kw}.items()}  # fmt: skip
    cast["initial_state"] = [s.astype(dtype) for s in case["initial_state"]]
    return cast


TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_and_backward_match_reference(variant, dtype, go_backwards, return_sequences):
    rng = np.random.default_rng(hash((variant, go_backwards)) % 2**32)
    case = make(variant, rng, dtype)
    opts = {"go_backwards": go_backwards, "return_sequences": return_sequences}
    y, h, c, ws = F.lstm(**case, **opts, training=True)
    ref64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
             for k, v in case.items()}  # fmt: skip
    ref64["initial_state"] = [s.astype(np.float64) for s in case["initial_state"]]
    ry, rh, rc = R.lstm(**ref64, **opts)
    assert y.dtype == dtype and y.shape == ry.shape and h.shape == rh.shape and c.shape == rc.shape
    err = max(np.abs(a - b).max() for a, b in ((y, ry), (h, rh), (c, rc)))
    _record(f"forward {np.dtype(dtype).name}", err)
    assert err <= TOL[dtype]

    dy = rng.standard_normal(y.shape).astype(dtype)
    ds = [rng.standard_normal(h.shape).astype(dtype), rng.standard_normal(c.shape).astype(dtype)]
    g = F.backward(ws, dy, ds)
    ref = R.backward("lstm", **ref64, **opts, d_output=dy.astype(np.float64),
                     d_state=[d.astype(np.float64) for d in ds])  # fmt: skip
    pairs = [(g.x, ref["x"]), (g.kernel, ref["kernel"]), (g.recurrent_kernel,
             ref["recurrent_kernel"]), (g.bias, ref["bias"])]  # fmt: skip
    pairs += list(zip(g.initial_state, ref["initial_state"], strict=True))
    for name in ("peephole", "projection"):
        if name in case:
            pairs.append((getattr(g, name), ref[name]))
        else:
            assert getattr(g, name) is None
    for a, b in pairs:
        assert a.dtype == dtype and a.shape == b.shape
    err = max(np.abs(a - b).max() / max(1.0, np.abs(b).max()) for a, b in pairs)
    _record(f"backward {np.dtype(dtype).name} (relative to max(1, |grad|))", err)
    assert err <= 10 * TOL[dtype]


def _loss(case, opts, dy, ds):
    y, h, c = F.lstm(**case, **opts)
    return float((y * dy).sum() + (h * ds[0]).sum() + (c * ds[1]).sum())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_finite_differences(variant):
    """Every gradient, the new weights' included, against central differences along one
    random direction per array (float64)."""
    rng = np.random.default_rng(7)
    case = make(variant, rng)
    opts = {"return_sequences": True}
    y, h, c, ws = F.lstm(**case, **opts, training=True)
    dy, ds = (
        rng.standard_normal(y.shape),
        [rng.standard_normal(h.shape), rng.standard_normal(c.shape)],
    )
    g = F.backward(ws, dy, ds)
    grads = {"x": g.x, "kernel": g.kernel, "recurrent_kernel": g.recurrent_kernel, "bias": g.bias,
             "peephole": g.peephole, "projection": g.projection}  # fmt: skip
    eps = 1e-6
    for name, grad in grads.items():
        if name not in case:
            continue
        v = rng.standard_normal(case[name].shape)
        plus, minus = dict(case), dict(case)
        plus[name], minus[name] = case[name] + eps * v, case[name] - eps * v
        numeric = (_loss(plus, opts, dy, ds) - _loss(minus, opts, dy, ds)) / (2 * eps)
        analytic = float((grad * v).sum())
        _record("finite differences (relative)", abs(numeric - analytic) / max(1, abs(numeric)))
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-7), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stream_steps_equal_one_call(variant, dtype):
    """A carried stream fed one step at a time gives the whole-sequence call's numbers."""
    rng = np.random.default_rng(3)
    case = make(variant, rng, dtype, mask=False)
    kw = {k: case[k] for k in ("peephole", "projection", "cell_clip", "input_forget",
                               "output_activation") if k in case}  # fmt: skip
    y, h, c = F.lstm(case["x"], case["kernel"], case["recurrent_kernel"], case["bias"],
                     return_sequences=True, **kw)  # fmt: skip
    s = F.stream("lstm", case["kernel"], case["recurrent_kernel"], case["bias"], batch_size=B, **kw)
    steps = [s.run(np.ascontiguousarray(case["x"][:, t : t + 1]), return_sequences=True)
             for t in range(T)]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate(steps, axis=1), y)
    hs, cs = s.get_states()
    assert hs.shape == (B, P if "projection" in case else H) and cs.shape == (B, H)
    np.testing.assert_array_equal(hs, h)
    np.testing.assert_array_equal(cs, c)
    s.set_states([])
    np.testing.assert_array_equal(s.run(case["x"], return_sequences=True), y)
    # a stateless stream with explicit initial states and return_state
    free = F.stream("lstm", case["kernel"], case["recurrent_kernel"], case["bias"], **kw)
    out = free.run(case["x"], initial_state=case["initial_state"], return_state=True)
    ref = F.lstm(case["x"], case["kernel"], case["recurrent_kernel"], case["bias"],
                 initial_state=case["initial_state"], **kw)  # fmt: skip
    for a, b in zip(out, ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["all", "projection"])
def test_threads_bit_identical(variant, threads):
    rng = np.random.default_rng(5)
    case = make(variant, rng, np.float32)
    case["x"] = rng.standard_normal((64, 40, D)).astype(np.float32)
    case["mask"] = rng.random((64, 40)) > 0.2
    case["initial_state"] = [rng.standard_normal((64, s.shape[1])).astype(np.float32)
                             for s in case["initial_state"]]  # fmt: skip
    results = []
    for n in (1, 2):
        rnncore.set_num_threads(n)
        results.append(F.lstm(**case, return_sequences=True))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments():
    rng = np.random.default_rng(0)
    case = make("all", rng, np.float32, mask=False)
    base = {k: case[k] for k in ("x", "kernel", "recurrent_kernel", "bias")}
    proj = case["projection"]
    with pytest.raises(ValueError, match=r"peephole.*\(3, 5\)"):
        F.lstm(**base, projection=proj, peephole=np.zeros((4, H), np.float32))
    with pytest.raises(ValueError, match=r"recurrent_kernel.*\(3, 20\)"):
        F.lstm(**base, projection=np.zeros((H, 2), np.float32))
    with pytest.raises(ValueError, match="recurrent_kernel"):
        F.lstm(**base)  # a (P, 4H) recurrent kernel without its projection
    with pytest.raises(TypeError, match="projection.*float32"):
        F.lstm(**base, projection=proj.astype(np.float64))
    for clip in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cell_clip"):
            F.lstm(**base, projection=proj, cell_clip=clip)
    with pytest.raises(ValueError, match="output_activation"):
        F.lstm(**base, projection=proj, output_activation="gelu")
    with pytest.raises(ValueError, match=r"initial_state\[0\].*\(3, 3\)"):
        F.lstm(**base, projection=proj, initial_state=[np.zeros((B, H), np.float32)] * 2)
    x, W = base["x"], rng.standard_normal((D, H)).astype(np.float32)
    with pytest.raises(ValueError, match="LSTM options"):
        rnncore._core.rnn_forward("simple_rnn", x, W, np.zeros((H, H), np.float32), None, [],
                                  None, "tanh", "sigmoid", True, False, False, False,
                                  input_forget=True)  # fmt: skip
    before = {k: v.copy() for k, v in case.items() if isinstance(v, np.ndarray)}
    F.lstm(**case)
    for k, v in before.items():
        np.testing.assert_array_equal(case[k], v)  # inputs are not modified


def test_projection_against_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    for bidirectional in (False, True):
        m = torch.nn.LSTM(D, 8, proj_size=3, batch_first=True, bidirectional=bidirectional)
        x = torch.randn(B, T, D)
        with torch.no_grad():
            yt, (ht, ct) = m(x)
        sd = {k: v.numpy() for k, v in m.state_dict().items()}
        for d, sfx in enumerate(["", "_reverse"][: 1 + bidirectional]):
            y, h, c = F.lstm(
                x.numpy(),
                sd[f"weight_ih_l0{sfx}"].T.copy(),
                sd[f"weight_hh_l0{sfx}"].T.copy(),
                sd[f"bias_ih_l0{sfx}"] + sd[f"bias_hh_l0{sfx}"],
                projection=sd[f"weight_hr_l0{sfx}"].T.copy(),
                go_backwards=d == 1,
                return_sequences=True,
            )
            if d == 1:
                y = y[:, ::-1]
            err = max(
                np.abs(y - yt.numpy()[..., 3 * d : 3 * d + 3]).max(),
                np.abs(h - ht[d].numpy()).max(),
                np.abs(c - ct[d].numpy()).max(),
            )
            _record("projection vs PyTorch (float32)", err)
            assert err <= 1e-5
