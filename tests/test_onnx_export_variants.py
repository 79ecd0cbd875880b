"""``to_onnx`` of LSTM layers with the variants ONNX's LSTM has (``use_peepholes`` -> input
``P`` in ONNX's order i, o, f; ``cell_clip`` -> ``clip``; ``input_forget``;
``output_activation`` -> the ``h`` activation): run by onnxruntime against ``predict``, with
and without masks, both directions, Bidirectional, ``return_state`` and stateful layers.
``projection_units`` (no ONNX equivalent) and directions that disagree on a node attribute
are refused by name. float32 (onnxruntime's recurrent kernels are float32 only)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.errors import UnsupportedModelError
from rnncore.formats.onnx.export import to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import make_mask  # noqa: E402

MAX_ERR: dict[str, float] = {}
T, F, H = 6, 3, 4

VARIANTS = {
    "peepholes": dict(use_peepholes=True),
    "clip": dict(cell_clip=0.5),
    "input_forget": dict(input_forget=True),
    "output_relu": dict(output_activation="relu"),
    "output_hard_sigmoid": dict(output_activation="hard_sigmoid"),
    "all": dict(use_peepholes=True, cell_clip=1.0, input_forget=True, output_activation="linear"),
}
#: how the LSTM sits in the model
WRAPS = {
    "forward": lambda kw: L.LSTM(H, return_sequences=True, **kw),
    "backwards": lambda kw: L.LSTM(H, return_sequences=True, go_backwards=True, **kw),
    "last_return_state": lambda kw: L.LSTM(H, return_state=True, **kw),
    "bidirectional": lambda kw: L.Bidirectional(L.LSTM(H, return_sequences=True, **kw)),
    "bidirectional_state": lambda kw: L.Bidirectional(
        L.LSTM(H, return_state=True, **kw), merge_mode="sum"
    ),
}


def _session(proto):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _record(what, got, want, tol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.max(np.abs(got - want)))
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    assert err <= tol, f"{what}: max error {err:.3g} > {tol}"


def _model(layers, rng, batch_size=None):
    model = rnncore.Sequential([rnncore.Input(shape=(T, F), batch_size=batch_size), *layers])
    # peepholes and biases drawn too (the defaults start them at zero and one)
    model.set_weights([rng.normal(0, 0.6, w.shape) for w in model.get_weights()])
    return model


def _outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("wrap", list(WRAPS))
@pytest.mark.parametrize("pattern", ["none", "right_pad", "holes"])
def test_export_matches_predict(variant, wrap, pattern):
    rng = np.random.default_rng(zlib.crc32(f"{variant} {wrap} {pattern}".encode()))
    layers = [WRAPS[wrap](VARIANTS[variant])]
    x = rng.normal(size=(5, T, F)).astype(np.float32) + 0.5
    mask = make_mask(rng, pattern, 5, T)
    if mask is not None:
        x[~mask] = 0.0
        layers.insert(0, L.Masking(0.0))
    model = _model(layers, rng)
    want = _outputs(model.predict(x, verbose=0))
    proto = to_onnx(model)
    nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(nodes) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    kw = VARIANTS[variant]
    assert ("clip" in attrs) == ("cell_clip" in kw)
    assert attrs.get("input_forget", 0) == int(kw.get("input_forget", False))
    assert (len(nodes[0].input) == 8 and nodes[0].input[7] != "") == ("use_peepholes" in kw)
    got = _session(proto).run(None, {"input": x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _record(f"{variant} {wrap} {pattern}", g, w)


def test_peephole_order_is_onnx_i_o_f():
    """Distinct peephole rows: a swapped o/f order would change the numbers."""
    rng = np.random.default_rng(3)
    model = _model([L.LSTM(H, return_sequences=True, use_peepholes=True)], rng)
    layer = model.layers[-1]
    p = np.stack([np.full(H, 2.0), np.full(H, -2.0), np.full(H, 0.7)]).astype(np.float32)
    layer.peephole.assign(p)
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    proto = to_onnx(model)
    P = next(
        onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("/P")
    )
    np.testing.assert_array_equal(P, np.concatenate([p[0], p[2], p[1]])[None])
    _record("peephole order", _session(proto).run(None, {"input": x})[0], model.predict(x))


def test_stateful_chunks():
    rng = np.random.default_rng(4)
    model = _model([L.LSTM(H, stateful=True, return_sequences=True, **VARIANTS["all"])], rng, 2)
    layer = model.layers[-1]
    sess = _session(to_onnx(model))
    h = c = np.zeros((2, H), np.float32)
    for _ in range(3):  # the graph's state outputs fed back as its next inputs
        x = rng.normal(size=(2, T, F)).astype(np.float32)
        y, h, c = sess.run(
            None, {"input": x, f"{layer.name}_initial_h": h, f"{layer.name}_initial_c": c}
        )
        _record("stateful chunks", y, model.predict(x, verbose=0))
        _record("stateful chunks states", h, layer.states[0])
        _record("stateful chunks states", c, layer.states[1])


def test_projection_refused_by_name():
    model = _model([L.LSTM(H, projection_units=2)], np.random.default_rng(5))
    with pytest.raises(UnsupportedModelError, match="projection_units=2.*no output projection"):
        to_onnx(model)


@pytest.mark.parametrize(
    "backward_kw, option",
    [(dict(cell_clip=2.0), "cell_clip"), (dict(use_peepholes=True), "use_peepholes"),
     (dict(input_forget=True), "input_forget")],
)  # fmt: skip
def test_directions_must_agree_on_node_attributes(backward_kw, option):
    bi = L.Bidirectional(
        L.LSTM(H, return_sequences=True),
        backward_layer=L.LSTM(H, return_sequences=True, go_backwards=True, **backward_kw),
    )
    model = _model([bi], np.random.default_rng(6))
    with pytest.raises(UnsupportedModelError, match=f"differ in {option}"):
        to_onnx(model)


def test_directions_may_differ_in_output_activation():
    """Activations are per direction in ONNX, so these export."""
    rng = np.random.default_rng(7)
    bi = L.Bidirectional(
        L.LSTM(H, return_sequences=True, output_activation="relu"),
        backward_layer=L.LSTM(H, return_sequences=True, go_backwards=True),
    )
    model = _model([bi], rng)
    x = rng.normal(size=(3, T, F)).astype(np.float32)
    _record("per-direction h activation", _session(to_onnx(model)).run(None, {"input": x})[0],
            model.predict(x, verbose=0))  # fmt: skip
