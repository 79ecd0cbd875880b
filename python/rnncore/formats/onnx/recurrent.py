"""ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes in Keras's layouts, computed by rnncore's core.

The layout facts both directions share live here: gate counts, the ONNX LSTM gate order
``i, o, f, c`` against Keras's ``i, f, c, o`` (GRU ``z, r, h`` is Keras's order), and which
ONNX activation computes each of rnncore's. :class:`RecurrentNode` converts a node's
weights to Keras's layouts, folding activations with parameters into them
(``HardSigmoid(alpha, beta)(x)`` is rnncore's ``hard_sigmoid(6 alpha x + 6 (beta - 0.5))``,
``Affine(alpha, beta)(x)`` is ``linear(alpha x + beta)``), and runs it with ONNX's output
conventions (:func:`_scan`). Weights that are constants (initializers) are converted once,
at load; weights fed as graph inputs (as the ``onnx`` package's own node test cases feed
``W``, ``R``, ``B``, ``P``) are converted on every call -- not cached, so an array the
caller changes in place between calls is never served stale.

The ONNX LSTM's variants map onto keywords of :func:`rnncore.functional.lstm`, per
direction (onnxruntime's semantics):

* ``P = [p_i, p_o, p_f]`` -> ``peephole`` rows ``p_i, p_f, p_o``:
  ``i = f(x W_i + h R_i + b_i + p_i * c_{t-1})``, ``f`` likewise with ``p_f``,
  ``o = f(x W_o + h R_o + b_o + p_o * c_t)``;
* ``clip`` -> ``cell_clip``: each pre-activation above (bias and peephole term included) is
  clipped to ``[-clip, clip]`` before its activation;
* ``input_forget=1`` -> ``input_forget=True``: ``f = 1 - i``;
* the third activation ``h`` (applied to ``c_t`` in ``h_t = o * h(c_t)``) ->
  ``output_activation`` when it differs from ``g``.

A build whose core lacks one of these keywords refuses the node with
:class:`UnsupportedModelError`, naming the attribute.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import numpy as np

from ... import activations, functional
from ...errors import ModelFileError, UnsupportedModelError

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


def _lstm_variants() -> frozenset:
    """The keywords of this build's :func:`rnncore.functional.lstm` (its LSTM variants)."""
    return frozenset(inspect.signature(functional.lstm).parameters)


def _is_identity(scale: float, shift: float) -> bool:
    """An affine ``scale x + shift`` that is ``x`` up to float32 rounding of its parameters
    (e.g. ``HardSigmoid(1/6, 0.5)``, stored in float32, is rnncore's ``hard_sigmoid``)."""
    return abs(scale - 1.0) <= 1e-6 and abs(shift) <= 1e-6


class _Weights(NamedTuple):
    """A node's weights in Keras's layouts: per direction ``(kernel, recurrent_kernel, bias,
    keywords of the core's function)``, and the sizes and dtype they fix."""

    directions: list
    hidden_size: int
    input_size: int
    dtype: np.dtype


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
        for name in ("input_forget", "linear_before_reset"):
            owner = "LSTM" if name == "input_forget" else "GRU"
            if op != owner and name in at:
                raise fail(f"{name} is an attribute of {owner} only")
        self.clip = at.get("clip")
        if self.clip is not None and op != "LSTM":
            raise fail(
                f"attribute clip={self.clip} (cell clipping) of {op} is not implemented by "
                f"rnncore (only LSTM's)",
                UnsupportedModelError,
            )
        if self.clip is not None and not self.clip > 0:
            raise fail(f"attribute clip must be positive, got {self.clip}")
        self.input_forget = bool(at.get("input_forget", 0))
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
        if self.clip is not None:
            self._need("cell_clip", "attribute clip")
        if self.input_forget:
            self._need("input_forget", "attribute input_forget=1")
        self.hidden_size = at.get("hidden_size")
        # W, R, B and P (LSTM): converted now when all that are present are constants,
        # else on every call, from the values the graph feeds
        names = plan.inputs + [""] * (8 - n_in)
        self._weight_inputs = [names[1], names[2], names[3], names[7] if op == "LSTM" else ""]
        const = plan.model._constants
        self.weights = None
        if all(n in const for n in self._weight_inputs if n):
            self.weights = self._convert(
                *(const.get(n) if n else None for n in self._weight_inputs)
            )

    def _need(self, keyword: str, what: str):
        """Refuse ``what`` when this build's ``functional.lstm`` lacks ``keyword``."""
        if keyword not in _lstm_variants():
            raise self.plan.fail(
                f"{what} needs rnncore.functional.lstm({keyword}=...), which this build of "
                f"rnncore's core does not have",
                UnsupportedModelError,
            )

    def _direction_activations(self, acts):
        """``(activation, recurrent_activation, candidate affine, gate affine, output
        activation)`` for the core; the output activation is ``None`` when it is the
        ``activation``."""
        plan = self.plan
        conv = [_core_activation(plan, a) for a in acts]
        if self.op == "RNN":
            name, s, t = conv[0]
            return name, None, (s, t), None, None
        f, g = conv[0], conv[1]
        out = None
        if self.op == "LSTM":
            h = conv[2]
            # h is applied to the cell state c_t, not to a product with the weights: only an
            # activation with no affine part can be passed to the core
            if not _is_identity(h[1], h[2]):
                raise plan.fail(
                    f"LSTM activation h={acts[2][0]} with alpha={acts[2][1]}, "
                    f"beta={acts[2][2]} (applied to the cell state) is not implemented by "
                    f"rnncore",
                    UnsupportedModelError,
                )
            if h[0] != g[0]:
                self._need(
                    "output_activation", f"LSTM activations g={acts[1][0]} and h={acts[2][0]}"
                )
                out = h[0]
            # clip bounds the pre-activation before ONNX's alpha, beta; folded into the
            # weights they would act before the clip instead
            if self.clip is not None and not (_is_identity(*f[1:]) and _is_identity(*g[1:])):
                raise plan.fail(
                    f"attribute clip with the activations f={acts[0][0]}, g={acts[1][0]} "
                    f"and their alpha / beta is not implemented by rnncore",
                    UnsupportedModelError,
                )
        return g[0], f[0], (g[1], g[2]), (f[1], f[2]), out

    def _invalid(self, msg, runtime: bool, cls=ValueError):
        """An error about the weights: in the file, or fed as graph inputs at run time."""
        if runtime:
            return cls(f"{msg} (fed as graph inputs)")
        return self.plan.fail(msg, UnsupportedModelError if cls is TypeError else ModelFileError)

    def _convert(self, W, R, B, P, runtime: bool = False) -> _Weights:
        """Per direction ``(kernel, recurrent_kernel, bias, keywords)`` in Keras's layouts."""
        op = self.op
        G = GATES[op]
        given = [("W", W), ("R", R), ("B", B), ("P", P)]
        for name, a in given:
            if a is not None and (
                not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64)
            ):
                raise self._invalid(
                    f"input {name} must be float32 or float64, got "
                    f"{getattr(a, 'dtype', type(a).__name__)}",
                    runtime,
                    TypeError,
                )
        for name, a in given[1:]:
            if a is not None and a.dtype != W.dtype:
                raise self._invalid(
                    f"W, R, B and P must have one dtype: W is {W.dtype}, {name} {a.dtype}",
                    runtime,
                    TypeError,
                )
        if W.ndim != 3 or R.ndim != 3:
            raise self._invalid(f"W and R must be 3-D, got shapes {W.shape} and {R.shape}", runtime)
        H = self.hidden_size if self.hidden_size is not None else R.shape[-1]
        where = f"direction={self.direction}, hidden_size={H} need"
        nd = self.num_dir
        if W.shape[:2] != (nd, G * H):
            raise self._invalid(
                f"W has shape {W.shape}; {where} {(nd, G * H, 'input_size')}", runtime
            )
        for name, a, want in (
            ("R", R, (nd, G * H, H)),
            ("B", B, (nd, 2 * G * H)),
            ("P", P, (nd, 3 * H)),
        ):
            if a is not None and a.shape != want:
                raise self._invalid(f"{name} has shape {a.shape}; {where} {want}", runtime)
        if P is not None and not P.any():
            P = None  # zero peepholes: the plain LSTM, on any core
        if P is not None:
            self._need("peephole", "peepholes (a non-zero input P)")
        dt = W.dtype
        order = LSTM_TO_KERAS if op == "LSTM" else tuple(range(G))
        out = []
        for d in range(nd):
            act, rec_act, cand, gate, out_act = self.activations[d]
            # every gate's pre-activation times its activation's scale, plus its shift:
            # the candidate (RNN's one block, LSTM's c, GRU's h) takes g's, the others f's
            scale, shift = np.ones(G * H), np.zeros(G * H)
            for k in range(G):
                s, t = cand if (op == "RNN" or k == 2) else gate
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
            kw = {"activation": act}
            if op != "RNN":
                kw["recurrent_activation"] = rec_act
            if op == "GRU":
                kw["reset_after"] = self.linear_before_reset
            if op == "LSTM":
                kw.update(self._lstm_keywords(P, d, H, gate[0], out_act, dt))
            out.append(
                (
                    np.ascontiguousarray(Wk.T, dt),
                    np.ascontiguousarray(Rk.T, dt),
                    None if bias is None else np.ascontiguousarray(bias, dt),
                    kw,
                )
            )
        return _Weights(out, H, W.shape[2], dt)

    def _lstm_keywords(self, P, d, H, gate_scale, out_act, dtype) -> dict:
        """``functional.lstm``'s variant keywords for direction ``d`` (none when unused)."""
        kw = {}
        if P is not None:
            # ONNX P rows p_i, p_o, p_f -> p_i, p_f, p_o; p * c is part of the gates'
            # pre-activations, so it takes their activation's scale like W and R
            p = P[d].reshape(3, H)[[0, 2, 1]] * gate_scale
            kw["peephole"] = np.ascontiguousarray(p, dtype)
        if self.clip is not None:
            kw["cell_clip"] = float(self.clip)
        if self.input_forget:
            kw["input_forget"] = True
        if out_act is not None:
            kw["output_activation"] = out_act
        return kw

    def run(self, args):
        op, plan = self.op, self.plan
        args = args + [None] * (8 - len(args))
        X, W, R, B, seq_lens, init_h, init_c, P = args
        weights = self.weights
        if weights is None:
            weights = self._convert(W, R, B, P, runtime=True)
        H, D, dtype = weights.hidden_size, weights.input_size, weights.dtype
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
        for d, (kernel, rec, bias, kw) in enumerate(weights.directions):
            reverse = self.direction == "reverse" or d == 1
            init = None
            if states[0] is not None:
                init = [np.ascontiguousarray(states[0][d])]
                if op == "LSTM":
                    init.append(np.ascontiguousarray(states[1][d]))
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
