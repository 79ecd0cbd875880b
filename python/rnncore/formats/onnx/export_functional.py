"""A functional model (:class:`rnncore.Model`) as an ONNX graph: its calls in the model's
order, each written by :func:`~.export_layers.export_layer`, and the merge layers.

Masks travel as the model passes them at run time (:mod:`rnncore.models.graph`): a call
whose only tensors are its inputs gets their masks; a recurrent call given
``initial_state`` tensors gets none (its output mask is still the layer's rule applied to
its input's mask). Merges: ``Add``, ``Subtract``, ``Average`` (the OR of the masks when
every input has one), ``Multiply``, ``Maximum``, ``Minimum`` (refused when masks would
change their values: inputs of one rank with masks), ``Concatenate`` (on the last axis, or
on the steps axis of 3-D inputs, when masks come). ``Attention`` and ``AdditiveAttention``
(:mod:`.export_attention`) with their inputs' masks (query, value; a key's is not used, as
Keras), ``use_causal_mask`` and ``return_attention_scores``. Refused by name: ``Dot``,
nested models, explicit ``mask=`` arguments.
"""

from __future__ import annotations

from ...errors import UnsupportedModelError
from ...layers._symbolic import KerasTensor, flatten
from ...layers.attention import Attention
from ...layers.merging import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from ...layers.wrappers import Bidirectional
from .export_attention import export_attention
from .export_graph import Exporter
from .export_layers import export_layer, reads_ids

__all__ = ["export_functional", "graph_output_names"]

#: Attention's call arguments and :func:`export_attention`'s names for them
_ATTENTION_OPTIONS = {"return_attention_scores": "return_scores", "use_causal_mask": "causal"}
_ELEMENTWISE = {Add: "Add", Subtract: "Sub", Average: "Add", Multiply: "Mul",
                Maximum: "Max", Minimum: "Min"}  # fmt: skip


def export_functional(ex: Exporter, model):
    """``(graph inputs as (name, element type, dims), outputs as (name, tensor, shape))``;
    each input keeps its ``Input``'s dtype."""
    graph = model._graph
    values, masks, inputs = {}, {}, []
    consumers = [n for n in graph.order if not n.is_input]
    for t in graph.inputs:
        ids = any(reads_ids(n.operation) and t in n.input_tensors for n in consumers)
        rest = ["batch", f"{t.name}_steps"] + [f"{t.name}_dim{i}" for i in range(2, len(t.shape))]
        dims = [r if d is None else d for r, d in zip(rest, t.shape)]
        inputs.append((t.name, ex.model_input(t.name, t.dtype, ids), dims))
        values[id(t)], masks[id(t)] = t.name, None
    for node in consumers:
        _call(ex, node, values, masks)
    names = graph_output_names(model)
    outputs = [(nm, values[id(t)], t.shape) for nm, t in zip(names, graph.outputs)]
    return inputs, outputs


def graph_output_names(model) -> list[str]:
    """The model's ``output_names`` made unique (ONNX names each output once): a layer's
    second and later outputs (Keras names them all after the layer) get ``_1``, ``_2``, ...
    after a name no input or earlier output takes."""
    taken = {t.name for t in model._graph.inputs}
    names = []
    for name in model.output_names:
        unique, n = name, 0
        while unique in taken:
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        names.append(unique)
    return names


def _call(ex, node, values, masks):
    op = node.operation
    if getattr(op, "layers", None) is not None:
        raise UnsupportedModelError(
            f"to_onnx: {op.name!r} is a nested model; nested models are not exported "
            f"(build the model from its layers)"
        )
    if "mask" in node.kwargs:
        raise UnsupportedModelError(f"to_onnx: layer {op.name!r} is called with mask=")
    arg = node.args[0]
    extra = {k: v for k, v in node.kwargs.items() if k != "training"}
    initial = extra.pop("initial_state", None)
    if isinstance(op, Attention):  # its call arguments are options, not tensors
        options = {nm: bool(extra.pop(k, False)) for k, nm in _ATTENTION_OPTIONS.items()}
    if extra:
        raise UnsupportedModelError(
            f"to_onnx: layer {op.name!r} is called with {sorted(extra)}, not exported"
        )
    if isinstance(arg, KerasTensor):
        previous = masks[id(arg)]
        given = None if initial is None else [values[id(t)] for t in flatten(initial)]
        call_mask = None if given is not None else previous  # as models.graph passes it
        results, out_mask = export_layer(ex, op, values[id(arg)], call_mask, given)
        if given is not None and getattr(op, "return_sequences", False):
            out_mask = previous  # the layer's rule on its input's mask
        second_mask = out_mask if isinstance(op, Bidirectional) and op.merge_mode is None else None
        out_masks = [out_mask] + [second_mask] + [None] * len(results)
    elif isinstance(op, Attention):
        xs = list(arg)
        results, out_masks = export_attention(
            ex, op, [values[id(t)] for t in xs], [masks[id(t)] for t in xs], **options
        )
    else:
        xs = list(arg)
        y, out_mask = _merge(ex, op, xs, [values[id(t)] for t in xs], [masks[id(t)] for t in xs])
        results, out_masks = [("output", y)], [out_mask]
    if len(results) != len(node.outputs):
        raise AssertionError(f"to_onnx: {op.name!r}: {len(results)} outputs for {node.outputs}")
    for t, (_, tensor), m in zip(node.outputs, results, out_masks):
        values[id(t)], masks[id(t)] = tensor, m


def _merge(ex, op, ts, xs, ms):
    """A merge layer on tensors ``xs`` (KerasTensors ``ts``, masks ``ms``)."""
    kind = next((k for k in _ELEMENTWISE if isinstance(op, k)), None)
    if kind is None and not isinstance(op, Concatenate):
        raise UnsupportedModelError(
            f"to_onnx: layer {op.name!r} ({type(op).__name__}) is not supported by the ONNX export"
        )
    rank = max(len(t.shape) for t in ts)
    xs = [ex.as_float(x) for x in xs]
    masked = [m for m in ms if m is not None]
    if isinstance(op, Concatenate):
        y = ex.node("Concat", xs, base=op.name, axis=op._axis(rank))
        return y, _concat_mask(ex, op, ts, xs, ms, rank) if masked else None
    same_rank = len({len(t.shape) for t in ts}) == 1
    if masked and same_rank and kind in (Multiply, Maximum, Minimum):
        raise UnsupportedModelError(
            f"to_onnx: layer {op.name!r} ({type(op).__name__}) receives masks, which change "
            f"its values (masked entries skipped); not exported"
        )
    # Keras inserts size-1 axes after the batch axis until the ranks agree
    xs = [
        x if len(t.shape) == rank else ex.unsqueeze(x, range(1, 1 + rank - len(t.shape)))
        for t, x in zip(ts, xs)
    ]
    y = xs[0]
    for x in xs[1:]:
        y = ex.node(_ELEMENTWISE[kind], [y, x], base=op.name)
    if kind is Average:
        y = ex.node("Div", [y, ex.scalar(f"{op.name}/n", len(xs))], base=op.name)
    if len(masked) < len(ms):  # the OR of the masks when every input has one
        return y, None
    mask = ms[0]
    for m in ms[1:]:
        mask = ex.node("Or", [mask, m], base=f"{op.name}/mask")
    return y, mask


def _concat_mask(ex, op, ts, xs, ms, rank):
    """Concatenate's mask: each input's (all True without one) over its last axis,
    concatenated on ``axis``, then any over the last axis."""
    axis = op._axis(rank)
    full = []
    for x, m in zip(xs, ms):
        if m is None:
            shape = ex.slice(ex.node("Shape", [x]), 0, rank - 1, 0)
            m = ex.node(
                "ConstantOfShape",
                [shape],
                value=ex.helper.make_tensor("one", ex.onnx.TensorProto.BOOL, [1], [True]),
            )
        full.append(m)
    if axis == rank - 1:  # any over the features: the OR
        mask = full[0]
        for m in full[1:]:
            mask = ex.node("Or", [mask, m], base=f"{op.name}/mask")
        return mask
    if axis == 1 and rank == 3:  # the steps axis: the masks side by side
        return ex.node("Concat", full, base=f"{op.name}/mask", axis=1)
    raise UnsupportedModelError(
        f"to_onnx: layer {op.name!r} (Concatenate) on axis {op.axis} of masked inputs is not "
        f"exported (the last axis, or the steps axis of 3-D inputs, are)"
    )
