"""ONNX in and out of rnncore, against onnxruntime (a test-only dependency, as is onnx).

* ``load_onnx``: single RNN / LSTM / GRU nodes with random weights, every direction, with
  and without ``sequence_lens`` / ``initial_h`` / ``initial_c`` / bias, GRU
  ``linear_before_reset`` 0 and 1, parametrised activations (``HardSigmoid``, ``Affine``),
  ``layout`` 1 (onnxruntime runs only layout 0, so the reference is the layout-0 graph with
  its inputs and outputs transposed); outputs equal onnxruntime's within float32 tolerance.
* ``to_onnx``: in ``test_onnx_export.py``.
* Refusals and broken files: clear errors naming what is wrong.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnncore import reference
from rnncore.interop import ModelFileError, UnsupportedModelError, load_onnx

ATOL = 2e-6  # float32; onnxruntime and the core sum products in different orders
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
MAX_ERR: dict[str, float] = {}


def record(what, got, want):
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want))) if np.size(want) else 0.0
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    return err


def assert_close(got, want, what="load_onnx vs onnxruntime", atol=ATOL):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        record(what, g, w)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol)


def ort_run(model: onnx.ModelProto, feed: dict) -> list:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def rnn_graph(rng, op, *, direction="forward", T=6, B=3, D=4, H=5, layout=0, bias=True,
              seq_lens=False, init=False, acts=None, alpha=None, beta=None, lbr=None,
              extra_attrs=None, dtype=np.float32, peephole=None):  # fmt: skip
    """A one-node graph: X (and sequence_lens / initial states) as graph inputs, weights
    as initializers. Returns the model and the feed."""
    nd = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    W = rng.standard_normal((nd, G * H, D)) * (0.6 / np.sqrt(D))
    R = rng.standard_normal((nd, G * H, H)) * (0.6 / np.sqrt(H))
    inits = [
        numpy_helper.from_array(W.astype(dtype), "W"),
        numpy_helper.from_array(R.astype(dtype), "R"),
    ]
    names = ["X", "W", "R"]
    if bias:
        inits.append(
            numpy_helper.from_array((rng.standard_normal((nd, 2 * G * H)) * 0.3).astype(dtype), "B")
        )
    names.append("B" if bias else "")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    xshape = (T, B, D) if layout == 0 else (B, T, D)
    feed = {"X": rng.standard_normal(xshape).astype(dtype)}
    inputs = [
        helper.make_tensor_value_info("X", elem, ["T", "B", D] if layout == 0 else ["B", "T", D])
    ]
    if seq_lens:
        lens = rng.integers(0, T + 1, size=B).astype(np.int32)
        lens[0] = T
        if B > 2:
            lens[1], lens[2] = 0, 1
        feed["L"] = lens
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [B]))
    names.append("L" if seq_lens else "")
    state_shape = (nd, B, H) if layout == 0 else (B, nd, H)
    for s in ("h0", "c0") if op == "LSTM" else ("h0",):
        if init:
            feed[s] = (0.5 * rng.standard_normal(state_shape)).astype(dtype)
            inputs.append(helper.make_tensor_value_info(s, elem, list(state_shape)))
        names.append(s if init else "")
    if peephole is not None:
        inits.append(numpy_helper.from_array(peephole.astype(dtype), "P"))
        names.append("P")
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attrs = dict(hidden_size=H, direction=direction)
    if layout:
        attrs["layout"] = layout
    if acts is not None:
        attrs["activations"] = acts
    if alpha is not None:
        attrs["activation_alpha"] = alpha
    if beta is not None:
        attrs["activation_beta"] = beta
    if lbr is not None:
        attrs["linear_before_reset"] = lbr
    attrs.update(extra_attrs or {})
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info(o, elem, None) for o in outs], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, feed


def to_layout0(model: onnx.ModelProto, feed: dict):
    """The layout-0 twin of a layout-1 graph and its feed (onnxruntime has only layout 0)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[0]
    for a in list(node.attribute):
        if a.name == "layout":
            node.attribute.remove(a)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 3:
            d0, d1 = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
            d0.CopyFrom(dims[0])
            d1.CopyFrom(dims[1])
            dims[0].CopyFrom(d1)
            dims[1].CopyFrom(d0)
    feed0 = {k: (v.transpose(1, 0, 2) if v.ndim == 3 else v) for k, v in feed.items()}
    return m, feed0


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# ---------------------------------------------------------------------------------------
# load_onnx against onnxruntime


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", ["plain", "lens_init", "no_bias"])
def test_node_matches_onnxruntime(rng, op, direction, variant):
    model, feed = rnn_graph(
        rng,
        op,
        direction=direction,
        bias=variant != "no_bias",
        seq_lens=variant == "lens_init",
        init=variant == "lens_init",
        lbr=1 if op == "GRU" else None,
    )
    got = load_onnx(model.SerializeToString()).run(None, feed)
    assert_close(got, ort_run(model, feed))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(rng, direction, lbr):
    model, feed = rnn_graph(rng, "GRU", direction=direction, lbr=lbr, seq_lens=True, init=True)
    got = load_onnx(model.SerializeToString()).run(None, feed)
    assert_close(got, ort_run(model, feed))


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("variant", ["plain", "lens_init"])
def test_layout_1(rng, op, variant):
    model, feed = rnn_graph(
        rng,
        op,
        direction="bidirectional",
        layout=1,
        seq_lens=variant == "lens_init",
        init=variant == "lens_init",
    )
    got = load_onnx(model.SerializeToString()).run(None, feed)
    m0, feed0 = to_layout0(model, feed)
    want = ort_run(m0, feed0)
    # layout 1: Y (B, T, num_dir, H), Y_h / Y_c (B, num_dir, H)
    want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    assert_close(got, want)


ACTIVATION_CASES = {
    # id: (op, activations per direction, alpha, beta)
    "rnn_relu": ("RNN", ["Relu"], None, None),
    "rnn_sigmoid": ("RNN", ["Sigmoid"], None, None),
    "rnn_affine": ("RNN", ["Affine"], [0.7], [0.1]),
    "rnn_hardsigmoid_default": ("RNN", ["HardSigmoid"], None, None),
    "gru_hardsigmoid": ("GRU", ["HardSigmoid", "Tanh"], [0.3], [0.45]),
    "gru_relu_candidate": ("GRU", ["Sigmoid", "Relu"], None, None),
    "lstm_hardsigmoid_gates": ("LSTM", ["HardSigmoid", "Tanh", "Tanh"], [0.25], [0.55]),
    "lstm_keras_hard_sigmoid": ("LSTM", ["HardSigmoid", "Tanh", "Tanh"], [1 / 6], [0.5]),
    "lstm_relu_cell": ("LSTM", ["Sigmoid", "Relu", "Relu"], None, None),
    "gru_params_skip_unparametrised": ("GRU", ["Sigmoid", "HardSigmoid"], [0.3], [0.4]),
}


@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_activations(rng, case, direction):
    op, acts, alpha, beta = ACTIVATION_CASES[case]
    nd = 2 if direction == "bidirectional" else 1
    model, feed = rnn_graph(
        rng,
        op,
        direction=direction,
        acts=acts * nd,
        alpha=None if alpha is None else alpha * nd,
        beta=None if beta is None else beta * nd,
        seq_lens=True,
    )
    got = load_onnx(model.SerializeToString()).run(None, feed)
    assert_close(got, ort_run(model, feed))


def test_peephole_zeros_accepted(rng):
    # non-zero peepholes, clip, input_forget and g != h: tests/test_onnx_lstm_variants.py
    model, feed = rnn_graph(rng, "LSTM", peephole=np.zeros((1, 15)))
    assert_close(load_onnx(model.SerializeToString()).run(None, feed), ort_run(model, feed))


@pytest.mark.parametrize(
    "op,kwargs,match",
    [
        ("RNN", {"acts": ["LeakyRelu"]}, "LeakyRelu"),
        ("GRU", {"acts": ["Sigmoid", "Softsign"]}, "Softsign"),
        ("RNN", {"acts": ["ScaledTanh"]}, "ScaledTanh"),
    ],
)
def test_unsupported_attributes_refused(rng, op, kwargs, match):
    model, _ = rnn_graph(rng, op, **kwargs)
    with pytest.raises(UnsupportedModelError, match=match):
        load_onnx(model.SerializeToString())


def test_unsupported_operator_refused(rng):
    model, _ = rnn_graph(rng, "GRU")
    model.graph.node.append(helper.make_node("Erf", ["Y_h"], ["Z"]))
    with pytest.raises(UnsupportedModelError, match="operator Erf"):
        load_onnx(model.SerializeToString())


# ONNX gate order -> Keras gate order (rows of W / R, entries of the biases)
_ONNX_TO_KERAS_GATES = {"RNN": [0], "GRU": [0, 1, 2], "LSTM": [0, 2, 3, 1]}  # LSTM: iofc -> ifco


def onnx_reference(model: onnx.ModelProto, feed: dict, op: str, lbr: int = 0) -> list:
    """One RNN / GRU / LSTM node (layout 0, default activations, no clip) computed by
    :mod:`rnncore.reference` in float64, one sample and one direction at a time: a sample of
    length L runs over its first L steps (the reverse direction from step L-1 down to 0),
    ``Y`` is zero past L, the final states are those after the last step (zero when L = 0)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    W, R = inits["W"], inits["R"]
    nd, GH, _ = W.shape
    H = int(attrs["hidden_size"])
    Bias = inits.get("B", np.zeros((nd, 2 * GH)))
    X = feed["X"].astype(np.float64)
    T, Bn, _ = X.shape
    lens = feed.get("L", np.full(Bn, T))
    states = [feed.get(s) for s in (("h0", "c0") if op == "LSTM" else ("h0",))]
    states = [np.zeros((nd, Bn, H)) if s is None else s.astype(np.float64) for s in states]
    order = _ONNX_TO_KERAS_GATES[op]

    def keras_layout(a):  # (G*H, n) ONNX rows -> (n, G*H) Keras columns, gates reordered
        return np.concatenate([a[g * H : (g + 1) * H] for g in order]).T

    Y = np.zeros((T, nd, Bn, H))
    finals = [np.zeros((nd, Bn, H)) for _ in states]
    fn = {"RNN": reference.simple_rnn, "GRU": reference.gru, "LSTM": reference.lstm}[op]
    for d in range(nd):
        kernel, recurrent = keras_layout(W[d]), keras_layout(R[d])
        wb, rb = Bias[d, :GH, None], Bias[d, GH:, None]
        kw = {}
        if op == "GRU" and lbr:
            kw["reset_after"] = True
            bias = np.stack([keras_layout(wb)[0], keras_layout(rb)[0]])
        else:  # Wb + Rb (for GRU with linear_before_reset=0, Rbh is outside the reset)
            if op == "GRU":
                kw["reset_after"] = False
            bias = keras_layout(wb + rb)[0]
        for b in range(Bn):
            L = int(lens[b])
            if L == 0:
                continue
            out, *fin = fn(
                X[:L, b][None],
                kernel,
                recurrent,
                bias,
                initial_state=[s[d, b][None] for s in states],
                go_backwards=d == 1,
                return_sequences=True,
                **kw,
            )
            Y[:L, d, b] = out[0] if d == 0 else out[0, ::-1]
            for f, v in zip(finals, fin):
                f[d, b] = v[0]
    return [Y, *finals]


@pytest.mark.parametrize("op,lbr", [("RNN", 0), ("LSTM", 0), ("GRU", 0), ("GRU", 1)])
def test_float64_graph(rng, op, lbr):
    """float64 weights and inputs are computed in float64: equal to the float64 NumPy
    reference to 1e-12 (float32 rounding anywhere would show as ~1e-8). ONNX Runtime's
    recurrent kernels are float32 only: its float32 run is checked too, at 1e-5."""
    model, feed = rnn_graph(
        rng,
        op,
        direction="bidirectional",
        dtype=np.float64,
        seq_lens=True,
        init=True,
        lbr=lbr if op == "GRU" else None,
    )
    got = load_onnx(model.SerializeToString()).run(None, feed)
    assert all(g.dtype == np.float64 for g in got)
    want = onnx_reference(model, feed, op, lbr)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        record("load_onnx float64 vs float64 reference", g, w)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    m32 = onnx.ModelProto()
    m32.CopyFrom(model)
    for t in m32.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for vi in list(m32.graph.input) + list(m32.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.DOUBLE:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    feed32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feed.items()}
    want32 = ort_run(m32, feed32)
    for g, w in zip(got, want32):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_onnx_reference_matches_onnxruntime(rng):
    """The float64 test's reference, checked against onnxruntime on float32 graphs."""
    for op, lbr in [("RNN", 0), ("LSTM", 0), ("GRU", 0), ("GRU", 1)]:
        model, feed = rnn_graph(
            rng,
            op,
            direction="bidirectional",
            seq_lens=True,
            init=True,
            lbr=lbr if op == "GRU" else None,
        )
        want = ort_run(model, feed)
        ref = onnx_reference(model, feed, op, lbr)
        assert len(ref) == len(want)
        for r, w in zip(ref, want):
            np.testing.assert_allclose(r, w, rtol=1e-5, atol=ATOL, err_msg=op)


def test_model_interface(rng, tmp_path):
    model, feed = rnn_graph(rng, "GRU", lbr=1, init=True)
    path = tmp_path / "gru.onnx"
    onnx.save(model, path)
    m = load_onnx(path)
    assert m.input_names == ["X", "h0"] and m.output_names == ["Y", "Y_h"]
    y, h = m(feed["X"], feed["h0"])
    np.testing.assert_array_equal(m(X=feed["X"], h0=feed["h0"])[0], y)
    assert [a.shape for a in m.run(["Y_h"], feed)] == [h.shape]
    with pytest.raises(TypeError, match="dtype float32"):
        m(feed["X"].astype(np.float64), feed["h0"])
    with pytest.raises(ValueError, match="shape"):
        m(feed["X"][..., :2], feed["h0"])
    with pytest.raises(ValueError, match="missing input 'h0'"):
        m.run(None, {"X": feed["X"]})


# ---------------------------------------------------------------------------------------
# Broken files


def test_truncated_and_corrupted_files(rng, tmp_path):
    model, _ = rnn_graph(rng, "LSTM", direction="bidirectional")
    data = model.SerializeToString()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 7):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises((ModelFileError, UnsupportedModelError)):
            load_onnx(path)
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + bytes(range(256)))
    with pytest.raises(ModelFileError):
        load_onnx(path)


def test_tensor_data_not_matching_its_shape(rng):
    model, _ = rnn_graph(rng, "GRU")
    w = model.graph.initializer[0]
    w.dims[2] += 1  # declares more values than it holds
    with pytest.raises(ModelFileError, match="'W'"):
        load_onnx(model.SerializeToString())


def test_weights_not_matching_hidden_size(rng):
    model, _ = rnn_graph(rng, "LSTM", H=5)
    for a in model.graph.node[0].attribute:
        if a.name == "hidden_size":
            a.i = 4
    with pytest.raises(ModelFileError, match="hidden_size=4"):
        load_onnx(model.SerializeToString())


def test_external_data_refused(rng):
    model, _ = rnn_graph(rng, "RNN")
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    with pytest.raises(UnsupportedModelError, match="external"):
        load_onnx(model.SerializeToString())


def test_undefined_tensor(rng):
    model, _ = rnn_graph(rng, "RNN")
    del model.graph.initializer[1]  # R
    with pytest.raises(ModelFileError, match="'R'"):
        load_onnx(model.SerializeToString())
