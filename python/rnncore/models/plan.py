"""One plan per model (issue 23): how a model's calls run, compiled once per model generation.

A :class:`Plan` is an ordered list of ops over numbered value slots; each slot holds a value
and, beside it, its Keras mask (masks travel with values, as in Keras). A model's inputs
are slots ``0 .. n-1``; every op reads its slots and writes its output slots, in the graph's
topological order:

* a :class:`Sequential <rnncore.models.Sequential>` is the linear graph of its layers (layer
  ``k`` reads slot ``k`` and writes slot ``k + 1``; :class:`_Step`, with Sequential's rules);
* a functional :class:`Model <rnncore.models.Model>` is its graph's calls in ``Graph.order``
  (:class:`_Call`: the layer's own ``_call`` with Keras's mask rules, exactly as the graph
  has always applied them, for masks, explicit ``mask=`` arguments, several inputs and
  outputs, shared layers and nested models, which run their own plans).

Consecutive single-input, single-output calls the core chain can run, whose intermediate
values nobody else reads (no other call, not a model output), are fused into one
:class:`~rnncore.models.native_chain.Segment`: one core call, no Python between the layers.
The fused run takes the place of its first call, where all its input is already computed.

Every way of running a model for inference goes through :func:`current`: ``model(x)``,
``predict``, a stateful step, the model as a layer of another. The plan is kept while the
model's structure and its layers' generations stay the same (rnncore.layers._variable): the
lookup compares the plan's ``clock`` with the process's latest published change, one integer;
when anything anywhere changed, the model's layers' generations (integers, never ``id()``\\s)
are compared once more and the plan is compiled again only if one of them moved on.
"""

from __future__ import annotations

import operator
import threading
from collections import Counter

import numpy as np

from ..layers import _variable
from ..layers._base import Layer
from ..layers._symbolic import KerasTensor, flatten, map_structure
from .graph import _CONTEXT, _masks_of, several_outputs
from .native_chain import Segment, runs

__all__ = ["Plan", "STALE", "current", "linear", "graph"]

_generation = operator.attrgetter("generation")


class Plan:
    """The ops of a model over ``size`` value slots; ``outputs`` are the model's output
    slots. ``generation`` is the newest generation of the model's layers it was compiled
    at, ``clock`` the latest published change it was last found valid at."""

    __slots__ = ("ops", "outputs", "generation", "clock", "_pad", "lock")

    def __init__(self, ops, n_inputs, size, outputs):
        self.ops, self.outputs = ops, outputs
        self.generation = self.clock = -1
        self._pad = [None] * (size - n_inputs)
        # A model with stateful layers steps them all under this lock, kept from plan to
        # plan of one model: a step is atomic per model (all its layers advance together,
        # never layer 1 with call A then B while layer 2 sees B then A). None: stateless,
        # runs from several threads go in parallel.
        self.lock = None

    def run(self, inputs, masks, training):
        """Every slot's value and mask (two lists) after the ops ran on ``inputs`` and their
        masks; the model's outputs are in the slots ``outputs``."""
        if self.lock is not None:
            with self.lock:
                return self._run(inputs, masks, training)
        return self._run(inputs, masks, training)

    def _run(self, inputs, masks, training):
        values = list(inputs)
        values += self._pad
        value_masks = list(masks)
        value_masks += self._pad
        for op in self.ops:
            op(values, value_masks, training)
        return values, value_masks


_compiling = threading.RLock()

#: the plan of a model that has none yet: never valid (no published change is -1)
STALE = Plan([], 0, 0, [])


def current(model) -> Plan:
    """The model's plan, compiled again (``model._compile_plan()``) when a layer's
    generation moved on since it was compiled (the slow path of the lookup, taken once the
    process published a change; the model resets ``_plan`` to STALE when its structure
    changes)."""
    clock = _variable.latest  # read first: a change published later moves it again
    generation = max(map(_generation, model._plan_layers()), default=0)
    plan = model._plan
    if plan is STALE or plan.generation != generation:
        with _compiling:  # one compile at a time: a stateful model's lock stays one object
            plan = model._plan
            if plan is STALE or plan.generation != generation:
                old, plan = plan, model._compile_plan()
                plan.generation = generation
                if model.stateful_layers():
                    plan.lock = old.lock or threading.Lock()
                model._plan = plan
    plan.clock = clock
    model._plan = plan
    return plan


# ---- a Sequential: the linear graph of its layers ---------------------------------------------


class _Step:
    """A Sequential's layer on the previous layer's output and mask: the output is kept as
    the layer returns it (the last layer may return several outputs, as a tuple, with a
    list of masks), a single output's list of masks becomes its first."""

    __slots__ = ("layer", "src", "dst", "last", "owner")

    def __init__(self, layer, src, last, owner):
        self.layer, self.src, self.dst, self.last, self.owner = layer, src, src + 1, last, owner

    def __call__(self, values, masks, training):
        y, mask = self.layer._call(values[self.src], masks[self.src], training)
        if type(y) is tuple:
            if not self.last:
                raise ValueError(
                    f"{self.owner.name}: layer {self.layer.name!r} returned several outputs, "
                    f"which only the last layer may"
                )
        elif isinstance(mask, list):
            mask = mask[0]
        values[self.dst], masks[self.dst] = y, mask


def linear(layers, owner, fuse=True) -> Plan:
    """The plan of ``layers`` called one after the other (a Sequential ``owner``);
    ``fuse=False``: each layer by its own call (what benchmarks compare the chain with)."""
    ops, groups = [], runs(layers) if fuse else [[layer] for layer in layers]
    for k, group in enumerate(groups):
        if len(group) > 1:
            ops.append(Segment(group, k, k + 1))
        else:
            ops.append(_Step(group[0], k, k == len(groups) - 1, owner))
    return Plan(ops, 1, len(groups) + 1, [len(groups)])


# ---- a functional model: its graph ------------------------------------------------------------

_NO_MASK = object()  # a call given no explicit mask argument


class _Slot:
    """A tensor's place in a call's argument structure: its value slot."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


def _template(structure, slot: dict):
    """``structure`` with each KerasTensor replaced by its slot (other leaves kept)."""
    return map_structure(lambda t: _Slot(slot[id(t)]) if isinstance(t, KerasTensor) else t,
                         structure)  # fmt: skip


def _resolve(template, store: list):
    return map_structure(lambda s: store[s.index] if type(s) is _Slot else s, template)


class _Call:
    """One call of a graph node, with Keras 3's run-time mask rules (``Layer.__call__``):
    a call whose only tensor argument is its input(s) gets their mask(s) as ``mask`` (a list
    for a list of inputs) unless one was given explicitly; a call with more tensor arguments
    (a recurrent layer given ``initial_state``) gets none. The outputs' masks are the call's,
    or ``layer.compute_mask(inputs, mask)`` with the inputs' masks when the call got none
    for its other tensor arguments."""

    __slots__ = ("op", "args", "extra", "mask_arg", "tensor_args", "training", "out")

    def __init__(self, node, slot: dict):
        self.op = node.operation
        x = node.args[0]
        # one input tensor (the usual call): its slot; else the structure of slots
        self.args = slot[id(x)] if isinstance(x, KerasTensor) else _template(x, slot)
        self.extra = {k: _template(v, slot) for k, v in node.kwargs.items() if k not in _CONTEXT}
        self.mask_arg = _template(node.kwargs["mask"], slot) if "mask" in node.kwargs else _NO_MASK
        self.tensor_args = any(isinstance(leaf, KerasTensor) for k, v in node.kwargs.items()
                               if k not in _CONTEXT for leaf in flatten(v))  # fmt: skip
        self.training = node.kwargs.get("training")
        single = len(node.outputs) == 1 and not several_outputs(node)
        self.out = slot[id(node.outputs[0])] if single else [slot[id(t)] for t in node.outputs]

    def __call__(self, values, masks, training):
        args = self.args
        one = type(args) is int
        x = values[args] if one else _resolve(args, values)
        extra = {k: _resolve(v, values) for k, v in self.extra.items()} if self.extra else {}
        if self.mask_arg is not _NO_MASK:
            call_mask = previous = _masks_of(_resolve(self.mask_arg, values))
        else:  # a slot holds one mask, which _masks_of keeps as it is
            previous = masks[args] if one else _masks_of(_resolve(args, masks))
            call_mask = None if self.tensor_args else previous
        op = self.op
        if training is None:
            training = self.training
        outputs, out_masks = op._call(x, call_mask, training, **extra)
        if previous is not call_mask:
            out_masks = op.compute_mask(x, previous)
        out = self.out
        if type(out) is int:
            values[out] = outputs if isinstance(outputs, np.ndarray) else np.asarray(outputs)
            masks[out] = out_masks[0] if isinstance(out_masks, (list, tuple)) else out_masks
            return
        outputs = list(outputs)
        if not isinstance(out_masks, (list, tuple)):
            out_masks = [out_masks] + [None] * (len(outputs) - 1)
        out_masks = list(out_masks) + [None] * (len(outputs) - len(out_masks))
        for s, y, m in zip(out, outputs, out_masks):
            values[s] = y if isinstance(y, np.ndarray) else np.asarray(y)
            masks[s] = m


def _single_input(node) -> bool:
    """Whether the call may be fused: one layer on one tensor, one output, no other
    arguments (no initial_state, explicit mask or training)."""
    return (isinstance(node.operation, Layer) and isinstance(node.args[0], KerasTensor)
            and not node.kwargs and len(node.outputs) == 1
            and not several_outputs(node))  # fmt: skip


def graph(g) -> Plan:
    """The plan of a :class:`~rnncore.models.graph.Graph`: its calls in ``g.order``, runs of
    fusable calls (:func:`_single_input`, each reading the previous one's output, which
    nothing else reads) fused where the chain can run them (``native_chain.runs``)."""
    slot = {id(t): k for k, t in enumerate(g.inputs)}
    calls = [node for node in g.order if not node.is_input]
    for node in calls:
        for t in node.outputs:
            slot.setdefault(id(t), len(slot))
    reads = Counter(id(t) for node in calls for t in node.input_tensors)
    reads.update(id(t) for t in g.outputs)
    # the chains of fusable calls, each call after the one whose output it alone reads
    chains, chain_of, at = [], {}, {}
    for node in calls:
        if not _single_input(node):
            at[node] = _Call(node, slot)
            continue
        t = node.args[0]
        op, index, _ = t._keras_history
        chain = chain_of.get(op._inbound_nodes[index]) if reads[id(t)] == 1 else None
        if chain is None:
            chain = []
            chains.append(chain)
        chain.append(node)
        chain_of[node] = chain
    # each chain split into runs the core chains and single calls; a run stands at its
    # first call's place (everything it reads is computed by then)
    for chain in chains:
        k = 0
        for group in runs([node.operation for node in chain]):
            first, last = chain[k], chain[k + len(group) - 1]
            if len(group) > 1:
                at[first] = Segment(group, slot[id(first.args[0])], slot[id(last.outputs[0])])
            else:
                at[first] = _Call(first, slot)
            k += len(group)
    ops = [at[node] for node in calls if node in at]
    return Plan(ops, len(g.inputs), len(slot), [slot[id(t)] for t in g.outputs])
