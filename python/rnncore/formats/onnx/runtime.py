"""ONNX graphs run on rnncore's core: :func:`load_onnx` and :class:`OnnxModel`.

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
* Weights are converted to Keras's layouts (gate orders: ONNX LSTM ``i, o, f, c`` ->
  ``i, f, c, o``; GRU ``z, r, h`` is Keras's order): once, at load, when ``W``, ``R``,
  ``B`` (and LSTM ``P``) are constants (initializers or ``Constant`` nodes), and on every
  call when the graph feeds them as inputs (as the ``onnx`` package's node test cases do);
  wrong run-time weights raise ``ValueError`` (shape) or ``TypeError`` (dtype) naming
  ``W`` / ``R`` / ``B`` / ``P``. Activations with parameters are folded into the weights:
  ``HardSigmoid(alpha, beta)(x)`` is rnncore's ``hard_sigmoid(6 alpha x + 6 (beta -
  0.5))``, ``Affine(alpha, beta)(x)`` is ``linear(alpha x + beta)``.
* LSTM peepholes (``P``), ``clip``, ``input_forget=1`` and an ``h`` activation that differs
  from ``g`` run on :func:`rnncore.functional.lstm`'s ``peephole``, ``cell_clip``,
  ``input_forget`` and ``output_activation`` with onnxruntime's semantics (see
  :mod:`.recurrent`); a build of the core without them refuses them.
* Refused with :class:`UnsupportedModelError` naming them: ``clip`` of RNN / GRU, ``clip``
  together with an LSTM ``f`` / ``g`` activation that has ``alpha`` / ``beta`` (the clip
  acts between the weights and those parameters), an ``h`` activation with an affine part
  (``Affine(2, 0)`` on the cell state), other activations (``LeakyRelu``, ``Elu``,
  ``Softsign``, ``Softplus``, ``ThresholdedRelu``, ``ScaledTanh``), ``output_sequence``,
  and any operator not listed in :data:`SUPPORTED_OPS`. That list holds, besides the
  recurrent nodes, the small operators exporters put around them (e.g.
  ``torch.onnx.export`` of ``nn.LSTM``: ``Transpose``, ``Slice``, ``Concat``,
  ``Reshape``, ``Shape``, ``Gather``, ...), ``MatMul`` / ``Gemm`` / ``Add`` /
  activations for dense heads, and every operator :func:`rnncore.interop.to_onnx` writes
  (so each of its exports reads back: masks, ``Conv``, pooling, normalisations); those
  run in NumPy (:mod:`.ops`).

A file is parsed with the ``onnx`` package (protobuf; no code in the file ever runs) and
checked: a corrupted or truncated file, tensors whose data do not match their declared
shape, weights whose shapes do not match the node's ``hidden_size`` or the input size,
undefined tensors and external-data tensors raise :class:`rnncore.errors.ModelFileError`
or :class:`UnsupportedModelError` naming the problem.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ModelFileError, UnsupportedModelError
from ..archive import check_declared_size, optional_import
from ..verify import verify_loaded
from .ops import OPS, np_dtype
from .recurrent import RNN_OPS, RecurrentNode

__all__ = ["load_onnx", "OnnxModel", "SUPPORTED_OPS"]

#: The ONNX operators :func:`load_onnx` runs.
SUPPORTED_OPS = frozenset(OPS) | frozenset(RNN_OPS)


def load_onnx(path_or_bytes, *, verify=None, verify_tol=None) -> OnnxModel:
    """Read an ONNX model (a path or the serialized bytes) as an :class:`OnnxModel`.

    Needs the ``onnx`` package (``pip install ".[onnx]"``); onnxruntime is not used.
    ``verify=(x, expected)`` (or a path to a ``.npz`` of samples) checks that the loaded
    model reproduces ``expected`` within ``verify_tol``, raising
    :class:`rnncore.errors.VerificationError` otherwise (:mod:`rnncore.formats.verify`).
    """
    onnx = optional_import("onnx", "rnncore.load_onnx")
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

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
    return verify_loaded(OnnxModel(proto, where), verify, verify_tol, who="load_onnx")


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


def _value_info(onnx, vi, where):
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise UnsupportedModelError(f"{where}: input {vi.name!r} is not a tensor")
    dtype = np_dtype(onnx, tt.elem_type, f"{where}: input {vi.name!r}")
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
        if self.op in RNN_OPS:
            self.rnn = RecurrentNode(self)

    def run(self, values):
        args = [values[n] if n else None for n in self.inputs]
        try:
            if self.rnn is not None:
                return self.rnn.run(args)
            # ONNX arithmetic is IEEE's: 0 / 0 is NaN, sqrt(-1) NaN, overflow inf -- results,
            # not errors, so NumPy's warnings about them are not raised
            with np.errstate(all="ignore"):
                return OPS[self.op](self, *args)
        except (ModelFileError, UnsupportedModelError):
            raise
        except (ValueError, TypeError, IndexError) as e:
            # a wrong dtype stays a TypeError (e.g. weights fed as graph inputs)
            cls = TypeError if isinstance(e, TypeError) else ValueError
            raise cls(f"{self.model.where}: node {self.label} failed: {e}") from None
