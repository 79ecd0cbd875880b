"""The compiled core's Python surface: the stub, the thread setting, the functional API's
conversions, and the one activation table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import _core, activations, functional

STUB = Path(_core.__file__).with_suffix(".pyi")


def _stub_names() -> tuple[set, list]:
    """The public names the stub defines, and its ``__all__``."""
    tree = ast.parse(STUB.read_text())
    names, declared = set(), []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if target.id == "__all__":
                    declared = ast.literal_eval(node.value)
                else:
                    names.add(target.id)
    return {n for n in names if not n.startswith("_")}, declared


def test_stub_declares_exactly_what_core_exports():
    names, declared = _stub_names()
    assert names == set(_core.__all__)
    assert declared == _core.__all__
    for name in _core.__all__:
        assert hasattr(_core, name), name


@pytest.mark.parametrize(
    "value, error, message",
    [
        (2.5, TypeError, "set_num_threads: expected an integer n, got 2.5 (float)"),
        ("2", TypeError, "set_num_threads: expected an integer n, got '2' (str)"),
        (True, TypeError, "set_num_threads: expected an integer n, got True (bool)"),
        (None, TypeError, "set_num_threads: expected an integer n, got None (NoneType)"),
        (-1, ValueError, "set_num_threads: expected n >= 0, got -1"),
        (-(2**70), ValueError, f"set_num_threads: expected n >= 0, got {-(2**70)}"),
        (2**31, ValueError, f"set_num_threads: expected n <= {2**31 - 1}, got {2**31}"),
        (2**70, ValueError, f"set_num_threads: expected n <= {2**31 - 1}, got {2**70}"),
    ],
    ids=["float", "str", "bool", "None", "negative", "very negative", "2**31", "2**70"],
)
def test_set_num_threads_names_its_argument(threads, value, error, message):
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        rnncore.set_num_threads(value)
    assert rnncore.get_num_threads() == threads


def test_set_num_threads_takes_numpy_integers(threads):
    rnncore.set_num_threads(np.int64(1))
    assert rnncore.get_num_threads() == 1


def test_activation_names_are_the_one_table():
    assert functional.ACTIVATIONS is activations.NAMES


def _weights(dtype):
    rng = np.random.default_rng(0)
    W = (0.3 * rng.standard_normal((3, 8))).astype(dtype)
    U = (0.3 * rng.standard_normal((2, 8))).astype(dtype)
    return W, U


def test_a_list_with_float32_weights_says_it_became_float64():
    W, U = _weights(np.float32)
    x = [[[0.1, 0.2, 0.3]]]
    message = (
        "kernel: expected dtype float64 (the dtype of x), got float32: x was a list, which "
        "NumPy converts to float64; pass np.asarray(x, np.float32)"
    )
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        functional.lstm(x, W, U)
    y, h, c = functional.lstm(np.asarray(x, np.float32), W, U)  # what the message says
    assert y.dtype == np.float32


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda x, W, U: functional.lstm(x, W, U, initial_state=[[[0.0, 0.0]], [[0.0, 0.0]]]),
            "initial_state[0]: expected dtype float32 (the dtype of x), got float64: "
            "initial_state[0] was a list, which NumPy converts to float64; "
            "pass np.asarray(initial_state[0], np.float32)",
        ),
        (
            lambda x, W, U: functional.lstm(x, W.tolist(), U),
            "kernel: expected dtype float32 (the dtype of x), got float64: kernel was a list, "
            "which NumPy converts to float64; pass np.asarray(kernel, np.float32)",
        ),
        (
            lambda x, W, U: functional.dense(x, W, [0.0] * 8),
            "bias: expected dtype float32 (the dtype of x), got float64: bias was a list, "
            "which NumPy converts to float64; pass np.asarray(bias, np.float32)",
        ),
        (
            lambda x, W, U: functional.stream("lstm", W, U.tolist()),
            "kernel: expected dtype float64 (the dtype of recurrent_kernel), got float32: "
            "recurrent_kernel was a list, which NumPy converts to float64; "
            "pass np.asarray(recurrent_kernel, np.float32)",
        ),
    ],
    ids=["initial_state", "kernel", "dense bias", "stream"],
)
def test_every_list_converted_to_float64_is_named(call, message):
    W, U = _weights(np.float32)
    x = np.zeros((1, 1, 3), np.float32)
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        call(x, W, U)


def test_lists_alone_compute_in_float64():
    W, U = _weights(np.float64)
    y, h = functional.simple_rnn([[[0.1, 0.2, 0.3]]], W[:, :2].tolist(), U[:, :2].tolist())
    assert y.dtype == h.dtype == np.float64


def test_arrays_of_two_dtypes_are_the_core_s_refusal():
    W, U = _weights(np.float32)
    with pytest.raises(TypeError, match="mixed dtypes are not converted"):
        functional.lstm(np.zeros((1, 1, 3)), W, U)
