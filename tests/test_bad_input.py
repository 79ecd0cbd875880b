"""Bad input: every refusal is a ValueError or TypeError whose message names the argument
and says what was expected. Messages are matched on their stable parts.

Also the accepted-but-converted inputs (Python lists, integer masks) as they behave today.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import rnncore
from rnncore import functional

VARIANTS = ("simple_rnn", "lstm", "gru_reset_after", "gru_reset_before")
B, T, D, H = 2, 3, 4, 5


@pytest.fixture(params=VARIANTS)
def case(request, make_case):
    """A valid float64 call of each variant, with a bias, initial states and a mask."""
    return make_case(request.param, B, T, D, H, initial_state=True, mask="holes")


assert T != B  # so that a transposed mask has the wrong shape


def _gates(case):
    return case.spec.gates


def _label(case):
    """The name the core uses for the cell in its messages."""
    return {
        "simple_rnn": "simple_rnn",
        "lstm": "lstm",
        "gru_reset_after": "gru (reset_after=True)",
        "gru_reset_before": "gru (reset_after=False)",
    }[case.spec.name]


def _raises(case, exc, pattern, **replace):
    with pytest.raises(exc, match=pattern):
        dataclasses.replace(case, **replace).run()


def test_valid_case_runs(case):
    # The baseline the other tests break one argument of.
    out = case.run()
    assert out[0].shape == (B, H) and len(out) == 1 + case.spec.n_states


# ---------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize(
    "shape", [(B, T), (B * T * D,), (B, T, D, 1), ()], ids=["2d", "1d", "4d", "0d"]
)
def test_x_wrong_rank(case, shape):
    x = np.zeros(shape)
    got = re.escape(str(shape)) if len(shape) != 1 else re.escape(f"({shape[0]},)")
    _raises(
        case,
        ValueError,
        rf"^x: expected a 3-D array \(batch, timesteps, input_dim\), got shape {got}$",
        x=x,
    )


def test_input_dim_mismatch(case):
    G = _gates(case)
    kernel = np.zeros((D + 1, G * H))
    _raises(
        case,
        ValueError,
        rf"^kernel: expected shape \({D}, {G * H}\), got \({D + 1}, {G * H}\)$",
        kernel=kernel,
    )


def test_units_mismatch_between_kernel_and_recurrent_kernel(case):
    # The units come from recurrent_kernel (H, G*H); a kernel built for H+1 units is refused.
    G = _gates(case)
    kernel = np.zeros((D, G * (H + 1)))
    _raises(
        case,
        ValueError,
        rf"^kernel: expected shape \({D}, {G * H}\), got \({D}, {G * (H + 1)}\)$",
        kernel=kernel,
    )


@pytest.mark.parametrize("kernel_rank", [1, 3])
def test_kernel_wrong_rank(case, kernel_rank):
    G = _gates(case)
    kernel = np.zeros((D * G * H,) if kernel_rank == 1 else (D, G * H, 1))
    _raises(case, ValueError, rf"^kernel: expected shape \({D}, {G * H}\), got ", kernel=kernel)


def test_recurrent_kernel_not_units_by_gates_units(case):
    G = _gates(case)
    wrong_gates = 2 if G != 2 else 3
    rk = np.zeros((H, wrong_gates * H))
    _raises(
        case,
        ValueError,
        re.escape(
            f"recurrent_kernel: expected shape (units, {G}*units) = ({H}, {G * H}) "
            f"for {_label(case)}, got ({H}, {wrong_gates * H})"
        ),
        recurrent_kernel=rk,
    )


def test_recurrent_kernel_wrong_rank(case):
    G = _gates(case)
    _raises(
        case,
        ValueError,
        re.escape(
            f"recurrent_kernel: expected a 2-D array (units, gates*units), got shape ({H * G * H},)"
        ),
        recurrent_kernel=np.zeros(H * G * H),
    )


def test_recurrent_kernel_square_but_wrong_units(case):
    # (H+1, G*(H+1)) is a valid recurrent kernel on its own: the kernel then disagrees.
    G = _gates(case)
    rk = np.zeros((H + 1, G * (H + 1)))
    _raises(
        case,
        ValueError,
        rf"^kernel: expected shape \({D}, {G * (H + 1)}\), got \({D}, {G * H}\)$",
        recurrent_kernel=rk,
    )


@pytest.mark.parametrize(
    "variant, bias_shape, expected",
    [
        # reset_after=True wants the (2, 3H) input and recurrent rows.
        ("gru_reset_after", (3 * H,), (2, 3 * H)),
        ("gru_reset_after", (2 * 3 * H,), (2, 3 * H)),
        ("gru_reset_after", (3, 3 * H), (2, 3 * H)),
        # reset_after=False wants one row.
        ("gru_reset_before", (2, 3 * H), (3 * H,)),
        ("lstm", (3 * H,), (4 * H,)),
        ("lstm", (1, 4 * H), (4 * H,)),
        ("simple_rnn", (H + 1,), (H,)),
        ("simple_rnn", (2, H), (H,)),
    ],
    ids=lambda v: str(v).replace(" ", "") if isinstance(v, tuple) else v,
)
def test_bias_wrong_shape(make_case, variant, bias_shape, expected):
    c = make_case(variant, B, T, D, H)

    def shape(s):
        return f"({s[0]},)" if len(s) == 1 else "(" + ", ".join(map(str, s)) + ")"

    _raises(
        c,
        ValueError,
        "^" + re.escape(f"bias: expected shape {shape(expected)}, got {shape(bias_shape)}"),
        bias=np.zeros(bias_shape),
    )


# ---------------------------------------------------------------------------------------
# Dtypes


@pytest.mark.parametrize(
    "dtype",
    [np.int64, np.int32, np.complex128, np.float16, object, np.bool_, np.longdouble],
    ids=lambda d: np.dtype(d).name,
)
def test_x_unsupported_dtype(case, dtype):
    x = case.x.astype(dtype)
    _raises(
        case,
        TypeError,
        "^" + re.escape(f"x: expected dtype float32 or float64, got {np.dtype(dtype)}") + "$",
        x=x,
    )


@pytest.mark.parametrize(
    "x_dtype, other",
    [
        (np.float32, np.float64),
        (np.float64, np.float32),
        (np.float64, np.int64),
        (np.float32, np.float16),
        (np.float64, np.complex128),
        (np.float64, object),
    ],
    ids=lambda d: np.dtype(d).name,
)
def test_mixed_dtypes_are_refused(case, x_dtype, other):
    # Each array argument in turn in another dtype than x (the mask has its own rules).
    c = case.cast(x_dtype)
    names = [name for name in c.arrays() if name not in ("x", "mask")]
    assert len(names) == 3 + c.spec.n_states  # kernel, recurrent_kernel, bias, states
    for name in names:
        arrays = {name: c.arrays()[name].astype(other)}
        with pytest.raises(
            TypeError,
            match="^"
            + re.escape(
                f"{name}: expected dtype {np.dtype(x_dtype)} (the dtype of "
                f"x), got {np.dtype(other)}; mixed dtypes are not converted"
            ),
        ):
            c.with_arrays(arrays).run()


# ---------------------------------------------------------------------------------------
# Initial states


def test_initial_state_wrong_count(case):
    n = case.spec.n_states
    for count in {0, 1, 2, 3} - {n}:
        states = [np.zeros((B, H))] * count
        _raises(
            case,
            ValueError,
            "^"
            + re.escape(f"initial_state: expected {n} array(s) for {case.spec.cell}, got {count}"),
            initial_state=states,
        )


def test_lstm_initial_state_as_one_array(make_case):
    # An LSTM needs [h, c]: a bare array is one state, whatever its shape.
    c = make_case("lstm", B, T, D, H)
    for bare in (np.zeros((B, H)), np.zeros((2, B, H))):
        _raises(
            c,
            ValueError,
            re.escape("initial_state: expected 2 array(s) for lstm, got 1"),
            initial_state=bare,
        )


@pytest.mark.parametrize(
    "shape", [(B + 1, H), (B, H + 1), (H,), (1, B, H)], ids=["batch+1", "units+1", "1d", "3d"]
)
def test_initial_state_wrong_shape(case, shape):
    got = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    for k in range(case.spec.n_states):  # each state in turn
        states = list(case.initial_state)
        states[k] = np.zeros(shape)
        _raises(
            case,
            ValueError,
            "^" + re.escape(f"initial_state[{k}]: expected shape ({B}, {H}), got {got}") + "$",
            initial_state=states,
        )


def test_bare_array_initial_state_for_single_state_cells(make_case):
    # Accepted for SimpleRNN / GRU: a bare (B, H) array is the one state.
    for variant in ("simple_rnn", "gru_reset_after"):
        c = make_case(variant, B, T, D, H, initial_state=True)
        as_list = c.run()
        as_array = dataclasses.replace(c, initial_state=c.initial_state[0]).run()
        for a, b in zip(as_array, as_list):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Masks


@pytest.mark.parametrize(
    "shape",
    [(B, T + 1), (B + 1, T), (T, B), (B, T, 1), (B * T,)],
    ids=["steps+1", "batch+1", "transposed", "3d", "1d"],
)
def test_mask_wrong_shape(case, shape):
    got = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    _raises(
        case,
        ValueError,
        "^" + re.escape(f"mask: expected shape ({B}, {T}), got {got}") + "$",
        mask=np.ones(shape, bool),
    )


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.complex64, object], ids=lambda d: np.dtype(d).name
)
def test_mask_non_integer_dtype(case, dtype):
    _raises(
        case,
        TypeError,
        "^" + re.escape(f"mask: expected dtype bool (or integer 0/1), got {np.dtype(dtype)}"),
        mask=case.mask.astype(dtype),
    )


# ---------------------------------------------------------------------------------------
# Activations


@pytest.mark.parametrize("name", ["bogus", "Tanh", "", "softsign"])
def test_unknown_activation(case, name):
    with pytest.raises(
        ValueError, match="^" + re.escape(f"activation: unknown activation '{name}'")
    ):
        case.run(activation=name)


def test_unknown_recurrent_activation_names_the_argument(make_case):
    # The message must say that recurrent_activation is the bad argument: with the valid
    # default activation="tanh", "unknown activation 'bogus'" points at the wrong one.
    for variant in ("lstm", "gru_reset_after", "gru_reset_before"):
        c = make_case(variant, B, T, D, H)
        with pytest.raises(ValueError, match=r"unknown activation 'bogus'") as info:
            c.run(recurrent_activation="bogus")
        assert "recurrent_activation" in str(info.value), str(info.value)


def test_simple_rnn_has_no_recurrent_activation(make_case):
    c = make_case("simple_rnn", B, T, D, H)
    with pytest.raises(TypeError, match="recurrent_activation"):
        functional.simple_rnn(c.x, c.kernel, c.recurrent_kernel, recurrent_activation="tanh")


# ---------------------------------------------------------------------------------------
# Python objects instead of arrays (the current behaviour)


def test_list_of_floats_is_float64(make_case):
    c = make_case("lstm", B, T, D, H)
    y, h, cs = functional.lstm(c.x.tolist(), c.kernel, c.recurrent_kernel, c.bias)
    assert y.dtype == h.dtype == cs.dtype == np.float64
    np.testing.assert_allclose(y, c.run()[0], rtol=1e-13, atol=1e-14)
    # ... so with float32 weights it is a dtype mismatch, reported on the weights.
    c32 = c.cast(np.float32)
    with pytest.raises(
        TypeError, match=re.escape("kernel: expected dtype float64 (the dtype of x), got float32")
    ):
        functional.lstm(c.x.tolist(), c32.kernel, c32.recurrent_kernel, c32.bias)


def test_list_of_ints_is_refused(make_case):
    c = make_case("simple_rnn", 1, 1, D, H)
    with pytest.raises(
        TypeError, match=re.escape("x: expected dtype float32 or float64, got int64")
    ):
        functional.simple_rnn([[[1, 2, 3, 4]]], c.kernel, c.recurrent_kernel)


def test_ragged_list_is_refused(make_case):
    c = make_case("simple_rnn", 1, 1, D, H)
    with pytest.raises(TypeError, match=r"^x: expected an array, got list \("):
        functional.simple_rnn([[[1.0, 2.0, 3.0, 4.0]], [[1.0]]], c.kernel, c.recurrent_kernel)


@pytest.mark.parametrize("x", [None, "abc", 1.5], ids=["None", "str", "scalar"])
def test_non_array_x(make_case, x):
    c = make_case("simple_rnn", 1, 1, D, H)
    with pytest.raises((TypeError, ValueError), match=r"^x: expected "):
        functional.simple_rnn(x, c.kernel, c.recurrent_kernel)


# ---------------------------------------------------------------------------------------
# Thread count


@pytest.mark.parametrize("n", [-1, -8])
def test_negative_thread_count(threads, n):
    with pytest.raises(ValueError, match=re.escape(f"set_num_threads: expected n >= 0, got {n}")):
        rnncore.set_num_threads(n)
    assert rnncore.get_num_threads() == threads


def test_non_integer_thread_count(threads):
    with pytest.raises(TypeError):
        rnncore.set_num_threads(1.5)
    assert rnncore.get_num_threads() == threads


# ---------------------------------------------------------------------------------------
# A refused call leaves the library usable and the inputs intact


def test_refusal_leaves_library_usable(case):
    before = {name: a.copy() for name, a in case.arrays().items()}
    good = case.run()
    with pytest.raises(ValueError):
        dataclasses.replace(case, mask=np.ones((B, T + 1), bool)).run()
    with pytest.raises(TypeError):
        case.cast(np.float32).with_arrays({"kernel": case.kernel}).run()
    for name, a in case.arrays().items():
        np.testing.assert_array_equal(a, before[name])
    for a, b in zip(case.run(), good):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
