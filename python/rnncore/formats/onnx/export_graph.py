"""The graph under construction of :func:`~rnncore.formats.onnx.export.to_onnx`:
:class:`Exporter` names tensors, adds nodes and constants, and collects the graph's extra
inputs and outputs (the carried states of stateful layers)."""

from __future__ import annotations

import numpy as np

from .recurrent import ONNX_ACTIVATIONS

__all__ = ["Exporter", "FAR"]

#: a Slice bound past either end of any axis (ONNX clamps it)
FAR = 2**62


class Exporter:
    """Nodes, initializers, extra graph inputs / outputs, and per-mask caches of one export.

    ``inputs`` and ``outputs`` are ``(name, tensor, shape)`` beyond the model's own input and
    outputs: the states of stateful layers, read and written by the caller between calls.
    """

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes = []
        self.initializers = []
        self.dtype = np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.inputs: list[tuple[str, tuple]] = []
        self.outputs: list[tuple[str, str, tuple]] = []
        self.cache: dict = {}  # tensors derived once per mask (see export_recurrent)
        #: the tensors not of the model's float dtype: the graph inputs of other dtypes
        self.dtypes: dict[str, np.dtype] = {}
        self.batch = None  # the model's batch size, when fixed
        self.opset = 17
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

    def reserve(self, names) -> None:
        """Names the graph's inputs and outputs take: no tensor is given them."""
        for name in names:
            self._names.setdefault(name, 1)

    def const(self, base: str, value) -> str:
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def scalar(self, base: str, value) -> str:
        """A 0-d constant in the model's float dtype."""
        return self.const(base, np.asarray(value, self.dtype))

    def ints(self, base, values):
        return self.const(base, np.array(values, np.int64))

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
        op, params = ONNX_ACTIVATIONS[name]
        if params:
            return self.node(op, [x], base=base, alpha=params[0], beta=params[1])
        return self.node(op, [x], base=base)

    def batch_dim(self, layer):
        """The batch dimension of a layer's states: its fixed batch size, the model's, or
        the symbolic ``batch``."""
        size = getattr(layer, "_batch_size", None) or self.batch
        return "batch" if size is None else size

    def model_input(self, name: str, dtype, ids: bool) -> int:
        """Declares a graph input of the model's input ``dtype`` (its ``Input``'s); returns
        its ONNX element type. An integer or bool ``Input`` is kept as it is (int32 token
        ids stay int32). A float ``Input``'s dtype is not one the model keeps to (predict
        computes a float64 model's data in float64, token ids may come as floats): the
        input is then int64 when an ``Embedding`` reads it (``ids``), else the model's
        dtype. The layers reading an input convert it (:meth:`as_float`, :meth:`as_ids`)."""
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            dtype = np.dtype(np.int64) if ids else self.dtype
        self.dtypes[name] = dtype
        return self.helper.np_dtype_to_tensor_dtype(dtype)

    def as_float(self, x: str) -> str:
        """``x`` in the model's float dtype: a Cast (made once) for an input of another
        dtype, as the model's layers convert their inputs."""
        if self.dtypes.get(x, self.dtype) == self.dtype:
            return x
        key = ("float", x)
        if key not in self.cache:
            self.cache[key] = self.node("Cast", [x], base=f"{x}/float", to=self.elem)
        return self.cache[key]

    def as_ids(self, x: str) -> tuple[str, np.dtype]:
        """``(ids, dtype)``: ``x`` as Gather's indices, int32 or int64 as given; any other
        dtype (float ids, smaller integers) cast to int64 once."""
        dtype = self.dtypes.get(x, self.dtype)
        if dtype in (np.dtype(np.int32), np.dtype(np.int64)):
            return x, dtype
        key = ("ids", x)
        if key not in self.cache:
            self.cache[key] = self.node(
                "Cast", [x], base=f"{x}/ids", to=self.onnx.TensorProto.INT64
            )
        return self.cache[key], np.dtype(np.int64)

    def graph_input(self, name: str, shape) -> str:
        """A further graph input (a state a stateful layer starts from)."""
        if name in self._names:
            raise ValueError(f"to_onnx: two graph inputs named {name!r}")
        self._names[name] = 1
        self.inputs.append((name, tuple(shape)))
        return name

    def graph_output(self, name: str, tensor: str, shape) -> None:
        """A further graph output (a state a stateful layer ends with)."""
        self.outputs.append((name, tensor, tuple(shape)))

    # ---- small compositions used by several layers ----------------------------------

    def unsqueeze(self, x: str, axes, base=None) -> str:
        return self.node("Unsqueeze", [x, self.ints("axes", list(axes))], base=base)

    def squeeze(self, x: str, axes, base=None) -> str:
        return self.node("Squeeze", [x, self.ints("axes", list(axes))], base=base)

    def slice(self, x: str, start: int, end: int, axis: int, step: int = 1, base=None) -> str:
        ins = [x, self.ints("start", [start]), self.ints("end", [end]), self.ints("axis", [axis])]
        if step != 1:
            ins.append(self.ints("step", [step]))
        return self.node("Slice", ins, base=base)

    def reverse(self, x: str, axis: int, base=None) -> str:
        """``x`` reversed along ``axis`` (a Slice with step -1)."""
        return self.slice(x, -1, -FAR, axis, -1, base=base)

    def take(self, x: str, index: int, axis: int, base=None) -> str:
        """``x[..., index, ...]`` along ``axis``, the axis removed."""
        return self.squeeze(self.slice(x, index, index + 1, axis), [axis], base=base)

    def reduce(self, op: str, x: str, axes, keepdims: bool, base=None) -> str:
        """``Reduce*`` over ``axes``: an input from opset 18 on (13 for ReduceSum), an
        attribute before."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(
                op, [x, self.ints("axes", list(axes))], base=base, keepdims=int(keepdims)
            )
        return self.node(op, [x], base=base, axes=list(axes), keepdims=int(keepdims))

    def zeros_where_not(self, keep: str, x: str, base=None) -> str:
        """``where(keep, x, 0)``: ``keep`` a bool tensor broadcasting against ``x``."""
        return self.node("Where", [keep, x, self.scalar("zero", 0)], base=base)
