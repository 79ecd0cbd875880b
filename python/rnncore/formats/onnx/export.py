"""A built model's layers written as an ONNX model: :func:`to_onnx`.

:func:`to_onnx` writes a built model (an :class:`rnncore.Sequential`, read through its
``layers``, ``input_shape``, ``dtype`` and ``name``) of ``SimpleRNN``, ``LSTM``, ``GRU``,
``Bidirectional``, ``Dense``, ``TimeDistributed(Dense)``, ``Activation``, ``Softmax`` and
``Dropout`` layers (opset 17 by default; input ``(batch, timesteps, features)`` named
``input``; outputs named ``output`` and, with ``return_state``, the states). onnxruntime
runs it with the same outputs as ``model.predict`` (onnxruntime's recurrent kernels are
float32 only). ``Masking`` (Keras's masked-step rule has no ONNX counterpart) and
``stateful`` layers are refused.
"""

from __future__ import annotations

import os

import numpy as np

from ..._version import __version__
from ...errors import UnsupportedModelError
from ...layers.core import Activation, Dense, Dropout, Masking, Softmax
from ...layers.recurrent import GRU, LSTM, SimpleRNN
from ...layers.wrappers import Bidirectional, TimeDistributed
from ..archive import optional_import
from .recurrent import GATES, KERAS_TO_LSTM, ONNX_ACTIVATIONS, reorder

__all__ = ["to_onnx"]


class _Exporter:
    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes = []
        self.initializers = []
        self.dtype = np.dtype(dtype)
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

    def const(self, base: str, value) -> str:
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

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

    def ints(self, base, values):
        return self.const(base, np.array(values, np.int64))


def to_onnx(model, path=None, *, opset: int = 17, input_name: str = "input"):
    """Write a built model (an :class:`rnncore.Sequential`) as an ONNX model; returns the
    ``ModelProto``.

    ``path`` (optional) is where to write it. The model must be built (its input feature
    size known). The graph's input is ``(batch, timesteps, features)``; dimensions unknown
    to the model stay symbolic. Outputs: ``output``, plus the states of a last recurrent
    layer with ``return_state``. Needs the ``onnx`` package.
    """
    onnx = optional_import("onnx", "rnncore.interop.to_onnx")
    if not model.built or model.input_shape is None or model.input_shape[-1] is None:
        raise ValueError(
            "to_onnx: the model must be built with a known input feature size "
            "(start it with rnncore.Input(shape=(timesteps, features)))"
        )
    if opset < 14:
        raise ValueError(f"to_onnx: opset {opset} is too old; use 14 or newer")
    layers = model.layers
    if not layers:
        raise ValueError("to_onnx: the model has no layers")
    dtype = np.dtype(model.dtype)
    ex = _Exporter(onnx, dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    in_shape = list(model.input_shape)
    dims = [
        "batch" if in_shape[0] is None else in_shape[0],
        "timesteps" if in_shape[1] is None else in_shape[1],
    ] + in_shape[2:]
    x = input_name
    outputs: list[tuple[str, str]] = []
    last = len(layers) - 1
    for k, layer in enumerate(layers):
        if layer.dtype != dtype.name:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} has dtype {layer.dtype}, the model {dtype.name}"
            )
        if isinstance(layer, (Dropout,)):
            continue
        if isinstance(layer, Masking):
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} (Masking) cannot be exported: Keras's mask "
                f"rule (a masked step keeps the state and repeats the output) has no ONNX "
                f"equivalent"
            )
        if isinstance(layer, TimeDistributed):
            inner = layer.layer
            if not isinstance(inner, (Dense, Activation, Dropout)):
                raise UnsupportedModelError(
                    f"to_onnx: layer {layer.name!r}: TimeDistributed({type(inner).__name__}) "
                    f"is not supported (TimeDistributed of Dense, Activation, Dropout)"
                )
            layer = inner
            if isinstance(layer, Dropout):
                continue
        if isinstance(layer, Dense):
            y = ex.node("MatMul", [x, ex.const(f"{layer.name}/kernel", layer.kernel.value)])
            if layer.bias is not None:
                y = ex.node("Add", [y, ex.const(f"{layer.name}/bias", layer.bias.value)])
            x = ex.activation(y, layer.activation, layer.name)
        elif isinstance(layer, Activation):
            x = ex.activation(x, layer.activation, layer.name)
        elif isinstance(layer, Softmax):
            axis = layer.axis
            if isinstance(axis, (list, tuple)):
                if len(axis) != 1:
                    raise UnsupportedModelError(
                        f"to_onnx: Softmax over several axes {axis} is not supported"
                    )
                axis = axis[0]
            x = ex.node("Softmax", [x], base=layer.name, axis=int(axis))
        elif isinstance(layer, (SimpleRNN, LSTM, GRU)):
            x, states = _export_rnn(ex, layer, x, k == last)
            outputs += states
        elif isinstance(layer, Bidirectional):
            x, states, second = _export_bidirectional(ex, layer, x, k == last)
            if second is not None:
                outputs.append(("output_backward", second))
            outputs += states
        else:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} ({type(layer).__name__}) is not supported"
            )
    outputs.insert(0, ("output", x))
    shape = tuple(model.input_shape)
    for layer in layers:
        shape = layer.compute_output_shape(shape)
    shapes = list(shape) if shape and isinstance(shape[0], tuple) else [shape]
    if len(shapes) != len(outputs):
        raise AssertionError(f"to_onnx: {len(outputs)} outputs but {len(shapes)} shapes")
    graph_outputs = []
    for (name, tensor), shape in zip(outputs, shapes):
        ex.nodes.append(
            onnx.helper.make_node("Identity", [tensor], [name], name=ex.name("Identity_out"))
        )
        graph_outputs.append(onnx.helper.make_tensor_value_info(name, elem, list(shape)))
    graph = onnx.helper.make_graph(
        ex.nodes,
        model.name,
        [onnx.helper.make_tensor_value_info(input_name, elem, dims)],
        graph_outputs,
        ex.initializers,
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


def _rnn_node_parts(ex: _Exporter, layers: list):
    """W, R, B (ONNX layouts, one row per direction) and the node's attributes."""
    first = layers[0]
    op = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[first._cell]
    G = GATES[op]
    H = first.units
    Ws, Rs, Bs, acts, alphas, betas = [], [], [], [], [], []
    order = KERAS_TO_LSTM if op == "LSTM" else tuple(range(G))
    for layer in layers:
        if layer.stateful:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} is stateful; states "
                f"carried between calls cannot be exported"
            )

        Ws.append(reorder(layer.kernel.value.T, G, order))
        Rs.append(reorder(layer.recurrent_kernel.value.T, G, order))
        b = None if layer.bias is None else layer.bias.value
        if b is None:
            Bs.append(None)
        elif op == "GRU" and layer.reset_after:
            Bs.append(np.concatenate([b[0], b[1]]))
        else:
            Bs.append(np.concatenate([reorder(b, G, order), np.zeros_like(b)]))
        if op == "RNN":
            names = [layer.activation]
        else:  # f, g (and h for LSTM)
            names = [layer.recurrent_activation] + [layer.activation] * (G == 4 and 2 or 1)
        for n in names:
            onnx_name, params = ONNX_ACTIVATIONS[n]
            acts.append(onnx_name)
            if params:
                alphas.append(params[0])
                betas.append(params[1])
    attrs = {"hidden_size": H, "activations": acts}
    if alphas:
        attrs["activation_alpha"] = alphas
        attrs["activation_beta"] = betas
    if op == "GRU":
        attrs["linear_before_reset"] = int(first.reset_after)
    W = np.stack(Ws)
    inputs = [ex.const(f"{first.name}/W", W), ex.const(f"{first.name}/R", np.stack(Rs))]
    if any(b is not None for b in Bs):
        Bs = [np.zeros(2 * G * H, W.dtype) if b is None else b for b in Bs]
        inputs.append(ex.const(f"{first.name}/B", np.stack(Bs)))
    return op, inputs, attrs


def _export_rnn(ex: _Exporter, layer, x: str, is_last: bool):
    op, inputs, attrs = _rnn_node_parts(ex, [layer])
    if layer.go_backwards:
        attrs["direction"] = "reverse"
    n_out = 3 if op == "LSTM" else 2
    xt = ex.node("Transpose", [x], base=f"{layer.name}/x_time_major", perm=[1, 0, 2])
    outs = ex.node(op, [xt] + inputs, n_outputs=n_out, base=layer.name, **attrs)
    Y, states = outs[0], outs[1:]
    zero = ex.ints(f"{layer.name}/axis0", [0])
    if layer.return_sequences:
        y = ex.node("Squeeze", [Y, ex.ints(f"{layer.name}/axis1", [1])], base=f"{layer.name}/y")
        if layer.go_backwards:  # Keras: the output sequence in processing order
            y = ex.node(
                "Slice",
                [
                    y,
                    ex.ints(f"{layer.name}/start", [-1]),
                    ex.ints(f"{layer.name}/end", [-(2**62)]),
                    zero,
                    ex.ints(f"{layer.name}/step", [-1]),
                ],
                base=f"{layer.name}/y",
            )
        out = ex.node("Transpose", [y], base=f"{layer.name}/output", perm=[1, 0, 2])
    else:
        out = ex.node("Squeeze", [states[0], zero], base=f"{layer.name}/output")
    extra = []
    if layer.return_state:
        if not is_last:
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r} has return_state but is not the last layer"
            )
        for nm, s in zip(("h", "c"), states):
            extra.append((nm, ex.node("Squeeze", [s, zero], base=f"{layer.name}/{nm}")))
    return out, extra


def _export_bidirectional(ex: _Exporter, layer, x: str, is_last: bool):
    fwd, bwd = layer.forward_layer, layer.backward_layer
    if fwd.go_backwards or not bwd.go_backwards:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: only a forward layer "
            f"with a go_backwards backward layer can be exported"
        )
    if (
        type(fwd) is not type(bwd)
        or fwd.units != bwd.units
        or (getattr(fwd, "reset_after", None) != getattr(bwd, "reset_after", None))
    ):
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: the forward and "
            f"backward layers must be of the same kind and size"
        )
    op, inputs, attrs = _rnn_node_parts(ex, [fwd, bwd])
    attrs["direction"] = "bidirectional"
    n_out = 3 if op == "LSTM" else 2
    name = layer.name
    xt = ex.node("Transpose", [x], base=f"{name}/x_time_major", perm=[1, 0, 2])
    outs = ex.node(op, [xt] + inputs, n_outputs=n_out, base=name, **attrs)
    Y, states = outs[0], outs[1:]
    mode = layer.merge_mode
    second = None
    if layer.return_sequences:  # Y: (T, 2, B, H)
        if mode == "concat":
            y = ex.node("Transpose", [Y], base=f"{name}/y", perm=[2, 0, 1, 3])
            out = ex.node(
                "Reshape", [y, ex.ints(f"{name}/shape", [0, 0, -1])], base=f"{name}/output"
            )
        else:
            parts = [_direction(ex, Y, d, 1, name) for d in (0, 1)]
            parts = [ex.node("Transpose", [p], base=f"{name}/y", perm=[1, 0, 2]) for p in parts]
            out, second = _merge(ex, parts, mode, name)
    else:  # Y_h: (2, B, H)
        Yh = states[0]
        if mode == "concat":
            y = ex.node("Transpose", [Yh], base=f"{name}/y", perm=[1, 0, 2])
            out = ex.node("Reshape", [y, ex.ints(f"{name}/shape", [0, -1])], base=f"{name}/output")
        else:
            parts = [_direction(ex, Yh, d, 0, name) for d in (0, 1)]
            out, second = _merge(ex, parts, mode, name)
    if second is not None and not is_last:
        raise UnsupportedModelError(
            f"to_onnx: layer {name!r} with merge_mode=None must be the last layer"
        )
    extra = []
    if layer.return_state:
        if not is_last:
            raise UnsupportedModelError(
                f"to_onnx: layer {name!r} has return_state but is not the last layer"
            )
        for d, side in ((0, "forward"), (1, "backward")):
            for nm, s in zip(("h", "c"), states):
                extra.append((f"{nm}_{side}", _direction(ex, s, d, 0, name)))
    return out, extra, second


def _direction(ex, t, d, axis, name):
    part = ex.node(
        "Slice",
        [
            t,
            ex.ints(f"{name}/start", [d]),
            ex.ints(f"{name}/end", [d + 1]),
            ex.ints(f"{name}/axis", [axis]),
        ],
        base=f"{name}/dir{d}",
    )
    return ex.node("Squeeze", [part, ex.ints(f"{name}/axis", [axis])], base=f"{name}/dir{d}")


def _merge(ex, parts, mode, name):
    if mode is None:
        return parts[0], parts[1]
    if mode == "mul":
        return ex.node("Mul", parts, base=f"{name}/output"), None
    y = ex.node("Add", parts, base=f"{name}/output")
    if mode == "ave":
        half = ex.const(f"{name}/half", np.asarray(0.5, ex.dtype))
        y = ex.node("Mul", [y, half], base=f"{name}/output")
    return y, None
