"""A built model's layers written as an ONNX model: :func:`to_onnx`.

:func:`to_onnx` writes a built :class:`rnncore.Sequential` (read through its ``layers``,
``input_shape``, ``dtype``, ``name`` and its ``Input``'s dtype if any; opset 17 by
default, 14 at least), or a functional :class:`rnncore.Model` (:mod:`.export_functional`:
its inputs and outputs keep the model's names; merges, shared layers, ``initial_state``
tensors). The graph's input
is named ``input`` (``(batch, timesteps, features)``, or ``(batch, timesteps)`` ids for a
model starting with ``Embedding``) and has the model's input dtype: an integer ``Input``'s
own (int32 ids stay int32; cast inside the graph where an operator needs another), else
int64 for ids and the model's dtype for the rest (:meth:`.Exporter.model_input`); its
outputs are ``output`` and, with
``return_state`` on the last layer, the states (``h``, ``c``; ``h_forward``, ...;
``output_backward`` for ``Bidirectional(merge_mode=None)``). onnxruntime runs it with the
same outputs as ``model.predict`` (its recurrent kernels are float32 only).

Exported: ``SimpleRNN``, ``LSTM``, ``GRU`` (every activation rnncore has, ``go_backwards``,
``return_sequences``, ``return_state``, ``zero_output_for_mask``), ``Bidirectional`` (every
merge mode: concat, sum, mul, ave, None), ``Dense``, ``TimeDistributed`` (of any layer
exported here that returns one tensor and keeps no state: the layer on ``(batch * steps,
...)``, reshaped back; Dense and the activations on the whole input), ``Activation``,
``Softmax``, ``Dropout``, ``SpatialDropout1D`` and ``GaussianNoise`` (identities at
inference), the layers of :mod:`.export_layers`, and in functional models ``Attention`` /
``AdditiveAttention`` (:mod:`.export_attention`: every score mode, ``use_scale``, the query
and value masks, ``use_causal_mask``, ``return_attention_scores``; dropout is the identity).
A layer's second and later outputs in a functional model (Keras names them all after the
layer) take the names ``<name>_1``, ...

Masks (``Masking``, ``Embedding(mask_zero=True)``) are computed in the graph from the input
(``any(x != mask_value, axis=-1)``; ``ids != 0``) and follow Keras's propagation: passed on
by the layers that pass them (Dense, Activation, Dropout, TimeDistributed, recurrent layers
with ``return_sequences``, normalisations), consumed by ``GlobalAveragePooling1D`` (the mean
over the unmasked steps, NaN for a fully masked sample, as predict), dropped by the layers
Keras drops them in. The recurrent layers reproduce Keras's masked-step rule exactly for
*any* mask — right padding, left padding, holes, fully masked rows — with no Loop or Scan
(:mod:`.export_recurrent` has the construction); nothing is assumed about the data.

Stateful layers become a model with state inputs and outputs: ``<layer>_initial_h`` (and
``_initial_c``) in, ``<layer>_Y_h`` (``_Y_c``) out, ``(batch, units)`` (the sub-layers'
names for a ``Bidirectional``: ``forward_lstm_initial_h``, ...); feed zeros to start, then
each call's outputs to the next call, as a stateful model carries them.

Refused (:class:`~rnncore.errors.UnsupportedModelError`, naming the layer and why):
``Softmax`` receiving a mask, a layer returning several outputs before the last layer of a
Sequential, layers of another dtype than the model's, ``TimeDistributed`` of a stateful
layer or of one returning several outputs, ``Dot``, explicit ``mask=`` arguments, nested
models, masked ``Multiply`` /
``Maximum`` / ``Minimum`` (masks change their values), and layers not listed. A float64
model is written as a float64 graph, which onnxruntime's recurrent kernels do not run.
"""

from __future__ import annotations

import os

import numpy as np

from ..._version import __version__
from ...errors import UnsupportedModelError
from ..archive import optional_import
from .export_functional import export_functional, graph_output_names
from .export_graph import Exporter
from .export_layers import export_layer, reads_ids

__all__ = ["to_onnx"]


def to_onnx(model, path=None, *, opset: int = 17, input_name: str = "input"):
    """Write a built model (an :class:`rnncore.Sequential` or a functional
    :class:`rnncore.Model`) as an ONNX model; returns the ``ModelProto``.

    ``path`` (optional) is where to write it. The model must be built (its input shape
    known). The graph's input is ``(batch, timesteps, features)`` (ids ``(batch,
    timesteps)`` before an ``Embedding``), of the model's input dtype (an integer ``Input``'s
    own; else int64 ids or the model's dtype); dimensions unknown to the model stay
    symbolic.
    Outputs: ``output``, plus the states of a last recurrent layer with ``return_state``,
    plus ``<layer>_Y_h`` (``_Y_c``) of each stateful layer, whose states come in as the
    inputs ``<layer>_initial_h`` (``_initial_c``). Needs the ``onnx`` package.
    """
    onnx = optional_import("onnx", "rnncore.interop.to_onnx")
    if not model.built or model.input_shape is None:
        raise ValueError(
            "to_onnx: the model must be built with a known input shape "
            "(start it with rnncore.Input(shape=(timesteps, features)))"
        )
    if opset < 14:
        raise ValueError(f"to_onnx: opset {opset} is too old; use 14 or newer")
    dtype = np.dtype(model.dtype)
    ex = Exporter(onnx, dtype)
    ex.opset = opset
    if hasattr(model, "_graph"):  # a functional model
        ex.reserve([t.name for t in model._graph.inputs] + graph_output_names(model))
        ex.batch = model._graph.inputs[0].shape[0]
        inputs, outputs = export_functional(ex, model)
    else:
        inputs, outputs = _sequential(ex, model, input_name)
    outputs += ex.outputs
    graph_outputs = []
    for name, tensor, shape in outputs:
        ex.nodes.append(
            onnx.helper.make_node("Identity", [tensor], [name], name=ex.name("Identity_out"))
        )
        graph_outputs.append(onnx.helper.make_tensor_value_info(name, ex.elem, list(shape)))
    inputs += [(name, ex.elem, shape) for name, shape in ex.inputs]
    graph_inputs = [
        onnx.helper.make_tensor_value_info(name, elem, list(dims)) for name, elem, dims in inputs
    ]
    graph = onnx.helper.make_graph(
        ex.nodes, model.name, graph_inputs, graph_outputs, ex.initializers
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="rnncore",
        producer_version=__version__,
    )
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


#: the names of a Sequential's outputs (reserved: no tensor of the graph takes them)
_OUTPUT_NAMES = ("output", "output_backward", "h", "c", "h_forward", "c_forward", "h_backward",
                 "c_backward")  # fmt: skip


def _sequential(ex: Exporter, model, input_name: str):
    """The layers of a Sequential one after the other: ``(graph inputs, outputs)``."""
    layers = model.layers
    if not layers:
        raise ValueError("to_onnx: the model has no layers")
    ex.reserve((input_name,) + _OUTPUT_NAMES)
    in_shape = tuple(model.input_shape)
    ex.batch = in_shape[0]
    placeholders = ["batch", "timesteps"] + [f"dim{i}" for i in range(2, len(in_shape))]
    dims = [p if d is None else d for p, d in zip(placeholders, in_shape)]
    # the Input's dtype, when the model starts with one (a model read by duck typing may not)
    input_layer = getattr(model, "_input_layer", None)
    given = ex.dtype if input_layer is None else input_layer.dtype
    in_elem = ex.model_input(input_name, given, ids=reads_ids(layers[0]))
    x, mask, results = input_name, None, None
    for layer in layers:
        if len(results or ()) > 1:
            raise UnsupportedModelError(
                f"to_onnx: a layer before {layer.name!r} returns several outputs "
                f"(return_state or merge_mode=None); only the last layer may"
            )
        results, mask = export_layer(ex, layer, x, mask)
        x = results[0][1]
    shape = in_shape
    for layer in layers:
        shape = layer.compute_output_shape(shape)
    shapes = list(shape) if shape and isinstance(shape[0], tuple) else [shape]
    if len(shapes) != len(results):
        raise AssertionError(f"to_onnx: {len(results)} outputs but {len(shapes)} shapes")
    outputs = [(nm, t, s) for (nm, t), s in zip(results, shapes)]
    return [(input_name, in_elem, dims)], outputs
