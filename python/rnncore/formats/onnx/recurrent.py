"""ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes in Keras's layouts, computed by rnncore's core.

The layout facts both directions share live here: gate counts, the ONNX LSTM gate order
``i, o, f, c`` against Keras's ``i, f, c, o`` (GRU ``z, r, h`` is Keras's order), and which
ONNX activation computes each of rnncore's. :class:`RecurrentNode` converts a node's
weights once, at load, folding activations with parameters into them
(``HardSigmoid(alpha, beta)(x)`` is rnncore's ``hard_sigmoid(6 alpha x + 6 (beta - 0.5))``,
``Affine(alpha, beta)(x)`` is ``linear(alpha x + beta)``), and runs it with ONNX's output
conventions (:func:`_scan`).
"""

from __future__ import annotations

import numpy as np

from ... import activations, functional
from ...errors import UnsupportedModelError

__all__ = [
    "RNN_OPS",
    "GATES",
    "LSTM_TO_KERAS",
    "KERAS_TO_LSTM",
    "ONNX_ACTIVATIONS",
    "reorder",
    "RecurrentNode",
]

RNN_OPS = ("RNN", "LSTM", "GRU")
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_N_ACTIVATIONS = {"RNN": 1, "GRU": 2, "LSTM": 3}
_DEFAULT_ACTIVATIONS = {
    "RNN": ("Tanh",),
    "GRU": ("Sigmoid", "Tanh"),
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
}
_CELL = {"RNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}
#: ONNX activation -> (default alpha, default beta) for those that take parameters
_ACTIVATION_PARAMS = {
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (1.0, None),
    "elu": (1.0, None),
    "hardsigmoid": (0.2, 0.5),
    "affine": (1.0, 0.0),
    "scaledtanh": (1.0, 1.0),
}
#: ONNX LSTM gate blocks i, o, f, c -> Keras i, f, c, o
LSTM_TO_KERAS = (0, 2, 3, 1)
KERAS_TO_LSTM = (0, 3, 1, 2)

_ONNX_FORMS = {
    "tanh": ("Tanh", None),
    "sigmoid": ("Sigmoid", None),
    "relu": ("Relu", None),
    "hard_sigmoid": ("HardSigmoid", (1 / 6, 0.5)),
    "linear": ("Affine", (1.0, 0.0)),
}
#: rnncore activation -> the ONNX activation computing it, and its ``(alpha, beta)`` when it
#: takes them: every activation a recurrent layer takes (all of rnncore's but softmax)
ONNX_ACTIVATIONS = {name: _ONNX_FORMS[name] for name in activations.NAMES if name != "softmax"}
_FROM_ONNX = {op.lower(): (name, params) for name, (op, params) in ONNX_ACTIVATIONS.items()}


def reorder(a, gates, order):
    """The gate blocks of ``a`` (along axis 0) in ``order``."""
    parts = np.split(a, gates, axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


def _parse_activations(plan, op: str, num_dir: int):
    """Per direction, the node's activations as ``[(onnx name, alpha, beta), ...]``."""
    n = _N_ACTIVATIONS[op]
    names = plan.attrs.get("activations")
    if names is None:
        names = list(_DEFAULT_ACTIVATIONS[op]) * num_dir
    names = list(names)
    if len(names) == n and num_dir == 2:
        names = names * 2
    if len(names) != n * num_dir:
        raise plan.fail(
            f"activations lists {len(names)} functions; {op} needs {n} per "
            f"direction ({n * num_dir})"
        )
    alphas = list(plan.attrs.get("activation_alpha", []))
    betas = list(plan.attrs.get("activation_beta", []))
    parsed = []
    for name in names:
        key = name.lower()
        alpha = beta = None
        if key in _ACTIVATION_PARAMS:
            da, db = _ACTIVATION_PARAMS[key]
            alpha = alphas.pop(0) if alphas else da
            if db is not None:
                beta = betas.pop(0) if betas else db
        parsed.append((name, alpha, beta))
    return [parsed[d * n : (d + 1) * n] for d in range(num_dir)]


def _core_activation(plan, act) -> tuple[str, float, float]:
    """An ONNX activation as ``(rnncore name, scale, shift)`` of the pre-activation."""
    name, alpha, beta = act
    form = _FROM_ONNX.get(name.lower())
    if form is None:
        raise plan.fail(
            f"activation {name} is not implemented by rnncore (supported: "
            f"{', '.join(op for op, _ in ONNX_ACTIVATIONS.values())})",
            UnsupportedModelError,
        )
    core, params = form
    if params is None:
        return core, 1.0, 0.0
    # ONNX's f(alpha x + beta) is rnncore's, f(alpha0 x' + beta0), of
    # x' = (alpha x + beta - beta0) / alpha0; 1 / alpha0 is exact (6 and 1)
    alpha0, beta0 = params
    inv = 1.0 / alpha0
    return core, float(alpha * inv), float((beta - beta0) * inv)


class RecurrentNode:
    """An RNN / LSTM / GRU node: checks at load, the weights in Keras layouts, the scan."""

    def __init__(self, plan):
        self.plan = plan
        op = self.op = plan.op
        at = plan.attrs
        fail = plan.fail
        if plan.model.opset < 7:
            raise fail(
                f"{op} from opset {plan.model.opset} (before 7) is not supported",
                UnsupportedModelError,
            )
        if "clip" in at:
            raise fail(
                f"attribute clip={at['clip']} (cell clipping) is not implemented by rnncore",
                UnsupportedModelError,
            )
        if at.get("input_forget", 0):
            raise fail(
                "attribute input_forget=1 (coupled input and forget gates) is not "
                "implemented by rnncore",
                UnsupportedModelError,
            )
        if at.get("output_sequence", 0):
            raise fail("attribute output_sequence is not supported", UnsupportedModelError)
        self.direction = at.get("direction", "forward")
        if self.direction not in ("forward", "reverse", "bidirectional"):
            raise fail(
                f"direction must be forward, reverse or bidirectional, got {self.direction!r}"
            )
        self.layout = int(at.get("layout", 0))
        if self.layout not in (0, 1):
            raise fail(f"layout must be 0 or 1, got {self.layout}")
        self.num_dir = 2 if self.direction == "bidirectional" else 1
        self.linear_before_reset = bool(at.get("linear_before_reset", 0))
        if op != "GRU" and "linear_before_reset" in at:
            raise fail("linear_before_reset is a GRU attribute")
        n_in = len(plan.inputs)
        if n_in < 3 or not all(plan.inputs[:3]):
            raise fail(f"{op} needs the inputs X, W and R")
        max_in = 8 if op == "LSTM" else 6
        if n_in > max_in:
            raise fail(f"{op} takes at most {max_in} inputs, got {n_in}")
        if len(plan.outputs) > (3 if op == "LSTM" else 2):
            raise fail(f"{op} has at most {3 if op == 'LSTM' else 2} outputs")
        self.activations = [
            self._direction_activations(acts) for acts in _parse_activations(plan, op, self.num_dir)
        ]
        const = plan.model._constants
        names = plan.inputs + [""] * (8 - n_in)
        peephole = names[7] if op == "LSTM" else ""
        if peephole:
            P = const.get(peephole)
            if P is None or np.any(P != 0):
                raise fail(
                    "peepholes (input P) are not implemented by rnncore", UnsupportedModelError
                )
        self.hidden_size = at.get("hidden_size")
        self.weights = None
        if all(n in const for n in names[1:4] if n):
            self.weights = self._convert(
                const[names[1]], const[names[2]], const.get(names[3]) if names[3] else None
            )
        elif not all(n in const for n in names[1:3]):
            raise fail(
                f"{op} with weights W, R computed in the graph (not constants) is not supported",
                UnsupportedModelError,
            )

    def _direction_activations(self, acts):
        """``(activation, recurrent_activation, candidate affine, gate affine)`` for the core."""
        plan = self.plan
        conv = [_core_activation(plan, a) for a in acts]
        if self.op == "RNN":
            name, s, t = conv[0]
            return name, None, (s, t), None
        f, g = conv[0], conv[1]
        if self.op == "LSTM":
            h = conv[2]
            # h is applied to the cell state: only an activation with no affine part (up to
            # float32 rounding of its parameters, e.g. HardSigmoid(1/6, 0.5)) maps
            identity = abs(h[1] - 1.0) <= 1e-6 and abs(h[2]) <= 1e-6
            if h[0] != g[0] or not identity:
                raise plan.fail(
                    f"LSTM activations g={acts[1][0]} and h={acts[2][0]} (with their "
                    f"parameters) differ; rnncore's LSTM uses one activation for both",
                    UnsupportedModelError,
                )
        return g[0], f[0], (g[1], g[2]), (f[1], f[2])

    def _convert(self, W, R, B):
        """Per direction ``(kernel, recurrent_kernel, bias)`` in Keras's layouts."""
        plan, op = self.plan, self.op
        G = GATES[op]
        for name, a in (("W", W), ("R", R)):
            if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                raise plan.fail(
                    f"input {name} must be float32 or float64, got {getattr(a, 'dtype', type(a))}",
                    UnsupportedModelError,
                )
        if W.ndim != 3 or R.ndim != 3:
            raise plan.fail(f"W and R must be 3-D, got shapes {W.shape} and {R.shape}")
        H = self.hidden_size if self.hidden_size is not None else R.shape[-1]
        want_w = (self.num_dir, G * H, W.shape[2])
        if W.shape != want_w:
            raise plan.fail(
                f"W has shape {W.shape}; direction={self.direction}, "
                f"hidden_size={H} need {want_w[:2] + ('input_size',)}"
            )
        if R.shape != (self.num_dir, G * H, H):
            raise plan.fail(
                f"R has shape {R.shape}; direction={self.direction}, "
                f"hidden_size={H} need {(self.num_dir, G * H, H)}"
            )
        if B is not None and B.shape != (self.num_dir, 2 * G * H):
            raise plan.fail(f"B has shape {B.shape}; need {(self.num_dir, 2 * G * H)}")
        if (B is not None and B.dtype != W.dtype) or R.dtype != W.dtype:
            raise plan.fail("W, R and B must have the same dtype")
        self.hidden_size, self.input_size, self.dtype = H, W.shape[2], W.dtype
        out = []
        for d in range(self.num_dir):
            act, rec_act, cand, gate = self.activations[d]
            order = LSTM_TO_KERAS if op == "LSTM" else tuple(range(G))
            scale = np.ones(G * H)
            shift = np.zeros(G * H)
            for k in range(G):
                s, t = (
                    cand
                    if (op == "RNN" or (op == "LSTM" and k == 2) or (op == "GRU" and k == 2))
                    else gate
                )
                scale[k * H : (k + 1) * H], shift[k * H : (k + 1) * H] = s, t

            Wk = reorder(W[d], G, order) * scale[:, None]
            Rk = reorder(R[d], G, order) * scale[:, None]
            if B is None:
                Wb, Rb = np.zeros(G * H), np.zeros(G * H)
            else:
                Wb, Rb = reorder(B[d][: G * H], G, order), reorder(B[d][G * H :], G, order)
            Wb, Rb = Wb * scale + shift, Rb * scale
            if op == "GRU" and self.linear_before_reset:
                bias = np.stack([Wb, Rb])
            elif B is None and not shift.any():
                bias = None
            else:
                bias = Wb + Rb
            dt = W.dtype
            out.append(
                (
                    np.ascontiguousarray(Wk.T, dt),
                    np.ascontiguousarray(Rk.T, dt),
                    None if bias is None else np.ascontiguousarray(bias, dt),
                    act,
                    rec_act,
                )
            )
        return out

    def run(self, args):
        op, plan = self.op, self.plan
        args = args + [None] * (8 - len(args))
        X, W, R, B, seq_lens, init_h, init_c = args[:7]
        weights = self.weights if self.weights is not None else self._convert(W, R, B)
        H, D, dtype = self.hidden_size, self.input_size, self.dtype
        if X.dtype != dtype:
            raise TypeError(f"X has dtype {X.dtype}, the weights {dtype}")
        if X.ndim != 3 or X.shape[2] != D:
            raise ValueError(
                f"X must be {'(T, B, ' if self.layout == 0 else '(B, T, '}{D}) "
                f"for layout={self.layout}, got {X.shape}"
            )
        x = X.transpose(1, 0, 2) if self.layout == 0 else X  # (B, T, D)
        Bn, T = x.shape[:2]
        lengths = None
        if seq_lens is not None:
            lengths = np.asarray(seq_lens).astype(np.int64, copy=False)
            if lengths.shape != (Bn,):
                raise ValueError(f"sequence_lens must have shape ({Bn},), got {lengths.shape}")
            if np.any(lengths < 0) or np.any(lengths > T):
                raise ValueError(f"sequence_lens must be in [0, {T}], got {lengths}")
            if np.all(lengths == T):
                lengths = None
        states = []
        for name, s in (("initial_h", init_h), ("initial_c", init_c)):
            if s is None:
                states.append(None)
                continue
            s = np.asarray(s)
            want = (self.num_dir, Bn, H) if self.layout == 0 else (Bn, self.num_dir, H)
            if s.shape != want or s.dtype != dtype:
                raise ValueError(f"{name} must be {want} {dtype}, got {s.shape} {s.dtype}")
            states.append(s if self.layout == 0 else s.transpose(1, 0, 2))
        if op == "LSTM" and (states[0] is None) != (states[1] is None):
            z = np.zeros((self.num_dir, Bn, H), dtype)
            states = [z if s is None else s for s in states]
        ys, hs, cs = [], [], []
        for d, (kernel, rec, bias, act, rec_act) in enumerate(weights):
            reverse = self.direction == "reverse" or d == 1
            init = None
            if states[0] is not None:
                init = [np.ascontiguousarray(states[0][d])]
                if op == "LSTM":
                    init.append(np.ascontiguousarray(states[1][d]))
            kw = {"activation": act}
            if op != "RNN":
                kw["recurrent_activation"] = rec_act
            if op == "GRU":
                kw["reset_after"] = self.linear_before_reset
            y, *finals = _scan(_CELL[op], x, kernel, rec, bias, init, lengths, reverse, kw)
            ys.append(y)
            hs.append(finals[0])
            if op == "LSTM":
                cs.append(finals[1])
        if self.layout == 0:
            Y = np.stack(ys, axis=0).transpose(2, 0, 1, 3)  # (T, num_dir, B, H)
            axis = 0  # states (num_dir, B, H)
        else:
            Y = np.stack(ys, axis=2)  # (B, T, num_dir, H)
            axis = 1  # states (B, num_dir, H)
        results = [np.ascontiguousarray(Y), np.stack(hs, axis=axis)]
        if op == "LSTM":
            results.append(np.stack(cs, axis=axis))
        return results[: len(plan.outputs)]


def _scan(cell, x, kernel, rec, bias, init, lengths, reverse, kw):
    """One direction with ONNX's conventions: outputs in input time order, zeros past a
    sequence's length, the reverse direction starting at each sequence's last valid step."""
    fn = getattr(functional, cell)
    if lengths is None:
        y, *finals = fn(
            x,
            kernel,
            rec,
            bias,
            initial_state=init,
            go_backwards=reverse,
            return_sequences=True,
            **kw,
        )
        return (y[:, ::-1] if reverse else y), *finals
    T = x.shape[1]
    steps = np.arange(T)
    mask = steps[None, :] < lengths[:, None]  # (B, T): the valid prefix of each sequence
    if reverse:
        # step j processes time len-1-j; positions past the length stay where they are
        idx = np.where(mask, lengths[:, None] - 1 - steps[None, :], steps[None, :])
        x = np.take_along_axis(x, idx[:, :, None], axis=1)
    # Keras's mask rule on a valid prefix: the state stops at the last valid step
    y, *finals = fn(
        x, kernel, rec, bias, initial_state=init, mask=mask, return_sequences=True, **kw
    )
    if reverse:
        y = np.take_along_axis(y, idx[:, :, None], axis=1)
    y[~mask] = 0
    empty = lengths == 0
    if empty.any():  # onnxruntime: zero final states for an empty sequence
        for f in finals:
            f[empty] = 0
    return y, *finals
