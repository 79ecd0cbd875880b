"""SimpleRNN / LSTM / GRU / Bidirectional layers as ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes,
with Keras's mask rule and carried states (used by :func:`~.export.to_onnx`).

Masks. Keras skips a masked step: the states keep their values and the step's output repeats
the previous output (zeros before the first used step); ``zero_output_for_mask`` (forced by
``Bidirectional``) outputs zeros there instead. ONNX's nodes know only ``sequence_lens``
(the first ``n`` steps used). The export is exact for *every* mask, not only right padding,
with no Loop or Scan: skipping a step leaves the states alone, so the states after the used
steps are those of the node run on the used steps alone, moved to the front:

* ``n_b = sum_t m[b, t]`` (``sequence_lens``), ``c[b, t] = sum_{s<=t} m[b, s]`` (CumSum);
* ``order[b] = argsort_t(t + T * (1 - m[b, t]))`` (TopK, smallest first, keys distinct):
  the used steps in time order, then the others; ``x'[b, j] = x[b, order[b, j]]``;
* the node runs on ``x'`` with ``sequence_lens = n``; its ``Y[j]`` is the output after the
  ``j``-th used step (forward) or after the used steps ``j .. n - 1`` (reverse);
* Keras's output at step ``t``: forward ``Y[c_t - 1]`` (zero when ``c_t = 0``), backward
  ``Y[c_t - m_t]`` (zero when ``c_t - m_t = n``), gathered per row (GatherND);
* the final states are ``Y_h`` (``Y_c``) where ``n > 0``, else the initial states (ONNX's
  ``Y_h`` is zero for ``n = 0``); the last output is ``Y_h`` where ``n > 0``, else zero.

Right padding makes ``order`` the identity; holes and left padding are exact as well.

LSTM variants. ``use_peepholes``: the node's input ``P`` (``num_directions, 3*units``) in
ONNX's order ``p_i, p_o, p_f`` (the layer's rows are ``p_i, p_f, p_o``); ``cell_clip``: the
attribute ``clip`` (onnxruntime clips the gates' pre-activations, as the core does);
``input_forget``: ``input_forget=1`` (``f = 1 - i``); ``output_activation``: the third (``h``)
of the direction's ``activations``. ``projection_units`` is refused: ONNX's LSTM has no
output projection (its recurrence would have to run on the projected ``h``).

Stateful layers. Each stateful (sub-)layer ``L`` gets graph inputs ``L_initial_h`` (and
``L_initial_c`` for LSTM), ``(batch, units)``, and outputs ``L_Y_h`` (``L_Y_c``): the
states after the call, to feed as the next call's initial states (zeros to start, as
``reset_states``).
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedModelError
from ...layers.recurrent import GRU, LSTM, SimpleRNN
from ...layers.wrappers import Bidirectional
from .export_graph import Exporter
from .recurrent import GATES, KERAS_TO_LSTM, ONNX_ACTIVATIONS, reorder

__all__ = ["export_recurrent", "RECURRENT"]

RECURRENT = (SimpleRNN, LSTM, GRU, Bidirectional)
_OPS = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
#: the cell options the export writes; a layer with another option is refused by its name
_KNOWN_OPTIONS = {"activation", "recurrent_activation", "reset_after", "cell_clip",
                  "input_forget", "output_activation"}  # fmt: skip
#: the options ONNX sets once per node (attributes), so both directions must agree on them
_NODE_OPTIONS = ("reset_after", "cell_clip", "input_forget", "use_peepholes", "projection_units")
_INT64, _INT32 = 7, 6  # onnx.TensorProto element types


def export_recurrent(ex: Exporter, layer, x: str, mask: str | None, initial=None):
    """``(outputs, output mask)`` of a recurrent layer on ``x`` (``(batch, steps,
    features)``): ``outputs`` are ``(name, tensor)`` in the layer's return order (the
    output, the second output of ``merge_mode=None``, the states of ``return_state``).
    ``initial``: the call's initial states (``(batch, units)`` tensors in Keras's order:
    h (, c), then the backward layer's for a Bidirectional), or None."""
    if isinstance(layer, Bidirectional):
        subs = [layer.forward_layer, layer.backward_layer]
        _check_pair(layer, *subs)
        direction = "bidirectional"
    else:
        subs = [layer]
        direction = "reverse" if layer.go_backwards else "forward"
    op, weights, attrs, peephole = _node_parts(ex, subs)
    name = layer.name
    lens = None
    if mask is not None:
        plan = _mask_plan(ex, mask)
        x = ex.node("GatherND", [x, plan["order"]], base=f"{name}/used_first", batch_dims=1)
        lens = plan["lens"]
    xt = ex.node("Transpose", [x], base=f"{name}/x_time_major", perm=[1, 0, 2])
    initial = _initial_states(ex, subs, initial)
    n_states = len(subs[0]._state_names)
    node_in = [xt] + weights + [lens or ""]
    node_in += [_stack(ex, s, name) for s in initial] or [""] * n_states
    node_in.append(peephole)  # LSTM's input P comes after initial_h and initial_c
    while node_in[-1] == "":
        node_in.pop()
    Y, *finals = ex.node(
        op, node_in, n_outputs=1 + n_states, base=name, direction=direction, **attrs
    )
    outs, states = [], []
    for d, sub in enumerate(subs):
        reverse = direction == "reverse" or d == 1
        out, fin = _direction(ex, sub, Y, finals, d, reverse, mask, initial)
        if not isinstance(layer, Bidirectional) and sub.go_backwards and sub.return_sequences:
            out = ex.reverse(out, 1, base=f"{sub.name}/output")  # Keras: processing order
        outs.append(out)
        states.append(fin)
        if sub.stateful:
            for s, f in zip(sub._state_names, fin):
                ex.graph_output(f"{sub.name}_Y_{s}", f, (ex.batch_dim(sub), sub.units))
    out_mask = mask if layer.return_sequences else None
    if not isinstance(layer, Bidirectional):
        result = [("output", outs[0])]
        if layer.return_state:
            result += list(zip(layer._state_names, states[0]))
        return result, out_mask
    result = _merge(ex, outs, layer.merge_mode, name)
    if layer.return_state:
        for side, fin in zip(("forward", "backward"), states):
            result += [(f"{s}_{side}", f) for s, f in zip(subs[0]._state_names, fin)]
    return result, out_mask


def _check_pair(layer, fwd, bwd):
    if fwd.go_backwards or not bwd.go_backwards:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: only a forward layer "
            f"with a go_backwards backward layer can be exported"
        )
    if type(fwd) is not type(bwd) or fwd.units != bwd.units:
        raise UnsupportedModelError(
            f"to_onnx: layer {layer.name!r}: the forward and "
            f"backward layers must be of the same kind and size"
        )
    for option in _NODE_OPTIONS:  # one ONNX attribute (or P input) for both directions
        if getattr(fwd, option, None) != getattr(bwd, option, None):
            raise UnsupportedModelError(
                f"to_onnx: layer {layer.name!r}: the forward and backward layers differ in "
                f"{option} ({getattr(fwd, option, None)!r} and {getattr(bwd, option, None)!r}), "
                f"which ONNX sets once for both directions"
            )


def _node_parts(ex: Exporter, layers: list):
    """The node's op, its W, R, B inputs (ONNX layouts, one row per direction), its
    attributes and its peephole input P (LSTM; ``""`` when none)."""
    first = layers[0]
    unknown = set(first._cell_options) - _KNOWN_OPTIONS
    if first._cell not in _OPS or unknown:
        what = f"cell {first._cell!r}" if first._cell not in _OPS else f"options {unknown}"
        raise UnsupportedModelError(
            f"to_onnx: layer {first.name!r} ({type(first).__name__}): the {what} "
            f"cannot be exported (no ONNX RNN/LSTM/GRU attribute for it)"
        )
    if getattr(first, "projection_units", None) is not None:
        raise UnsupportedModelError(
            f"to_onnx: layer {first.name!r} (LSTM): projection_units="
            f"{first.projection_units} cannot be exported: ONNX's LSTM has no output "
            f"projection (PyTorch's proj_size)"
        )
    op = _OPS[first._cell]
    G = GATES[op]
    H = first.units
    Ws, Rs, Bs, acts, alphas, betas = [], [], [], [], [], []
    order = KERAS_TO_LSTM if op == "LSTM" else tuple(range(G))
    for layer in layers:
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
        elif op == "GRU":  # f, g
            names = [layer.recurrent_activation, layer.activation]
        else:  # f, g, h: h is the activation of c_t in h_t
            h = layer.output_activation or layer.activation
            names = [layer.recurrent_activation, layer.activation, h]
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
    if op == "LSTM" and first.cell_clip is not None:
        attrs["clip"] = float(first.cell_clip)
    if op == "LSTM" and first.input_forget:
        attrs["input_forget"] = 1
    W = np.stack(Ws)
    inputs = [ex.const(f"{first.name}/W", W), ex.const(f"{first.name}/R", np.stack(Rs))]
    if any(b is not None for b in Bs):
        Bs = [np.zeros(2 * G * H, W.dtype) if b is None else b for b in Bs]
        inputs.append(ex.const(f"{first.name}/B", np.stack(Bs)))
    else:
        inputs.append("")
    peephole = ""
    if op == "LSTM" and first.use_peepholes:  # rows p_i, p_f, p_o -> ONNX's p_i, p_o, p_f
        P = np.stack([layer.peephole.value[[0, 2, 1]].reshape(-1) for layer in layers])
        peephole = ex.const(f"{first.name}/P", P)
    return op, inputs, attrs, peephole


def _initial_states(ex: Exporter, subs, given) -> list:
    """Per state (h, c): the ``(batch, units)`` tensor of each direction: ``given`` (the
    call's ``initial_state``), or the graph inputs of stateful layers; else an empty list
    (the node starts from zeros)."""
    n = len(subs[0]._state_names)
    if given is not None:
        if subs[0].stateful:
            raise UnsupportedModelError(
                f"to_onnx: layer {subs[0].name!r} is stateful and called with initial_state"
            )
        return [[given[d * n + k] for d in range(len(subs))] for k in range(n)]
    if not subs[0].stateful:
        return []
    return [
        [ex.graph_input(f"{sub.name}_initial_{s}", (ex.batch_dim(sub), sub.units)) for sub in subs]
        for s in subs[0]._state_names
    ]


def _stack(ex: Exporter, per_direction: list, name: str) -> str:
    """``(num_directions, batch, units)`` from one ``(batch, units)`` tensor per direction."""
    parts = [ex.unsqueeze(t, [0], base=f"{name}/initial") for t in per_direction]
    return parts[0] if len(parts) == 1 else ex.node("Concat", parts, base=f"{name}/initial", axis=0)


def _mask_plan(ex: Exporter, mask: str) -> dict:
    """The tensors every recurrent layer reading ``mask`` (bool ``(batch, steps)``) shares,
    made once per mask (the module docstring has the equations)."""
    key = ("plan", mask)
    if key in ex.cache:
        return ex.cache[key]
    m = ex.node("Cast", [mask], base="mask/m", to=_INT64)
    c = ex.node("CumSum", [m, ex.const("axis", np.asarray(1, np.int64))], base="mask/c")
    n = ex.node("ReduceSum", [m, ex.ints("axes", [1])], base="mask/n", keepdims=0)
    steps = ex.node("Gather", [ex.node("Shape", [mask]), ex.ints("i", [1])], base="mask/T")
    t = ex.node(
        "Range",
        [
            ex.const("zero", np.asarray(0, np.int64)),
            ex.squeeze(steps, [0]),
            ex.const("one", np.asarray(1, np.int64)),
        ],
        base="mask/t",
    )
    one = ex.const("one", np.asarray(1, np.int64))
    keys = ex.node("Add", [t, ex.node("Mul", [ex.node("Sub", [one, m]), steps])], base="mask/key")
    _, order = ex.node(
        "TopK", [keys, steps], n_outputs=2, base="mask/order", axis=1, largest=0, sorted=1
    )
    n_col = ex.unsqueeze(n, [1], base="mask/n")
    before = ex.node("Sub", [c, m], base="mask/before")  # used steps before t: c_t - m_t
    plan = {
        "m": m,
        "order": ex.unsqueeze(order, [2], base="mask/order"),
        "lens": ex.node("Cast", [n], base="mask/lens", to=_INT32),
        "some": ex.node("Greater", [n_col, ex.const("zero", np.asarray(0, np.int64))]),
        # forward: Y[c_t - 1], used where c_t > 0
        "fwd_at": ex.unsqueeze(
            ex.node("Max", [ex.node("Sub", [c, one]), ex.const("zero", np.asarray(0, np.int64))]),
            [2],
        ),
        "fwd_ok": ex.unsqueeze(
            ex.node("Greater", [c, ex.const("zero", np.asarray(0, np.int64))]), [2]
        ),
        # reverse: Y[c_t - m_t], used where c_t - m_t < n (always a step index: <= t)
        "rev_at": ex.unsqueeze(before, [2]),
        "rev_ok": ex.unsqueeze(ex.node("Less", [before, n_col]), [2]),
        "keep": ex.unsqueeze(mask, [2], base="mask/keep"),
    }
    ex.cache[key] = plan
    return plan


def _direction(ex: Exporter, sub, Y, finals, d, reverse, mask, initial):
    """One direction's output (Keras's, in time order) and final states."""
    name = sub.name
    states = [ex.take(f, d, 0, base=f"{name}/{s}") for f, s in zip(finals, sub._state_names)]
    if mask is None:
        last = states[0]
    else:
        plan = _mask_plan(ex, mask)
        starts = [per[d] for per in initial] or [ex.scalar("zero", 0)] * len(states)
        states = [
            ex.node("Where", [plan["some"], s, s0], base=f"{name}/{nm}")
            for s, s0, nm in zip(states, starts, sub._state_names)
        ]
        last = ex.zeros_where_not(plan["some"], ex.take(finals[0], d, 0), base=f"{name}/last")
    if not sub.return_sequences:
        return last, states
    y = ex.node("Transpose", [ex.take(Y, d, 1)], base=f"{name}/y", perm=[1, 0, 2])
    if mask is not None:
        at, ok = (plan["rev_at"], plan["rev_ok"]) if reverse else (plan["fwd_at"], plan["fwd_ok"])
        y = ex.node("GatherND", [y, at], base=f"{name}/y", batch_dims=1)
        y = ex.zeros_where_not(ok, y, base=f"{name}/y")
        if sub.zero_output_for_mask:
            y = ex.zeros_where_not(plan["keep"], y, base=f"{name}/y")
    return y, states


def _merge(ex: Exporter, parts, mode, name):
    """Bidirectional's merged output(s), as ``(name, tensor)``: y = f(forward, backward)."""
    if mode is None:
        return [("output", parts[0]), ("output_backward", parts[1])]
    if mode == "concat":
        return [("output", ex.node("Concat", parts, base=f"{name}/output", axis=-1))]
    if mode == "mul":
        return [("output", ex.node("Mul", parts, base=f"{name}/output"))]
    y = ex.node("Add", parts, base=f"{name}/output")
    if mode == "ave":  # (y_f + y_b) / 2, as rnncore computes it
        y = ex.node("Div", [y, ex.scalar(f"{name}/two", 2)], base=f"{name}/output")
    return [("output", y)]
