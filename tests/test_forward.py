"""Forward pass of rnncore's SimpleRNN / LSTM / GRU against the NumPy reference and by hand.

Conventions under test are those of rnncore.functional (Keras's): x (B, T, D), kernel
(D, G*H), recurrent_kernel (H, G*H), bias (G*H,) or (2, 3H) for GRU reset_after=True,
mask (B, T) with True where a step is used. Tolerances (conftest.TOL): float64 within
rtol = atol = 1e-12 of the float64 reference; float32 within rtol = atol = 1e-5 of the
reference computed in float64 on the same (float32-rounded) inputs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from importlib.util import find_spec

import numpy as np
import pytest

import rnncore
from rnncore import _core, functional, reference
from support import available_cpus

VARIANTS = ("simple_rnn", "lstm", "gru_reset_after", "gru_reset_before")
MASKS = ("none", "right_pad", "left_pad", "holes", "full_row")
DTYPES = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]
BACKWARDS = [pytest.param(False, id="forward"), pytest.param(True, id="backwards")]
SEQUENCES = [pytest.param(False, id="last"), pytest.param(True, id="seq")]
INITIAL = [pytest.param(False, id="h0_none"), pytest.param(True, id="h0_given")]


def _combos():
    """Representative (activation, recurrent_activation) pairs: every activation appears
    once in each role for every gated cell (a cyclic Latin square, not the 5x5 product);
    SimpleRNN, which has no recurrent activation, takes each activation once."""
    pairs = [
        ("tanh", "sigmoid"),  # the Keras default
        ("sigmoid", "hard_sigmoid"),
        ("relu", "tanh"),
        ("hard_sigmoid", "linear"),
        ("linear", "relu"),
    ]
    out = []
    for act in ("tanh", "sigmoid", "relu", "hard_sigmoid", "linear"):
        out.append(pytest.param("simple_rnn", act, None, id=f"simple_rnn-{act}"))
    for variant in VARIANTS[1:]:
        for act, rec in pairs:
            out.append(pytest.param(variant, act, rec, id=f"{variant}-{act}-rec_{rec}"))
    return out


def _act_kwargs(activation, recurrent_activation):
    kw = {"activation": activation}
    if recurrent_activation is not None:
        kw["recurrent_activation"] = recurrent_activation
    return kw


# ---------------------------------------------------------------------------------------
# Against the reference


@pytest.mark.parametrize("return_sequences", SEQUENCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("initial_state", INITIAL)
@pytest.mark.parametrize("go_backwards", BACKWARDS)
@pytest.mark.parametrize("variant, activation, recurrent_activation", _combos())
def test_matches_reference(
    make_case,
    check,
    variant,
    activation,
    recurrent_activation,
    go_backwards,
    initial_state,
    mask,
    dtype,
    return_sequences,
):
    case = make_case(variant, 4, 7, 3, 5, initial_state=initial_state, mask=mask).cast(dtype)
    kw = dict(
        _act_kwargs(activation, recurrent_activation),
        go_backwards=go_backwards,
        return_sequences=return_sequences,
    )
    check(case.run(**kw), case.reference(**kw), dtype)


SHAPES = [
    pytest.param((1, 6, 3, 4), id="batch1"),
    pytest.param((3, 1, 3, 4), id="timesteps1"),
    pytest.param((3, 6, 3, 1), id="units1"),
    pytest.param((3, 6, 1, 4), id="input_dim1"),
    pytest.param((1, 1, 1, 1), id="all1"),
    # Sizes that are not multiples of any SIMD width, and a batch that is not small.
    pytest.param((9, 5, 17, 33), id="odd_wide"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("go_backwards", BACKWARDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_match_reference(make_case, check, variant, shape, go_backwards, dtype):
    case = make_case(variant, *shape, initial_state=True, mask="holes").cast(dtype)
    for return_sequences in (False, True):
        kw = dict(go_backwards=go_backwards, return_sequences=return_sequences)
        out = case.run(**kw)
        B, T, _, H = shape
        assert out[0].shape == ((B, T, H) if return_sequences else (B, H))
        check(out, case.reference(**kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("go_backwards", BACKWARDS)
@pytest.mark.parametrize(
    "variant, activation, recurrent_activation",
    [
        pytest.param("simple_rnn", "tanh", None, id="simple_rnn-tanh"),
        pytest.param("simple_rnn", "relu", None, id="simple_rnn-relu"),
        pytest.param("lstm", "tanh", "sigmoid", id="lstm-tanh-rec_sigmoid"),
        pytest.param("lstm", "relu", "hard_sigmoid", id="lstm-relu-rec_hard_sigmoid"),
        pytest.param("gru_reset_after", "tanh", "sigmoid", id="gru_reset_after-tanh"),
        pytest.param(
            "gru_reset_before",
            "linear",
            "hard_sigmoid",
            id="gru_reset_before-linear-rec_hard_sigmoid",
        ),
    ],
)
def test_long_sequence_matches_reference(
    make_case, check, variant, activation, recurrent_activation, go_backwards, dtype
):
    # 1200 steps with unused steps and an initial state. The default float32 tolerance is
    # kept: with 0.5/sqrt(fan_in) weights the recurrence is contracting, so float32 rounding
    # does not accumulate (measured: max abs error about 3e-7 against atol 1e-5).
    case = make_case(variant, 3, 1200, 4, 6, initial_state=True, mask="holes").cast(dtype)
    kw = dict(
        _act_kwargs(activation, recurrent_activation),
        go_backwards=go_backwards,
        return_sequences=True,
    )
    out = case.run(**kw)
    check(out, case.reference(**kw), dtype)
    # The state really travels the whole sequence: it is not a fixed point already.
    assert np.ptp(out[0][:, -100:], axis=1).max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "full_row"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_bias_matches_reference(make_case, check, variant, mask, dtype):
    case = make_case(variant, 4, 7, 3, 5, use_bias=False, initial_state=True, mask=mask).cast(dtype)
    assert case.bias is None
    for go_backwards in (False, True):
        kw = dict(go_backwards=go_backwards, return_sequences=True)
        check(case.run(**kw), case.reference(**kw), dtype)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bias_is_used(make_case, variant):
    """bias=None and a zero bias agree; a nonzero bias changes the result."""
    case = make_case(variant, 2, 4, 3, 5)
    with_bias = case.run(return_sequences=True)[0]
    no_bias = dataclasses.replace(case, bias=None).run(return_sequences=True)[0]
    zero_bias = dataclasses.replace(case, bias=np.zeros_like(case.bias)).run(return_sequences=True)[
        0
    ]
    np.testing.assert_allclose(no_bias, zero_bias, rtol=1e-15, atol=1e-15)
    assert np.abs(with_bias - no_bias).max() > 1e-3


# ---------------------------------------------------------------------------------------
# Small cases worked out by hand


@pytest.mark.parametrize("dtype", DTYPES)
def test_simple_rnn_linear_by_hand(dtype):
    # 1 unit, 2 timesteps, x = [1, 2], W = 0.5, U = 0.25, b = 0.125 (all exact in binary):
    #   h1 = 0.5*1 + 0.25*0     + 0.125 = 0.625
    #   h2 = 0.5*2 + 0.25*0.625 + 0.125 = 1 + 0.15625 + 0.125 = 1.28125
    # Backwards (x = [2, 1]):
    #   h1 = 0.5*2 + 0.125 = 1.125
    #   h2 = 0.5*1 + 0.25*1.125 + 0.125 = 0.5 + 0.28125 + 0.125 = 0.90625
    x = np.array([[[1.0], [2.0]]], dtype)
    W, U, b = np.array([[0.5]], dtype), np.array([[0.25]], dtype), np.array([0.125], dtype)
    y, h = functional.simple_rnn(x, W, U, b, activation="linear", return_sequences=True)
    np.testing.assert_array_equal(y, np.array([[[0.625], [1.28125]]], dtype))
    np.testing.assert_array_equal(h, np.array([[1.28125]], dtype))
    y, h = functional.simple_rnn(
        x, W, U, b, activation="linear", go_backwards=True, return_sequences=True
    )
    np.testing.assert_array_equal(y, np.array([[[1.125], [0.90625]]], dtype))
    # With an initial state h0 = 2: h1 = 0.5 + 0.5 + 0.125 = 1.125,
    #   h2 = 1 + 0.28125 + 0.125 = 1.40625
    y, h = functional.simple_rnn(
        x, W, U, b, activation="linear", initial_state=np.array([[2.0]], dtype)
    )
    np.testing.assert_array_equal(y, np.array([[1.40625]], dtype))
    np.testing.assert_array_equal(h, np.array([[1.40625]], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_simple_rnn_tanh_by_hand(dtype):
    # Same weights, tanh:
    #   h1 = tanh(0.625)                          = 0.5545997223493823
    #   h2 = tanh(1.125 + 0.25 * 0.5545997223...) = tanh(1.2636499305873456)
    #      = 0.8520672381006785
    x = np.array([[[1.0], [2.0]]], dtype)
    W, U, b = np.array([[0.5]], dtype), np.array([[0.25]], dtype), np.array([0.125], dtype)
    y, h = functional.simple_rnn(x, W, U, b, activation="tanh", return_sequences=True)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y[0, :, 0], [0.5545997223493823, 0.8520672381006785], rtol=rtol)
    np.testing.assert_allclose(h, [[0.8520672381006785]], rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_step_by_hand(dtype):
    # 1 unit, 1 step; gates in Keras order i, f, c, o.
    #   x = 1, h0 = 0.5, c0 = -0.25
    #   W = [0.5, -1.0, 1.5, 2.0], U = [1.0, 0.5, -0.5, 0.25], b = [0, 0.5, 0, -0.5]
    #   z = x W + h0 U + b = [0.5+0.5+0, -1+0.25+0.5, 1.5-0.25+0, 2+0.125-0.5]
    #     = [1.0, -0.25, 1.25, 1.625]
    #   i = sigmoid(1.0)   = 0.7310585786300049
    #   f = sigmoid(-0.25) = 0.43782349911420193
    #   g = tanh(1.25)     = 0.8482836399575129
    #   o = sigmoid(1.625) = 0.8354835371034369
    #   c = f c0 + i g = -0.10945587477855048 + 0.6201450321024263 = 0.5106891573238758
    #   h = o tanh(c) = 0.8354835371034369 * 0.47048198297138955 = 0.3930799512763755
    x = np.array([[[1.0]]], dtype)
    W = np.array([[0.5, -1.0, 1.5, 2.0]], dtype)
    U = np.array([[1.0, 0.5, -0.5, 0.25]], dtype)
    b = np.array([0.0, 0.5, 0.0, -0.5], dtype)
    h0, c0 = np.array([[0.5]], dtype), np.array([[-0.25]], dtype)
    y, h, c = functional.lstm(x, W, U, b, initial_state=[h0, c0])
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(c, [[0.5106891573238758]], rtol=rtol)
    np.testing.assert_allclose(h, [[0.3930799512763755]], rtol=rtol)
    np.testing.assert_allclose(y, [[0.3930799512763755]], rtol=rtol)


def test_lstm_hard_sigmoid_linear_by_hand():
    # 1 unit, 2 steps, recurrent_activation hard_sigmoid(z) = clip(z/6 + 1/2, 0, 1),
    # activation linear; no bias, U = 0 so the steps only share c.
    #   x = [3, -1.5], W = [3, 6, 2, 0]
    #   step 1: z = [9, 18, 6, 0] -> i = 1, f = 1, g = 6, o = 0.5
    #           c = 1*0 + 1*6 = 6, h = 0.5 * 6 = 3
    #   step 2: z = [-4.5, -9, -3, 0] -> i = 0 (clipped), f = 0 (clipped), g = -3, o = 0.5
    #           c = 0*6 + 0*(-3) = 0, h = 0.5 * 0 = 0
    x = np.array([[[3.0], [-1.5]]])
    W = np.array([[3.0, 6.0, 2.0, 0.0]])
    U = np.zeros((1, 4))
    y, h, c = functional.lstm(
        x, W, U, activation="linear", recurrent_activation="hard_sigmoid", return_sequences=True
    )
    np.testing.assert_allclose(y[0, :, 0], [3.0, 0.0], rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(c, [[0.0]], atol=1e-15)
    # Only the first step: c = 6, h = 3.
    y, h, c = functional.lstm(
        x[:, :1], W, U, activation="linear", recurrent_activation="hard_sigmoid"
    )
    np.testing.assert_allclose([h[0, 0], c[0, 0]], [3.0, 6.0], rtol=1e-15)


@pytest.mark.parametrize(
    "reset_after, bias, expected",
    [
        # z = sigmoid(0.5 + 0.25*0.5 + b_z) with b_z = 0 + 0.25 (input + recurrent rows)
        #   = sigmoid(0.875) = 0.7057850278370112
        # r = sigmoid(-0.5 + 1.0*0.5 + 0.25 + 0) = sigmoid(0.25) = 0.5621765008857981
        # hh = tanh(1.0 + 0 + r * (-1.0*0.5 + 0.25)) = tanh(1 - 0.25 r)
        #    = tanh(0.8594558747785505) = 0.6959772194092464
        # h = z*0.5 + (1 - z)*hh = 0.5576594321530713
        pytest.param(
            True, [[0.0, 0.25, 0.0], [0.25, 0.0, 0.25]], 0.5576594321530713, id="reset_after"
        ),
        # z, r as above (b = [0.25, 0.25, 0])
        # hh = tanh(1.0 + 0 + (r*0.5) * (-1.0)) = tanh(1 - 0.5 r)
        #    = tanh(0.7189117495571009) = 0.6162347630314423
        # h = z*0.5 + (1 - z)*hh = 0.5341980075696674
        pytest.param(False, [0.25, 0.25, 0.0], 0.5341980075696674, id="reset_before"),
    ],
)
def test_gru_step_by_hand(reset_after, bias, expected):
    # 1 unit, 1 step, gates z, r, h: x = 1, h0 = 0.5, W = [0.5, -0.5, 1.0], U = [0.25, 1, -1]
    x = np.array([[[1.0]]])
    W = np.array([[0.5, -0.5, 1.0]])
    U = np.array([[0.25, 1.0, -1.0]])
    y, h = functional.gru(
        x, W, U, np.array(bias), reset_after=reset_after, initial_state=np.array([[0.5]])
    )
    np.testing.assert_allclose(h, [[expected]], rtol=1e-14)
    np.testing.assert_allclose(y, [[expected]], rtol=1e-14)


# ---------------------------------------------------------------------------------------
# Keras's masking rule, checked without the reference: a masked run equals the unmasked
# run over the used steps only, with the outputs repeated over the unused ones.


@pytest.mark.parametrize("go_backwards", BACKWARDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_masking_rule(make_case, variant, go_backwards):
    mask = np.array(
        [
            [1, 1, 0, 0, 1, 0, 1, 1],  # holes
            [0, 0, 0, 1, 1, 1, 1, 1],  # unused steps first (left padding)
            [1, 1, 1, 1, 1, 0, 0, 0],  # unused steps last (right padding)
            [0, 0, 0, 0, 0, 0, 0, 0],  # a fully masked row
        ],
        bool,
    )
    B, T = mask.shape
    H = 5
    case = make_case(variant, B, T, 3, H, initial_state=True, mask=mask)
    y, *finals = case.run(go_backwards=go_backwards, return_sequences=True)
    y_last, *finals_last = case.run(go_backwards=go_backwards)
    order = np.arange(T)[::-1] if go_backwards else np.arange(T)
    tol = dict(rtol=1e-12, atol=1e-12)

    for b in range(B):
        used_steps = [t for t in order if mask[b, t]]
        states0 = [s[b : b + 1] for s in case.initial_state]
        expected_y = np.zeros((T, H))
        expected_finals = states0
        if used_steps:
            sub = dataclasses.replace(
                case, x=case.x[b : b + 1, used_steps], initial_state=states0, mask=None
            )
            sub_y, *expected_finals = sub.run(return_sequences=True)
            k, prev = 0, np.zeros(H)
            for s, t in enumerate(order):
                if mask[b, t]:
                    prev = sub_y[0, k]
                    k += 1
                expected_y[s] = prev
        np.testing.assert_allclose(y[b], expected_y, **tol, err_msg=f"row {b}")
        np.testing.assert_allclose(y_last[b], expected_y[-1], **tol, err_msg=f"row {b}")
        for got, got_last, want in zip(finals, finals_last, expected_finals):
            np.testing.assert_allclose(got[b], want[0], **tol, err_msg=f"row {b}")
            np.testing.assert_allclose(got_last[b], want[0], **tol, err_msg=f"row {b}")

        # The rule itself, exactly (copies, no arithmetic): an unused step repeats the
        # previous output; before the first used step the output is zero.
        for s, t in enumerate(order):
            if not mask[b, t]:
                want = y[b, s - 1] if s > 0 else np.zeros(H)
                np.testing.assert_array_equal(y[b, s], want, err_msg=f"row {b} step {s}")

    # The fully masked row: every output zero, final states exactly the initial states.
    np.testing.assert_array_equal(y[3], np.zeros((T, H)))
    np.testing.assert_array_equal(y_last[3], np.zeros(H))
    for got, got_last, s0 in zip(finals, finals_last, case.initial_state):
        np.testing.assert_array_equal(got[3], s0[3])
        np.testing.assert_array_equal(got_last[3], s0[3])
    assert np.abs(case.initial_state[0][3]).min() > 0  # so that "equals h0" means something


@pytest.mark.parametrize("variant", VARIANTS)
def test_integer_mask_equals_bool_mask(make_case, variant):
    """Integer 0/1 masks are accepted and mean the same as booleans (current behaviour)."""
    case = make_case(variant, 3, 6, 2, 4, mask="holes")
    as_bool = case.run(return_sequences=True)
    for dtype in (np.int64, np.uint8, np.int32):
        as_int = dataclasses.replace(case, mask=case.mask.astype(dtype)).run(return_sequences=True)
        for a, b in zip(as_int, as_bool):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Empty batch, zero timesteps (the current behaviour, as documented in scan.hpp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_batch(make_case, variant, dtype):
    H = 4
    for kwargs in ({}, {"initial_state": True, "mask": "holes"}):
        case = make_case(variant, 0, 5, 3, H, **kwargs).cast(dtype)
        for go_backwards in (False, True):
            y, *finals = case.run(go_backwards=go_backwards)
            assert y.shape == (0, H) and y.dtype == dtype
            ys, *finals_s = case.run(go_backwards=go_backwards, return_sequences=True)
            assert ys.shape == (0, 5, H) and ys.dtype == dtype
            assert len(finals) == len(finals_s) == case.spec.n_states
            for f in finals + finals_s:
                assert f.shape == (0, H) and f.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_timesteps(make_case, variant, dtype):
    B, H = 3, 4
    for initial_state in (False, True):
        case = make_case(variant, B, 0, 3, H, initial_state=initial_state).cast(dtype)
        states0 = case.initial_state or [np.zeros((B, H), dtype)] * case.spec.n_states
        for mask in (None, np.zeros((B, 0), bool)):
            for go_backwards in (False, True):
                c = dataclasses.replace(case, mask=mask)
                y, *finals = c.run(go_backwards=go_backwards)
                np.testing.assert_array_equal(y, np.zeros((B, H), dtype))
                assert y.dtype == dtype
                ys, *finals_s = c.run(go_backwards=go_backwards, return_sequences=True)
                assert ys.shape == (B, 0, H) and ys.dtype == dtype
                assert len(finals) == case.spec.n_states
                for f, fs, s0 in zip(finals, finals_s, states0):
                    assert f.dtype == dtype
                    np.testing.assert_array_equal(f, s0)
                    np.testing.assert_array_equal(fs, s0)
        # The same as the reference.
        for a, r in zip(case.run(return_sequences=True), case.reference(return_sequences=True)):
            np.testing.assert_array_equal(a, r)
    # Both empty.
    y, *finals = make_case(variant, 0, 0, 3, H).cast(dtype).run(return_sequences=True)
    assert y.shape == (0, 0, H)
    assert all(f.shape == (0, H) for f in finals)


# ---------------------------------------------------------------------------------------
# Memory layouts; inputs are never modified


def _fortran(a):
    return np.asfortranarray(a)


def _negative_strides(a):
    # Same values, every stride negative.
    v = np.flip(np.flip(a).copy())
    assert all(s <= 0 for s in v.strides) or a.size <= 1
    return v


def _strided(a):
    # A view into a larger buffer, every other element along each axis.
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    v = big[tuple(slice(None, None, 2) for _ in a.shape)]
    v[...] = a
    return v


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = [
    pytest.param(_fortran, id="fortran"),
    pytest.param(_negative_strides, id="negative_strides"),
    pytest.param(_strided, id="strided"),
    pytest.param(_readonly, id="readonly"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_layouts_give_same_result_and_inputs_unchanged(make_case, variant, layout, dtype):
    case = make_case(variant, 4, 6, 3, 5, initial_state=True, mask="holes").cast(dtype)
    kw = dict(go_backwards=True, return_sequences=True)
    expected = case.run(**kw)

    arrays = {name: layout(a) for name, a in case.arrays().items()}
    if layout is not _readonly:
        assert not all(a.flags.c_contiguous for a in arrays.values())
    before = {name: a.copy() for name, a in arrays.items()}
    got = case.with_arrays(arrays).run(**kw)
    for name, a in arrays.items():
        np.testing.assert_array_equal(a, before[name], err_msg=f"{name} was modified")
    # The same computation after one internal copy, so the same values. Compared to a
    # few ulps rather than bitwise because of the run-to-run last-bit differences that
    # test_repeated_calls_are_bitwise_identical exposes.
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(
            g,
            e,
            rtol=1e-13 if dtype == np.float64 else 1e-6,
            atol=1e-14 if dtype == np.float64 else 1e-7,
        )

    # Each argument alone in that layout (a bug could hide in one argument's handling).
    for name in arrays:
        single = case.with_arrays({name: arrays[name]}).run(**kw)
        for g, e in zip(single, expected):
            np.testing.assert_allclose(
                g,
                e,
                rtol=1e-13 if dtype == np.float64 else 1e-6,
                atol=1e-14 if dtype == np.float64 else 1e-7,
                err_msg=name,
            )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_never_modified(make_case, variant, dtype):
    case = make_case(variant, 3, 5, 2, 4, initial_state=True, mask="full_row").cast(dtype)
    before = {name: a.copy() for name, a in case.arrays().items()}
    for go_backwards in (False, True):
        for return_sequences in (False, True):
            out = case.run(go_backwards=go_backwards, return_sequences=return_sequences)
            # Outputs are fresh arrays, not views of an input.
            for o in out:
                for a in case.arrays().values():
                    assert not np.shares_memory(o, a)
    for name, a in case.arrays().items():
        np.testing.assert_array_equal(a, before[name], err_msg=f"{name} was modified")


def test_python_list_input_is_float64():
    """A list of floats becomes a float64 array (the current, documented-by-test behaviour)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2))
    W, U = rng.standard_normal((2, 4)) * 0.3, rng.standard_normal((4, 4)) * 0.3
    from_list = functional.simple_rnn(
        x.tolist(),
        W.tolist(),
        U.tolist(),
        [0.1] * 4,
        initial_state=[[[0.0] * 4] * 2],
        mask=[[True] * 3] * 2,
    )
    from_array = functional.simple_rnn(x, W, U, np.full(4, 0.1))
    for a, b in zip(from_list, from_array):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------
# NaN and Inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "variant, activation, recurrent_activation",
    [
        pytest.param("simple_rnn", "tanh", None, id="simple_rnn-tanh"),
        pytest.param("simple_rnn", "relu", None, id="simple_rnn-relu"),
        pytest.param("simple_rnn", "linear", None, id="simple_rnn-linear"),
        pytest.param("lstm", "tanh", "sigmoid", id="lstm-tanh-rec_sigmoid"),
        pytest.param("lstm", "hard_sigmoid", "hard_sigmoid", id="lstm-hard_sigmoid"),
        pytest.param("gru_reset_after", "tanh", "sigmoid", id="gru_reset_after-tanh"),
        pytest.param("gru_reset_before", "tanh", "sigmoid", id="gru_reset_before-tanh"),
        pytest.param(
            "gru_reset_after", "hard_sigmoid", "hard_sigmoid", id="gru_reset_after-hard_sigmoid"
        ),
    ],
)
def test_nan_inf_propagate_like_reference(
    make_case, check, variant, activation, recurrent_activation, dtype
):
    B, T, H = 6, 6, 16  # 16 units: the vectorised activation paths are used too
    mask = np.ones((B, T), bool)
    mask[3, 4] = False
    case = make_case(variant, B, T, 3, H, initial_state=True, mask=mask)
    x = case.x.copy()
    x[0, 2, 1] = np.nan
    x[1, 3, :] = np.inf
    x[2, 1, 0] = -np.inf
    x[3, 4, 2] = np.nan  # at an unused step: must not reach the result
    x[4, 0, :] = [np.inf, -np.inf, np.nan]
    # row 5 is clean
    case = dataclasses.replace(case, x=x).cast(dtype)
    kw = dict(_act_kwargs(activation, recurrent_activation), return_sequences=True)
    for go_backwards in (False, True):
        out = case.run(go_backwards=go_backwards, **kw)
        with np.errstate(all="ignore"):  # the reference's own NaN/Inf arithmetic
            ref = case.reference(go_backwards=go_backwards, **kw)
        check(out, ref, dtype, equal_nan=True)
        y = out[0]
        assert np.isfinite(y[5]).all() and np.isfinite(y[3]).all()
        assert np.isnan(y[0]).any()  # the NaN did get in


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gru_infinite_candidate_like_reference(reset_after, dtype):
    # 1 unit, 1 step, no bias, linear activation, x = -inf, all weights 0.5, h0 = 0:
    #   z = sigmoid(-inf) = 0, r = sigmoid(-inf) = 0, hh = linear(-inf + r*(...)) = -inf
    #   Keras / reference: h = z*h0 + (1 - z)*hh = 0*0 + 1*(-inf) = -inf
    x = np.array([[[-np.inf]]], dtype)
    W = np.full((1, 3), 0.5, dtype)
    U = np.full((1, 3), 0.5, dtype)
    kw = dict(activation="linear", reset_after=reset_after)
    with np.errstate(all="ignore"):
        ref = reference.gru(x, W, U, **kw)
    np.testing.assert_array_equal(ref[0], [[-np.inf]])
    y, h = functional.gru(x, W, U, **kw)
    np.testing.assert_array_equal(h, ref[1])
    np.testing.assert_array_equal(y, ref[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_of_minus_inf_is_exactly_zero(dtype):
    # SimpleRNN with sigmoid, x = -inf through W = 1 into 64 units, U = 0:
    #   h = sigmoid(-inf) = 0 exactly, in every unit (the reference gives 0).
    # An exact 0 matters: 0 * inf is NaN, a tiny positive number times inf is inf, so an
    # LSTM gate at sigmoid(-inf) decides whether an infinite candidate propagates.
    x = np.full((1, 1, 1), -np.inf, dtype)
    W = np.ones((1, 64), dtype)
    U = np.zeros((64, 64), dtype)
    y, h = functional.simple_rnn(x, W, U, activation="sigmoid")
    with np.errstate(all="ignore"):
        ref_y, ref_h = reference.simple_rnn(x, W, U, activation="sigmoid")
    np.testing.assert_array_equal(ref_h, np.zeros((1, 64)))
    np.testing.assert_array_equal(h, ref_h)
    np.testing.assert_array_equal(y, ref_y)


# ---------------------------------------------------------------------------------------
# Threads and determinism


def test_num_threads_round_trip(threads):
    # counts the CPUs allow (more are capped with a warning: test_user_rough_edges.py)
    cpus = available_cpus()
    for n in [n for n in (1, 2, 3) if n <= cpus] + [1]:
        rnncore.set_num_threads(n)
        assert rnncore.get_num_threads() == n
        assert rnncore.build_info()["threads"] == n
    rnncore.set_num_threads(0)  # 0 restores the default
    default = rnncore.get_num_threads()
    assert default >= 1
    rnncore.set_num_threads(threads)
    assert rnncore.get_num_threads() == threads
    with pytest.raises(ValueError, match=r"set_num_threads: expected n >= 0, got -1"):
        rnncore.set_num_threads(-1)
    assert rnncore.get_num_threads() == threads


@pytest.mark.parametrize("batch", [1, 3, 64, 65], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_threads_match_reference(make_case, check, threads, variant, batch):
    # Large enough per row that 64 rows are split between threads (scan.hpp's split_rows
    # wants about 1 MFLOP per shard); 65 rows split unevenly; 1 and 3 rows barely or not.
    case = make_case(variant, batch, 50, 16, 32, initial_state=True, mask="holes")
    kw = dict(go_backwards=True, return_sequences=True)
    ref = case.reference(**kw)
    for n in (1, 2):
        rnncore.set_num_threads(n)
        check(case.run(**kw), ref, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_one_and_two_threads_identical(make_case, threads, variant, dtype):
    # Batch rows are independent and each thread runs whole rows, so the result must not
    # depend on the thread count, bit for bit. Several calls each, so that an occasional
    # agreement cannot hide a difference.
    case = make_case(variant, 64, 50, 16, 32, initial_state=True, mask="holes").cast(dtype)
    results, other_work = [], []
    for k, n in enumerate((1, 2) * 10):
        rnncore.set_num_threads(n)
        results.append((n, case.run(return_sequences=True)))
        # As in test_repeated_calls_are_bitwise_identical: other allocations in between,
        # here also of about the output's size, so that the large buffers move too.
        other_work += [np.empty(130 + k), np.empty(results[0][1][0].size + 2 * k)]
    first = results[0][1]
    for k, (n, out) in enumerate(results[1:], 1):
        for name, a, b in zip(("output", "h", "c"), out, first):
            np.testing.assert_array_equal(
                a, b, err_msg=f"{name}: call {k} ({n} thread(s)) vs call 0 (1 thread)"
            )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_repeated_calls_are_bitwise_identical(make_case, threads, variant, dtype):
    # The same call on the same inputs with the same thread count must give the same bits,
    # whatever else the process allocated in between. Here the results are kept (as a
    # caller collecting them would) and an array of varying size (above NumPy's small-block
    # cache, so really from malloc) is allocated between calls: the library's internal
    # buffers then land at varying addresses.
    rnncore.set_num_threads(1)
    case = make_case(variant, 4, 6, 3, 5, initial_state=True).cast(dtype)
    results, other_work = [], []
    for call in range(60):
        results.append(case.run(return_sequences=True))
        other_work.append(np.empty(130 + call))
    for call, out in enumerate(results[1:], 1):
        for name, a, b in zip(("output", "h", "c"), out, results[0]):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: call {call} vs call 0")


# ---------------------------------------------------------------------------------------
# Instruction-set levels and build information

_ISA_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from rnncore import _core, functional
    d = np.load(sys.argv[1])
    y, h, c = functional.lstm(d["x"], d["kernel"], d["recurrent_kernel"], d["bias"],
                              initial_state=[d["h0"], d["c0"]], mask=d["mask"],
                              go_backwards=True, return_sequences=True)
    np.savez(sys.argv[2], y=y, h=h, c=c, isa=np.array(_core.isa))
    """
)


def _run_with_isa(level, args):
    env = dict(os.environ, RNNCORE_ISA=level)
    return subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("level", ["baseline", "x86_64_v3", "x86_64_v4"])
def test_isa_levels_agree(make_case, tmp_path, level):
    if not _core.cpu_supports(level):
        pytest.skip(f"this CPU does not support {level}")
    case = make_case("lstm", 5, 40, 7, 9, initial_state=True, mask="holes")
    np.savez(
        tmp_path / "in.npz",
        x=case.x,
        kernel=case.kernel,
        recurrent_kernel=case.recurrent_kernel,
        bias=case.bias,
        h0=case.initial_state[0],
        c0=case.initial_state[1],
        mask=case.mask,
    )
    proc = _run_with_isa(level, [str(tmp_path / "in.npz"), str(tmp_path / "out.npz")])
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npz")
    assert str(got["isa"]) == level
    expected = case.run(go_backwards=True, return_sequences=True)
    for name, e in zip(("y", "h", "c"), expected):
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], e, rtol=1e-12, atol=1e-12, err_msg=name)


def test_unknown_isa_level_is_refused():
    proc = _run_with_isa("x86_64_v9", ["unused", "unused"])
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "RNNCORE_ISA='x86_64_v9'" in proc.stderr


def test_build_info():
    info = rnncore.build_info()
    assert {"isa", "simd", "threads"} <= set(info)
    assert info["isa"] in ("baseline", "x86_64_v3", "x86_64_v4", "native")
    assert isinstance(info["simd"], str) and info["simd"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["eigen"])
    assert info["threads"] == rnncore.get_num_threads() >= 1
    simd = info["simd"].split()
    if info["isa"] == "x86_64_v4":
        assert "AVX512" in simd
    elif info["isa"] == "x86_64_v3":
        assert {"AVX2", "FMA"} <= set(simd) and "AVX512" not in simd
    elif info["isa"] == "baseline":
        assert not {"AVX2", "FMA", "AVX512"} & set(simd)
    if not os.environ.get("RNNCORE_ISA") and info["isa"] != "native":
        # Unforced, the best level this CPU supports is the one imported.
        best = next(
            level
            for level in ("x86_64_v4", "x86_64_v3", "baseline")
            if _core.cpu_supports(level)
            and (level == "baseline" or find_spec(f"rnncore._core_{level}") is not None)
        )
        assert info["isa"] == best
    assert _core.cpu_supports("baseline")
