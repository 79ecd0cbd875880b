"""NumPy-in / NumPy-out recurrent layers: plain functions over the compiled core.

Shapes and layouts are Keras's (``B`` batch, ``T`` timesteps, ``D`` input_dim, ``H`` units):

* ``x``: ``(B, T, D)``
* ``kernel``: ``(D, G*H)``, ``recurrent_kernel``: ``(H, G*H)``, with the gates in Keras's
  order: SimpleRNN ``G=1``; LSTM ``G=4`` as ``i, f, c, o``; GRU ``G=3`` as ``z, r, h``
* ``bias``: ``(G*H,)``, or ``(2, 3*H)`` for a GRU with ``reset_after=True`` (input and
  recurrent rows); ``None`` when the layer has no bias
* ``initial_state``: ``h`` (or ``[h, c]`` for LSTM), each ``(B, H)``; zeros when ``None``
* ``mask``: ``(B, T)`` booleans, ``True`` where a step is used. A masked step leaves the
  states unchanged and repeats the previous output (zeros before the first used step)

Every function returns ``(output, *final_states)``: ``output`` is ``(B, T, H)`` when
``return_sequences`` else ``(B, H)``; the final states are ``h`` (and ``c`` for LSTM). With
``go_backwards`` time runs from the last step to the first and the output sequence is in
that processing order, as in Keras.

All arrays must share one floating dtype, float32 or float64, which is also the dtype of the
results; nothing is converted silently. A Python list (or any non-array) is converted by
NumPy, which makes floats float64: given with float32 arrays, it is refused with a message
saying so. Non-contiguous inputs are accepted (copied once). Inputs are never modified. The
GIL is released while the core computes.

``quantize="bf16"`` or ``"int8"`` (:func:`simple_rnn`, :func:`lstm`, :func:`gru`,
:func:`dense`, :func:`stream`; inference only, float32 only) runs with the kernel and the
recurrent kernel in low precision (:mod:`rnncore.quantization`): given as float32 arrays they
are quantized for the call (round to nearest even bf16; int8 with one scale per column), or
given already quantized as :class:`rnncore.quantization.Quantized`. Biases, an LSTM's
peepholes and projection, states, activations and the accumulation stay float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import _core, activations
from .quantization import Quantized, check_mode
from .quantization import quantize as _quantize

__all__ = [
    "simple_rnn",
    "lstm",
    "gru",
    "dense",
    "layer_norm",
    "dense_backward",
    "embedding_backward",
    "backward",
    "stream",
    "Workspace",
    "Gradients",
    "ACTIVATIONS",
]

#: Activation names accepted for ``activation`` and ``recurrent_activation``: the one table
#: of :mod:`rnncore.activations`.
ACTIVATIONS = activations.NAMES


def _array(a, name: str) -> np.ndarray:
    """A C-contiguous view of ``a`` (a copy only when it is not contiguous already)."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous:
        return a
    try:
        return np.ascontiguousarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected an array, got {type(a).__name__} ({e})") from None


def _arrays(named: dict) -> dict:
    """``{name: value}`` as C-contiguous arrays; a ``bias`` of ``None`` stays ``None``.

    The first entry gives the call its dtype, as in the core. NumPy turns a list of Python
    floats into float64: mixed with float32 arrays, the core would refuse a dtype the caller
    never wrote, so the refusal says where the float64 came from.
    """
    out = {n: None if a is None and n == "bias" else _array(a, n) for n, a in named.items()}
    ref, dtype = next(iter(out)), next(iter(out.values())).dtype
    for name, got in out.items():
        if got is None or got.dtype.kind != "f" or dtype.kind != "f" or got.dtype == dtype:
            continue
        listed = [n for n in (name, ref) if not isinstance(named[n], np.ndarray)]
        if listed:
            n = listed[0]
            want = out[ref if n == name else name].dtype
            raise TypeError(
                f"{name}: expected dtype {dtype} (the dtype of {ref}), got {got.dtype}: {n} "
                f"was a {type(named[n]).__name__}, which NumPy converts to {out[n].dtype}; "
                f"pass np.asarray({n}, np.{want})"
            )
        break  # arrays of two dtypes: the core refuses them
    return out


def _mask(mask) -> np.ndarray | None:
    if mask is None:
        return None
    m = _array(mask, "mask")
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.integer):
            raise TypeError(f"mask: expected dtype bool (or integer 0/1), got {m.dtype}")
        m = m != 0
    return m


def _states(states, n: int, cell: str) -> dict:
    """``{"initial_state[k]": state}`` for the ``n`` states of a cell (none for ``None``)."""
    if states is None:
        return {}
    if isinstance(states, np.ndarray) or not isinstance(states, Sequence):
        states = [states]  # a list or tuple is a list of states, as in Keras
    if len(states) != n:
        raise ValueError(f"initial_state: expected {n} array(s) for {cell}, got {len(states)}")
    return {f"initial_state[{k}]": s for k, s in enumerate(states)}


class Workspace:
    """What a forward call with ``training=True`` keeps for :func:`backward`.

    It holds the (contiguous) inputs of the call, its options and the core's buffers: the
    post-activation gates, the states after every step and the cell's extra values. It is
    read, not consumed, by :func:`backward`; do not modify the inputs in between.
    """

    __slots__ = ("cell", "inputs", "options", "buffers", "n_states", "variants")

    def __init__(self, cell, inputs, options, buffers, n_states, variants=None):
        self.cell = cell
        self.inputs = inputs
        self.options = options
        self.buffers = buffers
        self.n_states = n_states
        self.variants = variants or {}

    @property
    def nbytes(self) -> int:
        """Bytes held by the core's buffers (the memory training adds to inference)."""
        return sum(b.nbytes for b in self.buffers)


class Gradients(NamedTuple):
    """Gradients of a loss with respect to a recurrent layer's inputs and weights."""

    x: np.ndarray
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    initial_state: list  # dL/dh0 (and dL/dc0 for LSTM), each (B, H)
    peephole: np.ndarray | None = None  # an LSTM's peepholes (3, H), when it has them
    projection: np.ndarray | None = None  # an LSTM's projection (H, P), when it has one


def _variants(peephole, projection, cell_clip, input_forget, output_activation, ref) -> dict:
    """The LSTM variants as the core's keyword arguments (only those given).

    ``ref`` is an array whose dtype the variant arrays must share (the core checks it)."""
    out = {}
    arrays = {"peephole": peephole, "projection": projection}
    for name, a in _arrays(
        {"ref": ref, **{k: v for k, v in arrays.items() if v is not None}}
    ).items():
        if name != "ref":
            out[name] = a
    if cell_clip is not None:
        clip = float(cell_clip)
        if not clip > 0 or not np.isfinite(clip):
            raise ValueError(f"cell_clip: expected a finite number > 0 or None, got {cell_clip!r}")
        out["cell_clip"] = clip
    if input_forget:
        out["input_forget"] = True
    if output_activation is not None:
        if not isinstance(output_activation, str):
            raise TypeError(
                f"output_activation: expected an activation name (one of {ACTIVATIONS}), "
                f"got {output_activation!r}"
            )
        out["output_activation"] = output_activation
    return out


def _lowp(w, mode: str, name: str) -> Quantized:
    """A weight for ``quantize=mode``: given quantized (of that mode), or quantized here."""
    if isinstance(w, Quantized):
        if w.mode != mode:
            raise ValueError(f"{name}: quantized as {w.mode!r}, but quantize={mode!r}")
        return w
    return _quantize(_array(w, name), mode, name)


def _run(cell, x, kernel, recurrent_kernel, bias, initial_state, mask, n_states, *, activation,
         recurrent_activation="sigmoid", reset_after=True, go_backwards=False,
         return_sequences=False, training=False, variants=None, quantize=None):  # fmt: skip
    if quantize is not None:  # the quantized kernels: one run of a stream carrying nothing
        if training:
            raise ValueError("quantize: inference only, got training=True")
        s = _make_stream(cell, kernel, recurrent_kernel, bias, None, activation,
                         recurrent_activation, reset_after, go_backwards, variants or {},
                         quantize)  # fmt: skip
        given = _states(initial_state, n_states, cell)
        states = [_array(a, name) for name, a in given.items()]
        return tuple(s.run(_array(x, "x"), _mask(mask), return_sequences, states, True))
    states = _states(initial_state, n_states, cell)
    a = _arrays(
        {"x": x, "kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias, **states}
    )
    variants = variants or {}
    inputs = (
        a["x"],
        a["kernel"],
        a["recurrent_kernel"],
        a["bias"],
        [a[name] for name in states],
        _mask(mask),
    )
    for name, value in (("activation", activation), ("recurrent_activation", recurrent_activation)):
        if not isinstance(value, str):
            raise TypeError(
                f"{name}: expected an activation name (one of {ACTIVATIONS}), got {value!r}"
            )
    options = (
        activation,
        recurrent_activation,
        bool(reset_after),
        bool(go_backwards),
        bool(return_sequences),
    )
    y, finals, buffers = _core.rnn_forward(cell, *inputs, *options, bool(training), **variants)
    if training:
        return (y, *finals, Workspace(cell, inputs, options, buffers, n_states, variants))
    return (y, *finals)


def backward(workspace: Workspace, d_output, d_state=None) -> Gradients:
    """Backpropagation through time for a forward call made with ``training=True``.

    ``d_output`` is dL/d(output), shaped like that call's output (the whole sequence, or
    the last step without ``return_sequences``); ``d_state`` is dL/d(final states): ``dh``
    (``[dh, dc]`` for LSTM), or ``None`` for zero. Returns :class:`Gradients` with respect
    to ``x``, ``kernel``, ``recurrent_kernel``, ``bias`` (``None`` without a bias) and the
    initial state(s) (zeros when none was given count as given).
    """
    if not isinstance(workspace, Workspace):
        raise TypeError(
            f"workspace: expected the Workspace of a training forward call, "
            f"got {type(workspace).__name__}"
        )
    # named initial_state in messages, as before (tests/test_backward.py pins the wording)
    d_states = _states(d_state, workspace.n_states, workspace.cell)
    a = _arrays({"x": workspace.inputs[0], "d_output": d_output, **d_states})
    dx, dW, dU, db, d_init, d_peephole, d_projection = _core.rnn_backward(
        workspace.cell,
        *workspace.inputs,
        *workspace.options,
        workspace.buffers,
        a["d_output"],
        [a[name] for name in d_states],
        **workspace.variants,
    )
    return Gradients(dx, dW, dU, db, d_init, d_peephole, d_projection)


def simple_rnn(x, kernel, recurrent_kernel, bias=None, *, activation="tanh", initial_state=None,
               mask=None, go_backwards=False, return_sequences=False, training=False,
               quantize=None):  # fmt: skip
    """SimpleRNN: ``h_t = act(x_t W + h_{t-1} U + b)``. Returns ``(output, h)``.

    With ``training=True`` a :class:`Workspace` for :func:`backward` is appended.
    ``quantize``: ``"bf16"`` or ``"int8"`` weights (see the module's docstring).
    """
    return _run("simple_rnn", x, kernel, recurrent_kernel, bias, initial_state, mask, 1,
                activation=activation, go_backwards=go_backwards, return_sequences=return_sequences,
                training=training, quantize=quantize)  # fmt: skip


def lstm(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
         recurrent_activation="sigmoid", initial_state=None, mask=None, go_backwards=False,
         return_sequences=False, training=False, peephole=None, projection=None, cell_clip=None,
         input_forget=False, output_activation=None, quantize=None):  # fmt: skip
    """LSTM, gates ``i, f, c, o``. Returns ``(output, h, c)``.

    ``i, f, o = rec_act(.)``, ``g = act(.)``, ``c_t = f c_{t-1} + i g``,
    ``h_t = o act(c_t)``. ``initial_state`` is ``[h0, c0]``. With ``training=True`` a
    :class:`Workspace` for :func:`backward` is appended.

    Variants (PyTorch and ONNX; Keras has none of them), all off by default:

    * ``peephole``: ``(3, H)``, rows ``p_i, p_f, p_o`` (ONNX ``P`` is ordered ``i, o, f``):
      ``i`` and ``f`` also see ``p * c_{t-1}``, ``o`` sees ``p_o * c_t``;
    * ``projection``: ``W_hr`` of shape ``(H, P)`` (PyTorch ``proj_size``, its
      ``weight_hr_l0.T``): ``h_t = (o act(c_t)) W_hr``, so ``h``, the output and
      ``initial_state[0]`` are ``P`` wide and ``recurrent_kernel`` is ``(P, 4H)``;
    * ``cell_clip``: ONNX ``clip`` as onnxruntime applies it: the gates' pre-activations
      (``i, f, g, o``) are clipped to ``[-cell_clip, cell_clip]``; ``c_t`` is not clipped;
    * ``input_forget``: ONNX's coupled gates, ``f = 1 - i`` (the forget gate's weights are
      unused);
    * ``output_activation``: the activation of ``c_t`` in ``h_t`` (ONNX's ``h``); defaults to
      ``activation``.

    With ``training=True``, :func:`backward` also returns the gradients of ``peephole`` and
    ``projection``. ``quantize``: ``"bf16"`` or ``"int8"`` weights (see the module's
    docstring; the peepholes and the projection stay float32).
    """
    variants = _variants(peephole, projection, cell_clip, input_forget, output_activation, x)
    return _run("lstm", x, kernel, recurrent_kernel, bias, initial_state, mask, 2,
                activation=activation, recurrent_activation=recurrent_activation,
                go_backwards=go_backwards, return_sequences=return_sequences,
                training=training, variants=variants, quantize=quantize)  # fmt: skip


def gru(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
        recurrent_activation="sigmoid", reset_after=True, initial_state=None, mask=None,
        go_backwards=False, return_sequences=False, training=False, quantize=None):  # fmt: skip
    """GRU, gates ``z, r, h``. Returns ``(output, h)``.

    ``reset_after=True`` (Keras 3 / PyTorch / cuDNN): ``hh = act(x W_h + b_xh + r (h U_h + b_hh))``
    with ``bias`` of shape ``(2, 3H)``; ``reset_after=False`` (2014 form):
    ``hh = act(x W_h + b_h + (r h) U_h)`` with ``bias`` of shape ``(3H,)``. Then
    ``h_t = z h_{t-1} + (1 - z) hh``. With ``training=True`` a :class:`Workspace` for
    :func:`backward` is appended. ``quantize``: ``"bf16"`` or ``"int8"`` weights (see the
    module's docstring).
    """
    return _run("gru", x, kernel, recurrent_kernel, bias, initial_state, mask, 1,
                activation=activation, recurrent_activation=recurrent_activation,
                reset_after=reset_after, go_backwards=go_backwards,
                return_sequences=return_sequences, training=training,
                quantize=quantize)  # fmt: skip


def dense(x, kernel, bias=None, activation="linear", *, quantize=None):
    """Dense on the last axis: ``y = act(x W + b)``; ``x (..., D)``, ``kernel (D, U)``.

    On a sequence ``(B, T, D)`` it applies to every timestep (Keras's Dense on 3-D input).
    ``activation`` may also be ``softmax`` (over the last axis). ``quantize``: ``"bf16"`` or
    ``"int8"`` kernel (see the module's docstring).
    """
    if quantize is not None:
        w = _lowp(kernel, check_mode(quantize), "kernel")
        a = _arrays({"x": x, "bias": bias})
        return _core.dense_forward(a["x"], w.values, a["bias"], activation, quantize, w.scale)
    a = _arrays({"x": x, "kernel": kernel, "bias": bias})
    return _core.dense_forward(a["x"], a["kernel"], a["bias"], activation)


def conv1d(x, kernel, bias=None, *, strides=1, padding=(0, 0), dilation=1, groups=1,
           activation="linear"):  # fmt: skip
    """Conv1D at inference over the steps of a channels_last ``x (B, T, C)``:
    ``y[b, t, f] = act(bias[f] + sum_{j, c} xp[b, t*strides + j*dilation, c] kernel[j, c, f])``
    with ``xp`` = ``x`` padded with ``padding = (before, after)`` zero steps; ``kernel
    (kernel_size, C // groups, filters)`` (Keras's layout), channel group ``i`` feeding
    filters ``[i*F/groups, (i+1)*F/groups)``. One product per tap, no unfolded copy; each
    output is the FMA chain of the unfolded windows' product, bit for bit (windows.hpp)."""
    if not isinstance(activation, str):
        raise TypeError(f"activation: expected an activation name (one of {ACTIVATIONS}), got "
                        f"{activation!r}")  # fmt: skip
    a = _arrays({"x": x, "kernel": kernel, "bias": bias})
    before, after = padding
    return _core.conv1d_forward(a["x"], a["kernel"], a["bias"], groups, strides, dilation,
                                before, after, activation)  # fmt: skip


def pool1d(x, pool_size, *, strides, padding=(0, 0), average=False):
    """Max (or average) pooling over the steps of a channels_last ``x (B, T, C)``, each
    window of ``pool_size`` steps ``strides`` apart over its real steps only (the ``padding =
    (before, after)`` steps take no part; the average divides by the real steps' count)."""
    before, after = padding
    return _core.pool1d_forward(_array(x, "x"), pool_size, strides, before, after, bool(average))


def layer_norm(x, gamma=None, beta=None, *, epsilon=1e-3, rms_scaling=False):
    """LayerNormalization over the last axis of ``x (..., D)``, each row by its own mean and
    biased variance: ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``; with
    ``rms_scaling`` (Keras's deprecated form) ``y = x / sqrt(var + epsilon) * gamma`` (still
    the variance, as Keras). ``gamma`` and ``beta`` ``(D,)``, or None for 1 and 0. The
    statistics are computed in double and ``y`` rounded once to ``x``'s dtype (norm.hpp)."""
    given = {"x": x, "gamma": gamma, "beta": beta}
    a = _arrays({n: v for n, v in given.items() if v is not None})
    return _core.layer_norm_forward(a["x"], a.get("gamma"), a.get("beta"), float(epsilon),
                                    bool(rms_scaling))  # fmt: skip


def dense_backward(x, kernel, y, dy, *, use_bias=True, activation="linear"):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`dense` given its output ``y`` and dL/dy.

    ``dbias`` is ``None`` when ``use_bias`` is false.
    """
    a = _arrays({"x": x, "kernel": kernel, "y": y, "dy": dy})
    return _core.dense_backward(a["x"], a["kernel"], bool(use_bias), activation, a["y"], a["dy"])


def embedding_backward(ids, dy, input_dim):
    """The gradient ``(input_dim, D)`` of an embedding matrix read at ``ids (...)``, given
    dL/d(output) ``dy (..., D)``: each row of ``dy`` summed into the row its id names.

    The sums are np.add.at's, bit for bit (each id's rows added in position order, from
    zero), whatever the thread count. ``ids`` must be integers in ``[0, input_dim)``.
    """
    ids = _array(ids, "ids")
    shape = ids.shape
    if ids.dtype not in (np.int32, np.int64):
        if ids.dtype.kind not in "biu":
            raise TypeError(f"ids: expected integer ids, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
    dy = _array(dy, "dy")
    if dy.shape[:-1] != shape or dy.ndim != len(shape) + 1:
        raise ValueError(
            f"dy: expected shape {shape} + (output_dim,) (the ids' shape), got {dy.shape}"
        )
    n = ids.size
    return _core.embedding_backward(ids.reshape(n), dy.reshape(n, dy.shape[-1]), int(input_dim))


def stream(cell, kernel, recurrent_kernel, bias=None, *, batch_size=None, activation="tanh",
           recurrent_activation="sigmoid", reset_after=True, go_backwards=False, peephole=None,
           projection=None, cell_clip=None, input_forget=False, output_activation=None,
           quantize=None):  # fmt: skip
    """One recurrent layer bound to its weights: what the layers call, and a carried state
    for streaming (Keras's ``stateful=True``).

    ``cell`` is ``simple_rnn``, ``lstm`` or ``gru``; the options are those of
    :func:`simple_rnn`, :func:`lstm` (its variants included) and :func:`gru`. The weights are
    checked once and read in place (do not replace their memory while the stream is used).

    ``s.run(x, mask=None, return_sequences=False, initial_state=[], return_state=False)``
    runs ``x`` of shape ``(B, T, D)`` from ``initial_state`` if given, else from the carried
    states, and returns the output, or ``(output, *final_states)`` with ``return_state``.

    With ``batch_size=B`` the stream carries states of ``B`` rows, zeros at first: each run
    (``T`` may be 1) starts from them and leaves its final states there;
    ``s.get_states()`` / ``s.set_states([...])`` read and set them (``[]`` resets to
    zeros). Calls on one stream from several threads are serialised by a lock.

    With ``batch_size=None`` nothing is carried: every run starts from its
    ``initial_state`` (or zeros) and takes any batch size, and runs from several threads
    proceed in parallel.

    Either way the weights are packed on the first run and kept for all the stream's runs:
    after modifying them in place, call ``s.repack()``.

    ``quantize="bf16"`` or ``"int8"``: the kernels in low precision (see the module's
    docstring); ``s.quantize`` tells which.
    """
    ref = np.empty(0, np.float32)
    if quantize is None:
        ref = _arrays({"recurrent_kernel": recurrent_kernel})["recurrent_kernel"]
    variants = _variants(peephole, projection, cell_clip, input_forget, output_activation, ref)
    return _make_stream(cell, kernel, recurrent_kernel, bias, batch_size, activation,
                        recurrent_activation, reset_after, go_backwards, variants,
                        quantize)  # fmt: skip


def _make_stream(cell, kernel, recurrent_kernel, bias, batch_size, activation,
                 recurrent_activation, reset_after, go_backwards, variants, quantize):  # fmt: skip
    batch_size = None if batch_size is None else int(batch_size)
    options = (activation, recurrent_activation, bool(reset_after), bool(go_backwards))
    if quantize is None:
        a = _arrays({"recurrent_kernel": recurrent_kernel, "kernel": kernel, "bias": bias})
        return _core.make_stream(cell, a["kernel"], a["recurrent_kernel"], a["bias"], batch_size,
                                 *options, **variants)  # fmt: skip
    check_mode(quantize)
    W = _lowp(kernel, quantize, "kernel")
    U = _lowp(recurrent_kernel, quantize, "recurrent_kernel")
    b = None if bias is None else _array(bias, "bias")
    return _core.make_stream(cell, W.values, U.values, b, batch_size, *options, **variants,
                             quantize=quantize, kernel_scale=W.scale,
                             recurrent_scale=U.scale)  # fmt: skip
