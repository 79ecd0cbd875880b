"""The implementations compared by ``bench/run.py``, each wrapped as a :class:`Runner`.

Every implementation is given the same Keras-layout weights (:func:`make_weights`) and the
same inputs; each builder maps them to its own layout once, outside the timed region:

* ``rnncore``: :mod:`rnncore.functional` (forward), or a stateful :mod:`rnncore.layers`
  layer when one works (streaming), else the functional API with the state carried by hand;
* ``reference``: :mod:`rnncore.reference`, the plain NumPy reference;
* ``torch``: ``torch.nn.RNN/LSTM/GRU(batch_first=True)`` under ``torch.inference_mode()``;
* ``onnxruntime``: the same cells as ONNX ``RNN/LSTM/GRU`` nodes built with ``onnx.helper``.

Libraries are imported inside the builders so that a memory probe subprocess loads only the
library it measures.

Modes (what one timed call does):

* ``forward``: the whole sequence, output ``(B, T, H)`` (Keras ``return_sequences=True``);
* ``stream``: one step of a stateful layer (``B = T = 1``), the state carried to the next
  call; the check runs the whole step sequence and stacks the outputs;
* ``train``: forward + backward with ``loss = out.sum()``, gradients for the weights and the
  input, against PyTorch autograd only. :func:`rnncore_train_runner` returns ``None`` when
  the installed rnncore has no ``functional.backward`` (the case is then skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
N_STATES = {"simple_rnn": 1, "lstm": 2, "gru": 1}
IMPLS = ("rnncore", "reference", "torch", "onnxruntime")
PEERS = ("reference", "torch", "onnxruntime")
IMPL_LABELS = {
    "rnncore": "rnncore",
    "reference": "NumPy reference",
    "torch": "PyTorch",
    "onnxruntime": "onnxruntime",
}

# Gate blocks of a Keras weight (SimpleRNN -; LSTM i,f,c,o; GRU z,r,h) in each peer's order,
# as indices into the Keras blocks.
TORCH_ORDER = {"simple_rnn": (0,), "lstm": (0, 1, 2, 3), "gru": (1, 0, 2)}  # i,f,g,o / r,z,n
ONNX_ORDER = {"simple_rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (0, 1, 2)}  # i,o,f,c / z,r,h
ONNX_OP = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
TORCH_MODULE = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
LAYER_CLASS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


@dataclass(frozen=True)
class Weights:
    """Keras-layout weights: kernel (D, G*H), recurrent_kernel (H, G*H), bias (G*H,) or
    (2, 3H) for the GRU (reset_after=True: input row, recurrent row)."""

    cell: str
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray

    @property
    def D(self) -> int:
        return self.kernel.shape[0]

    @property
    def H(self) -> int:
        return self.recurrent_kernel.shape[0]


def make_weights(cell: str, D: int, H: int, seed: int = 0) -> Weights:
    """Glorot-uniform kernel, U(+-1/sqrt(H)) recurrent kernel, small non-zero bias."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    a = math.sqrt(6.0 / (D + G * H))
    b = 1.0 / math.sqrt(H)
    kernel = rng.uniform(-a, a, (D, G * H)).astype(np.float32)
    recurrent = rng.uniform(-b, b, (H, G * H)).astype(np.float32)
    bias_shape = (2, G * H) if cell == "gru" else (G * H,)
    bias = rng.uniform(-0.1, 0.1, bias_shape).astype(np.float32)
    return Weights(cell, kernel, recurrent, bias)


def make_input(B: int, T: int, D: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, T, D)).astype(np.float32)


def forward_flops(cell: str, B: int, T: int, D: int, H: int) -> float:
    """The issue's count: 2*T*B*G*H*(D+H) (the two matrix products per step)."""
    return 2.0 * T * B * GATES[cell] * H * (D + H)


def _blocks(w: np.ndarray, H: int, order) -> np.ndarray:
    """The gate blocks of the last axis of ``w`` rearranged into ``order``."""
    return np.ascontiguousarray(np.concatenate([w[..., g * H : (g + 1) * H] for g in order], -1))


def _unblocks(w: np.ndarray, H: int, order) -> np.ndarray:
    """Inverse of :func:`_blocks`: a peer-ordered last axis back to Keras's order."""
    out = np.empty_like(w)
    for pos, g in enumerate(order):
        out[..., g * H : (g + 1) * H] = w[..., pos * H : (pos + 1) * H]
    return out


@dataclass
class Runner:
    """One implementation of one cell at one shape, ready to time.

    ``call()`` is the timed unit (a forward, one streaming step, or a forward+backward);
    ``collect()`` returns what the correctness check compares, as NumPy: the output
    ``(B, T, H)`` (for ``train`` a dict with the output and the Keras-layout gradients).
    ``fixed_calls``: calls per timing sample when fixed (streaming: the step count).
    """

    impl: str
    cell: str
    mode: str
    call: Callable[[], Any]
    collect: Callable[[], Any]
    path: str = ""  # how it ran, e.g. which rnncore API (shown in the table)
    fixed_calls: int | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Thread control
# --------------------------------------------------------------------------------------


def set_threads(n: int, impls) -> list[str]:
    """Set ``n`` threads in every library that ``impls`` use (onnxruntime takes it per
    session; NumPy's BLAS through threadpoolctl, see :func:`blas_limit`)."""
    notes = []
    if "rnncore" in impls or "reference" in impls:
        import rnncore

        rnncore.set_num_threads(n)
    if "torch" in impls:
        import torch

        torch.set_num_threads(n)
    return notes


class blas_limit:
    """Context manager: NumPy's BLAS limited to ``n`` threads (threadpoolctl), or a no-op
    with ``available = False`` when threadpoolctl is not installed."""

    def __init__(self, n: int):
        self.n = n
        self._ctx = None
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self.available = False
        else:
            self.available = True
            self._ctx = threadpool_limits(limits=n, user_api="blas")

    def __enter__(self):
        if self._ctx is not None:
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


# --------------------------------------------------------------------------------------
# Forward (whole sequence, return_sequences=True)
# --------------------------------------------------------------------------------------


def _keras_args(w: Weights):
    return w.kernel, w.recurrent_kernel, w.bias


def _module_forward(impl: str, module, path: str, w: Weights, x: np.ndarray) -> Runner:
    """A forward Runner over ``module.<cell>`` (rnncore.functional or rnncore.reference,
    which share one signature)."""
    fn = getattr(module, w.cell)
    k, rk, b = _keras_args(w)

    def call():
        return fn(x, k, rk, b, return_sequences=True)[0]

    return Runner(impl, w.cell, "forward", call, call, path=path)


def rnncore_forward(w: Weights, x: np.ndarray, threads: int) -> Runner:
    from rnncore import functional

    return _module_forward("rnncore", functional, "rnncore.functional", w, x)


def reference_forward(w: Weights, x: np.ndarray, threads: int) -> Runner:
    from rnncore import reference

    return _module_forward("reference", reference, "rnncore.reference", w, x)


def torch_module(w: Weights, *, requires_grad: bool = False):
    """``torch.nn.{RNN,LSTM,GRU}(D, H, batch_first=True)`` holding the weights ``w``."""
    import torch

    cls = getattr(torch.nn, TORCH_MODULE[w.cell])
    m = cls(w.D, w.H, batch_first=True)
    order, H = TORCH_ORDER[w.cell], w.H
    if w.cell == "gru":
        b_ih, b_hh = _blocks(w.bias[0], H, order), _blocks(w.bias[1], H, order)
    else:
        b_ih, b_hh = _blocks(w.bias, H, order), np.zeros_like(w.bias)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(_blocks(w.kernel, H, order).T.copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(_blocks(w.recurrent_kernel, H, order).T.copy()))
        m.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        m.bias_hh_l0.copy_(torch.from_numpy(b_hh))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(requires_grad)
    return m


def torch_forward(w: Weights, x: np.ndarray, threads: int) -> Runner:
    import torch

    m = torch_module(w)
    xt = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            return m(xt)[0]

    return Runner(
        "torch",
        w.cell,
        "forward",
        call,
        lambda: call().numpy(),
        path="torch.nn.RNN/LSTM/GRU(batch_first=True) under torch.inference_mode()",
    )


def onnx_model(w: Weights, *, stream: bool):
    """An ONNX graph of the cell with the weights as initializers.

    ``stream=False``: input ``X (B, T, D)`` batch-major, output ``Y (B, T, H)`` (ORT's CPU
    RNN kernels reject ``layout=1``, so the graph transposes to time-major and back).
    ``stream=True``: one step, ``X (1, 1, D)`` (the same bytes in either layout) plus
    ``initial_h`` (and ``initial_c``) ``(1, 1, H)``; outputs ``Y_h`` (and ``Y_c``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cell, H, D = w.cell, w.H, w.D
    order = ONNX_ORDER[cell]
    W = _blocks(w.kernel, H, order).T[None]  # (1, G*H, D)
    R = _blocks(w.recurrent_kernel, H, order).T[None]  # (1, G*H, H)
    if cell == "gru":
        wb, rb = _blocks(w.bias[0], H, order), _blocks(w.bias[1], H, order)
    else:
        wb, rb = _blocks(w.bias, H, order), np.zeros_like(w.bias)
    Bias = np.concatenate([wb, rb])[None]  # (1, 2*G*H)
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(a, np.float32), name)
        for a, name in ((W, "W"), (R, "R"), (Bias, "B"))
    ]
    attrs = {"hidden_size": H}
    if cell == "gru":
        attrs["linear_before_reset"] = 1  # Keras reset_after=True
    f32 = TensorProto.FLOAT
    if stream:
        inputs = [
            helper.make_tensor_value_info("X", f32, [1, 1, D]),
            helper.make_tensor_value_info("initial_h", f32, [1, 1, H]),
        ]
        node_in = ["X", "W", "R", "B", "", "initial_h"]
        node_out = ["", "Y_h"]
        outputs = [helper.make_tensor_value_info("Y_h", f32, [1, 1, H])]
        if cell == "lstm":
            inputs.append(helper.make_tensor_value_info("initial_c", f32, [1, 1, H]))
            node_in.append("initial_c")
            node_out.append("Y_c")
            outputs.append(helper.make_tensor_value_info("Y_c", f32, [1, 1, H]))
        nodes = [helper.make_node(ONNX_OP[cell], node_in, node_out, **attrs)]
    else:
        inputs = [helper.make_tensor_value_info("X", f32, ["B", "T", D])]
        outputs = [helper.make_tensor_value_info("Y", f32, ["B", "T", H])]
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "squeeze_axes"))
        nodes = [
            helper.make_node("Transpose", ["X"], ["X_tm"], perm=[1, 0, 2]),  # (T, B, D)
            helper.make_node(ONNX_OP[cell], ["X_tm", "W", "R", "B"], ["Y_tm"], **attrs),
            helper.make_node("Transpose", ["Y_tm"], ["Y_bm"], perm=[2, 0, 1, 3]),  # (B,T,1,H)
            helper.make_node("Squeeze", ["Y_bm", "squeeze_axes"], ["Y"]),
        ]
    graph = helper.make_graph(
        nodes, f"{cell}_{'step' if stream else 'seq'}", inputs, outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_forward(w: Weights, x: np.ndarray, threads: int, model=None) -> Runner:
    """``model``: another graph of the same inputs and outputs (e.g. quantized), else
    :func:`onnx_model`'s."""
    sess = ort_session(model or onnx_model(w, stream=False), threads)
    feed = {"X": x}
    names = ["Y"]

    def call():
        return sess.run(names, feed)[0]

    return Runner(
        "onnxruntime",
        w.cell,
        "forward",
        call,
        call,
        path="ONNX RNN/LSTM/GRU node between batch/time-major Transposes, CPU execution provider",
    )


FORWARD_BUILDERS = {
    "rnncore": rnncore_forward,
    "reference": reference_forward,
    "torch": torch_forward,
    "onnxruntime": ort_forward,
}


# --------------------------------------------------------------------------------------
# Streaming (S1): one step per call, state carried; the check stacks all steps
# --------------------------------------------------------------------------------------


def _stream_runner(impl, cell, steps, step_fn, reset_fn, to_numpy, path) -> Runner:
    """``step_fn(t)`` runs step ``t`` and returns its output; calls cycle over the steps."""
    pos = [0]

    def call():
        t = pos[0]
        pos[0] = t + 1 if t + 1 < steps else 0
        return step_fn(t)

    def collect():
        reset_fn()
        pos[0] = 0
        ys = [to_numpy(call()).reshape(1, -1) for _ in range(steps)]
        reset_fn()
        pos[0] = 0
        return np.stack(ys, axis=1)  # (1, steps, H)

    return Runner(impl, cell, "stream", call, collect, path=path, fixed_calls=steps)


def _zeros_states(cell, H, shape=None):
    return [np.zeros(shape or (1, H), np.float32) for _ in range(N_STATES[cell])]


def _rnncore_layer(w: Weights):
    """A stateful ``rnncore.layers`` layer holding ``w``, or raise (any reason).

    Keras-like API assumed: ``Cls(units, stateful=True, return_sequences=True)``, weights
    set with ``set_weights([kernel, recurrent_kernel, bias])`` once built, ``layer(x)``
    returns NumPy-compatible output, ``reset_states()``. The caller checks its output
    against the functional API and falls back to it on any mismatch or error.
    """
    from rnncore import layers

    cls = getattr(layers, LAYER_CLASS[w.cell])
    kw = {"stateful": True, "return_sequences": True}
    if w.cell == "gru":
        kw["reset_after"] = True
    layer = cls(w.H, **kw)
    weights = [w.kernel, w.recurrent_kernel, w.bias]
    x0 = np.zeros((1, 1, w.D), np.float32)
    try:
        layer.set_weights(weights)
    except Exception:  # not built yet: build it with a first call, then set
        if hasattr(layer, "build"):
            try:
                layer.build((1, 1, w.D))
            except Exception:
                layer(x0)
        else:
            layer(x0)
        layer.set_weights(weights)
    layer.reset_states()
    return layer


def rnncore_stream(w: Weights, X: np.ndarray, threads: int) -> Runner:
    steps = X.shape[1]
    xs = [X[:, t : t + 1] for t in range(steps)]
    layer_error = None
    try:
        layer = _rnncore_layer(w)
    except Exception as e:  # rnncore.layers missing or not usable (yet)
        layer_error = f"{type(e).__name__}: {e}"
    else:
        runner = _stream_runner(
            "rnncore",
            w.cell,
            steps,
            lambda t: layer(xs[t]),
            layer.reset_states,
            np.asarray,
            "rnncore.layers.SimpleRNN/LSTM/GRU(stateful=True) called per step",
        )
        try:  # the layer must agree with the functional API before it is used
            from rnncore import functional as F

            want = getattr(F, w.cell)(
                X, w.kernel, w.recurrent_kernel, w.bias, return_sequences=True
            )[0]
            got = runner.collect()
            err = float(np.max(np.abs(got - want)))
            if not np.isfinite(err) or err > 1e-4:
                raise ValueError(f"stateful layer differs from functional by {err:.2e}")
            return runner
        except Exception as e:
            layer_error = f"{type(e).__name__}: {e}"

    from rnncore import functional as F

    step, reset = _carried_state_steps(getattr(F, w.cell), w, xs)
    r = _stream_runner(
        "rnncore",
        w.cell,
        steps,
        step,
        reset,
        np.asarray,
        "rnncore.functional per step, state passed as initial_state "
        "(fallback: no working stateful rnncore.layers)",
    )
    r.notes.append(f"stateful rnncore.layers not used: {layer_error}")
    return r


def _carried_state_steps(fn, w: Weights, xs):
    """step(t) / reset() for a functional-style ``fn`` (rnncore.functional or the reference)
    fed one timestep per call, its final states passed back as the next initial_state."""
    k, rk, b = _keras_args(w)
    state = _zeros_states(w.cell, w.H)

    def step(t):
        out = fn(xs[t], k, rk, b, initial_state=state, return_sequences=True)
        state[:] = out[1:]
        return out[0]

    def reset():
        state[:] = _zeros_states(w.cell, w.H)

    return step, reset


def reference_stream(w: Weights, X: np.ndarray, threads: int) -> Runner:
    from rnncore import reference as R

    steps = X.shape[1]
    xs = [X[:, t : t + 1] for t in range(steps)]
    step, reset = _carried_state_steps(getattr(R, w.cell), w, xs)
    return _stream_runner(
        "reference",
        w.cell,
        steps,
        step,
        reset,
        np.asarray,
        "rnncore.reference per step, state passed as initial_state",
    )


def torch_stream(w: Weights, X: np.ndarray, threads: int) -> Runner:
    import torch

    steps = X.shape[1]
    m = torch_module(w)
    xs = [torch.from_numpy(X[:, t : t + 1]) for t in range(steps)]
    H = w.H
    state: list = [None]

    def zeros():
        hs = [torch.zeros(1, 1, H) for _ in range(N_STATES[w.cell])]
        return tuple(hs) if w.cell == "lstm" else hs[0]

    def step(t):
        with torch.inference_mode():
            y, state[0] = m(xs[t], state[0])
        return y

    def reset():
        state[0] = zeros()

    reset()
    return _stream_runner(
        "torch",
        w.cell,
        steps,
        step,
        reset,
        lambda y: y.numpy(),
        "module call per step under inference_mode, h (and c) carried",
    )


def ort_stream(w: Weights, X: np.ndarray, threads: int, model=None) -> Runner:
    """``model``: as in :func:`ort_forward`."""
    sess = ort_session(model or onnx_model(w, stream=True), threads)
    steps = X.shape[1]
    xs = [np.ascontiguousarray(X[:, t : t + 1]) for t in range(steps)]
    lstm = w.cell == "lstm"
    names = ["Y_h", "Y_c"] if lstm else ["Y_h"]
    feed: dict = {}

    def step(t):
        feed["X"] = xs[t]
        out = sess.run(names, feed)
        feed["initial_h"] = out[0]
        if lstm:
            feed["initial_c"] = out[1]
        return out[0]

    def reset():
        feed["initial_h"] = np.zeros((1, 1, w.H), np.float32)
        if lstm:
            feed["initial_c"] = np.zeros((1, 1, w.H), np.float32)

    reset()
    return _stream_runner(
        "onnxruntime",
        w.cell,
        steps,
        step,
        reset,
        np.asarray,
        "InferenceSession.run per step, initial_h/initial_c carried",
    )


STREAM_BUILDERS = {
    "rnncore": rnncore_stream,
    "reference": reference_stream,
    "torch": torch_stream,
    "onnxruntime": ort_stream,
}


# --------------------------------------------------------------------------------------
# Forward + backward (the backward issue): loss = out.sum(), grads for weights and input
# --------------------------------------------------------------------------------------


def torch_train(w: Weights, x: np.ndarray, threads: int) -> Runner:
    """PyTorch autograd: forward, ``out.sum().backward()``; ``collect()`` gives the output and
    the gradients mapped back to Keras's layout (``dx``, ``dkernel``, ``drecurrent_kernel``,
    ``dbias``) so that they can be compared with rnncore's."""
    import torch

    m = torch_module(w, requires_grad=True)
    m.train()
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    params = list(m.parameters())
    order, H = TORCH_ORDER[w.cell], w.H

    def call():
        for p in params:
            p.grad = None
        xt.grad = None
        with torch.enable_grad():
            y = m(xt)[0]
            y.sum().backward()
        return y

    def collect():
        y = call().detach().numpy()
        g_ih = m.weight_ih_l0.grad.numpy().T
        g_hh = m.weight_hh_l0.grad.numpy().T
        if w.cell == "gru":
            dbias = np.stack(
                [
                    _unblocks(m.bias_ih_l0.grad.numpy(), H, order),
                    _unblocks(m.bias_hh_l0.grad.numpy(), H, order),
                ]
            )
        else:  # Keras's single bias feeds b_ih (b_hh is zero, its gradient is the same)
            dbias = _unblocks(m.bias_ih_l0.grad.numpy(), H, order)
        return {
            "y": y,
            "dx": xt.grad.numpy().copy(),
            "dkernel": _unblocks(g_ih, H, order),
            "drecurrent_kernel": _unblocks(g_hh, H, order),
            "dbias": dbias,
        }

    return Runner(
        "torch",
        w.cell,
        "train",
        call,
        collect,
        path="torch.nn.LSTM/GRU autograd: out.sum().backward(), grads of the weights and the input",
    )


def rnncore_train_runner(w: Weights, x: np.ndarray, threads: int) -> Runner | None:
    """rnncore forward (``training=True``) + :func:`rnncore.functional.backward` with
    ``d out = ones`` (the gradient of ``out.sum()``), or ``None`` while the installed
    rnncore has no backward API (the ``train`` cases are then reported as skipped).

    ``collect()`` returns the same dict as :func:`torch_train` (Keras layout), so that
    ``_run_case.py`` checks the gradients against PyTorch's before timing.
    """
    from rnncore import functional as F

    if not hasattr(F, "backward"):
        return None
    fn = getattr(F, w.cell)
    k, rk, b = _keras_args(w)
    dy = np.ones((x.shape[0], x.shape[1], w.H), np.float32)  # d(out.sum()) / d out

    def call():
        out = fn(x, k, rk, b, return_sequences=True, training=True)
        return out[0], F.backward(out[-1], dy)

    def collect():
        y, g = call()
        return {
            "y": y,
            "dx": g.x,
            "dkernel": g.kernel,
            "drecurrent_kernel": g.recurrent_kernel,
            "dbias": g.bias,
        }

    return Runner(
        "rnncore",
        w.cell,
        "train",
        call,
        collect,
        path="rnncore.functional.<cell>(training=True) + functional.backward",
    )


TRAIN_BUILDERS = {
    "rnncore": rnncore_train_runner,
    "torch": torch_train,
}

BUILDERS = {"forward": FORWARD_BUILDERS, "stream": STREAM_BUILDERS, "train": TRAIN_BUILDERS}


def to_numpy(out) -> Any:
    if isinstance(out, dict):
        return out
    if hasattr(out, "numpy"):
        return out.numpy()
    return np.asarray(out)
