"""rnncore as an ONNX backend: ONNX's standard backend protocol over :class:`OnnxModel`.

``onnx.backend.base.Backend`` is how ONNX's own conformance tests
(``onnx.backend.test.BackendTest``) and other tools drive a runtime:

* :func:`prepare` ``(model, device="CPU")`` reads a ``ModelProto`` (or its serialized
  bytes, or a path), checks it with ``onnx.checker`` and returns a :class:`RnncoreRep`
  whose ``run(inputs)`` computes the graph with :class:`rnncore.interop.OnnxModel`.
  ``inputs`` is a list in the order of the graph's inputs (initializers excluded, as
  onnxruntime counts them), a dict by name, or a single array for a one-input graph; the
  outputs come back as a namedtuple in the graph's output order (also indexable by output
  name).
  ``prepare`` accepts ``rtol`` / ``atol`` (the tolerances ``BackendTest`` passes on from its
  ``test_kwargs``) and does not use them; any other keyword is refused by name.
* :func:`run_model` is ``prepare(...).run(inputs)``.
* :func:`run_node` runs one ``NodeProto``: a one-node model is built from the node and the
  inputs' dtypes and shapes (``inputs`` in the order of the node's non-empty input names,
  or a dict by name) at ``opset_version`` (default: the newest the ``onnx`` package knows);
  the outputs' types come from ``outputs_info`` ``[(dtype, shape)]`` or ONNX's shape
  inference (``onnx.checker`` needs them; the computation does not).
* :func:`supports_device`: ``"CPU"`` only; another device is refused with
  :class:`rnncore.errors.UnsupportedArgumentError` naming it.

``RnncoreBackend`` and ``RnncoreRep`` (attributes of this module) subclass
``onnx.backend.base.Backend`` / ``BackendRep``; they are made when first used, so that
``import rnncore`` does not import ``onnx``. The module itself is a backend module in ONNX's
sense (``onnx.backend.test.BackendTest(rnncore.interop.onnx_backend, __name__)``).

What runs is what :func:`rnncore.load_onnx` runs (:data:`SUPPORTED_OPS`); other operators
raise :class:`rnncore.errors.UnsupportedModelError` at :func:`prepare`. Needs ``onnx``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import UnsupportedArgumentError
from ..formats.archive import optional_import
from ..formats.onnx.runtime import SUPPORTED_OPS, OnnxModel

__all__ = [
    "is_compatible",
    "prepare",
    "run_model",
    "run_node",
    "supports_device",
]

#: ``prepare`` keywords accepted and not used: the tolerances ``onnx.backend.test`` passes
_TEST_KWARGS = frozenset({"rtol", "atol"})


def _base():
    return optional_import("onnx.backend.base", "rnncore.interop.onnx_backend")


def _check_device(device) -> None:
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'CPU', got {type(device).__name__}")
    if device.split(":")[0].upper() != "CPU":
        raise UnsupportedArgumentError(
            f"device: rnncore's ONNX backend runs on 'CPU' only, got {device!r}"
        )


def _check_kwargs(who: str, kwargs) -> None:
    unknown = sorted(set(kwargs) - _TEST_KWARGS)
    if unknown:
        raise TypeError(
            f"{who}: unexpected keyword argument(s) {unknown}; accepted: {sorted(_TEST_KWARGS)}"
        )


def _model_proto(onnx, model):
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model))
    raise TypeError(
        f"model: expected an onnx.ModelProto, its bytes or a path, got {type(model).__name__}"
    )


def _in_order(inputs, names: list[str], what: str) -> list:
    """``inputs`` (a list in the order of ``names``, a dict by name, or one array) as a list
    in the order of ``names``."""
    if isinstance(inputs, dict):
        if sorted(inputs) != sorted(names):
            raise ValueError(f"inputs: {what} takes {names}, got {sorted(inputs)}")
        return [inputs[n] for n in names]
    values = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if len(values) != len(names):
        raise ValueError(
            f"inputs: {what} takes {len(names)} input(s) ({', '.join(names)}), got {len(values)}"
        )
    return values


class _RepMethods:
    """:class:`RnncoreRep`'s methods (the class itself subclasses ``onnx``'s ``BackendRep``)."""

    def __init__(self, model: OnnxModel):
        self.model = model
        self._outputs = _base().namedtupledict("Outputs", model.output_names)

    @property
    def input_names(self) -> list[str]:
        return self.model.input_names

    @property
    def output_names(self) -> list[str]:
        return list(self.model.output_names)

    def run(self, inputs, **kwargs):
        """The graph's outputs (a namedtuple in output order) for ``inputs``."""
        if kwargs:
            raise TypeError(f"RnncoreRep.run: unexpected keyword argument(s) {sorted(kwargs)}")
        names = self.model.input_names
        feed = dict(zip(names, _in_order(inputs, names, "the model")))
        return self._outputs(*self.model.run(None, feed))


class _BackendMethods:
    """:class:`RnncoreBackend`'s class methods (the class subclasses ``onnx``'s ``Backend``)."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        """Whether every node's operator is one rnncore runs, on a supported device."""
        onnx = optional_import("onnx", "rnncore.interop.onnx_backend")
        proto = _model_proto(onnx, model)
        return cls.supports_device(device) and all(
            n.domain in ("", "ai.onnx") and n.op_type in SUPPORTED_OPS for n in proto.graph.node
        )

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs):
        """Check ``model`` and return a :class:`RnncoreRep` that runs it."""
        onnx = optional_import("onnx", "rnncore.interop.onnx_backend")
        _check_device(device)
        _check_kwargs("prepare", kwargs)
        proto = _model_proto(onnx, model)
        onnx.checker.check_model(proto)
        return _class("RnncoreRep")(OnnxModel(proto, proto.graph.name or "<onnx backend model>"))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        """``prepare(model, device).run(inputs)``."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one ``NodeProto`` on ``inputs``; its outputs as a namedtuple."""
        onnx = optional_import("onnx", "rnncore.interop.onnx_backend")
        _check_device(device)
        opset = kwargs.pop("opset_version", None)
        _check_kwargs("run_node", kwargs)
        if not isinstance(node, onnx.NodeProto):
            raise TypeError(f"node: expected an onnx.NodeProto, got {type(node).__name__}")
        names = [n for n in node.input if n]
        values = [np.asarray(v) for v in _in_order(inputs, names, f"node {node.op_type}")]
        model = _node_model(onnx, node, names, values, opset, outputs_info)
        return cls.prepare(model, device).run(values)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """``True`` for ``"CPU"`` (``"CPU:0"``), ``False`` for any other device."""
        return isinstance(device, str) and device.split(":")[0].upper() == "CPU"


def _node_model(onnx, node, names, values, opset, outputs_info):
    helper = onnx.helper
    if opset is None:
        opset = onnx.defs.onnx_opset_version()
    graph_inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for name, v in zip(names, values)
    ]
    outputs = [o for o in node.output if o]
    if outputs_info is not None and len(outputs_info) != len(outputs):
        raise ValueError(
            f"outputs_info: node {node.op_type} has {len(outputs)} output(s), "
            f"got {len(outputs_info)} (dtype, shape) pair(s)"
        )
    if outputs_info is None:
        graph_outputs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    else:
        graph_outputs = [
            helper.make_tensor_value_info(
                o, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape)
            )
            for o, (dtype, shape) in zip(outputs, outputs_info)
        ]
    graph = helper.make_graph([node], f"run_node_{node.op_type}", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))])
    if outputs_info is None:
        # the outputs' types, which onnx.checker requires (the computation does not use them)
        model = onnx.shape_inference.infer_shapes(model)
        for vi in model.graph.output:
            if not vi.type.tensor_type.elem_type:
                raise ValueError(
                    f"outputs_info: ONNX's shape inference gives no type for node "
                    f"{node.op_type}'s output {vi.name!r}; pass outputs_info=[(dtype, shape)]"
                )
    return model


_CLASSES: dict[str, type] = {}


def _class(name: str) -> type:
    """``RnncoreBackend`` / ``RnncoreRep``, made (once) when first used, as subclasses of
    ``onnx.backend.base.Backend`` / ``BackendRep``: ``onnx`` is imported only then."""
    if name not in _CLASSES:
        base = _base()
        mixin, parent = {
            "RnncoreBackend": (_BackendMethods, base.Backend),
            "RnncoreRep": (_RepMethods, base.BackendRep),
        }[name]
        doc = {
            "RnncoreBackend": "rnncore's ONNX backend (``onnx.backend.base.Backend``).",
            "RnncoreRep": "A prepared model (from :func:`prepare`); ``run(inputs)``.",
        }[name]
        _CLASSES[name] = type(name, (mixin, parent), {"__module__": __name__, "__doc__": doc})
    return _CLASSES[name]


def __getattr__(name: str):
    if name in ("RnncoreBackend", "RnncoreRep"):
        return _class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_compatible(model, device: str = "CPU", **kwargs) -> bool:
    """:meth:`RnncoreBackend.is_compatible`."""
    return _class("RnncoreBackend").is_compatible(model, device, **kwargs)


def prepare(model, device: str = "CPU", **kwargs):
    """:meth:`RnncoreBackend.prepare`."""
    return _class("RnncoreBackend").prepare(model, device, **kwargs)


def run_model(model, inputs, device: str = "CPU", **kwargs):
    """:meth:`RnncoreBackend.run_model`."""
    return _class("RnncoreBackend").run_model(model, inputs, device, **kwargs)


def run_node(node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
    """:meth:`RnncoreBackend.run_node`."""
    return _class("RnncoreBackend").run_node(node, inputs, device, outputs_info, **kwargs)


def supports_device(device: str) -> bool:
    """:meth:`RnncoreBackend.supports_device`."""
    return _class("RnncoreBackend").supports_device(device)
