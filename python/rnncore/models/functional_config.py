"""A functional model's config: Keras 3's format (``keras/src/models/functional.py``).

::

    {"name": "functional", "trainable": true,
     "layers": [
        {"class_name": "InputLayer", "config": {...}, "name": "enc", "inbound_nodes": []},
        {"class_name": "LSTM", "config": {...}, "name": "lstm",
         "inbound_nodes": [{"args": [<tensor>], "kwargs": {"initial_state": [<tensor>, ...]}}]},
        {"class_name": "Functional", "config": {<a nested model's config>}, ...}, ...],
     "input_layers": [["enc", 0, 0], ...],      # or one triple, or a dict of triples
     "output_layers": [["dense", 0, 0], ...]}

``layers`` lists every layer in ``model.layers`` order with its ``class_name`` and
``config`` (rnncore's layer configs: Keras's argument names; ``"Functional"`` and
``"Sequential"`` for nested models) and ``inbound_nodes``, one entry per call of the layer
in this model: its positional ``args`` and keyword ``kwargs`` (``initial_state``, ``mask``,
``training``, ...), where each tensor is ``{"class_name": "__keras_tensor__", "config":
{"shape": [...], "dtype": ..., "keras_history": [layer name, node index, tensor index]}}``
(node indices count the calls of that layer within the model). ``input_layers`` and
``output_layers`` name the model's tensors the same way, except that, as in Keras, the node
index of a nested functional model's output there is one more (Keras's nested models keep
a first call of their own).

:func:`from_config` takes exactly this form (with ``"module"``, ``"registered_name"`` and
``"build_config"`` entries ignored): it creates the layers (only rnncore's classes), then
calls each on the tensors its nodes name, in the order of ``layers`` and of each layer's
nodes, deferring a call until the tensors it needs exist (so a layer shared at different
depths works). A reference to a missing layer, node or output, or calls that can never be
resolved (a cycle), raise a ValueError naming them before any further layer is called.
"""

from __future__ import annotations

import copy

from ..layers import InputLayer
from ..layers._symbolic import KerasTensor, flatten, map_structure, nodes_of

__all__ = ["get_config", "from_config"]

_TENSOR = "__keras_tensor__"


def _own_index(op, node, own) -> int:
    """The index of ``node`` among the calls of ``op`` that belong to the model."""
    return [n for n in nodes_of(op) if n in own].index(node)


def get_config(model, serialize) -> dict:
    own = model._graph.nodes

    def tensor(t: KerasTensor) -> dict:
        op, index, k = t._keras_history
        history = [op.name, _own_index(op, nodes_of(op)[index], own), k]
        return {
            "class_name": _TENSOR,
            "config": {"shape": list(t.shape), "dtype": t.dtype, "keras_history": history},
        }

    def value(v):
        return map_structure(lambda x: tensor(x) if isinstance(x, KerasTensor) else x, v)

    layers = []
    for op in model._graph.operations:
        entry = serialize(op)
        entry["name"] = op.name
        entry["inbound_nodes"] = [
            {"args": value(list(node.args)), "kwargs": value(dict(node.kwargs))}
            for node in nodes_of(op)
            if node in own and not node.is_input
        ]
        layers.append(entry)

    def ref(t: KerasTensor) -> list:
        op, index, k = t._keras_history
        offset = 1 if getattr(op, "_class_name", None) == "Functional" else 0
        return [op.name, _own_index(op, nodes_of(op)[index], own) + offset, k]

    return copy.deepcopy({
        "name": model.name,
        "trainable": model.trainable,
        "layers": layers,
        "input_layers": map_structure(ref, model._inputs_struct),
        "output_layers": map_structure(ref, model._outputs_struct),
    })  # fmt: skip


class _NotYet(Exception):
    """A node names a call of a layer that has not been made yet."""


def _layer_name(spec: dict, where: str) -> str:
    name = spec.get("name") or (spec.get("config") or {}).get("name")
    if not isinstance(name, str):
        raise ValueError(f"{where}: a layer entry has no name: {_short(spec)}")
    return name


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _output_of(created: dict, name, node_index, tensor_index, where: str):
    if not isinstance(name, str) or name not in created:
        raise ValueError(f"{where}: unknown layer {name!r} (the config has no such layer)")
    layer = created[name]
    if isinstance(layer, InputLayer):
        layer.output  # noqa: B018 (makes its input node)
    nodes = nodes_of(layer)
    ints = all(isinstance(i, int) and not isinstance(i, bool) for i in (node_index, tensor_index))
    if not ints or node_index < 0:
        raise ValueError(f"{where}: malformed tensor reference {[name, node_index, tensor_index]}")
    if node_index >= len(nodes):
        raise _NotYet(name)
    outputs = nodes[node_index].outputs
    if not 0 <= tensor_index < len(outputs):
        raise ValueError(
            f"{where}: layer {name!r} call {node_index} has {len(outputs)} output(s), the "
            f"config asks for output {tensor_index}"
        )
    return outputs[tensor_index]


def _node_arguments(node, created: dict, where: str):
    """``(args, kwargs)`` of a recorded call, its tensors replaced by the live ones."""
    if not isinstance(node, dict) or not isinstance(node.get("args", []), (list, tuple)):
        raise ValueError(
            f"{where}: expected a call {{'args': [...], 'kwargs': {{...}}}} (Keras 3's form), "
            f"got {_short(node)}"
        )

    def live(v):
        if isinstance(v, dict) and v.get("class_name") == _TENSOR:
            history = (v.get("config") or {}).get("keras_history")
            if not isinstance(history, (list, tuple)) or len(history) != 3:
                raise ValueError(f"{where}: malformed tensor {_short(v)}")
            return _output_of(created, *history, where)
        if isinstance(v, dict):
            return {k: live(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [live(x) for x in v]
        return v

    kwargs = node.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: the call's kwargs must be a dict, got {_short(kwargs)}")
    return live(list(node.get("args", []))), {k: live(v) for k, v in kwargs.items()}


def from_config(cls, config: dict, deserialize, layers: dict | None = None):
    """The model ``cls(inputs, outputs, name, trainable)`` a config describes; ``layers``
    (name -> layer object) replaces deserializing them (unpickling)."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(
            f"functional config: expected a dict with a 'layers' list, got {_short(config)}"
        )
    owner = f"functional config {config.get('name')!r}"
    created, pending, order = {}, {}, []
    for spec in config["layers"]:
        if not isinstance(spec, dict):
            raise ValueError(f"{owner}: a layer entry must be a dict, got {_short(spec)}")
        name = _layer_name(spec, owner)
        if name in created:
            raise ValueError(f"{owner}: two layers are named {name!r}")
        created[name] = layers[name] if layers is not None else deserialize(spec)
        nodes = spec.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise ValueError(f"{owner}: layer {name!r}: inbound_nodes must be a list")
        if nodes:
            pending[name] = list(nodes)
            order.append(name)
    while pending:
        progressed = False
        for name in order:
            calls = pending.get(name)
            while calls:
                where = f"{owner}: layer {name!r}, call {len(nodes_of(created[name]))}"
                try:
                    args, kwargs = _node_arguments(calls[0], created, where)
                except _NotYet:
                    break
                created[name](*args, **kwargs)
                calls.pop(0)
                progressed = True
            if calls is not None and not calls:
                del pending[name]
        if not progressed:
            raise ValueError(
                f"{owner}: the calls of layer(s) {sorted(pending)} need outputs that no call "
                f"makes (a cycle, or a reference to a missing call)"
            )

    def tensor(ref, what):
        if not (isinstance(ref, (list, tuple)) and len(ref) == 3 and isinstance(ref[0], str)):
            raise ValueError(f"{owner}: malformed {what} entry {_short(ref)}")
        name, node, k = ref
        layer = created.get(name)
        if getattr(layer, "_class_name", None) == "Functional":
            node -= 1  # Keras counts a nested functional model's own first call
        try:
            return _output_of(created, name, node, k, f"{owner}: {what}")
        except _NotYet:
            raise ValueError(
                f"{owner}: {what} {list(ref)} names a call that is not in the config"
            ) from None

    def tensors(value, what):
        if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
            return tensor(value, what)
        if isinstance(value, dict):
            return {k: tensors(v, what) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [tensors(v, what) for v in value]
        raise ValueError(f"{owner}: malformed {what} {_short(value)}")

    inputs = tensors(config.get("input_layers"), "input_layers")
    outputs = tensors(config.get("output_layers"), "output_layers")
    if not flatten(inputs) or not flatten(outputs):
        raise ValueError(f"{owner}: the config names no inputs or no outputs")
    return cls(inputs, outputs, name=config.get("name"), trainable=config.get("trainable", True))
