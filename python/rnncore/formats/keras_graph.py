"""A Keras functional model's graph, read from its config into the form
:meth:`rnncore.Model.from_config` takes (Keras 3's functional config).

Keras 3 records each call of a layer as ``{"args": [...], "kwargs": {...}}`` whose tensors
are ``{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node,
tensor]}}``; Keras 2 (tf.keras ``.h5`` files) as a list ``[[layer, node, tensor, kwargs],
...]`` of the call's input tensors, an RNN's initial states appended to its inputs. Both
become Keras 3's form here. The operations Keras 3 records only to compute masks are
dropped with the ``mask=`` arguments that refer to them (:func:`_mask_only_ops`): rnncore's
layers propagate those masks themselves. An operation that computes data stays in the
graph, where the layer reader refuses it by name.
"""

from __future__ import annotations

from ..errors import ModelFileError

__all__ = ["functional_graph", "spec_name", "is_op", "RNN_CLASSES"]

RNN_CLASSES = ("SimpleRNN", "LSTM", "GRU")

#: the most layers and calls a config may describe, and how deep a call's arguments may
#: nest (lists of lists of tensors): a file declaring more is damaged
_MAX_NODES = 100_000
_MAX_DEPTH = 32


def spec_name(spec: dict):
    return spec.get("name") or (spec.get("config") or {}).get("name")


def is_op(spec: dict) -> bool:
    """A Keras operation (``keras.ops``), not a layer: by its module, or in legacy ``.h5``
    configs, which name no modules, by its config (an operation's holds no ``trainable``,
    which every layer's but an InputLayer's does)."""
    module = spec.get("module")
    if module is not None:
        return isinstance(module, str) and module.startswith(("keras.src.ops", "keras.ops"))
    config = spec.get("config")
    is_layer = spec.get("class_name") == "InputLayer" or "trainable" in (config or {})
    return isinstance(config, dict) and not is_layer


def _refs(value) -> list:
    """The layer names of the tensors in a call argument (nesting bounded: a deeper
    structure is left to :func:`_call`, which refuses it)."""
    out, stack = [], [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if _is_tensor(v):
            history = (v.get("config") or {}).get("keras_history")
            if isinstance(history, (list, tuple)) and history and isinstance(history[0], str):
                out.append(history[0])
        elif depth <= _MAX_DEPTH and isinstance(v, (list, dict)):
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return out


def _mask_only_ops(specs: list, outputs) -> set:
    """The operations whose results only compute masks: Keras 3 records them for a layer
    with masked inputs (NotEqual/Any of a Masking, LogicalOr of merged masks, ExpandDims,
    ConvertToTensor...) and passes their result as ``mask=``. rnncore's layers propagate
    the same masks themselves, so these are dropped with the ``mask=`` that uses them; an
    operation whose result feeds a layer's data or an output is kept (and refused)."""
    ops = {spec_name(s) for s in specs if is_op(s)}
    data_users: dict = {}
    for spec in specs:
        for node in spec.get("inbound_nodes") or []:
            if not isinstance(node, dict):
                continue  # Keras 2's calls hold no operations
            kwargs = node.get("kwargs") if isinstance(node.get("kwargs"), dict) else {}
            data = [node.get("args")] + [v for k, v in kwargs.items() if k != "mask"]
            for name in _refs(data):
                data_users.setdefault(name, set()).add(spec_name(spec))
    for name in _refs(outputs):
        data_users.setdefault(name, set()).add(None)  # a model output
    dropped = set(ops)
    changed = True
    while changed:
        kept = {op for op in dropped if data_users.get(op, set()) - dropped}
        dropped -= kept
        changed = bool(kept)
    return dropped


def _tensor(ref) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": list(ref)}}


def _ref(plan, value, where: str):
    """``(layer, node, tensor)`` of a Keras 3 tensor entry, checked."""
    history = (value.get("config") or {}).get("keras_history")
    if not (isinstance(history, (list, tuple)) and len(history) == 3):
        raise ModelFileError(f"{plan.filepath}: {where}: malformed tensor reference {value!r}")
    name, node, index = history
    if not isinstance(name, str) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in (node, index)
    ):
        raise ModelFileError(f"{plan.filepath}: {where}: malformed tensor reference {history!r}")
    return name, node, index


def _is_tensor(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _keras2_node(node, class_name: str) -> dict:
    """A Keras 2 call ``[[layer, node, tensor, kwargs], ...]`` in Keras 3's form."""
    refs = [item[:3] for item in node]
    kwargs = {}
    for item in node:
        if len(item) > 3 and isinstance(item[3], dict):
            kwargs.update(item[3])
    if class_name in (*RNN_CLASSES, "Bidirectional") and len(refs) > 1:
        # tf.keras appended an RNN's initial states to its inputs
        kwargs["initial_state"] = [_tensor(r) for r in refs[1:]]
        refs = refs[:1]
    args = [_tensor(refs[0])] if len(refs) == 1 else [[_tensor(r) for r in refs]]
    return {"args": args, "kwargs": kwargs}


def functional_graph(plan, body: dict, specs: list) -> dict:
    """The functional config of ``body`` in Keras 3's form, mask operations dropped: the
    layers' entries keep their ``class_name``/``config`` (translated by the caller) and get
    ``inbound_nodes`` as ``[{"args": [...], "kwargs": {...}}]``."""
    if len(specs) > _MAX_NODES:
        raise ModelFileError(f"{plan.filepath}: the config describes {len(specs)} layers")
    outputs = [_tensor(ref) for ref in _endpoint_refs(body.get("output_layers")) if len(ref) == 3]
    dropped = _mask_only_ops(specs, outputs)
    layers, n_nodes = [], 0
    for spec in specs:
        if spec_name(spec) in dropped:
            continue
        name = spec_name(spec)
        where = f"layer {name!r} ({spec['class_name']})"
        nodes = spec.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise ModelFileError(f"{plan.filepath}: {where}: malformed inbound_nodes")
        n_nodes += len(nodes)
        if n_nodes > _MAX_NODES:
            raise ModelFileError(f"{plan.filepath}: the config describes {n_nodes} calls")
        calls = []
        for node in nodes:
            if isinstance(node, list):
                node = _keras2_node(node, spec["class_name"])
            if not isinstance(node, dict):
                raise ModelFileError(f"{plan.filepath}: {where}: malformed inbound node")
            calls.append(_call(plan, node, dropped, where))
        layers.append({**spec, "name": name, "inbound_nodes": calls})
    return {
        "name": body.get("name"),
        "trainable": body.get("trainable", True),
        "layers": layers,
        "input_layers": _endpoints(plan, body.get("input_layers"), "input_layers"),
        "output_layers": _endpoints(plan, body.get("output_layers"), "output_layers"),
    }


def _call(plan, node: dict, dropped: set, where: str) -> dict:
    """One call with its tensors checked; ``mask=`` from a dropped mask operation removed."""

    def walk(value, depth=0):
        if depth > _MAX_DEPTH:
            raise ModelFileError(
                f"{plan.filepath}: {where}: the call's arguments are nested more than "
                f"{_MAX_DEPTH} levels deep"
            )
        if _is_tensor(value):  # (a dropped operation only ever feeds mask=, removed below)
            return _tensor(_ref(plan, value, where))
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {k: walk(v, depth + 1) for k, v in value.items()}
        return value

    kwargs = dict(node.get("kwargs") or {})
    if any(name in dropped for name in _refs(kwargs.get("mask"))):
        del kwargs["mask"]  # the masks Keras computed with operations: rnncore's are the same
    args = node.get("args") or []
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ModelFileError(f"{plan.filepath}: {where}: malformed inbound node")
    return {"args": walk(args), "kwargs": walk(kwargs)}


def _endpoint_refs(value) -> list:
    """The ``[layer, node, tensor]`` entries of ``input_layers``/``output_layers``: one
    triple (Keras writes one output so), a list of them, or a dict by name."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [value]
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, list) else []


def _endpoints(plan, value, key: str):
    """``input_layers``/``output_layers`` checked, in the form the config gives them (a
    list of triples, or a dict by name for a model called with a dict)."""
    refs = _endpoint_refs(value)
    if not refs:
        raise ModelFileError(f"{plan.filepath}: the model config has no {key}")
    for ref in refs:
        if not (isinstance(ref, (list, tuple)) and len(ref) == 3 and isinstance(ref[0], str)):
            raise ModelFileError(f"{plan.filepath}: malformed {key} entry {ref!r}")
    if isinstance(value, dict):
        return {name: list(ref) for name, ref in value.items()}
    return [list(ref) for ref in refs]
