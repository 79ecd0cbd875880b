"""The graph of a functional model (:class:`rnncore.Model`): the layer calls between its
inputs and outputs, in Keras 3's order, run for training and for shapes; inference runs the
model's plan compiled from it (:mod:`rnncore.models.plan`, with the same mask rules).

The order is Keras's (``keras/src/ops/function.py``, ``map_graph``): a depth-first walk back
from the outputs gives each call a depth (the longest path to an output); calls run by
decreasing depth, and ``model.layers`` lists the layers by decreasing depth, in the order
the walk first met them. So ``model.weights`` and ``get_weights()`` come in Keras's order.

Masks travel as Keras 3 passes them at run time (``Layer.__call__``): each value carries
its mask; a call whose only tensor argument is its input(s) gets their mask(s) as ``mask``
(a list for a list of inputs) unless one was given explicitly; a call with more tensor
arguments (a recurrent layer given ``initial_state``) gets none, as in Keras. The outputs'
masks are ``layer.compute_mask(inputs, mask)`` with the mask given, else the inputs'.

Training: :meth:`Graph.forward_train` runs each call's ``forward_train`` and keeps the
layer's ``_train_cache`` per call (a shared layer runs several times a step);
:meth:`Graph.backward` runs the ``backward`` of the calls in reverse, putting each cache
back first, sums the gradients of tensors used several times and of shared weights.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..layers._symbolic import KerasTensor, describe, flatten, map_structure, tensor_label

__all__ = ["Graph", "several_outputs"]

_CONTEXT = ("mask", "training")  # the call arguments that are not the layer's data


def several_outputs(node) -> bool:
    return isinstance(node.output_structure, (list, tuple))


def _resolve(structure, store: dict):
    return map_structure(lambda t: store[id(t)] if isinstance(t, KerasTensor) else t, structure)


def _masks_of(masks):
    """A list of masks as the layers take it: None when no entry has one."""
    if isinstance(masks, (list, tuple, dict)):
        if not any(m is not None for m in flatten(masks)):
            return None
        return masks if isinstance(masks, dict) else list(masks)
    return masks


def _flat(node, outputs, masks):
    """The call's outputs and their masks as flat lists aligned with ``node.outputs``."""
    if len(node.outputs) == 1 and not several_outputs(node):
        return [outputs], [masks[0] if isinstance(masks, (list, tuple)) else masks]
    outputs = list(outputs)
    if not isinstance(masks, (list, tuple)):
        masks = [masks] + [None] * (len(outputs) - 1)
    return outputs, list(masks) + [None] * (len(outputs) - len(masks))


class Graph:
    """The calls (:class:`~rnncore.layers._symbolic.Node`) from ``inputs`` to ``outputs``.

    Raises a ValueError naming the layers and tensors for an output that does not depend
    on the inputs alone, an input no output uses, a cycle, and two layers of one name.
    """

    def __init__(self, inputs: list, outputs: list, owner: str):
        self.inputs, self.outputs, self.owner = list(inputs), list(outputs), owner
        ordered, op_index = self._walk()
        in_graph = set(ordered)
        node_depth: dict = {}
        op_depth: dict = {}
        for node in reversed(ordered):  # Keras's map_graph, step for step
            depth = node_depth.setdefault(node, 0)
            depth = max(depth, op_depth.get(node.operation, 0))
            op_depth[node.operation] = depth
            node_depth[node] = depth
            for parent in node.parent_nodes:
                if parent in in_graph:
                    node_depth[parent] = max(depth + 1, node_depth.get(parent, 0))
        by_depth = defaultdict(list)
        for node, depth in node_depth.items():
            by_depth[depth].append(node)
        ops_by_depth = defaultdict(list)
        for op, depth in op_depth.items():
            ops_by_depth[depth].append(op)
        self.operations = [
            op
            for depth in sorted(ops_by_depth, reverse=True)
            for op in sorted(ops_by_depth[depth], key=lambda o: op_index[id(o)])
        ]
        self.order = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
        self.nodes = set(self.order)
        self.nodes_by_depth = dict(by_depth)
        self._check_connected()
        for t in self.inputs:
            if t._keras_history.operation not in op_depth:
                raise ValueError(
                    f"{owner}: input {t.name!r} is not used by any output; remove it from the "
                    f"model's inputs (or connect it)"
                )
        names = [op.name for op in self.operations]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(
                    f"{owner}: the name {name!r} is used by {names.count(name)} layers of the "
                    f"model; all layer names must be unique"
                )

    def _walk(self):
        """The calls in decreasing depth (a depth-first walk back from each output) and
        the order in which it first met each operation (Keras's ``_build_map``)."""
        finished, in_progress, ordered, op_index = set(), set(), [], {}

        def visit(tensor):
            op, node_index, _ = tensor._keras_history
            node = op._inbound_nodes[node_index]
            if node in finished:
                return
            if node in in_progress:
                raise ValueError(
                    f"{self.owner}: tensor {tensor_label(tensor)} from {describe(op)} is part "
                    f"of a cycle"
                )
            op_index.setdefault(id(op), len(op_index))
            in_progress.add(node)
            for t in node.input_tensors:
                visit(t)
            finished.add(node)
            in_progress.remove(node)
            ordered.append(node)

        for t in self.outputs:
            visit(t)
        return ordered, op_index

    def _check_connected(self) -> None:
        computable = {id(t) for t in self.inputs}
        for node in self.order:
            if node.is_input:
                if id(node.outputs[0]) not in computable:
                    user = next(n for n in self.order if node.outputs[0] in n.input_tensors)
                    raise ValueError(
                        f"{self.owner}: graph disconnected: {describe(user.operation)} is "
                        f"called on Input {node.outputs[0].name!r}, which is not among the "
                        f"model's inputs {[t.name for t in self.inputs]}; "
                        f"add it to the inputs"
                    )
                continue
            computable.update(id(t) for t in node.outputs)

    # ---- shapes -------------------------------------------------------------------------

    def output_shapes(self, input_shapes: list) -> list:
        """The outputs' shapes for inputs of ``input_shapes`` (the layers'
        ``compute_output_shape`` through the graph)."""
        if [tuple(s) for s in input_shapes] == [t.shape for t in self.inputs]:
            return [t.shape for t in self.outputs]
        store = {id(t): tuple(s) for t, s in zip(self.inputs, input_shapes)}
        for node in self.order:
            if node.is_input:
                continue
            shapes = node.operation.compute_output_shape(_resolve(node.args[0], store))
            several = several_outputs(node)
            for t, s in zip(node.outputs, shapes if several else [shapes]):
                store[id(t)] = tuple(s)
        return [store[id(t)] for t in self.outputs]

    # ---- training (inference: rnncore.models.plan) -----------------------------------------

    def _arguments(self, node, values, masks):
        """``(inputs, mask given to the call, mask for compute_mask, other arguments)``."""
        x = _resolve(node.args[0], values)
        extra = {k: _resolve(v, values) for k, v in node.kwargs.items() if k not in _CONTEXT}
        if "mask" in node.kwargs:
            call_mask = previous = _masks_of(_resolve(node.kwargs["mask"], values))
        else:
            previous = _masks_of(_resolve(node.args[0], masks))
            tensor_args = any(
                isinstance(leaf, KerasTensor)
                for k, v in node.kwargs.items()
                if k not in _CONTEXT
                for leaf in flatten(v)
            )
            call_mask = None if tensor_args else previous
        return x, call_mask, previous, extra

    def _store(self, node, outputs, out_masks, values, masks) -> None:
        outputs, out_masks = _flat(node, outputs, out_masks)
        for t, y, m in zip(node.outputs, outputs, out_masks):
            values[id(t)] = np.asarray(y) if not isinstance(y, np.ndarray) else y
            masks[id(t)] = m

    def forward_train(self, inputs: list, input_masks: list, rng):
        """Training forward: ``(outputs, output_masks, records)``; ``records`` (each call's
        training cache and output shapes) is what :meth:`backward` takes."""
        values = {id(t): x for t, x in zip(self.inputs, inputs)}
        masks = {id(t): m for t, m in zip(self.inputs, input_masks)}
        records = []
        try:
            for node in self.order:
                if node.is_input:
                    continue
                op = node.operation
                x, call_mask, previous, extra = self._arguments(node, values, masks)
                outputs, out_masks = op.forward_train(x, call_mask, rng, **extra)
                if previous is not call_mask:
                    out_masks = op.compute_mask(x, previous)
                cache, op._train_cache = op._train_cache, None
                self._store(node, outputs, out_masks, values, masks)
                info = [(values[id(t)].shape, values[id(t)].dtype) for t in node.outputs]
                records.append((node, cache, info))
        except BaseException:
            for node, _, _ in records:
                node.operation._train_cache = None
            raise
        outputs = [values[id(t)] for t in self.outputs]
        return outputs, [masks[id(t)] for t in self.outputs], records

    def backward(self, records: list, d_outputs: list):
        """dL/d(inputs) (None for an input without gradient) and ``{id(variable):
        (variable, gradient)}`` summed over the calls, from dL/d(outputs) (None: zero)."""
        grads: dict = {}

        def add(t, g):
            if g is not None and isinstance(t, KerasTensor):
                grads[id(t)] = g if id(t) not in grads else grads[id(t)] + g

        for t, d in zip(self.outputs, d_outputs):
            add(t, d)
        weight_grads: dict = {}
        for node, cache, info in reversed(records):
            dys = [grads.pop(id(t), None) for t in node.outputs]
            if all(d is None for d in dys):
                continue
            dys = [np.zeros(s, dt) if d is None else d for d, (s, dt) in zip(dys, info)]
            op = node.operation
            op._train_cache = cache
            try:
                dx = op.backward(dys if several_outputs(node) else dys[0])
                state_grads = getattr(op, "state_gradients", None)
            finally:
                op._train_cache = None
            for v, g in zip(op.weights, op.gradients):
                if g is not None:
                    previous = weight_grads.get(id(v))
                    weight_grads[id(v)] = (v, g if previous is None else previous[1] + g)
            args = node.args[0]
            if isinstance(args, dict):  # a nested model's inputs by name: in its order
                args = [args[k] for k in op._input_keys()]
            if isinstance(args, (list, tuple)):
                for t, g in zip(flatten(args), dx if dx is not None else []):
                    add(t, g)
            else:
                add(args, dx)
            states = node.kwargs.get("initial_state")
            if states is not None and state_grads is not None:
                for t, g in zip(flatten(states), state_grads):
                    add(t, g)
        return [grads.get(id(t)) for t in self.inputs], weight_grads
