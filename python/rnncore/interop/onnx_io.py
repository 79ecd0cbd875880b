"""ONNX in and out of rnncore: :func:`load_onnx` runs ONNX graphs on rnncore's core,
:func:`to_onnx` writes an :class:`rnncore.Sequential` as an ONNX model.

Loading
-------
:func:`load_onnx` reads a model and returns an :class:`OnnxModel`, which is called like an
``onnxruntime.InferenceSession`` (``model.run(None, {"x": x})``) or directly
(``model(x)``) and returns what the ONNX graph returns, with ONNX's conventions:

* ``RNN`` / ``LSTM`` / ``GRU`` nodes: every direction (``forward``, ``reverse``,
  ``bidirectional``), ``layout`` 0 (time-major: ``Y (T, num_directions, B, H)``,
  ``Y_h`` / ``Y_c (num_directions, B, H)``) and 1 (batch-major: ``Y (B, T, num_directions,
  H)``, ``Y_h (B, num_directions, H)``), ``initial_h`` / ``initial_c``, ``sequence_lens``,
  GRU ``linear_before_reset`` (1 is Keras's ``reset_after=True``, 0 is ``False``), the
  activations ``Tanh``, ``Sigmoid``, ``Relu``, ``HardSigmoid`` (any ``alpha``, ``beta``)
  and ``Affine``. The reverse direction's outputs are in the input's time order (Keras's
  ``go_backwards`` returns them in processing order; ONNX does not). With
  ``sequence_lens`` a sequence's steps past its length are not processed, ``Y`` is zero
  there, the reverse direction starts at the sequence's last valid step, and the final
  states are the states after the last valid step -- and zero for a sequence of length 0,
  as onnxruntime computes them.
* Weights are converted once, at load, to Keras's layouts (gate orders: ONNX LSTM
  ``i, o, f, c`` -> ``i, f, c, o``; GRU ``z, r, h`` is Keras's order). Activations with
  parameters are folded into the weights: ``HardSigmoid(alpha, beta)(x)`` is rnncore's
  ``hard_sigmoid(6 alpha x + 6 (beta - 0.5))``, ``Affine(alpha, beta)(x)`` is
  ``linear(alpha x + beta)``.
* Refused with :class:`UnsupportedModelError` naming them: peepholes (a non-zero ``P``),
  ``clip``, ``input_forget=1``, other activations (``LeakyRelu``, ``Elu``, ``Softsign``,
  ``Softplus``, ``ThresholdedRelu``, ``ScaledTanh``), an LSTM whose ``g`` and ``h``
  activations differ (rnncore's LSTM uses one activation for both), and any operator not
  listed in :data:`SUPPORTED_OPS`. That list holds, besides the recurrent nodes, the small
  operators exporters put around them (e.g. ``torch.onnx.export`` of ``nn.LSTM``:
  ``Transpose``, ``Slice``, ``Concat``, ``Reshape``, ``Shape``, ``Gather``, ...) and
  ``MatMul`` / ``Gemm`` / ``Add`` / activations for dense heads; those run in NumPy.

A file is parsed with the ``onnx`` package (protobuf; no code in the file ever runs) and
checked: a corrupted or truncated file, tensors whose data do not match their declared
shape, weights whose shapes do not match the node's ``hidden_size`` or the input size,
undefined tensors and external-data tensors raise :class:`rnncore.models.ModelFileError`
or :class:`UnsupportedModelError` naming the problem.

Export
------
:func:`to_onnx` writes a built :class:`rnncore.Sequential` of ``SimpleRNN``, ``LSTM``,
``GRU``, ``Bidirectional``, ``Dense``, ``TimeDistributed(Dense)``, ``Activation``,
``Softmax`` and ``Dropout`` layers (opset 17 by default; input ``(batch, timesteps,
features)`` named ``input``; outputs named ``output`` and, with ``return_state``, the
states). onnxruntime runs it with the same outputs as ``model.predict`` (onnxruntime's
recurrent kernels are float32 only). ``Masking`` (Keras's masked-step rule has no ONNX
counterpart) and ``stateful`` layers are refused.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import functional
from ._common import (
    ModelFileError,
    UnsupportedModelError,
    check_declared_size,
    optional_import,
)

__all__ = ["load_onnx", "OnnxModel", "to_onnx", "SUPPORTED_OPS"]

_RNN_OPS = ("RNN", "LSTM", "GRU")
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_N_ACTIVATIONS = {"RNN": 1, "GRU": 2, "LSTM": 3}
_DEFAULT_ACTIVATIONS = {
    "RNN": ("Tanh",),
    "GRU": ("Sigmoid", "Tanh"),
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
}
_CELL = {"RNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}
#: ONNX activation -> (default alpha, default beta) for those that take parameters
_ACTIVATION_PARAMS = {
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (1.0, None),
    "elu": (1.0, None),
    "hardsigmoid": (0.2, 0.5),
    "affine": (1.0, 0.0),
    "scaledtanh": (1.0, 1.0),
}
#: ONNX LSTM gate blocks i, o, f, c -> Keras i, f, c, o
_LSTM_TO_KERAS = (0, 2, 3, 1)
_KERAS_TO_LSTM = (0, 3, 1, 2)


# =======================================================================================
# Loading
# =======================================================================================


def load_onnx(path_or_bytes) -> OnnxModel:
    """Read an ONNX model (a path or the serialized bytes) as an :class:`OnnxModel`.

    Needs the ``onnx`` package (``pip install "rnncore[onnx]"``); onnxruntime is not used.
    """
    onnx = optional_import("onnx", "rnncore.load_onnx")
    from google.protobuf.message import DecodeError

    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, where = bytes(path_or_bytes), "<bytes>"
    else:
        where = os.fspath(path_or_bytes)
        with open(where, "rb") as f:
            data = f.read()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{where}: not a readable ONNX model (corrupted or truncated?): {e}"
        ) from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise ModelFileError(
            f"{where}: not an ONNX model (no graph or no nodes; corrupted or truncated?)"
        )
    return OnnxModel(proto, where)


class OnnxModel:
    """An ONNX graph computed by rnncore (from :func:`load_onnx`).

    ``run(output_names, input_feed)`` is onnxruntime's ``InferenceSession.run``: a list of
    the outputs named (all when ``None``) for inputs given by name. ``model(x)`` (inputs in
    order, or by name) returns the single output, or a tuple of all outputs.
    ``input_names`` / ``output_names`` / ``inputs`` describe the graph's interface.
    """

    def __init__(self, proto, where: str = "<model>"):
        onnx = optional_import("onnx", "rnncore.load_onnx")
        self._onnx = onnx
        self.where = where
        self.opset = _opset(proto, where)
        graph = proto.graph
        self.graph_name = graph.name
        self._constants: dict[str, np.ndarray] = {}
        for t in graph.initializer:
            self._constants[t.name] = _tensor(onnx, t, where)
        if len(graph.sparse_initializer):
            raise UnsupportedModelError(f"{where}: sparse initializers are not supported")
        self.inputs = []  # (name, numpy dtype, shape with None / names for unknown dims)
        for vi in graph.input:
            if vi.name in self._constants:
                continue  # an initializer listed as an input (IR < 4): a constant
            self.inputs.append((vi.name, *_value_info(onnx, vi, where)))
        self.output_names = [vi.name for vi in graph.output]
        self._nodes = []
        defined = set(self._constants) | {name for name, _, _ in self.inputs}
        for k, node in enumerate(graph.node):
            plan = _NodePlan(self, node, k)
            for name in plan.inputs:
                if name and name not in defined:
                    raise ModelFileError(
                        f"{where}: node {plan.label} uses tensor {name!r}, which no earlier "
                        f"node, input or initializer defines (corrupted, truncated or not "
                        f"topologically sorted)"
                    )
            defined.update(o for o in plan.outputs if o)
            if node.op_type == "Constant":
                self._constants[plan.outputs[0]] = plan.constant_value()
            self._nodes.append(plan)
        for name in self.output_names:
            if name not in defined:
                raise ModelFileError(
                    f"{where}: the graph output {name!r} is not computed by any node"
                )
        for plan in self._nodes:
            plan.prepare()

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.inputs]

    def __repr__(self):
        ops = sorted({p.op for p in self._nodes})
        return (
            f"<OnnxModel {self.where}: inputs={self.input_names}, "
            f"outputs={self.output_names}, ops={ops}>"
        )

    def __call__(self, *args, **kwargs):
        if len(args) > len(self.inputs):
            raise TypeError(
                f"OnnxModel: {len(self.inputs)} input(s) "
                f"({', '.join(self.input_names)}), got {len(args)}"
            )
        feed = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k in feed:
                raise TypeError(f"OnnxModel: input {k!r} given twice")
            feed[k] = v
        out = self.run(None, feed)
        return out[0] if len(out) == 1 else tuple(out)

    def run(self, output_names, input_feed, run_options=None) -> list[np.ndarray]:
        """The outputs ``output_names`` (all when ``None``) for ``input_feed`` ``{name: array}``."""
        names = list(self.output_names if output_names is None else output_names)
        for n in names:
            if n not in self.output_names:
                raise ValueError(f"OnnxModel: unknown output {n!r}; outputs: {self.output_names}")
        values = dict(self._constants)
        unknown = [k for k in input_feed if k not in self.input_names]
        if unknown:
            raise ValueError(f"OnnxModel: unknown input(s) {unknown}; inputs: {self.input_names}")
        for name, dtype, shape in self.inputs:
            if name not in input_feed:
                raise ValueError(f"OnnxModel: missing input {name!r}")
            values[name] = _check_input(name, input_feed[name], dtype, shape)
        for plan in self._nodes:
            if all(o in self._constants for o in plan.outputs if o):
                continue
            results = plan.run(values)
            for name, value in zip(plan.outputs, results):
                if name:
                    values[name] = value
        return [np.asarray(values[n]) for n in names]


def _opset(proto, where) -> int:
    version = None
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            version = op.version
    if version is None:
        raise ModelFileError(
            f"{where}: the model imports no version of the default ONNX operator set"
        )
    return int(version)


def _tensor(onnx, t, where: str) -> np.ndarray:
    from onnx import numpy_helper

    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise UnsupportedModelError(
            f"{where}: tensor {t.name!r} keeps its data in an "
            f"external file, which rnncore does not read"
        )
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise ModelFileError(f"{where}: tensor {t.name!r} declares negative dims {dims}")
    # at least one byte per declared element, checked before NumPy allocates them
    check_declared_size(f"{where}: tensor {t.name!r}", [dims], np.uint8)
    try:
        a = numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError, AssertionError, IndexError) as e:
        raise ModelFileError(
            f"{where}: tensor {t.name!r} (declared shape {dims}) cannot be "
            f"read: its data do not match its declared shape or type ({e})"
        ) from None
    if a.shape != dims:
        raise ModelFileError(
            f"{where}: tensor {t.name!r} declares shape {dims} but holds {a.size} values"
        )
    return a


def _np_dtype(onnx, elem_type: int, what: str):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModelError(f"{what}: element type {elem_type} is not supported") from None


def _value_info(onnx, vi, where):
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise UnsupportedModelError(f"{where}: input {vi.name!r} is not a tensor")
    dtype = _np_dtype(onnx, tt.elem_type, f"{where}: input {vi.name!r}")
    shape = None
    if tt.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        )
    return dtype, shape


def _check_input(name, value, dtype, shape):
    a = np.asarray(value)
    if a.dtype != dtype:
        raise TypeError(
            f"OnnxModel: input {name!r} must have dtype {dtype}, got {a.dtype} "
            f"(convert it explicitly)"
        )
    if shape is not None:
        if a.ndim != len(shape) or any(
            isinstance(d, int) and d != s for d, s in zip(shape, a.shape)
        ):
            raise ValueError(
                f"OnnxModel: input {name!r} must have shape "
                f"{tuple(d if isinstance(d, int) else None for d in shape)}, "
                f"got {a.shape}"
            )
    return a


# ---------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------


class _NodePlan:
    """One node: its attributes, checked at load; ``run`` computes its outputs."""

    def __init__(self, model: OnnxModel, node, index: int):
        self.model = model
        self.op = node.op_type
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.label = f"#{index} {node.op_type}" + (f" {node.name!r}" if node.name else "")
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(
                f"{model.where}: node {self.label} is from operator "
                f"domain {node.domain!r}; rnncore runs only the "
                f"default ONNX domain"
            )
        if self.op not in SUPPORTED_OPS:
            raise UnsupportedModelError(
                f"{model.where}: node {self.label}: the ONNX operator {self.op} is not "
                f"supported by rnncore (supported: {', '.join(sorted(SUPPORTED_OPS))})"
            )
        self.attrs = {}
        for a in node.attribute:
            if a.type in (model._onnx.AttributeProto.GRAPH, model._onnx.AttributeProto.GRAPHS):
                raise UnsupportedModelError(f"{model.where}: node {self.label} has a subgraph")
            try:
                value = model._onnx.helper.get_attribute_value(a)
            except (ValueError, TypeError) as e:
                raise ModelFileError(
                    f"{model.where}: node {self.label}: unreadable attribute {a.name!r} ({e})"
                ) from None
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                value = [v.decode("utf-8", "replace") for v in value]
            elif a.type == model._onnx.AttributeProto.TENSOR:
                value = _tensor(model._onnx, a.t, f"{model.where}: node {self.label}")
            self.attrs[a.name] = value
        self.rnn = None

    def fail(self, msg, cls=ModelFileError):
        return cls(f"{self.model.where}: node {self.label}: {msg}")

    def constant_value(self):
        a = self.attrs
        if "value" in a:
            return a["value"]
        if "value_float" in a:
            return np.array(a["value_float"], np.float32)
        if "value_floats" in a:
            return np.array(a["value_floats"], np.float32)
        if "value_int" in a:
            return np.array(a["value_int"], np.int64)
        if "value_ints" in a:
            return np.array(a["value_ints"], np.int64)
        raise self.fail(f"Constant with {sorted(a)} is not supported", UnsupportedModelError)

    def prepare(self):
        if self.op in _RNN_OPS:
            self.rnn = _RecurrentNode(self)

    def run(self, values):
        args = [values[n] if n else None for n in self.inputs]
        try:
            if self.rnn is not None:
                return self.rnn.run(args)
            return _OPS[self.op](self, *args)
        except (ModelFileError, UnsupportedModelError):
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{self.model.where}: node {self.label} failed: {e}") from None


def _axes(plan, axes_input, name="axes"):
    if axes_input is not None:
        return [int(v) for v in np.asarray(axes_input).ravel()]
    v = plan.attrs.get(name)
    return None if v is None else [int(x) for x in v]


def _op_slice(plan, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:  # opset < 10: attributes
        starts, ends = plan.attrs["starts"], plan.attrs["ends"]
        axes = plan.attrs.get("axes")
    starts = [int(v) for v in np.asarray(starts).ravel()]
    ends = [int(v) for v in np.asarray(ends).ravel()]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).ravel()]
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ValueError("Slice: a step of 0")
        n = x.shape[a]
        if st > 0:
            s = min(max(s + n if s < 0 else s, 0), n)
            e = min(max(e + n if e < 0 else e, 0), n)
        else:
            s = min(max(s + n if s < 0 else s, -1), n - 1)
            e = min(max(e + n if e < 0 else e, -1), n - 1)
            if e < 0:
                e = None
        index[a] = slice(s, e, st)
    return (x[tuple(index)],)


def _op_reshape(plan, x, shape):
    shape = [int(v) for v in np.asarray(shape).ravel()]
    if not plan.attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return (x.reshape(shape),)


def _op_squeeze(plan, x, axes=None):
    axes = _axes(plan, axes)
    return (np.squeeze(x, axis=None if axes is None else tuple(axes)),)


def _op_unsqueeze(plan, x, axes=None):
    axes = _axes(plan, axes)
    rank = x.ndim + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        x = np.expand_dims(x, a)
    return (x,)


def _op_shape(plan, x):
    start, end = plan.attrs.get("start", 0), plan.attrs.get("end")
    return (np.array(x.shape[start:end], np.int64),)


def _op_constant_of_shape(plan, shape):
    value = plan.attrs.get("value", np.zeros(1, np.float32))
    return (
        np.full([int(v) for v in np.asarray(shape).ravel()], value.ravel()[0], dtype=value.dtype),
    )


def _op_cast(plan, x):
    return (x.astype(_np_dtype(plan.model._onnx, plan.attrs["to"], plan.label)),)


def _op_gemm(plan, a, b, c=None):
    at = plan.attrs
    a = a.T if at.get("transA", 0) else a
    b = b.T if at.get("transB", 0) else b
    y = at.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + at.get("beta", 1.0) * c
    return (y.astype(a.dtype, copy=False),)


def _op_div(plan, a, b):
    if np.issubdtype(a.dtype, np.integer):
        return (np.trunc(a / b).astype(a.dtype),)
    return (np.divide(a, b),)


def _op_softmax(plan, x):
    axis = plan.attrs.get("axis", -1 if plan.model.opset >= 13 else 1)
    if plan.model.opset >= 13:
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return (e / np.sum(e, axis=axis, keepdims=True),)
    axis = axis + x.ndim if axis < 0 else axis  # opset < 13: over the flattened tail
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return ((e / e.sum(axis=1, keepdims=True)).reshape(x.shape),)


def _op_hard_sigmoid(plan, x):
    alpha, beta = plan.attrs.get("alpha", 0.2), plan.attrs.get("beta", 0.5)
    return (np.clip(alpha * x + beta, 0, 1).astype(x.dtype, copy=False),)


def _op_reduce(fn):
    def op(plan, x, axes=None):
        axes = _axes(plan, axes)
        keep = bool(plan.attrs.get("keepdims", 1))
        if not axes:
            if plan.attrs.get("noop_with_empty_axes", 0):
                return (x,)
            axes = None
        return (fn(x, axis=None if axes is None else tuple(axes), keepdims=keep),)

    return op


def _sigmoid(x):
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False)


_OPS = {
    "Constant": lambda p: (p.constant_value(),),
    "Identity": lambda p, x: (x,),
    "Transpose": lambda p, x: (np.transpose(x, p.attrs.get("perm")),),
    "Slice": _op_slice,
    "Concat": lambda p, *xs: (np.concatenate(xs, axis=p.attrs["axis"]),),
    "Reshape": _op_reshape,
    "Squeeze": _op_squeeze,
    "Unsqueeze": _op_unsqueeze,
    "Shape": _op_shape,
    "Gather": lambda p, x, i: (np.take(x, i, axis=p.attrs.get("axis", 0)),),
    "ConstantOfShape": _op_constant_of_shape,
    "Cast": _op_cast,
    "Expand": lambda p, x, s: (
        np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(v) for v in s)))),
    ),
    "MatMul": lambda p, a, b: (np.matmul(a, b),),
    "Gemm": _op_gemm,
    "Add": lambda p, a, b: (a + b,),
    "Sub": lambda p, a, b: (a - b,),
    "Mul": lambda p, a, b: (a * b,),
    "Div": _op_div,
    "Tanh": lambda p, x: (np.tanh(x),),
    "Sigmoid": lambda p, x: (_sigmoid(x),),
    "Relu": lambda p, x: (np.maximum(x, 0),),
    "HardSigmoid": _op_hard_sigmoid,
    "Softmax": _op_softmax,
    "ReduceSum": _op_reduce(np.sum),
    "ReduceMean": _op_reduce(np.mean),
}

#: The ONNX operators :func:`load_onnx` runs.
SUPPORTED_OPS = frozenset(_OPS) | frozenset(_RNN_OPS)


# ---------------------------------------------------------------------------------------
# RNN / LSTM / GRU nodes
# ---------------------------------------------------------------------------------------


def _parse_activations(plan: _NodePlan, op: str, num_dir: int):
    """Per direction, the node's activations as ``[(onnx name, alpha, beta), ...]``."""
    n = _N_ACTIVATIONS[op]
    names = plan.attrs.get("activations")
    if names is None:
        names = list(_DEFAULT_ACTIVATIONS[op]) * num_dir
    names = list(names)
    if len(names) == n and num_dir == 2:
        names = names * 2
    if len(names) != n * num_dir:
        raise plan.fail(
            f"activations lists {len(names)} functions; {op} needs {n} per "
            f"direction ({n * num_dir})"
        )
    alphas = list(plan.attrs.get("activation_alpha", []))
    betas = list(plan.attrs.get("activation_beta", []))
    parsed = []
    for name in names:
        key = name.lower()
        alpha = beta = None
        if key in _ACTIVATION_PARAMS:
            da, db = _ACTIVATION_PARAMS[key]
            alpha = alphas.pop(0) if alphas else da
            if db is not None:
                beta = betas.pop(0) if betas else db
        parsed.append((name, alpha, beta))
    return [parsed[d * n : (d + 1) * n] for d in range(num_dir)]


def _core_activation(plan: _NodePlan, act) -> tuple[str, float, float]:
    """An ONNX activation as ``(rnncore name, scale, shift)`` of the pre-activation."""
    name, alpha, beta = act
    key = name.lower()
    if key == "tanh":
        return "tanh", 1.0, 0.0
    if key == "sigmoid":
        return "sigmoid", 1.0, 0.0
    if key == "relu":
        return "relu", 1.0, 0.0
    if key == "hardsigmoid":  # clip(a x + b) == clip((6 a x + 6 (b - 0.5)) / 6 + 0.5)
        return "hard_sigmoid", 6.0 * alpha, 6.0 * (beta - 0.5)
    if key == "affine":
        return "linear", float(alpha), float(beta)
    raise plan.fail(
        f"activation {name} is not implemented by rnncore (supported: Tanh, "
        f"Sigmoid, Relu, HardSigmoid, Affine)",
        UnsupportedModelError,
    )


class _RecurrentNode:
    """An RNN / LSTM / GRU node: checks at load, the weights in Keras layouts, the scan."""

    def __init__(self, plan: _NodePlan):
        self.plan = plan
        op = self.op = plan.op
        at = plan.attrs
        fail = plan.fail
        if plan.model.opset < 7:
            raise fail(
                f"{op} from opset {plan.model.opset} (before 7) is not supported",
                UnsupportedModelError,
            )
        if "clip" in at:
            raise fail(
                f"attribute clip={at['clip']} (cell clipping) is not implemented by rnncore",
                UnsupportedModelError,
            )
        if at.get("input_forget", 0):
            raise fail(
                "attribute input_forget=1 (coupled input and forget gates) is not "
                "implemented by rnncore",
                UnsupportedModelError,
            )
        if at.get("output_sequence", 0):
            raise fail("attribute output_sequence is not supported", UnsupportedModelError)
        self.direction = at.get("direction", "forward")
        if self.direction not in ("forward", "reverse", "bidirectional"):
            raise fail(
                f"direction must be forward, reverse or bidirectional, got {self.direction!r}"
            )
        self.layout = int(at.get("layout", 0))
        if self.layout not in (0, 1):
            raise fail(f"layout must be 0 or 1, got {self.layout}")
        self.num_dir = 2 if self.direction == "bidirectional" else 1
        self.linear_before_reset = bool(at.get("linear_before_reset", 0))
        if op != "GRU" and "linear_before_reset" in at:
            raise fail("linear_before_reset is a GRU attribute")
        n_in = len(plan.inputs)
        if n_in < 3 or not all(plan.inputs[:3]):
            raise fail(f"{op} needs the inputs X, W and R")
        max_in = 8 if op == "LSTM" else 6
        if n_in > max_in:
            raise fail(f"{op} takes at most {max_in} inputs, got {n_in}")
        if len(plan.outputs) > (3 if op == "LSTM" else 2):
            raise fail(f"{op} has at most {3 if op == 'LSTM' else 2} outputs")
        self.activations = [
            self._direction_activations(acts) for acts in _parse_activations(plan, op, self.num_dir)
        ]
        const = plan.model._constants
        names = plan.inputs + [""] * (8 - n_in)
        peephole = names[7] if op == "LSTM" else ""
        if peephole:
            P = const.get(peephole)
            if P is None or np.any(P != 0):
                raise fail(
                    "peepholes (input P) are not implemented by rnncore", UnsupportedModelError
                )
        self.hidden_size = at.get("hidden_size")
        self.weights = None
        if all(n in const for n in names[1:4] if n):
            self.weights = self._convert(
                const[names[1]], const[names[2]], const.get(names[3]) if names[3] else None
            )
        elif not all(n in const for n in names[1:3]):
            raise fail(
                f"{op} with weights W, R computed in the graph (not constants) is not supported",
                UnsupportedModelError,
            )

    def _direction_activations(self, acts):
        """``(activation, recurrent_activation, candidate affine, gate affine)`` for the core."""
        plan = self.plan
        conv = [_core_activation(plan, a) for a in acts]
        if self.op == "RNN":
            name, s, t = conv[0]
            return name, None, (s, t), None
        f, g = conv[0], conv[1]
        if self.op == "LSTM":
            h = conv[2]
            # h is applied to the cell state: only an activation with no affine part (up to
            # float32 rounding of its parameters, e.g. HardSigmoid(1/6, 0.5)) maps
            identity = abs(h[1] - 1.0) <= 1e-6 and abs(h[2]) <= 1e-6
            if h[0] != g[0] or not identity:
                raise plan.fail(
                    f"LSTM activations g={acts[1][0]} and h={acts[2][0]} (with their "
                    f"parameters) differ; rnncore's LSTM uses one activation for both",
                    UnsupportedModelError,
                )
        return g[0], f[0], (g[1], g[2]), (f[1], f[2])

    def _convert(self, W, R, B):
        """Per direction ``(kernel, recurrent_kernel, bias)`` in Keras's layouts."""
        plan, op = self.plan, self.op
        G = _GATES[op]
        for name, a in (("W", W), ("R", R)):
            if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                raise plan.fail(
                    f"input {name} must be float32 or float64, got {getattr(a, 'dtype', type(a))}",
                    UnsupportedModelError,
                )
        if W.ndim != 3 or R.ndim != 3:
            raise plan.fail(f"W and R must be 3-D, got shapes {W.shape} and {R.shape}")
        H = self.hidden_size if self.hidden_size is not None else R.shape[-1]
        want_w = (self.num_dir, G * H, W.shape[2])
        if W.shape != want_w:
            raise plan.fail(
                f"W has shape {W.shape}; direction={self.direction}, "
                f"hidden_size={H} need {want_w[:2] + ('input_size',)}"
            )
        if R.shape != (self.num_dir, G * H, H):
            raise plan.fail(
                f"R has shape {R.shape}; direction={self.direction}, "
                f"hidden_size={H} need {(self.num_dir, G * H, H)}"
            )
        if B is not None and B.shape != (self.num_dir, 2 * G * H):
            raise plan.fail(f"B has shape {B.shape}; need {(self.num_dir, 2 * G * H)}")
        if (B is not None and B.dtype != W.dtype) or R.dtype != W.dtype:
            raise plan.fail("W, R and B must have the same dtype")
        self.hidden_size, self.input_size, self.dtype = H, W.shape[2], W.dtype
        out = []
        for d in range(self.num_dir):
            act, rec_act, cand, gate = self.activations[d]
            order = _LSTM_TO_KERAS if op == "LSTM" else tuple(range(G))
            scale = np.ones(G * H)
            shift = np.zeros(G * H)
            for k in range(G):
                s, t = (
                    cand
                    if (op == "RNN" or (op == "LSTM" and k == 2) or (op == "GRU" and k == 2))
                    else gate
                )
                scale[k * H : (k + 1) * H], shift[k * H : (k + 1) * H] = s, t

            Wk = _reorder(W[d], G, order) * scale[:, None]
            Rk = _reorder(R[d], G, order) * scale[:, None]
            if B is None:
                Wb, Rb = np.zeros(G * H), np.zeros(G * H)
            else:
                Wb, Rb = _reorder(B[d][: G * H], G, order), _reorder(B[d][G * H :], G, order)
            Wb, Rb = Wb * scale + shift, Rb * scale
            if op == "GRU" and self.linear_before_reset:
                bias = np.stack([Wb, Rb])
            elif B is None and not shift.any():
                bias = None
            else:
                bias = Wb + Rb
            dt = W.dtype
            out.append(
                (
                    np.ascontiguousarray(Wk.T, dt),
                    np.ascontiguousarray(Rk.T, dt),
                    None if bias is None else np.ascontiguousarray(bias, dt),
                    act,
                    rec_act,
                )
            )
        return out

    def run(self, args):
        op, plan = self.op, self.plan
        args = args + [None] * (8 - len(args))
        X, W, R, B, seq_lens, init_h, init_c = args[:7]
        weights = self.weights if self.weights is not None else self._convert(W, R, B)
        H, D, dtype = self.hidden_size, self.input_size, self.dtype
        if X.dtype != dtype:
            raise TypeError(f"X has dtype {X.dtype}, the weights {dtype}")
        if X.ndim != 3 or X.shape[2] != D:
            raise ValueError(
                f"X must be {'(T, B, ' if self.layout == 0 else '(B, T, '}{D}) "
                f"for layout={self.layout}, got {X.shape}"
            )
        x = X.transpose(1, 0, 2) if self.layout == 0 else X  # (B, T, D)
        Bn, T = x.shape[:2]
        lengths = None
        if seq_lens is not None:
            lengths = np.asarray(seq_lens).astype(np.int64, copy=False)
            if lengths.shape != (Bn,):
                raise ValueError(f"sequence_lens must have shape ({Bn},), got {lengths.shape}")
            if np.any(lengths < 0) or np.any(lengths > T):
                raise ValueError(f"sequence_lens must be in [0, {T}], got {lengths}")
            if np.all(lengths == T):
                lengths = None
        states = []
        for name, s in (("initial_h", init_h), ("initial_c", init_c)):
            if s is None:
                states.append(None)
                continue
            s = np.asarray(s)
            want = (self.num_dir, Bn, H) if self.layout == 0 else (Bn, self.num_dir, H)
            if s.shape != want or s.dtype != dtype:
                raise ValueError(f"{name} must be {want} {dtype}, got {s.shape} {s.dtype}")
            states.append(s if self.layout == 0 else s.transpose(1, 0, 2))
        if op == "LSTM" and (states[0] is None) != (states[1] is None):
            z = np.zeros((self.num_dir, Bn, H), dtype)
            states = [z if s is None else s for s in states]
        ys, hs, cs = [], [], []
        for d, (kernel, rec, bias, act, rec_act) in enumerate(weights):
            reverse = self.direction == "reverse" or d == 1
            init = None
            if states[0] is not None:
                init = [np.ascontiguousarray(states[0][d])]
                if op == "LSTM":
                    init.append(np.ascontiguousarray(states[1][d]))
            kw = {"activation": act}
            if op != "RNN":
                kw["recurrent_activation"] = rec_act
            if op == "GRU":
                kw["reset_after"] = self.linear_before_reset
            y, *finals = _scan(_CELL[op], x, kernel, rec, bias, init, lengths, reverse, kw)
            ys.append(y)
            hs.append(finals[0])
            if op == "LSTM":
                cs.append(finals[1])
        if self.layout == 0:
            Y = np.stack(ys, axis=0).transpose(2, 0, 1, 3)  # (T, num_dir, B, H)
            axis = 0  # states (num_dir, B, H)
        else:
            Y = np.stack(ys, axis=2)  # (B, T, num_dir, H)
            axis = 1  # states (B, num_dir, H)
        results = [np.ascontiguousarray(Y), np.stack(hs, axis=axis)]
        if op == "LSTM":
            results.append(np.stack(cs, axis=axis))
        return results[: len(plan.outputs)]


def _reorder(a, gates, order):
    """The gate blocks of ``a`` (along axis 0) in ``order``."""
    parts = np.split(a, gates, axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


def _scan(cell, x, kernel, rec, bias, init, lengths, reverse, kw):
    """One direction with ONNX's conventions: outputs in input time order, zeros past a
    sequence's length, the reverse direction starting at each sequence's last valid step."""
    fn = getattr(functional, cell)
    if lengths is None:
        y, *finals = fn(
            x,
            kernel,
            rec,
            bias,
            initial_state=init,
            go_backwards=reverse,
            return_sequences=True,
            **kw,
        )
        return (y[:, ::-1] if reverse else y), *finals
    T = x.shape[1]
    steps = np.arange(T)
    mask = steps[None, :] < lengths[:, None]  # (B, T): the valid prefix of each sequence
    if reverse:
        # step j processes time len-1-j; positions past the length stay where they are
        idx = np.where(mask, lengths[:, None] - 1 - steps[None, :], steps[None, :])
        x = np.take_along_axis(x, idx[:, :, None], axis=1)
    # Keras's mask rule on a valid prefix: the state stops at the last valid step
    y, *finals = fn(
        x, kernel, rec, bias, initial_state=init, mask=mask, return_sequences=True, **kw
    )
    if reverse:
        y = np.take_along_axis(y, idx[:, :, None], axis=1)
    y[~mask] = 0
    empty = lengths == 0
    if empty.any():  # onnxruntime: zero final states for an empty sequence
        for f in finals:
            f[empty] = 0
    return y, *finals


# =======================================================================================
# Export
# =======================================================================================

_ONNX_ACTIVATION = {
    "tanh": ("Tanh", None),
    "sigmoid": ("Sigmoid", None),
    "relu": ("Relu", None),
    "hard_sigmoid": ("HardSigmoid", (1 / 6, 0.5)),
    "linear": ("Affine", (1.0, 0.0)),
}


class _Exporter:
    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes = []
        self.initializers = []
        self.dtype = np.dtype(dtype)
        self._names: dict[str, int] = {}

    def name(self, base: str) -> str:
        """A tensor / node name not used before in the graph."""
        n = self._names.get(base, 0)
        name = base if n == 0 else f"{base}_{n}"
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names[base] = n + 1
        self._names.setdefault(name, 1)
        return name

    def const(self, base: str, value) -> str:
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, n_outputs=1, base=None, **attrs):
        outputs = [self.name(base or op.lower()) for _ in range(n_outputs)]
        self.nodes.append(
            self.helper.make_node(op, list(inputs), outputs, name=self.name(f"{op}_node"), **attrs)
        )
        return outputs if n_outputs > 1 else outputs[0]

    def activation(self, x: str, name: str, base: str) -> str:
        if name == "linear":
            return x
        if name == "softmax":
            return self.node("Softmax", [x], base=base, axis=-1)
        op, params = _ONNX_ACTIVATION[name]
        if params:
            return self.node(op, [x], base=base, alpha=params[0], beta=params[1])
        return self.node(op, [x], base=base)

    def ints(self, base, values):
        return self.const(base, np.array(values, np.int64))


def to_onnx(model, path=None, *, opset: int = 17, input_name: str = "input"):
    """Write an :class:`rnncore.Sequential` as an ONNX model; returns the ``ModelProto``.

    ``path`` (optional) is where to write it. The model must be built (its input feature
    size known). The graph's input is ``(batch, timesteps, features)``; dimensions unknown
    to the model stay symbolic. Outputs: ``output``, plus the states of a last recurrent
    layer with ``return_state``. Needs the ``onnx`` package.
    """
    onnx = optional_import("onnx", "rnncore.interop.to_onnx")
    from ..layers import (
        GRU,
        LSTM,
        Activation,
        Bidirectional,
        Dense,
        Dropout,
        Masking,
        SimpleRNN,
        Softmax,
        TimeDistributed,
    )
    from ..models import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"to_onnx: expected an rnncore Sequential model, got {model!r}")
    if not model.built or model.input_shape is None or model.input_shape[-1] is None:
        raise ValueError(
            "to_onnx: the model must be built with a known input feature size "
            "(start it with rnncore.Input(shape=(timesteps, features)))"
        )
    if opset < 14:
        raise ValueError(f"to_onnx: opset {opset} is too old; use 14 or newer")
    layers = model.layers
    if not layers:
        raise ValueError("to_onnx: the model has no layers")
    dtype = np.dtype(model.dtype)
    ex = _Exporter(onnx, dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    in_shape = list(model.input_shape)
    dims = [
        "batch" if in_shape[0] is None else in_shape[0],
        "timesteps" if in_shape[1] is None else in_shape[1],
    ] + in_shape[2:]
    x = input_name
    outputs: list[tuple[str, str]] = []
    last = len(layers) - 1
    for k, layer in enumerate(layers):
        if layer.dtype != dtype.name:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} has dtype {layer.dtype}, the model {dtype.name}"
            )
        if isinstance(layer, (Dropout,)):
            continue
        if isinstance(layer, Masking):
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} (Masking) cannot be exported: Keras's mask "
                f"rule (a masked step keeps the state and repeats the output) has no ONNX "
                f"equivalent"
            )
        if isinstance(layer, TimeDistributed):
            inner = layer.layer
            if not isinstance(inner, (Dense, Activation, Dropout)):
                raise UnsupportedModelError(
                    f"to_onnx: layer {layer.name!r}: TimeDistributed({type(inner).__name__}) "
                    f"is not supported (TimeDistributed of Dense, Activation, Dropout)"
                )
            layer = inner
            if isinstance(layer, Dropout):
                continue
        if isinstance(layer, Dense):
            y = ex.node("MatMul", [x, ex.const(f"{layer.name}/kernel", layer.kernel.value)])
            if layer.bias is not None:
                y = ex.node("Add", [y, ex.const(f"{layer.name}/bias", layer.bias.value)])
            x = ex.activation(y, layer.activation, layer.name)
        elif isinstance(layer, Activation):
            x = ex.activation(x, layer.activation, layer.name)
        elif isinstance(layer, Softmax):
            axis = layer.axis
            if isinstance(axis, (list, tuple)):
                if len(axis) != 1:
                    raise UnsupportedModelError(
                        f"to_onnx: Softmax over several axes {axis} is not supported"
                    )
                axis = axis[0]
            x = ex.node("Softmax", [x], base=layer.name, axis=int(axis))
        elif isinstance(layer, (SimpleRNN, LSTM, GRU)):
            x, states = _export_rnn(ex, layer, x, k == last)
            outputs += states
        elif isinstance(layer, Bidirectional):
            x, states, second = _export_bidirectional(ex, layer, x, k == last)
            if second is not None:
                outputs.append(("output_backward", second))
            outputs += states
        else:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} ({type(layer).__name__}) is not supported"
            )
    outputs.insert(0, ("output", x))
    shape = tuple(model.input_shape)
    for layer in layers:
        shape = layer.compute_output_shape(shape)
    shapes = list(shape) if shape and isinstance(shape[0], tuple) else [shape]
    if len(shapes) != len(outputs):
        raise AssertionError(f"to_onnx: {len(outputs)} outputs but {len(shapes)} shapes")
    graph_outputs = []
    for (name, tensor), shape in zip(outputs, shapes):
        ex.nodes.append(
            onnx.helper.make_node("Identity", [tensor], [name], name=ex.name("Identity_out"))
        )
        graph_outputs.append(onnx.helper.make_tensor_value_info(name, elem, list(shape)))
    graph = onnx.helper.make_graph(
        ex.nodes,
        model.name,
        [onnx.helper.make_tensor_value_info(input_name, elem, dims)],
        graph_outputs,
        ex.initializers,
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="rnncore",
        producer_version=_version(),
    )
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _version():
    from .. import __version__

    return __version__


def _rnn_node_parts(ex: _Exporter, layers: list):
    """W, R, B (ONNX layouts, one row per direction) and the node's attributes."""
    first = layers[0]
    op = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[first._cell]
    G = _GATES[op]
    H = first.units
    Ws, Rs, Bs, acts, alphas, betas = [], [], [], [], [], []
    order = _KERAS_TO_LSTM if op == "LSTM" else tuple(range(G))
    for layer in layers:
        if layer.stateful:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} is stateful; states "
                f"carried between calls cannot be exported"
            )

        Ws.append(_reorder(layer.kernel.value.T, G, order))
        Rs.append(_reorder(layer.recurrent_kernel.value.T, G, order))
        b = None if layer.bias is None else layer.bias.value
        if b is None:
            Bs.append(None)
        elif op == "GRU" and layer.reset_after:
            Bs.append(np.concatenate([b[0], b[1]]))
        else:
            Bs.append(np.concatenate([_reorder(b, G, order), np.zeros_like(b)]))
        if op == "RNN":
            names = [layer.activation]
        else:  # f, g (and h for LSTM)
            names = [layer.recurrent_activation] + [layer.activation] * (G == 4 and 2 or 1)
        for n in names:
            onnx_name, params = _ONNX_ACTIVATION[n]
            acts.append(onnx_name)
            if params:
                alphas.append(params[0])
                betas.append(params[1])
    attrs = {"hidden_size": H, "activations": acts}
    if alphas:
        attrs["activation_alpha"] = alphas
        attrs["activation_beta"] = betas
    if op == "GRU":
        attrs["linear_before_reset"] = int(first.reset_after)
    W = np.stack(Ws)
    inputs = [ex.const(f"{first.name}/W", W), ex.const(f"{first.name}/R", np.stack(Rs))]
    if any(b is not None for b in Bs):
        Bs = [np.zeros(2 * G * H, W.dtype) if b is None else b for b in Bs]
        inputs.append(ex.const(f"{first.name}/B", np.stack(Bs)))
    return op, inputs, attrs


def _export_rnn(ex: _Exporter, layer, x: str, is_last: bool):
    op, inputs, attrs = _rnn_node_parts(ex, [layer])
    if layer.go_backwards:
        attrs["direction"] = "reverse"
    n_out = 3 if op == "LSTM" else 2
    xt = ex.node("Transpose", [x], base=f"{layer.name}/x_time_major", perm=[1, 0, 2])
    outs = ex.node(op, [xt] + inputs, n_outputs=n_out, base=layer.name, **attrs)
    Y, states = outs[0], outs[1:]
    zero = ex.ints(f"{layer.name}/axis0", [0])
    if layer.return_sequences:
        y = ex.node("Squeeze", [Y, ex.ints(f"{layer.name}/axis1", [1])], base=f"{layer.name}/y")
        if layer.go_backwards:  # Keras: the output sequence in processing order
            y = ex.node(
                "Slice",
                [
                    y,
                    ex.ints(f"{layer.name}/start", [-1]),
                    ex.ints(f"{layer.name}/end", [-(2**62)]),
                    zero,
                    ex.ints(f"{layer.name}/step", [-1]),
                ],
                base=f"{layer.name}/y",
            )
        out = ex.node("Transpose", [y], base=f"{layer.name}/output", perm=[1, 0, 2])
    else:
        out = ex.node("Squeeze", [states[0], zero], base=f"{layer.name}/output")
    extra = []
    if layer.return_state:
        if not is_last:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} has return_state but is not the last layer"
            )
        for nm, s in zip(("h", "c"), states):
            extra.append((nm, ex.node("Squeeze", [s, zero], base=f"{layer.name}/{nm}")))
    return out, extra


def _export_bidirectional(ex: _Exporter, layer, x: str, is_last: bool):
    fwd, bwd = layer.forward_layer, layer.backward_layer
    if fwd.go_backwards or not bwd.go_backwards:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: only a forward layer "
            f"with a go_backwards backward layer can be exported"
        )
    if (
        type(fwd) is not type(bwd)
        or fwd.units != bwd.units
        or (getattr(fwd, "reset_after", None) != getattr(bwd, "reset_after", None))
    ):
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: the forward and "
            f"backward layers must be of the same kind and size"
        )
    op, inputs, attrs = _rnn_node_parts(ex, [fwd, bwd])
    attrs["direction"] = "bidirectional"
    n_out = 3 if op == "LSTM" else 2
    name = layer.name
    xt = ex.node("Transpose", [x], base=f"{name}/x_time_major", perm=[1, 0, 2])
    outs = ex.node(op, [xt] + inputs, n_outputs=n_out, base=name, **attrs)
    Y, states = outs[0], outs[1:]
    mode = layer.merge_mode
    second = None
    if layer.return_sequences:  # Y: (T, 2, B, H)
        if mode == "concat":
            y = ex.node("Transpose", [Y], base=f"{name}/y", perm=[2, 0, 1, 3])
            out = ex.node(
                "Reshape", [y, ex.ints(f"{name}/shape", [0, 0, -1])], base=f"{name}/output"
            )
        else:
            parts = [_direction(ex, Y, d, 1, name) for d in (0, 1)]
            parts = [ex.node("Transpose", [p], base=f"{name}/y", perm=[1, 0, 2]) for p in parts]
            out, second = _merge(ex, parts, mode, name)
    else:  # Y_h: (2, B, H)
        Yh = states[0]
        if mode == "concat":
            y = ex.node("Transpose", [Yh], base=f"{name}/y", perm=[1, 0, 2])
            out = ex.node("Reshape", [y, ex.ints(f"{name}/shape", [0, -1])], base=f"{name}/output")
        else:
            parts = [_direction(ex, Yh, d, 0, name) for d in (0, 1)]
            out, second = _merge(ex, parts, mode, name)
    if second is not None and not is_last:
        raise UnsupportedModelError(
            f"to_onnx: layer {name!r} with merge_mode=None must be the last layer"
        )
    extra = []
    if layer.return_state:
        if not is_last:
            raise UnsupportedModelError(
                f"to_onnx: layer {name!r} has return_state but is not the last layer"
            )
        for d, side in ((0, "forward"), (1, "backward")):
            for nm, s in zip(("h", "c"), states):
                extra.append((f"{nm}_{side}", _direction(ex, s, d, 0, name)))
    return out, extra, second


def _direction(ex, t, d, axis, name):
    part = ex.node(
        "Slice",
        [
            t,
            ex.ints(f"{name}/start", [d]),
            ex.ints(f"{name}/end", [d + 1]),
            ex.ints(f"{name}/axis", [axis]),
        ],
        base=f"{name}/dir{d}",
    )
    return ex.node("Squeeze", [part, ex.ints(f"{name}/axis", [axis])], base=f"{name}/dir{d}")


def _merge(ex, parts, mode, name):
    if mode is None:
        return parts[0], parts[1]
    if mode == "mul":
        return ex.node("Mul", parts, base=f"{name}/output"), None
    y = ex.node("Add", parts, base=f"{name}/output")
    if mode == "ave":
        half = ex.const(f"{name}/half", np.asarray(0.5, ex.dtype))
        y = ex.node("Mul", [y, half], base=f"{name}/output")
    return y, None
