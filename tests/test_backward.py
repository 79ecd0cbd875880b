"""Backward passes (BPTT): finite differences in float64, and the core against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from rnncore import functional as F
from rnncore import reference as R

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3, "gru_v1": 3}
N_STATES = {"simple_rnn": 1, "lstm": 2, "gru": 1, "gru_v1": 1}


def make_case(
    kind, rng, B=3, T=5, D=4, H=3, *, use_bias=True, initial=True, mask=None, dtype=np.float64
):
    """Random inputs and weights of one layer; kind gru_v1 is GRU with reset_after=False."""
    G = GATES[kind]
    x = rng.standard_normal((B, T, D))
    W = rng.standard_normal((D, G * H)) * (1.2 / np.sqrt(D))
    U = rng.standard_normal((H, G * H)) * (1.2 / np.sqrt(H))
    if not use_bias:
        b = None
    elif kind == "gru":
        b = rng.standard_normal((2, G * H)) * 0.5
    else:
        b = rng.standard_normal(G * H) * 0.5
    s0 = [rng.standard_normal((B, H)) * 0.5 for _ in range(N_STATES[kind])] if initial else None
    m = None
    if mask == "holes":
        m = rng.random((B, T)) > 0.35
        m[0, :] = True
        m[1, -2:] = False  # right padding
        m[-1, :2] = False  # left padding
    elif mask == "all_masked_row":
        m = np.ones((B, T), bool)
        m[0] = False

    def cast(a):
        return None if a is None else a.astype(dtype)

    return {
        "x": cast(x),
        "kernel": cast(W),
        "recurrent_kernel": cast(U),
        "bias": cast(b),
        "initial_state": None if s0 is None else [cast(s) for s in s0],
        "mask": m,
    }


def split_kind(kind, options):
    options = dict(options)
    if kind == "gru_v1":
        options["reset_after"] = False
        return "gru", options
    if kind == "gru":
        options["reset_after"] = True
    return kind, options


def core_forward(kind, case, options, training=False):
    cell, opts = split_kind(kind, options)
    fn = getattr(F, cell)
    args = dict(case)
    return fn(
        args.pop("x"),
        args.pop("kernel"),
        args.pop("recurrent_kernel"),
        args.pop("bias"),
        **args,
        **opts,
        training=training,
    )


def loss(kind, case, options, d_out, d_states):
    """L = <d_out, output> + sum_k <d_states[k], final state k>: its gradient is backward's."""
    out = core_forward(kind, case, options)
    return float(np.sum(out[0] * d_out) + sum(np.sum(s * d) for s, d in zip(out[1:], d_states)))


def gradient_names(case):
    names = ["x", "kernel", "recurrent_kernel"]
    if case["bias"] is not None:
        names.append("bias")
    if case["initial_state"] is not None:
        names += [("initial_state", k) for k in range(len(case["initial_state"]))]
    return names


def get(case_or_grads, name):
    if isinstance(name, tuple):
        return case_or_grads[name[0]][name[1]]
    return case_or_grads[name]


def perturbed(case, name, delta):
    new = {k: (list(v) if isinstance(v, list) else v) for k, v in case.items()}
    if isinstance(name, tuple):
        new[name[0]][name[1]] = case[name[0]][name[1]] + delta
    else:
        new[name] = case[name] + delta
    return new


def check_gradients(kind, case, options, rng, eps=1e-6, rtol=1e-6):
    out = core_forward(kind, case, options, training=True)
    *outputs, ws = out
    d_out = rng.standard_normal(outputs[0].shape)
    d_states = [rng.standard_normal(s.shape) for s in outputs[1:]]
    g = F.backward(ws, d_out, d_states)
    grads = {
        "x": g.x,
        "kernel": g.kernel,
        "recurrent_kernel": g.recurrent_kernel,
        "bias": g.bias,
        "initial_state": g.initial_state,
    }
    for name in gradient_names(case):
        v = rng.standard_normal(get(case, name).shape)  # a random direction per check
        numeric = (
            loss(kind, perturbed(case, name, eps * v), options, d_out, d_states)
            - loss(kind, perturbed(case, name, -eps * v), options, d_out, d_states)
        ) / (2 * eps)
        analytic = float(np.sum(get(grads, name) * v))
        err = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-3)
        assert err <= rtol, f"{name}: analytic {analytic!r} vs numeric {numeric!r} (rel {err:.2e})"
    return grads


KINDS = ["simple_rnn", "lstm", "gru", "gru_v1"]


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("mask", [None, "holes", "all_masked_row"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("kind", KINDS)
def test_finite_differences(kind, go_backwards, mask, return_sequences, rng):
    case = make_case(kind, rng, mask=mask)
    options = {"go_backwards": go_backwards, "return_sequences": return_sequences}
    check_gradients(kind, case, options, rng)


ACTIVATION_PAIRS = [
    ("tanh", "sigmoid"),
    ("relu", "hard_sigmoid"),
    ("sigmoid", "tanh"),
    ("linear", "sigmoid"),
    ("hard_sigmoid", "linear"),
    ("tanh", "relu"),
]


@pytest.mark.parametrize("act,rec", ACTIVATION_PAIRS, ids=[f"{a}-{r}" for a, r in ACTIVATION_PAIRS])
@pytest.mark.parametrize("kind", KINDS)
def test_finite_differences_activations(kind, act, rec, rng):
    case = make_case(kind, rng, mask="holes")
    options = {"activation": act, "return_sequences": True}
    if kind != "simple_rnn":
        options["recurrent_activation"] = rec
    check_gradients(kind, case, options, rng)


@pytest.mark.parametrize("kind", KINDS)
def test_finite_differences_no_bias_no_initial_state(kind, rng):
    case = make_case(kind, rng, use_bias=False, initial=False, mask="holes")
    grads = check_gradients(kind, case, {"return_sequences": True}, rng)
    assert grads["bias"] is None


def reference_backward(kind, case, options, d_out, d_states):
    cell, opts = split_kind(kind, options)
    args = dict(case)
    return R.backward(
        cell,
        args.pop("x"),
        args.pop("kernel"),
        args.pop("recurrent_kernel"),
        args.pop("bias"),
        d_output=d_out,
        d_state=d_states,
        **args,
        **opts,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("kind", KINDS)
def test_core_matches_reference_backward(kind, go_backwards, dtype, rng):
    case = make_case(kind, rng, B=17, T=23, D=9, H=11, mask="holes", dtype=dtype)
    options = {"go_backwards": go_backwards, "return_sequences": True}
    *outputs, ws = core_forward(kind, case, options, training=True)
    d_out = rng.standard_normal(outputs[0].shape).astype(dtype)
    d_states = [rng.standard_normal(s.shape).astype(dtype) for s in outputs[1:]]
    g = F.backward(ws, d_out, d_states)
    # The reference in float64 from the same (rounded) inputs.
    case64 = {
        k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype != bool else v)
        for k, v in case.items()
    }
    case64["initial_state"] = [s.astype(np.float64) for s in case["initial_state"]]
    ref = reference_backward(
        kind, case64, options, d_out.astype(np.float64), [d.astype(np.float64) for d in d_states]
    )
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    for name, got in [
        ("x", g.x),
        ("kernel", g.kernel),
        ("recurrent_kernel", g.recurrent_kernel),
        ("bias", g.bias),
    ] + [(f"h{k}", s) for k, s in enumerate(g.initial_state)]:
        want = ref["initial_state"][int(name[1])] if name.startswith("h") else ref[name]
        assert got.dtype == dtype
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)


def test_reference_backward_matches_finite_differences(rng):
    """The reference backward is itself right (so comparing the core with it means something)."""
    case = make_case("lstm", rng, mask="holes")
    options = {"return_sequences": True, "go_backwards": True}

    def forward(U):  # the LSTM as a function of its recurrent kernel
        x, W, b = case["x"], case["kernel"], case["bias"]
        return R.lstm(x, W, U, b, initial_state=case["initial_state"], mask=case["mask"], **options)

    out = forward(case["recurrent_kernel"])
    d_out = rng.standard_normal(out[0].shape)
    d_states = [rng.standard_normal(s.shape) for s in out[1:]]
    ref = reference_backward("lstm", case, options, d_out, d_states)
    v = rng.standard_normal(case["recurrent_kernel"].shape)
    eps = 1e-6

    def L(U):
        o = forward(U)
        return np.sum(o[0] * d_out) + sum(np.sum(s * d) for s, d in zip(o[1:], d_states))

    numeric = (L(case["recurrent_kernel"] + eps * v) - L(case["recurrent_kernel"] - eps * v)) / (
        2 * eps
    )
    np.testing.assert_allclose(np.sum(ref["recurrent_kernel"] * v), numeric, rtol=1e-6)


def test_workspace_not_modified_and_backward_repeatable(rng):
    case = make_case("gru", rng, mask="holes")
    *outputs, ws = core_forward("gru", case, {"return_sequences": True}, training=True)
    before = [b.copy() for b in ws.buffers]
    d_out = rng.standard_normal(outputs[0].shape)
    g1 = F.backward(ws, d_out)
    g2 = F.backward(ws, d_out)
    for b0, b1 in zip(before, ws.buffers):
        np.testing.assert_array_equal(b0, b1)
    np.testing.assert_array_equal(g1.kernel, g2.kernel)
    np.testing.assert_array_equal(g1.x, g2.x)


def test_training_forward_equals_inference_forward(rng):
    for kind in KINDS:
        case = make_case(kind, rng, mask="holes")
        options = {"return_sequences": True}
        train = core_forward(kind, case, options, training=True)[:-1]
        infer = core_forward(kind, case, options)
        # Not bit for bit: inference projects the input in time chunks (other GEMM shapes).
        for a, b in zip(train, infer):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_long_sequence_gradients_finite(rng):
    """2000 timesteps train without trouble: finite gradients equal to the reference's."""
    case = make_case("lstm", rng, B=2, T=2000, D=3, H=4, dtype=np.float32)
    options = {"return_sequences": False}
    *outputs, ws = core_forward("lstm", case, options, training=True)
    # Workspace memory is linear in timesteps: gates (4H) and states (2H) per step and row.
    assert ws.nbytes == 2 * 2000 * (4 * 4 + 2 * 4 + 0) * 4
    d_out = np.ones_like(outputs[0])
    g = F.backward(ws, d_out)
    for a in (g.x, g.kernel, g.recurrent_kernel, g.bias):
        assert np.all(np.isfinite(a))
    case64 = {
        k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in case.items()
    }
    case64["initial_state"] = [s.astype(np.float64) for s in case["initial_state"]]
    ref = reference_backward("lstm", case64, options, d_out.astype(np.float64), None)
    np.testing.assert_allclose(
        g.recurrent_kernel,
        ref["recurrent_kernel"],
        rtol=1e-3,
        atol=1e-4 * np.abs(ref["recurrent_kernel"]).max(),
    )


def test_backward_rejects_bad_arguments(rng):
    case = make_case("lstm", rng)
    *outputs, ws = core_forward("lstm", case, {}, training=True)
    with pytest.raises(TypeError, match="workspace"):
        F.backward(outputs[0], outputs[0])
    with pytest.raises(ValueError, match=r"d_output: expected shape \(3, 3\)"):
        F.backward(ws, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="initial_state: expected 2"):
        F.backward(ws, np.zeros((3, 3)), [np.zeros((3, 3))])
    with pytest.raises(TypeError, match="d_output: expected dtype float64"):
        F.backward(ws, np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "sigmoid", "softmax"])
def test_dense_backward(activation, rng):
    x = rng.standard_normal((4, 3, 5))
    W = rng.standard_normal((5, 6))
    b = rng.standard_normal(6)
    y = F.dense(x, W, b, activation)
    np.testing.assert_allclose(y, R.dense(x, W, b, activation), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = F.dense_backward(x, W, y, dy, activation=activation)
    rdx, rdW, rdb = R.dense_backward(x, W, y, dy, activation=activation)
    for got, want in [(dx, rdx), (dW, rdW), (db, rdb)]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # and against finite differences through the forward
    v = rng.standard_normal(W.shape)
    eps = 1e-6
    numeric = (
        np.sum(F.dense(x, W + eps * v, b, activation) * dy)
        - np.sum(F.dense(x, W - eps * v, b, activation) * dy)
    ) / (2 * eps)
    np.testing.assert_allclose(np.sum(dW * v), numeric, rtol=1e-6)
