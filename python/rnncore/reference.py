"""Plain NumPy reference of the recurrent layers, written for clarity, not speed.

Same signatures, layouts and conventions as :mod:`rnncore.functional` (Keras's): a loop over
time, one line per equation. Use it to check the core's results; it computes in the dtype
of its inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "simple_rnn", "lstm", "gru"]


def _sigmoid(z):
    # 1 / (1 + e^-z), written through tanh so that large |z| never overflows.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _hard_sigmoid(z):
    # Keras 3: relu6(z + 3) / 6
    return np.clip(z / 6.0 + 0.5, 0.0, 1.0)


ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda z: np.maximum(z, 0.0),
    "hard_sigmoid": _hard_sigmoid,
    "linear": lambda z: z,
}


def _act(name):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}: expected one of {list(ACTIVATIONS)}")


def _scan(step, x, states, mask, go_backwards, return_sequences):
    """The time loop: ``states = step(x_t, states)`` with Keras's masking rule."""
    B, T, _ = x.shape
    H = states[0].shape[1]
    y_prev = np.zeros((B, H), x.dtype)  # Keras: the output before any used step is zero
    outputs = []
    order = range(T - 1, -1, -1) if go_backwards else range(T)
    for t in order:
        new = step(x[:, t], states)
        used = np.ones((B, 1), bool) if mask is None else mask[:, t, None].astype(bool)
        states = [np.where(used, n, s) for n, s in zip(new, states)]
        y_prev = np.where(used, states[0], y_prev)
        outputs.append(y_prev)
    if return_sequences:
        y = np.stack(outputs, axis=1) if outputs else np.zeros((B, 0, H), x.dtype)
    else:
        y = y_prev
    return (y, *states)


def _initial(initial_state, n, B, H, dtype):
    if initial_state is None:
        return [np.zeros((B, H), dtype) for _ in range(n)]
    if isinstance(initial_state, np.ndarray):
        initial_state = [initial_state]
    return [np.asarray(s, dtype) for s in initial_state]


def simple_rnn(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
               initial_state=None, mask=None, go_backwards=False, return_sequences=False):
    """``h_t = act(x_t W + h_{t-1} U + b)``; returns ``(output, h)``."""
    W, U = kernel, recurrent_kernel
    b = 0 if bias is None else bias
    act = _act(activation)
    H = U.shape[0]

    def step(x_t, states):
        (h,) = states
        return [act(x_t @ W + h @ U + b)]

    s0 = _initial(initial_state, 1, x.shape[0], H, x.dtype)
    return _scan(step, x, s0, mask, go_backwards, return_sequences)


def lstm(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
         recurrent_activation="sigmoid", initial_state=None, mask=None, go_backwards=False,
         return_sequences=False):
    """LSTM with Keras gate order ``i, f, c, o``; returns ``(output, h, c)``."""
    W, U = kernel, recurrent_kernel
    b = 0 if bias is None else bias
    act, rec = _act(activation), _act(recurrent_activation)
    H = U.shape[0]

    def step(x_t, states):
        h, c = states
        z = x_t @ W + h @ U + b
        i = rec(z[:, 0 * H:1 * H])
        f = rec(z[:, 1 * H:2 * H])
        g = act(z[:, 2 * H:3 * H])
        o = rec(z[:, 3 * H:4 * H])
        c_new = f * c + i * g
        h_new = o * act(c_new)
        return [h_new, c_new]

    s0 = _initial(initial_state, 2, x.shape[0], H, x.dtype)
    return _scan(step, x, s0, mask, go_backwards, return_sequences)


def gru(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
        recurrent_activation="sigmoid", reset_after=True, initial_state=None, mask=None,
        go_backwards=False, return_sequences=False):
    """GRU with Keras gate order ``z, r, h``, both forms; returns ``(output, h)``."""
    W, U = kernel, recurrent_kernel
    act, rec = _act(activation), _act(recurrent_activation)
    H = U.shape[0]
    if bias is None:
        b_x, b_h = 0, 0
    elif reset_after:
        b_x, b_h = bias[0], bias[1]  # input-side and recurrent-side rows
    else:
        b_x, b_h = bias, 0

    def step(x_t, states):
        (h,) = states
        xw = x_t @ W + b_x
        if reset_after:
            hu = h @ U + b_h
            z = rec(xw[:, :H] + hu[:, :H])
            r = rec(xw[:, H:2 * H] + hu[:, H:2 * H])
            hh = act(xw[:, 2 * H:] + r * hu[:, 2 * H:])
        else:
            z = rec(xw[:, :H] + h @ U[:, :H])
            r = rec(xw[:, H:2 * H] + h @ U[:, H:2 * H])
            hh = act(xw[:, 2 * H:] + (r * h) @ U[:, 2 * H:])
        return [z * h + (1 - z) * hh]

    s0 = _initial(initial_state, 1, x.shape[0], H, x.dtype)
    return _scan(step, x, s0, mask, go_backwards, return_sequences)
