"""Property-based tests (hypothesis): the core agrees with the NumPy reference.

Over random shapes (0 and 1 sizes included), both dtypes, every cell and option
(activations, bias or not, initial state or not, go_backwards, return_sequences, GRU's two
forms) and random masks, forward and backward. Also the layers' call path against the
functional one, and non-contiguous / negative-stride inputs against their contiguous copy.

The example counts are kept small for the default run (the whole file takes a few seconds);
set ``HYPOTHESIS_PROFILE=stress`` to run many more.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnncore import functional as F
from rnncore import layers as L
from rnncore import reference as R

settings.register_profile(
    "default_rnncore",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "stress",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default_rnncore")
SETTINGS = settings.get_profile(PROFILE)

ACTS = ["tanh", "sigmoid", "relu", "hard_sigmoid", "linear"]
CELLS = {  # cell -> (gates, number of states)
    "simple_rnn": (1, 1),
    "lstm": (4, 2),
    "gru": (3, 1),
}
# The suite's usual tolerances (tests/conftest.py), relative to max(1, max|want|). Measured
# over 3000 examples per test (HYPOTHESIS_PROFILE=stress): at most 7e-16 in float64 and
# 3e-7 in float32 (float32 inputs, float64 reference), so about 1400x and 35x margin.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


@st.composite
def cases(draw, min_b=0, min_t=0):
    cell = draw(st.sampled_from(sorted(CELLS)))
    gates, n_states = CELLS[cell]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    B = draw(st.integers(min_b, 4))
    T = draw(st.integers(min_t, 6))
    D = draw(st.integers(0, 5))
    H = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    opts = {
        "activation": draw(st.sampled_from(ACTS)),
        "go_backwards": draw(st.booleans()),
        "return_sequences": draw(st.booleans()),
    }
    if cell != "simple_rnn":
        opts["recurrent_activation"] = draw(st.sampled_from(ACTS))
    reset_after = True
    if cell == "gru":
        reset_after = draw(st.booleans())
        opts["reset_after"] = reset_after
    use_bias = draw(st.booleans())
    with_state = draw(st.booleans())
    mask_kind = draw(st.sampled_from(["none", "random", "all_false", "all_true"]))
    scale = 0.5 / np.sqrt(max(D, 1) + H)
    x = rng.standard_normal((B, T, D)).astype(dtype)
    W = (scale * rng.standard_normal((D, gates * H))).astype(dtype)
    U = (scale * rng.standard_normal((H, gates * H))).astype(dtype)
    if not use_bias:
        b = None
    elif cell == "gru" and reset_after:
        b = (0.1 * rng.standard_normal((2, gates * H))).astype(dtype)
    else:
        b = (0.1 * rng.standard_normal(gates * H)).astype(dtype)
    init = None
    if with_state:
        init = [(0.5 * rng.standard_normal((B, H))).astype(dtype) for _ in range(n_states)]
    mask = {
        "none": None,
        "random": rng.random((B, T)) < 0.6,
        "all_false": np.zeros((B, T), bool),
        "all_true": np.ones((B, T), bool),
    }[mask_kind]
    return dict(
        cell=cell,
        dtype=dtype,
        x=x,
        W=W,
        U=U,
        b=b,
        init=init,
        mask=mask,
        opts=opts,
        n_states=n_states,
        rng=rng,
    )


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


def _reference(c):
    ref = getattr(R, c["cell"])
    init = None if c["init"] is None else [_f64(s) for s in c["init"]]
    return ref(
        _f64(c["x"]),
        _f64(c["W"]),
        _f64(c["U"]),
        _f64(c["b"]),
        initial_state=init,
        mask=c["mask"],
        **c["opts"],
    )


def _close(got, want, dtype, what):
    assert got.dtype == dtype, what
    assert got.shape == want.shape, what
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


@SETTINGS
@given(cases())
def test_forward_matches_reference(c):
    got = getattr(F, c["cell"])(
        c["x"], c["W"], c["U"], c["b"], initial_state=c["init"], mask=c["mask"], **c["opts"]
    )
    want = _reference(c)
    assert len(got) == len(want) == 1 + c["n_states"]
    for k, (g, w) in enumerate(zip(got, want)):
        _close(g, w, c["dtype"], f"output {k}")
        assert np.isfinite(g).all()


@SETTINGS
@given(cases())
def test_backward_matches_reference(c):
    *outs, ws = getattr(F, c["cell"])(
        c["x"],
        c["W"],
        c["U"],
        c["b"],
        initial_state=c["init"],
        mask=c["mask"],
        training=True,
        **c["opts"],
    )
    rng, dtype = c["rng"], c["dtype"]
    d_out = rng.standard_normal(outs[0].shape).astype(dtype)
    d_states = [rng.standard_normal(s.shape).astype(dtype) for s in outs[1:]]
    g = F.backward(ws, d_out, d_states)
    init = None if c["init"] is None else [_f64(s) for s in c["init"]]
    ref = R.backward(
        c["cell"],
        _f64(c["x"]),
        _f64(c["W"]),
        _f64(c["U"]),
        _f64(c["b"]),
        d_output=_f64(d_out),
        d_state=[_f64(d) for d in d_states],
        initial_state=init,
        mask=c["mask"],
        **c["opts"],
    )
    _close(g.x, ref["x"], dtype, "dx")
    _close(g.kernel, ref["kernel"], dtype, "dkernel")
    _close(g.recurrent_kernel, ref["recurrent_kernel"], dtype, "drecurrent_kernel")
    if c["b"] is None:
        assert g.bias is None
    else:
        _close(g.bias, ref["bias"], dtype, "dbias")
    assert len(g.initial_state) == c["n_states"]
    for k, (gs, rs) in enumerate(zip(g.initial_state, ref["initial_state"])):
        _close(gs, rs, dtype, f"dstate{k}")


def _strided(a, rng, how):
    """A non-contiguous or reversed view holding the same values as ``a``."""
    if how == "reversed":
        big = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
        return big[(slice(None, None, -1),) * a.ndim]
    if how == "every_other":
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        big[(slice(None, None, 2),) * a.ndim] = a
        return big[(slice(None, None, 2),) * a.ndim]
    # fortran order
    return np.asfortranarray(a)


@SETTINGS
@given(cases(), st.sampled_from(["reversed", "every_other", "fortran"]))
def test_noncontiguous_and_negative_strides_equal_contiguous(c, how):
    fn = getattr(F, c["cell"])
    want = fn(c["x"], c["W"], c["U"], c["b"], initial_state=c["init"], mask=c["mask"], **c["opts"])
    x, W, U = (_strided(a, c["rng"], how) for a in (c["x"], c["W"], c["U"]))
    b = None if c["b"] is None else _strided(c["b"], c["rng"], how)
    init = None if c["init"] is None else [_strided(s, c["rng"], how) for s in c["init"]]
    mask = None if c["mask"] is None else _strided(c["mask"], c["rng"], how)
    before = x.copy()
    got = fn(x, W, U, b, initial_state=init, mask=mask, **c["opts"])
    np.testing.assert_array_equal(x, before)  # inputs never modified
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


LAYERS = {"simple_rnn": L.SimpleRNN, "lstm": L.LSTM, "gru": L.GRU}


@SETTINGS
@given(cases(min_b=1), st.booleans(), st.booleans())
def test_layer_matches_reference(c, return_state, use_mask):
    """A layer (any option) with the case's weights gives the reference's numbers."""
    opts = dict(c["opts"])
    cls = LAYERS[c["cell"]]
    H = c["U"].shape[0]
    layer = cls(
        H,
        use_bias=c["b"] is not None,
        return_state=return_state,
        dtype=np.dtype(c["dtype"]).name,
        **opts,
    )
    layer.build((None, None, c["x"].shape[2]))
    layer.set_weights([w for w in (c["W"], c["U"], c["b"]) if w is not None])
    mask = c["mask"] if use_mask else None
    out = layer(c["x"], initial_state=c["init"], mask=mask)
    c = dict(c, mask=mask)
    want = _reference(c)
    outs = out if return_state else (out,)
    assert len(outs) == (len(want) if return_state else 1)
    for k, (g, w) in enumerate(zip(outs, want)):
        _close(np.asarray(g), w, c["dtype"], f"layer output {k}")


@SETTINGS
@given(cases(min_b=1, min_t=1), st.integers(1, 4))
def test_stateful_layer_chunks_equal_one_call(c, n_chunks):
    """A stateful layer fed a sequence in chunks ends where one call over it ends."""
    if c["opts"]["go_backwards"]:
        c["opts"]["go_backwards"] = False
    cls = LAYERS[c["cell"]]
    H, B, T = c["U"].shape[0], c["x"].shape[0], c["x"].shape[1]
    layer = cls(
        H,
        use_bias=c["b"] is not None,
        stateful=True,
        return_sequences=True,
        dtype=np.dtype(c["dtype"]).name,
        **{k: v for k, v in c["opts"].items() if k != "return_sequences"},
    )
    layer.build((B, None, c["x"].shape[2]))
    layer.set_weights([w for w in (c["W"], c["U"], c["b"]) if w is not None])
    bounds = np.linspace(0, T, n_chunks + 1).astype(int)
    ys = [layer(c["x"][:, a:z]) for a, z in zip(bounds[:-1], bounds[1:]) if z > a]
    want = _reference(dict(c, init=None, mask=None, opts=dict(c["opts"], return_sequences=True)))
    _close(np.concatenate(ys, axis=1), want[0], c["dtype"], "chunked outputs")
    for k, (s, w) in enumerate(zip(layer.states, want[1:])):
        _close(s, w, c["dtype"], f"state {k}")


@SETTINGS
@given(
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 5),
    st.sampled_from(["linear", "tanh", "relu", "sigmoid", "softmax"]),
    st.sampled_from([np.float32, np.float64]),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_dense_matches_reference(n, d, u, act, dtype, use_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, d)).astype(dtype)
    W = rng.standard_normal((d, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype) if use_bias else None
    got = F.dense(x, W, b, act)
    want = R.dense(_f64(x), _f64(W), _f64(b), act)
    _close(got, want, dtype, "dense")
