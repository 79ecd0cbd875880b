"""The ``onnx`` package's own node test cases for ``RNN``, ``LSTM`` and ``GRU``, run by
``load_onnx``.

The cases are generated from the installed package's definitions
(``onnx.backend.test.case.node.collect_testcases``; the wheel may not carry the generated
data folder) and filtered by the op types in their graphs, not listed by name, so cases that
a newer ``onnx`` adds are picked up. Every output is compared with the case's expected
arrays (computed by the package's NumPy reference). The cases feed ``W``, ``R``, ``B``
(and ``P``, ``sequence_lens``, the initial states) as graph inputs; the same graphs with
the weights as initializers or ``Constant`` nodes must give identical results. Weights fed
at run time with a wrong shape or dtype raise errors naming them.

A case that needs an LSTM variant this build's core lacks (``functional.lstm(peephole=...)``
...) is marked ``xfail(strict=True, raises=UnsupportedModelError)``, decided at collection
from ``functional.lstm``'s signature: it passes as soon as the core has the keyword.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import rnncore
from rnncore import functional
from rnncore.errors import UnsupportedModelError

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402
from onnx.backend.test.case.node import collect_testcases  # noqa: E402

RNN_OPS = {"RNN", "LSTM", "GRU"}
ATOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
MAX_ERR: dict[str, float] = {}
#: the keywords of this build's functional.lstm: the LSTM variants its core has
CORE_KEYWORDS = frozenset(inspect.signature(functional.lstm).parameters)


def _recurrent_cases() -> dict:
    with warnings.catch_warnings():
        # generating all the package's cases computes other operators' data with
        # overflows and divisions by zero on purpose; those warnings are not ours
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {c.name: c for c in cases if RNN_OPS & {node.op_type for node in c.model.graph.node}}


CASES = _recurrent_cases()


def _arrays(values) -> list[np.ndarray]:
    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v for v in values]


def needed_keywords(model: onnx.ModelProto, inputs: dict) -> list[str]:
    """The ``functional.lstm`` keywords the graph's LSTM nodes need (``inputs``: the values
    fed to the graph, for a ``P`` that is a graph input)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    values.update(inputs)
    need = []
    for node in model.graph.node:
        if node.op_type != "LSTM":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        p = node.input[7] if len(node.input) > 7 else ""
        if p and np.any(values[p] != 0):
            need.append("peephole")
        if "clip" in attrs:
            need.append("cell_clip")
        if attrs.get("input_forget", 0):
            need.append("input_forget")
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if any(acts[k + 1].lower() != acts[k + 2].lower() for k in range(0, len(acts), 3)):
            need.append("output_activation")
    return need


def core_marks(model: onnx.ModelProto, inputs: dict) -> list:
    """``xfail(strict=True)`` when the graph needs keywords this build's core lacks."""
    missing = [k for k in needed_keywords(model, inputs) if k not in CORE_KEYWORDS]
    if not missing:
        return []
    reason = f"needs functional.lstm({', '.join(k + '=...' for k in missing)}) from the core"
    return [pytest.mark.xfail(strict=True, raises=UnsupportedModelError, reason=reason)]


def feed_of(case, k: int = 0) -> dict:
    ins, _ = case.data_sets[k]
    names = [vi.name for vi in case.model.graph.input]
    return dict(zip(names, _arrays(ins), strict=True))


def case_params():
    return [
        pytest.param(name, id=name, marks=core_marks(case.model, feed_of(case)))
        for name, case in sorted(CASES.items())
    ]


def record(what: str, got: np.ndarray, want: np.ndarray) -> float:
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    return err


def run(model_proto: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return rnncore.load_onnx(model_proto.SerializeToString()).run(None, feed)


def as_constants(model: onnx.ModelProto, feed: dict, names, form: str):
    """The graph with the inputs ``names`` moved into it as initializers
    (``form="initializer"``) or ``Constant`` nodes, and the feed of what is left."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    kept = [vi for vi in m.graph.input if vi.name not in names]
    del m.graph.input[:]
    m.graph.input.extend(kept)
    tensors = [numpy_helper.from_array(feed[n], n) for n in names]
    if form == "initializer":
        m.graph.initializer.extend(tensors)
    else:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in tensors]
        rest = list(m.graph.node)
        del m.graph.node[:]
        m.graph.node.extend(nodes + rest)
    return m, {k: v for k, v in feed.items() if k not in names}


def weight_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs that are a recurrent node's W, R, B or P."""
    graph_inputs = {vi.name for vi in model.graph.input}
    out = []
    for node in model.graph.node:
        if node.op_type in RNN_OPS:
            ins = list(node.input) + [""] * 8
            out += [n for n in (ins[1], ins[2], ins[3], ins[7]) if n in graph_inputs]
    return out


def test_the_package_has_cases_for_every_recurrent_op():
    ops = {node.op_type for c in CASES.values() for node in c.model.graph.node}
    assert RNN_OPS <= ops, f"collect_testcases() gave cases for {sorted(ops)} only"
    assert all(weight_names(c.model) for c in CASES.values())  # the run-time weights form


@pytest.mark.parametrize("name", case_params())
def test_node_case_matches_expected(name):
    case = CASES[name]
    model = rnncore.load_onnx(case.model.SerializeToString())
    out_names = [vi.name for vi in case.model.graph.output]
    for k, (_, outs) in enumerate(case.data_sets):
        feed = feed_of(case, k)
        before = {n: a.copy() for n, a in feed.items()}
        got = model.run(None, feed)
        assert len(got) == len(outs) == len(out_names)
        for out_name, g, w in zip(out_names, got, _arrays(outs)):
            assert g.shape == w.shape and g.dtype == w.dtype, (out_name, g.shape, w.shape)
            err = record(f"onnx node cases vs expected ({w.dtype})", g, w)
            assert err <= ATOL[w.dtype], f"{name} {out_name}: max error {err:.3g}"
        for n, a in feed.items():  # the inputs are left as they were
            np.testing.assert_array_equal(a, before[n], err_msg=n)


@pytest.mark.parametrize("form", ["initializer", "constant_node", "mixed"])
@pytest.mark.parametrize("name", case_params())
def test_constant_and_graph_input_weights_identical(name, form):
    """Weights converted once at load and per call are the same arrays: identical outputs."""
    case = CASES[name]
    feed = feed_of(case)
    want = run(case.model, feed)
    names = weight_names(case.model)
    if form == "mixed":  # W constant, the others fed at run time
        names, form = names[:1], "initializer"
    model, rest = as_constants(case.model, feed, names, form)
    got = run(model, rest)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def _case_with(op: str):
    """The first case (by name) of ``op`` with the inputs ``X, W, R, B``."""
    for _, case in sorted(CASES.items()):
        node = case.model.graph.node[0]
        if node.op_type == op and len(node.input) == 4 and not core_marks(case.model, {}):
            return case
    pytest.fail(f"no {op} case with the inputs X, W, R, B")


def _without_shapes(model: onnx.ModelProto, **elem_types) -> onnx.ModelProto:
    """The graph with its inputs' shapes undeclared (so the node checks them) and the element
    types ``elem_types`` (input name -> TensorProto type) changed."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        vi.type.tensor_type.ClearField("shape")
        if vi.name in elem_types:
            vi.type.tensor_type.elem_type = elem_types[vi.name]
    return m


@pytest.mark.parametrize("op", sorted(RNN_OPS))
@pytest.mark.parametrize(
    "which,change,match",
    [
        ("W", lambda a: a[:, 1:], r"W has shape \(1, \d+, \d+\); direction=forward"),
        ("W", lambda a: a[0], r"W and R must be 3-D"),
        ("R", lambda a: a[:, :, 1:], r"R has shape .*need \(1, \d+, \d+\)"),
        ("B", lambda a: a[:, 1:], r"B has shape \(1, \d+\); .*need \(1, \d+\)"),
    ],
    ids=["W_gates", "W_2d", "R", "B"],
)
def test_bad_run_time_weight_shape(op, which, change, match):
    case = _case_with(op)
    feed = feed_of(case)
    feed[which] = np.ascontiguousarray(change(feed[which]))
    with pytest.raises(ValueError, match=match):
        run(_without_shapes(case.model), feed)


@pytest.mark.parametrize("op", sorted(RNN_OPS))
def test_bad_run_time_weight_dtype(op):
    case = _case_with(op)
    feed = feed_of(case)
    double = _without_shapes(case.model, R=onnx.TensorProto.DOUBLE)
    with pytest.raises(TypeError, match="W is float32, R float64"):
        run(double, {**feed, "R": feed["R"].astype(np.float64)})
    ints = _without_shapes(case.model, W=onnx.TensorProto.INT32)
    with pytest.raises(TypeError, match="input W must be float32 or float64, got int32"):
        run(ints, {**feed, "W": feed["W"].astype(np.int32)})
    # with the shapes declared the graph's input check names the input first
    with pytest.raises(ValueError, match="input 'B' must have shape"):
        run(case.model, {**feed, "B": feed["B"][:, 1:]})
    with pytest.raises(TypeError, match="input 'W' must have dtype float32"):
        run(case.model, {**feed, "W": feed["W"].astype(np.float64)})


@pytest.mark.parametrize("op", sorted(RNN_OPS))
def test_weights_changed_in_place_between_calls(op):
    """Run-time weights are read on every call: an array changed in place is not served
    stale."""
    case = _case_with(op)
    feed = {k: v.copy() for k, v in feed_of(case).items()}  # not the case's own arrays
    model = rnncore.load_onnx(case.model.SerializeToString())
    first = model.run(None, feed)
    W = feed["W"].copy()
    W *= np.float32(0.5)
    want = model.run(None, {**feed, "W": W.copy()})
    feed["W"][...] = W  # the same array object, new values
    got = model.run(None, feed)
    for g, w, f in zip(got, want, first, strict=True):
        np.testing.assert_array_equal(g, w)
        assert np.max(np.abs(g - f)) > 1e-3
