"""ONNX LSTM variants (peepholes ``P``, ``clip``, ``input_forget``, an ``h`` activation that
differs from ``g``) loaded by ``load_onnx``, against onnxruntime (a test-only dependency).

onnxruntime's semantics (the ones rnncore follows), per direction, ONNX gate blocks
``i, o, f, c`` and ``P = [p_i, p_o, p_f]``:

    i = f(clip(x W_i + h_{t-1} R_i + b_i + p_i * c_{t-1}))
    f = 1 - i  (input_forget=1)  or  f(clip(x W_f + h_{t-1} R_f + b_f + p_f * c_{t-1}))
    c~ = g(clip(x W_c + h_{t-1} R_c + b_c))
    c_t = f * c_{t-1} + i * c~
    o = f(clip(x W_o + h_{t-1} R_o + b_o + p_o * c_t))
    h_t = o * h(c_t)

with ``clip(z) = min(max(z, -clip), clip)`` when the attribute is given. Graphs: forward,
reverse and bidirectional, with and without ``sequence_lens`` and initial states, weights
as initializers and as graph inputs, layout 1 (its layout-0 twin in onnxruntime).

While this build's core lacks the keywords of ``functional.lstm`` these map to
(``peephole``, ``cell_clip``, ``input_forget``, ``output_activation``), the tests that need
them are ``xfail(strict=True, raises=UnsupportedModelError)``, decided at collection.
What stays refused with any core is tested unconditionally.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore.errors import ModelFileError, UnsupportedModelError
from rnncore.formats.onnx import recurrent

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from test_interop_onnx import ort_run, rnn_graph, to_layout0  # noqa: E402
from test_onnx_node_cases import as_constants, core_marks, needed_keywords  # noqa: E402

H = 5
ATOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
MAX_ERR: dict[str, float] = {}

#: variant -> rnn_graph keywords for one direction (activation lists repeated per direction)
VARIANTS = {
    "peephole": {"peephole": True},
    "clip": {"extra_attrs": {"clip": 0.7}},
    "input_forget": {"extra_attrs": {"input_forget": 1}},
    "g_relu_h_tanh": {"acts": ["Sigmoid", "Relu", "Tanh"]},
    "g_tanh_h_sigmoid": {"acts": ["Sigmoid", "Tanh", "Sigmoid"]},
    # P takes the HardSigmoid's alpha like W and R (folded into the weights)
    "peephole_hard_sigmoid": {
        "peephole": True,
        "acts": ["HardSigmoid", "Tanh", "Tanh"],
        "alpha": [0.3],
        "beta": [0.4],
    },
    "clip_input_forget_peephole": {
        "peephole": True,
        "extra_attrs": {"clip": 1.5, "input_forget": 1},
    },
    "all": {
        "peephole": True,
        "extra_attrs": {"clip": 0.9, "input_forget": 1},
        "acts": ["Sigmoid", "Relu", "Tanh"],
    },
}


def variant_graph(variant: str, direction: str, seed: int = 0, **kw):
    """``rnn_graph``'s LSTM with ``variant`` (peepholes drawn from a standard normal: large
    enough that a misplaced row changes the outputs)."""
    rng = np.random.default_rng(seed)
    nd = 2 if direction == "bidirectional" else 1
    spec = dict(VARIANTS[variant])
    if spec.pop("peephole", False):
        spec["peephole"] = rng.standard_normal((nd, 3 * H))
    for k in ("acts", "alpha", "beta"):
        if k in spec:
            spec[k] = spec[k] * nd
    return rnn_graph(rng, "LSTM", direction=direction, H=H, **spec, **kw)


def as_graph_inputs(model: onnx.ModelProto, shapes: bool = True):
    """The graph with its initializers turned into graph inputs (their shapes declared or
    not), and their values."""
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.initializer[:]
    m.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims) if shapes else None)
        for t in model.graph.initializer
    )
    return m, weights


def marks(variant: str) -> list:
    model, feed = variant_graph(variant, "forward")
    return core_marks(model, feed)


def assert_close(got, want, what: str):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        err = float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
        MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
        assert err <= ATOL[w.dtype], f"{what}: max error {err:.3g}"


def test_every_variant_needs_a_keyword():
    """The gating reads the graphs right (else a variant could pass on the plain LSTM)."""
    for variant in VARIANTS:
        model, feed = variant_graph(variant, "forward")
        assert needed_keywords(model, feed), variant


@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "initial_state"])
@pytest.mark.parametrize("seq_lens", [False, True], ids=["full", "sequence_lens"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", [pytest.param(v, marks=marks(v)) for v in VARIANTS])
def test_variant_matches_onnxruntime(variant, direction, seq_lens, init):
    model, feed = variant_graph(variant, direction, seq_lens=seq_lens, init=init)
    got = rnncore.load_onnx(model.SerializeToString()).run(None, feed)
    assert_close(got, ort_run(model, feed), "LSTM variants: load_onnx vs onnxruntime")


@pytest.mark.parametrize("variant", [pytest.param(v, marks=marks(v)) for v in VARIANTS])
def test_variant_weights_as_graph_inputs(variant):
    """W, R, B, P fed at run time: the same numbers as the initializers, bit for bit."""
    model, feed = variant_graph(variant, "bidirectional", seq_lens=True)
    want = rnncore.load_onnx(model.SerializeToString()).run(None, feed)
    m, weights = as_graph_inputs(model)
    got = rnncore.load_onnx(m.SerializeToString()).run(None, {**feed, **weights})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    # and back as Constant nodes, converted at load
    m2, rest = as_constants(m, {**feed, **weights}, list(weights), "constant_node")
    for g, w in zip(rnncore.load_onnx(m2.SerializeToString()).run(None, rest), want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("variant", [pytest.param(v, marks=marks(v)) for v in VARIANTS])
def test_variant_layout_1(variant):
    model, feed = variant_graph(variant, "bidirectional", seq_lens=True, init=True, layout=1)
    got = rnncore.load_onnx(model.SerializeToString()).run(None, feed)
    m0, feed0 = to_layout0(model, feed)
    want = ort_run(m0, feed0)
    want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    assert_close(got, want, "LSTM variants: load_onnx vs onnxruntime")


def _activations(attrs: dict, nd: int) -> list:
    """Per direction the functions ``f, g, h`` the node's attributes name."""
    names = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    names = names or ["Sigmoid", "Tanh", "Tanh"] * nd
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    fns = []
    for name in names:
        if name == "HardSigmoid":
            a, b = alphas.pop(0), betas.pop(0)
            fns.append(lambda z, a=a, b=b: np.clip(a * z + b, 0.0, 1.0))
        else:
            fns.append({"Sigmoid": lambda z: 1 / (1 + np.exp(-z)), "Tanh": np.tanh,
                        "Relu": lambda z: np.maximum(z, 0.0)}[name])  # fmt: skip
    return [fns[3 * d : 3 * d + 3] for d in range(nd)]


def lstm_reference(model: onnx.ModelProto, feed: dict) -> list:
    """The module docstring's equations in float64 NumPy, on ONNX's layouts (layout 0), one
    sample at a time over its first ``L`` steps (the reverse direction from ``L - 1`` down);
    ``Y`` is zero past ``L``, the final states are those after step ``L`` (zero for L = 0)."""
    node = model.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    w = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    X = feed["X"].astype(np.float64)
    T, Bn, _ = X.shape
    nd, H = w["W"].shape[0], int(attrs["hidden_size"])
    P = w.get("P", np.zeros((nd, 3 * H)))
    clip = attrs.get("clip", np.inf)
    lens = feed.get("L", np.full(Bn, T))
    h0 = feed.get("h0", np.zeros((nd, Bn, H))).astype(np.float64)
    c0 = feed.get("c0", np.zeros((nd, Bn, H))).astype(np.float64)
    Y, Yh, Yc = np.zeros((T, nd, Bn, H)), np.zeros((nd, Bn, H)), np.zeros((nd, Bn, H))
    reverse = attrs.get("direction", b"forward") == b"reverse"

    def clipped(z):
        return np.clip(z, -clip, clip)

    for d, (f, g, h) in enumerate(_activations(attrs, nd)):
        p_i, p_o, p_f = np.split(P[d], 3)
        for b in range(Bn):
            L = int(lens[b])
            ht, ct = h0[d, b], c0[d, b]
            for t in range(L - 1, -1, -1) if (d == 1 or reverse) else range(L):
                z = w["W"][d] @ X[t, b] + w["R"][d] @ ht + w["B"][d, : 4 * H] + w["B"][d, 4 * H :]
                zi, zo, zf, zc = np.split(z, 4)
                i = f(clipped(zi + p_i * ct))
                forget = 1 - i if attrs.get("input_forget", 0) else f(clipped(zf + p_f * ct))
                ct = forget * ct + i * g(clipped(zc))
                ht = f(clipped(zo + p_o * ct)) * h(ct)
                Y[t, d, b] = ht
            if L:
                Yh[d, b], Yc[d, b] = ht, ct
    return [Y, Yh, Yc]


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_matches_onnxruntime(variant, direction):
    """The float64 test's reference, checked against onnxruntime on float32 graphs (which
    are all onnxruntime's LSTM runs)."""
    model, feed = variant_graph(variant, direction, seq_lens=True, init=True)
    want = ort_run(model, feed)
    for r, w in zip(lstm_reference(model, feed), want, strict=True):
        np.testing.assert_allclose(r, w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
@pytest.mark.parametrize("variant", [pytest.param(v, marks=marks(v)) for v in VARIANTS])
def test_variant_float64(variant, direction):
    """float64 graphs are computed in float64: the float64 reference to 1e-12 (float32
    rounding anywhere would show as ~1e-8)."""
    model, feed = variant_graph(variant, direction, seq_lens=True, init=True, dtype=np.float64)
    got = rnncore.load_onnx(model.SerializeToString()).run(None, feed)
    assert all(a.dtype == np.float64 for a in got)
    assert_close(got, lstm_reference(model, feed), "LSTM variants float64: vs float64 reference")


@pytest.mark.parametrize(
    "variant,match",
    [
        ("peephole", r"peepholes \(a non-zero input P\) needs .*lstm\(peephole=\.\.\.\)"),
        ("clip", r"attribute clip needs .*lstm\(cell_clip=\.\.\.\)"),
        ("input_forget", r"attribute input_forget=1 needs .*lstm\(input_forget=\.\.\.\)"),
        ("g_relu_h_tanh", r"g=Relu and h=Tanh needs .*lstm\(output_activation=\.\.\.\)"),
    ],
)
def test_refused_by_a_core_without_the_keyword(monkeypatch, variant, match):
    """A core without a variant refuses it by name, whatever this build has."""
    plain = frozenset(["x", "kernel", "recurrent_kernel", "bias", "activation"])
    monkeypatch.setattr(recurrent, "_lstm_variants", lambda: plain)
    model, feed = variant_graph(variant, "forward")
    with pytest.raises(UnsupportedModelError, match=match):
        rnncore.load_onnx(model.SerializeToString())


def test_zero_peepholes_run_on_any_core(monkeypatch):
    monkeypatch.setattr(recurrent, "_lstm_variants", lambda: frozenset())
    rng = np.random.default_rng(1)
    model, feed = rnn_graph(rng, "LSTM", H=H, peephole=np.zeros((1, 3 * H)), seq_lens=True)
    got = rnncore.load_onnx(model.SerializeToString()).run(None, feed)
    assert_close(got, ort_run(model, feed), "LSTM variants: load_onnx vs onnxruntime")


@pytest.mark.parametrize(
    "op,kw,cls,match",
    [
        ("GRU", {"extra_attrs": {"clip": 1.0}}, UnsupportedModelError, "clip=1.0.*of GRU"),
        ("RNN", {"extra_attrs": {"clip": 1.0}}, UnsupportedModelError, "clip=1.0.*of RNN"),
        ("LSTM", {"extra_attrs": {"clip": 0.0}}, ModelFileError, "clip must be positive"),
        ("GRU", {"extra_attrs": {"input_forget": 1}}, ModelFileError, "of LSTM only"),
        (
            "LSTM",
            {"extra_attrs": {"clip": 1.0}, "acts": ["HardSigmoid", "Tanh", "Tanh"]},
            UnsupportedModelError,
            "clip with the activations f=HardSigmoid, g=Tanh",
        ),
        (
            "LSTM",
            {"acts": ["Sigmoid", "Tanh", "Affine"], "alpha": [2.0], "beta": [0.0]},
            UnsupportedModelError,
            "h=Affine with alpha=2.0, beta=0.0",
        ),
    ],
    ids=["gru_clip", "rnn_clip", "clip_zero", "gru_input_forget", "clip_hard_sigmoid", "h_affine"],
)
def test_refused_with_any_core(op, kw, cls, match):
    model, _ = rnn_graph(np.random.default_rng(2), op, H=H, **kw)
    with pytest.raises(cls, match=match):
        rnncore.load_onnx(model.SerializeToString())


def test_run_time_peephole_shape_named():
    """P fed at run time with a wrong shape: an error naming P, with any core."""
    model, feed = variant_graph("peephole", "forward")
    m, weights = as_graph_inputs(model, shapes=False)
    P = weights["P"][:, 1:].copy()
    with pytest.raises(ValueError, match=r"P has shape \(1, 14\); .*need \(1, 15\)"):
        rnncore.load_onnx(m.SerializeToString()).run(None, {**feed, **weights, "P": P})
