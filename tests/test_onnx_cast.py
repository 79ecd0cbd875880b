"""ONNX ``Cast`` / ``CastLike`` of values a type cannot hold: the same bits on every CPU and no
NumPy warning (the suite turns warnings into errors).

ONNX leaves a float -> integer conversion of NaN, +-Inf or an out-of-range value undefined, and
NumPy's own ``astype`` gives different values (and warns, or not) on AVX2, AVX-512 and ARM
loops. rnncore's rule (:func:`rnncore.formats.onnx.ops.cast`): truncation toward zero for what
the type holds; the 4- and 2-bit types give 0 otherwise (onnx's reference implementation,
ml_dtypes); the 8- to 64-bit types give 0 for NaN and saturate the rest. The expected values
below are written out, not computed with NumPy's conversion.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")
from onnx import TensorProto, helper  # noqa: E402

from rnncore.formats.onnx.ops import cast  # noqa: E402
from rnncore.interop import onnx_backend  # noqa: E402

SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e30, 300.7, -200.5, 2.9, -2.9, -0.0, 127.99, -128.5]

#: dtype -> the expected result of casting SPECIAL (float32 and float64 sources alike)
EXPECTED = {
    np.int8: [0, 127, -128, 127, -128, 127, -128, 2, -2, 0, 127, -128],
    np.uint8: [0, 255, 0, 255, 0, 255, 0, 2, 0, 0, 127, 0],
    np.int16: [0, 32767, -32768, 32767, -32768, 300, -200, 2, -2, 0, 127, -128],
    np.uint16: [0, 65535, 0, 65535, 0, 300, 0, 2, 0, 0, 127, 0],
    np.int32: [0, 2**31 - 1, -(2**31), 2**31 - 1, -(2**31), 300, -200, 2, -2, 0, 127, -128],
    np.uint32: [0, 2**32 - 1, 0, 2**32 - 1, 0, 300, 0, 2, 0, 0, 127, 0],
    np.int64: [0, 2**63 - 1, -(2**63), 2**63 - 1, -(2**63), 300, -200, 2, -2, 0, 127, -128],
    np.uint64: [0, 2**64 - 1, 0, 2**64 - 1, 0, 300, 0, 2, 0, 0, 127, 0],
}


@pytest.mark.parametrize("src", [np.float32, np.float64])
@pytest.mark.parametrize("dst", list(EXPECTED), ids=lambda t: np.dtype(t).name)
def test_float_to_integer_is_defined_and_silent(src, dst):
    x = np.array(SPECIAL, src)
    before = x.copy()
    got = cast(x, np.dtype(dst))
    assert got.dtype == np.dtype(dst)
    np.testing.assert_array_equal(got, np.array(EXPECTED[dst], dst))
    np.testing.assert_array_equal(x, before)  # the input is left as it was


@pytest.mark.parametrize(
    ("dst", "lo", "hi"),
    [("int4", -8, 7), ("uint4", 0, 15), ("int2", -2, 1), ("uint2", 0, 3)],
)
def test_sub_byte_out_of_range_is_zero(dst, lo, hi):
    # onnx's reference (ml_dtypes): what the type holds converts, everything else is 0
    t = np.dtype(getattr(ml_dtypes, dst))
    x = np.array([lo - 1, lo, hi, hi + 1, np.nan, np.inf, -np.inf, lo - 0.5, hi + 0.9], np.float32)
    want = [0, lo, hi, 0, 0, 0, 0, lo, hi]
    got = cast(x, t)
    assert got.dtype == t
    assert [int(v) for v in got.astype(np.int64)] == want
    got16 = cast(x.astype(np.float16), t)
    assert [int(v) for v in got16.astype(np.int64)] == want


def test_float_to_float16_overflow_is_inf_without_warning():
    got = cast(np.array([1e6, -1e6, np.nan, 1.5], np.float32), np.dtype(np.float16))
    np.testing.assert_array_equal(got, np.array([np.inf, -np.inf, np.nan, 1.5], np.float16))


@pytest.mark.parametrize("saturate", [1, 0])
def test_float8_saturation_follows_the_spec_table(saturate):
    e4m3 = np.dtype(ml_dtypes.float8_e4m3fn)  # no Inf: FLT_MAX 448
    e5m2 = np.dtype(ml_dtypes.float8_e5m2)  # has Inf: FLT_MAX 57344
    x = np.array([np.inf, -np.inf, 1e6, np.nan, 0.5], np.float32)
    a = cast(x, e4m3, saturate=bool(saturate)).astype(np.float32)
    b = cast(x, e5m2, saturate=bool(saturate)).astype(np.float32)
    if saturate:
        np.testing.assert_array_equal(a, [448, -448, 448, np.nan, 0.5])
        np.testing.assert_array_equal(b, [57344, -57344, 57344, np.nan, 0.5])
    else:
        np.testing.assert_array_equal(a, [np.nan, np.nan, np.nan, np.nan, 0.5])
        np.testing.assert_array_equal(b, [np.inf, -np.inf, np.inf, np.nan, 0.5])


def test_integer_to_integer_keeps_the_low_bits():
    # the spec: "discard higher bits and reinterpret", e.g. 200 (int16) -> -56 (int8)
    got = cast(np.array([200, -129, 65535], np.int32), np.dtype(np.int8))
    np.testing.assert_array_equal(got, np.array([-56, 127, -1], np.int8))


@pytest.mark.parametrize("op", ["Cast", "CastLike"])
def test_cast_nodes_run_the_rule(op):
    x = np.array(SPECIAL, np.float32)
    if op == "Cast":
        node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT8)
        (y,) = onnx_backend.run_node(node, [x])
    else:
        node = helper.make_node("CastLike", ["x", "like"], ["y"])
        (y,) = onnx_backend.run_node(node, [x, np.zeros(1, np.int8)])
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, np.array(EXPECTED[np.int8], np.int8))
