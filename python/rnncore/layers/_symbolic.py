"""Keras's functional API at the layer level: symbolic tensors and the record of each call.

``rnncore.Input(...)`` gives a :class:`KerasTensor`: a shape (with the batch dimension), a
dtype, a name and its history ``(layer, node_index, tensor_index)``, as Keras 3's. Calling a
layer (or a model) on symbolic tensors builds it from their shapes, appends a :class:`Node`
(the call: its arguments, keyword arguments and outputs) to ``layer._inbound_nodes`` and
returns symbolic outputs: one tensor, or a list for a layer with several outputs (a
recurrent layer with ``return_state=True``, ``Bidirectional`` with ``merge_mode=None``).
``rnncore.Model(inputs, outputs)`` walks these records back from its outputs
(:mod:`rnncore.models.graph`).

Structures follow Keras's ``tree``: lists and tuples in order, dicts by sorted key.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

from ._args import shape_tuple, unique_name

__all__ = [
    "KerasTensor",
    "KerasHistory",
    "Node",
    "flatten",
    "map_structure",
    "is_symbolic",
    "nodes_of",
    "symbolic_call",
    "describe",
    "check_tensor",
]


class KerasHistory(NamedTuple):
    """Where a symbolic tensor comes from: ``operation._inbound_nodes[node_index]``'s
    output number ``tensor_index``."""

    operation: object
    node_index: int
    tensor_index: int


class KerasTensor:
    """A symbolic tensor (Keras's ``KerasTensor``): what ``Input()`` and layers called on
    symbolic tensors return. It has no value; ``rnncore.Model(inputs, outputs)`` turns the
    calls that produced it into a model.

    ``shape`` includes the batch dimension (``None`` unless ``batch_size`` was given).
    """

    def __init__(self, shape, dtype="float32", name=None):
        self.shape = shape_tuple(shape, "KerasTensor: shape")
        self.dtype = str(dtype)
        self.name = name if name is not None else unique_name("keras_tensor")
        self._keras_history: KerasHistory | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def _input_layer(self):
        """The ``InputLayer`` this tensor is the output of, else None."""
        history = self._keras_history
        op = history.operation if history is not None else None
        return op if type(op).__name__ == "InputLayer" else None

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"{self!r} is symbolic (it has no value): build rnncore.Model(inputs, outputs) "
            f"and call the model on arrays"
        )

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


def flatten(structure) -> list:
    """The leaves of nested lists, tuples and dicts (dicts by sorted key, as Keras)."""
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flatten(item)]
    if isinstance(structure, dict):
        return [leaf for key in sorted(structure) for leaf in flatten(structure[key])]
    return [structure]


def map_structure(fn, structure):
    """``structure`` with ``fn`` applied to each leaf (lists, tuples and dicts kept)."""
    if isinstance(structure, (list, tuple)):
        return type(structure)(map_structure(fn, item) for item in structure)
    if isinstance(structure, dict):
        return {key: map_structure(fn, value) for key, value in structure.items()}
    return fn(structure)


def is_symbolic(*structures) -> bool:
    """Whether any leaf of ``structures`` is a :class:`KerasTensor`."""
    for s in structures:
        if isinstance(s, KerasTensor):
            return True
        if isinstance(s, (list, tuple, dict)) and any(
            isinstance(leaf, KerasTensor) for leaf in flatten(s)
        ):
            return True
    return False


class Node:
    """One call of an operation (a layer or a model) on symbolic tensors.

    ``args`` are the positional arguments (Keras: the inputs, one tensor or a list),
    ``kwargs`` the keyword arguments given (``initial_state``, ``mask``, ``training``...);
    ``outputs`` the flat list of output tensors and ``output_structure`` how the call
    returned them (one tensor, or a list).
    """

    __slots__ = ("operation", "args", "kwargs", "outputs", "output_structure", "input_tensors")

    def __init__(self, operation, args=(), kwargs=None, outputs=()):
        self.operation = operation
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.output_structure = outputs
        self.outputs = flatten(outputs)
        # Keras's order: the positional arguments, then the keyword ones by sorted name
        self.input_tensors = [
            t for t in flatten([list(self.args), self.kwargs]) if isinstance(t, KerasTensor)
        ]
        nodes = nodes_of(operation)
        nodes.append(self)
        for i, t in enumerate(self.outputs):
            t._keras_history = KerasHistory(operation, len(nodes) - 1, i)

    @property
    def is_input(self) -> bool:
        return not self.input_tensors

    @property
    def parent_nodes(self) -> list:
        return [
            t._keras_history.operation._inbound_nodes[t._keras_history.node_index]
            for t in self.input_tensors
        ]

    def __repr__(self) -> str:
        return f"<Node of {describe(self.operation)}>"


def nodes_of(operation) -> list:
    """``operation._inbound_nodes``, created empty on first use (a layer unpickled, or made
    before it had one)."""
    nodes = getattr(operation, "_inbound_nodes", None)
    if nodes is None:
        nodes = operation._inbound_nodes = []
    return nodes


def describe(operation) -> str:
    """``layer 'name' (Class)``, as errors name a layer."""
    return f"layer {getattr(operation, 'name', '?')!r} ({type(operation).__name__})"


def tensor_label(t: KerasTensor) -> str:
    """``name[node][tensor]`` of the call that produced ``t`` (Keras's summary notation)."""
    h = t._keras_history
    if h is None:
        return f"{t.name} (no history)"
    return f"{h.operation.name}[{h.node_index}][{h.tensor_index}]"


def check_tensor(t, what: str, owner: str, problem: str = "") -> None:
    """Refuse what is not a symbolic tensor, or one no call produced (dangling)."""
    if not isinstance(t, KerasTensor):
        problem = problem or "must be symbolic tensors (rnncore.Input, or layers called on them)"
        raise TypeError(f"{owner}: {what} {problem}, got {type(t).__name__} {t!r}")
    if t._keras_history is None:
        raise ValueError(
            f"{owner}: {what} include the dangling tensor {t!r}, which no rnncore.Input or "
            f"layer call produced"
        )


def _check_tensors(structure, what: str, owner: str) -> None:
    mixed = "mixes symbolic tensors and other values (every input of a call is symbolic)"
    for leaf in flatten(structure):
        check_tensor(leaf, what, owner, mixed)


def symbolic_call(operation, inputs, kwargs: dict):
    """Call ``operation`` on symbolic ``inputs`` (Keras's functional API).

    The operation builds from the input shapes (or checks them against its build), and
    gives its output shapes through ``operation._symbolic_shapes(input_shapes, kwargs)``;
    a shape error names the operation, the tensors it was called on and their shapes. The
    call is recorded as a :class:`Node`; returns the output tensor(s).
    """
    owner = describe(operation)
    # a mask of None entries (Keras records the masks a call found, often none) is no mask
    kwargs = {k: v for k, v in kwargs.items() if any(leaf is not None for leaf in flatten(v))}
    _check_tensors(inputs, "the inputs", owner)
    _check_arguments(operation, kwargs, owner)
    for key, value in kwargs.items():
        if is_symbolic(value):
            _check_tensors(value, f"argument {key}=", owner)
    shapes = map_structure(lambda t: t.shape, inputs)
    try:
        out_shapes = operation._symbolic_shapes(shapes, kwargs)
    except (ValueError, TypeError) as e:
        called_on = ", ".join(
            f"{tensor_label(t)} of shape {t.shape}" for t in flatten([inputs, kwargs]) if
            isinstance(t, KerasTensor)
        )  # fmt: skip
        raise type(e)(f"{owner} cannot be called on {called_on}: {e}") from None
    dtypes = getattr(operation, "_symbolic_dtypes", None)
    several = _several(out_shapes)
    shape_list = list(out_shapes) if several else [out_shapes]
    dtype_list = dtypes(len(shape_list)) if dtypes else [operation.dtype] * len(shape_list)
    tensors = [
        KerasTensor(shape, dtype, name=unique_name("keras_tensor"))
        for shape, dtype in zip(shape_list, dtype_list)
    ]
    outputs = tensors if several else tensors[0]
    Node(operation, (inputs,), kwargs, outputs)
    return outputs


def _check_arguments(operation, kwargs: dict, owner: str) -> None:
    """Refuse, when the call is recorded, an argument the layer's ``call`` does not take
    (it would fail only when the model runs)."""
    call = getattr(operation, "call", None)
    if call is None:
        return
    params = inspect.signature(call).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise TypeError(f"{owner}: call() has no argument(s) {', '.join(map(repr, unknown))}")


def _several(shapes) -> bool:
    """Whether ``shapes`` is a list of shapes rather than one shape."""
    return (
        isinstance(shapes, (list, tuple))
        and len(shapes) > 0
        and isinstance(shapes[0], (list, tuple))
    )
