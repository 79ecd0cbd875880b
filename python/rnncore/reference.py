"""Plain NumPy reference of the recurrent layers, written for clarity, not speed.

Same signatures, layouts and conventions as :mod:`rnncore.functional` (Keras's): a loop over
time, one line per equation. Use it to check the core's results; it computes in the dtype
of its inputs.

:func:`apply_gradients` is the optimizers' step in NumPy, one expression per equation: the
operation order (and so the rounding) that the core's fused step reproduces.

Each cell is a pair of functions: ``step(p, x_t, states) -> (new_states, cache)`` and
``step_backward(p, cache, d_states) -> (dx_t, d_params, d_prev_states)``; ``_scan`` and
``_scan_backward`` own the time loop, direction and masks for all of them.
"""

from __future__ import annotations

import numpy as np

from . import activations

__all__ = ["ACTIVATIONS", "simple_rnn", "lstm", "gru", "dense", "backward", "dense_backward"]


# The activations and their derivatives (through the output) are the package's one table.
ACTIVATIONS = activations.FUNCTIONS
_act = activations.get
_grad = activations.gradient


# --------------------------------------------------------------------------------------------
# Cells. p is a dict: W, U, b (or None), H, act, rec (activation names), reset_after.


def _simple_step(p, x_t, states):
    (h,) = states
    z = x_t @ p["W"] + h @ p["U"]
    if p["b"] is not None:
        z = z + p["b"]
    h_new = _act(p["act"])(z)
    return [h_new], (x_t, h, h_new)


def _simple_step_backward(p, cache, d_states):
    x_t, h, h_new = cache
    (dh,) = d_states
    dz = _grad(p["act"], h_new, dh)
    d = {"W": x_t.T @ dz, "U": h.T @ dz, "b": dz.sum(0)}
    return dz @ p["W"].T, d, [dz @ p["U"].T]


def _lstm_step(p, x_t, states):
    # With the variants of functional.lstm: peepholes, clip, input_forget, output
    # activation, projection (all off for Keras's LSTM).
    h, c = states
    H, act, rec, out = p["H"], _act(p["act"]), _act(p["rec"]), _act(p["out"])
    P, clip = p["peephole"], p["clip"]
    z = x_t @ p["W"] + h @ p["U"]
    if p["b"] is not None:
        z = z + p["b"]
    z_i, z_f, z_g, z_o = (z[:, k * H : (k + 1) * H] for k in range(4))
    if P is not None:
        z_i, z_f = z_i + P[0] * c, z_f + P[1] * c
    cl = (lambda v: np.clip(v, -clip, clip)) if clip else (lambda v: v)
    i = rec(cl(z_i))
    f = 1 - i if p["input_forget"] else rec(cl(z_f))
    g = act(cl(z_g))
    c_new = f * c + i * g
    if P is not None:
        z_o = z_o + P[2] * c_new
    o = rec(cl(z_o))
    a_c = out(c_new)  # onnxruntime clips the gates' inputs only
    m = o * a_c
    h_new = m @ p["proj"] if p["proj"] is not None else m
    return [h_new, c_new], (x_t, h, c, i, f, g, o, a_c, c_new, (z_i, z_f, z_g, z_o), m)


def _lstm_step_backward(p, cache, d_states):
    x_t, h, c, i, f, g, o, a_c, c_new, (z_i, z_f, z_g, z_o), m = cache
    dh, dc = d_states
    act, rec, out, P, clip = p["act"], p["rec"], p["out"], p["peephole"], p["clip"]
    # the clip's derivative: 0 where its input was outside [-clip, clip]
    cl = (lambda d, v: np.where(np.abs(v) <= clip, d, 0)) if clip else (lambda d, v: d)
    dm = dh @ p["proj"].T if p["proj"] is not None else dh
    dz_o = cl(_grad(rec, o, dm * a_c), z_o)
    dC = dc + _grad(out, a_c, dm * o)  # total gradient of c_t
    if P is not None:
        dC = dC + dz_o * P[2]
    if p["input_forget"]:  # f = 1 - i
        dz_i = cl(_grad(rec, i, dC * g - dC * c), z_i)
        dz_f = np.zeros_like(dz_i)
    else:
        dz_i = cl(_grad(rec, i, dC * g), z_i)
        dz_f = cl(_grad(rec, f, dC * c), z_f)
    dz_g = cl(_grad(act, g, dC * i), z_g)
    dz = np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)
    d = {"W": x_t.T @ dz, "U": h.T @ dz, "b": dz.sum(0)}
    dc_prev = dC * f
    if P is not None:
        dc_prev = dc_prev + dz_i * P[0] + dz_f * P[1]
        d["peephole"] = np.stack([(dz_i * c).sum(0), (dz_f * c).sum(0), (dz_o * c_new).sum(0)])
    if p["proj"] is not None:
        d["projection"] = m.T @ dh
    return dz @ p["W"].T, d, [dz @ p["U"].T, dc_prev]


def _gru_biases(p):
    H, b = p["H"], p["b"]
    if b is None:
        return np.zeros(3 * H), np.zeros(3 * H)
    if p["reset_after"]:
        return b[0], b[1]  # input-side and recurrent-side rows
    return b, np.zeros(3 * H)


def _gru_step(p, x_t, states):
    (h,) = states
    H, act, rec = p["H"], _act(p["act"]), _act(p["rec"])
    W, U = p["W"], p["U"]
    b_x, b_h = _gru_biases(p)
    xw = x_t @ W + b_x
    z = rec(xw[:, :H] + h @ U[:, :H] + b_h[:H])
    r = rec(xw[:, H : 2 * H] + h @ U[:, H : 2 * H] + b_h[H : 2 * H])
    if p["reset_after"]:
        a = h @ U[:, 2 * H :] + b_h[2 * H :]
        hh = act(xw[:, 2 * H :] + r * a)
    else:
        a = r * h
        hh = act(xw[:, 2 * H :] + a @ U[:, 2 * H :])
    h_new = z * h + (1 - z) * hh
    return [h_new], (x_t, h, z, r, hh, a)


def _gru_step_backward(p, cache, d_states):
    x_t, h, z, r, hh, a = cache
    (dh,) = d_states
    H, W, U = p["H"], p["W"], p["U"]
    dz_z = _grad(p["rec"], z, dh * (h - hh))
    dz_h = _grad(p["act"], hh, dh * (1 - z))
    dh_prev = dh * z
    if p["reset_after"]:
        dz_r = _grad(p["rec"], r, dz_h * a)
        da = dz_h * r  # gradient of a = h U_h + b_hh_h
        d_rec = np.concatenate([dz_z, dz_r, da], axis=1)  # gradient of h U + b_hh
        dU = h.T @ d_rec
        dh_prev = dh_prev + d_rec @ U.T
    else:
        da = dz_h @ U[:, 2 * H :].T  # gradient of a = r * h
        dz_r = _grad(p["rec"], r, da * h)
        dU = np.concatenate([h.T @ dz_z, h.T @ dz_r, a.T @ dz_h], axis=1)
        dh_prev = dh_prev + da * r + np.concatenate([dz_z, dz_r], 1) @ U[:, : 2 * H].T
    dz = np.concatenate([dz_z, dz_r, dz_h], axis=1)
    if p["reset_after"]:
        db = np.stack([dz.sum(0), d_rec.sum(0)])
    else:
        db = dz.sum(0)
    d = {"W": x_t.T @ dz, "U": dU, "b": db}
    return dz @ W.T, d, [dh_prev]


_CELLS = {
    "simple_rnn": (_simple_step, _simple_step_backward, 1),
    "lstm": (_lstm_step, _lstm_step_backward, 2),
    "gru": (_gru_step, _gru_step_backward, 1),
}


# --------------------------------------------------------------------------------------------
# The time loop.


def _params(kernel, recurrent_kernel, bias, activation, recurrent_activation, reset_after,
            peephole=None, projection=None, cell_clip=None, input_forget=False,
            output_activation=None):  # fmt: skip
    out = activation if output_activation is None else output_activation
    _act(activation), _act(recurrent_activation), _act(out)
    Hp = recurrent_kernel.shape[0]  # the width of h
    return {
        "W": kernel,
        "U": recurrent_kernel,
        "b": bias,
        "H": Hp if projection is None else np.shape(projection)[0],
        "widths": [Hp, Hp if projection is None else np.shape(projection)[0]],
        "act": activation,
        "rec": recurrent_activation,
        "reset_after": reset_after,
        "out": out,
        "peephole": peephole,
        "proj": projection,
        "clip": cell_clip,
        "input_forget": input_forget,
    }


def _initial(initial_state, widths, B, dtype):
    if initial_state is None:
        return [np.zeros((B, w), dtype) for w in widths]
    if isinstance(initial_state, np.ndarray):
        initial_state = [initial_state]
    return [np.asarray(s, dtype) for s in initial_state]


def _order(T, go_backwards):
    return list(range(T - 1, -1, -1)) if go_backwards else list(range(T))


def _used(mask, t, B):
    return np.ones((B, 1), bool) if mask is None else np.asarray(mask)[:, t, None].astype(bool)


def _scan(cell, x, p, initial_state, mask, go_backwards, return_sequences, keep=False):
    """The forward time loop with Keras's masking rule.

    A masked step keeps the states and repeats the previous output, which is zero before
    the first used step. Returns ``(output, *final_states)`` (and the caches when ``keep``).
    """
    step, _, n = _CELLS[cell]
    B, T, _ = x.shape
    H = p["widths"][0]  # the width of h
    states = _initial(initial_state, p["widths"][:n], B, x.dtype)
    y_prev = np.zeros((B, H), x.dtype)
    outputs, caches = [], []
    for t in _order(T, go_backwards):
        new, cache = step(p, x[:, t], states)
        used = _used(mask, t, B)
        states = [np.where(used, a, b) for a, b in zip(new, states)]
        y_prev = np.where(used, states[0], y_prev)
        outputs.append(y_prev)
        caches.append(cache)
    if return_sequences:
        y = np.stack(outputs, axis=1) if outputs else np.zeros((B, 0, H), x.dtype)
    else:
        y = y_prev
    return ((y, *states), caches) if keep else (y, *states)


def simple_rnn(x, kernel, recurrent_kernel, bias=None, *, activation="tanh", initial_state=None,
               mask=None, go_backwards=False, return_sequences=False):  # fmt: skip
    """``h_t = act(x_t W + h_{t-1} U + b)``; returns ``(output, h)``."""
    p = _params(kernel, recurrent_kernel, bias, activation, "sigmoid", True)
    return _scan("simple_rnn", x, p, initial_state, mask, go_backwards, return_sequences)


def lstm(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
         recurrent_activation="sigmoid", initial_state=None, mask=None, go_backwards=False,
         return_sequences=False, **variants):  # fmt: skip
    """LSTM with Keras gate order ``i, f, c, o``; returns ``(output, h, c)``.

    ``variants``: ``peephole``, ``projection``, ``cell_clip``, ``input_forget``,
    ``output_activation``, as in :func:`rnncore.functional.lstm`."""
    p = _params(kernel, recurrent_kernel, bias, activation, recurrent_activation, True,
                **variants)  # fmt: skip
    return _scan("lstm", x, p, initial_state, mask, go_backwards, return_sequences)


def gru(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
        recurrent_activation="sigmoid", reset_after=True, initial_state=None, mask=None,
        go_backwards=False, return_sequences=False):  # fmt: skip
    """GRU with Keras gate order ``z, r, h``, both forms; returns ``(output, h)``."""
    p = _params(kernel, recurrent_kernel, bias, activation, recurrent_activation, reset_after)
    return _scan("gru", x, p, initial_state, mask, go_backwards, return_sequences)


def backward(cell, x, kernel, recurrent_kernel, bias=None, *, d_output, d_state=None,
             activation="tanh", recurrent_activation="sigmoid", reset_after=True,
             initial_state=None, mask=None, go_backwards=False,
             return_sequences=False, **variants):  # fmt: skip
    """Backpropagation through time for ``cell`` in ``simple_rnn``, ``lstm``, ``gru``.

    Returns a dict with the gradients of ``x``, ``kernel``, ``recurrent_kernel``, ``bias``
    (``None`` without a bias) and ``initial_state`` (a list), given dL/d(output)
    ``d_output`` and dL/d(final states) ``d_state`` (``None`` for zero); with an LSTM's
    ``peephole`` or ``projection`` (``variants`` as in :func:`lstm`), also theirs.
    """
    _, step_backward, n = _CELLS[cell]
    p = _params(kernel, recurrent_kernel, bias, activation, recurrent_activation, reset_after,
                **variants)  # fmt: skip
    B, T, _ = x.shape
    H = p["widths"][0]
    _, caches = _scan(cell, x, p, initial_state, mask, go_backwards, return_sequences, keep=True)

    d_states = _initial(d_state, p["widths"][:n], B, x.dtype)
    d_y_prev = np.zeros((B, H), x.dtype) if return_sequences else np.array(d_output)
    dx = np.zeros_like(x)
    grads = {"W": np.zeros_like(kernel), "U": np.zeros_like(recurrent_kernel), "b": 0.0}
    for name, key in (("peephole", "peephole"), ("projection", "proj")):
        if p[key] is not None:
            grads[name] = np.zeros_like(p[key])
    order = _order(T, go_backwards)
    for s in range(T - 1, -1, -1):
        t = order[s]
        if return_sequences:
            d_y_prev = d_y_prev + d_output[:, s]
        used = _used(mask, t, B)
        # The output of a used step is h; a masked step's output is the previous output.
        d_states[0] = d_states[0] + np.where(used, d_y_prev, 0)
        d_y_prev = np.where(used, 0, d_y_prev)
        # A masked row: no gradient into the step, its states' gradient passes through.
        d_in = [np.where(used, d, 0) for d in d_states]
        dx_t, d, d_prev = step_backward(p, caches[s], d_in)
        dx[:, t] = dx_t
        for k in grads:
            grads[k] = grads[k] + d[k]
        d_states = [np.where(used, dp, ds) for dp, ds in zip(d_prev, d_states)]
    if bias is None:
        db = None
    else:
        db = np.broadcast_to(np.asarray(grads["b"], x.dtype), np.shape(bias)).copy()
    return {
        "x": dx,
        "kernel": grads["W"],
        "recurrent_kernel": grads["U"],
        "bias": db,
        "initial_state": d_states,
        **{k: grads[k] for k in ("peephole", "projection") if k in grads},
    }


def dense(x, kernel, bias=None, activation="linear"):
    """``y = act(x W + b)`` on the last axis."""
    z = x @ kernel
    if bias is not None:
        z = z + bias
    return _act(activation)(z)


def dense_backward(x, kernel, y, dy, *, use_bias=True, activation="linear"):
    """``(dx, dkernel, dbias)`` of :func:`dense` given its output ``y`` and dL/dy."""
    dz = _grad(activation, y, dy)
    x2, dz2 = x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1])
    return dz @ kernel.T, x2.T @ dz2, (dz2.sum(0) if use_bias else None)


# --------------------------------------------------------------------------------------------
# Optimizers: rnncore.optimizers' rules, one NumPy expression each. An operation on a
# variable's elements rounds to its dtype; a Python float meeting an array is rounded to the
# array's dtype first; Adam's alpha is a float64 scalar, so its last line is float64.


def _sgd(opt, w, g, slots, step, lr):
    if not opt.momentum:
        return w - lr * g, slots
    m = opt.momentum * slots["m"] - lr * g
    if opt.nesterov:
        return w + (opt.momentum * m - lr * g), {"m": m}
    return w + m, {"m": m}


def _adam(opt, w, g, slots, step, lr):
    b1, b2 = opt.beta_1, opt.beta_2
    alpha = lr * np.sqrt(1 - b2**step) / (1 - b1**step)
    m = slots["m"] + (g - slots["m"]) * (1 - b1)
    v = slots["v"] + (g * g - slots["v"]) * (1 - b2)
    new = {"m": m, "v": v}
    if opt.amsgrad:
        v = new["v_hat"] = np.maximum(slots["v_hat"], v)
    return w - (m * alpha) / (np.sqrt(v) + opt.epsilon), new


def _rmsprop(opt, w, g, slots, step, lr):
    rho = opt.rho
    v = rho * slots["v"] + (1 - rho) * g * g
    new = {"v": v}
    if opt.centered:
        a = new["a"] = rho * slots["a"] + (1 - rho) * g
        denominator = v - a * a + opt.epsilon
    else:
        denominator = v + opt.epsilon
    increment = lr * g / np.sqrt(denominator)
    if opt.momentum > 0:
        m = new["m"] = opt.momentum * slots["m"] + increment
        return w - m, new
    return w - increment, new


_OPTIMIZER_RULES = {"sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop}


def _clip(opt, grads):
    # the scale is a Python float, so a clipped gradient keeps its dtype
    if opt.clipnorm:
        out = []
        for g in grads:
            norm = np.sqrt(np.sum(np.square(g, dtype=np.float64)))
            out.append(g * float(opt.clipnorm / max(norm, opt.clipnorm)))
        return out
    if opt.global_clipnorm:
        norm = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads))
        scale = float(opt.global_clipnorm / max(norm, opt.global_clipnorm))
        return [g * scale for g in grads]
    if opt.clipvalue:
        return [np.clip(g, -opt.clipvalue, opt.clipvalue) for g in grads]
    return grads


def apply_gradients(optimizer, grads_and_vars) -> None:
    """``optimizer.apply_gradients(grads_and_vars)`` computed in NumPy: the same clipping,
    weight decay and rule, updating the variables and the optimizer's state (slots,
    iterations) as the optimizer does. Every new value is computed before the first write.
    """
    opt = optimizer
    grads, variables = [], []
    for g, v in grads_and_vars:
        g = np.asarray(g)
        if g.shape != v.shape:
            raise ValueError(f"gradient of {v.path!r} has shape {g.shape}, the variable {v.shape}")
        if not np.all(np.isfinite(g)):
            raise FloatingPointError(f"the gradient of {v.path!r} is not finite")
        grads.append(g.astype(v.value.dtype, copy=False))
        variables.append(v)
    grads = _clip(opt, grads)
    step = opt.iterations + 1
    lr = opt.learning_rate
    rule = _OPTIMIZER_RULES[opt._kind]
    updates = []
    for g, v in zip(grads, variables):
        slots = opt._slots.get(id(v))
        if slots is None or opt._owners.get(id(v)) is not v:
            slots = {k: np.zeros_like(v.value) for k in opt._slot_names}
        w = v.value
        if opt._use_weight_decay(v):
            w = w * (1.0 - opt.weight_decay * lr)
        new_value, new_slots = rule(opt, w, g, slots, step, lr)
        updates.append((v, new_value.astype(v.value.dtype, copy=False), new_slots))
    for v, value, slots in updates:
        v.assign(value)
        opt._slots[id(v)] = slots
        opt._owners[id(v)] = v
    opt.iterations = step
