"""Robustness of the public layer / model / loader surface (the functional API's bad-input
cases live in test_bad_input.py).

* every bad argument raises a clear exception (TypeError / ValueError / its subclasses),
* nothing is ever *silently* converted into a wrong answer (complex inputs losing their
  imaginary part, ``None`` objects becoming NaN),
* non-contiguous views and negative strides give the contiguous result,
* NaN / Inf propagate as in the reference (no crash),
* absurd sizes (units=10**9, zero-size inputs whose outputs or projections cannot exist)
  fail with MemoryError / ValueError *before* allocating: these run in a child process with
  an address-space limit (RLIMIT_AS) so that a failure of the library can never take the
  machine's memory; the child must exit normally, and the error must not be NumPy's failed
  attempt to allocate (``_ArrayMemoryError``): on a machine that overcommits memory such an
  attempt can succeed and the kernel's OOM killer then ends the interpreter.
"""

from __future__ import annotations

import json
import textwrap
import warnings

import numpy as np
import pytest

import rnncore
from rnncore import functional as F
from rnncore import layers as L
from rnncore import reference as R
from support import run_json_child

RNN_LAYERS = [L.SimpleRNN, L.LSTM, L.GRU]
BAD_ERRORS = (TypeError, ValueError)


def _built(cls, units=3, d=2, **kw):
    layer = cls(units, **kw)
    layer.build((None, None, d))
    return layer


def _x(b=2, t=4, d=2, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((b, t, d)).astype(dtype)


def _model():
    return rnncore.Sequential(
        [rnncore.Input((4, 2)), L.LSTM(3, return_sequences=True), L.GRU(3), L.Dense(2)]
    )


# ---- wrong rank / shape -------------------------------------------------------------------


@pytest.mark.parametrize("cls", RNN_LAYERS)
@pytest.mark.parametrize("shape", [(2, 2), (1, 2, 2, 2), (2, 4, 5), (2,), ()])
def test_layer_rejects_wrong_rank_or_shape(cls, shape):
    layer = _built(cls)
    with pytest.raises(ValueError, match="shape"):
        layer(np.ones(shape, np.float32))


@pytest.mark.parametrize("shape", [(2, 2), (2, 4, 5), (1, 2, 4, 2)])
def test_model_predict_rejects_wrong_shape(shape):
    with pytest.raises(ValueError):
        _model().predict(np.ones(shape, np.float32))


@pytest.mark.parametrize("cls", RNN_LAYERS)
def test_layer_rejects_bad_state_and_mask(cls):
    layer = _built(cls)
    n = len(layer._state_names)
    x = _x()
    with pytest.raises(ValueError, match="initial_state"):
        layer(x, initial_state=[np.zeros((2, 3), np.float32)] * (n + 1))
    with pytest.raises(ValueError, match="shape"):
        layer(x, initial_state=[np.zeros((2, 4), np.float32)] * n)
    with pytest.raises(ValueError, match="mask"):
        layer(x, mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="mask"):
        layer(x, mask=np.ones((3, 4), bool))


@pytest.mark.parametrize("cls", RNN_LAYERS)
def test_stateful_layer_rejects_other_batch_size(cls):
    layer = cls(3, stateful=True)
    layer.build((2, None, 2))
    layer(_x())
    with pytest.raises(ValueError, match="batch size"):
        layer(_x(b=3))


# ---- wrong dtype -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", RNN_LAYERS)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_layer_rejects_complex_input(cls, dtype):
    """Casting complex to float discards the imaginary part: a silently wrong answer
    (only a ComplexWarning, which production scripts do not turn into errors)."""
    layer = _built(cls)
    x = _x().astype(dtype) * (1 + 1j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BAD_ERRORS):
            layer(x)


def test_model_predict_rejects_complex_input():
    x = _x().astype(np.complex64) * (1 + 1j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BAD_ERRORS):
            _model().predict(x)


@pytest.mark.parametrize("cls", RNN_LAYERS)
def test_layer_rejects_object_array_with_none(cls):
    """``None`` in an object array must not silently become NaN."""
    layer = _built(cls)
    x = _x().astype(object)
    x[0, 0, 0] = None
    with pytest.raises(BAD_ERRORS):
        layer(x)


@pytest.mark.parametrize("cls", RNN_LAYERS)
def test_layer_rejects_strings(cls):
    with pytest.raises(BAD_ERRORS):
        _built(cls)(np.array([[["a", "b"]]]))
    with pytest.raises(BAD_ERRORS):
        _built(cls)("not an array")


@pytest.mark.parametrize("cls", RNN_LAYERS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.bool_, np.float64, object])
def test_layer_real_dtypes_are_cast_like_keras(cls, dtype):
    """Real-valued inputs are cast to the layer's dtype (Keras's autocast, documented in
    rnncore.layers): the result is exactly the one of the explicit cast."""
    layer = _built(cls)
    x = (_x() * 3).astype(dtype)
    want = layer(np.asarray(x, np.float32))
    got = layer(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex64", "object", "bfloat16", "x"])
@pytest.mark.parametrize("cls", RNN_LAYERS + [L.Dense])
def test_layer_rejects_unsupported_layer_dtype(cls, dtype):
    with pytest.raises(BAD_ERRORS + (NotImplementedError,)):
        cls(3, dtype=dtype)


@pytest.mark.parametrize("bad", ["complex", "none_object"])
def test_set_weights_rejects_silently_lossy_values(bad):
    layer = _built(L.LSTM)
    w = layer.get_weights()
    if bad == "complex":
        w[0] = w[0].astype(np.complex64) + 1j
    else:
        w[0] = w[0].astype(object)
        w[0][0, 0] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BAD_ERRORS):
            layer.set_weights(w)


# ---- mismatched weights, unknown options, bad option values -------------------------------


@pytest.mark.parametrize("cls", RNN_LAYERS)
def test_set_weights_mismatches(cls):
    layer = _built(cls)
    w = layer.get_weights()
    for bad in (
        w[:-1],
        w + [np.zeros(1, np.float32)],
        [w[1], w[0], w[2]],
        [],
        [np.zeros((2, 2), np.float32)] * 3,
    ):
        with pytest.raises(ValueError):
            layer.set_weights(bad)
    with pytest.raises(BAD_ERRORS):
        layer.set_weights(5)
    np.testing.assert_array_equal(layer.get_weights()[0], w[0])  # untouched by failures


def test_model_set_weights_mismatches():
    m = _model()
    w = m.get_weights()
    for bad in (w[:-1], w + [w[0]], w[::-1]):
        with pytest.raises(ValueError):
            m.set_weights(bad)


@pytest.mark.parametrize("cls", RNN_LAYERS + [L.Dense])
def test_unknown_option_names(cls):
    with pytest.raises(TypeError, match="bogus_option"):
        cls(3, bogus_option=1)
    layer = _built(cls, d=2) if cls is not L.Dense else L.Dense(3)
    with pytest.raises(TypeError):
        layer(_x(), bogus_option=1)


@pytest.mark.parametrize("cls", RNN_LAYERS + [L.Dense])
@pytest.mark.parametrize(
    "units", [0, -1, 1.5, 2.7, "3", None, True, np.bool_(True), float("nan"), float("inf"), [3]]
)
def test_bad_units(cls, units):
    # refused, never rounded: Dense(2.7) is not 2 units, LSTM(True) is not 1
    with pytest.raises((TypeError, ValueError), match="units must be a positive integer"):
        cls(units)


@pytest.mark.parametrize("cls", RNN_LAYERS + [L.Dense])
@pytest.mark.parametrize("units", [3, 3.0, np.int32(3), np.int64(3)])
def test_integral_units(cls, units):
    layer = cls(units)
    assert layer.units == 3 and type(layer.units) is int


@pytest.mark.parametrize("cls", RNN_LAYERS)
def test_bad_option_values(cls):
    for kw in (
        {"activation": "tanhh"},
        {"dropout": 2},
        {"dropout": float("nan")},
        {"recurrent_dropout": -0.1},
        {"activation": 5},
    ):
        with pytest.raises(BAD_ERRORS + (NotImplementedError,)):
            cls(3, **kw)
    if cls is not L.SimpleRNN:
        with pytest.raises(BAD_ERRORS + (NotImplementedError,)):
            cls(3, recurrent_activation="bogus")


def test_model_and_wrapper_bad_arguments():
    m = _model()
    x = _x()
    for bs in (0, -1, 1.5, "a"):
        with pytest.raises(ValueError):
            m.predict(x, batch_size=bs)
    with pytest.raises(TypeError):
        m.predict(x, bogus=1)
    with pytest.raises(TypeError):
        m.add(5)
    with pytest.raises(ValueError):
        L.Bidirectional(L.LSTM(3), merge_mode="bogus")
    with pytest.raises(ValueError):
        L.Bidirectional(5)
    with pytest.raises(ValueError):
        L.TimeDistributed(5)


def test_stream_bad_arguments():
    layer = _built(L.LSTM)
    W, U, b = layer.get_weights()
    with pytest.raises(ValueError):
        F.stream("lstmx", W, U, b, batch_size=2)
    with pytest.raises(ValueError):
        F.stream("lstm", W, U, b, batch_size=-1)
    s = F.stream("lstm", W, U, b, batch_size=2)
    x = _x()
    with pytest.raises(TypeError):
        s.run(x.astype(np.float64))
    with pytest.raises(ValueError):
        s.run(x[:1])
    with pytest.raises(ValueError):
        s.run(x[0])
    with pytest.raises(ValueError):
        s.run(x[:, ::2])
    with pytest.raises(ValueError):
        s.set_states([np.zeros((2, 3), np.float32)])
    with pytest.raises(TypeError):
        s.set_states([np.zeros((2, 3)), np.zeros((2, 3))])
    with pytest.raises(TypeError):
        s.set_states(5)


# ---- layouts, NaN / Inf -------------------------------------------------------------------


@pytest.mark.parametrize("cls", RNN_LAYERS)
@pytest.mark.parametrize("view", ["reversed", "every_other", "fortran", "transposed"])
def test_layer_noncontiguous_views(cls, view):
    layer = _built(cls, return_sequences=True)
    x = _x(b=3, t=5)
    v = {
        "reversed": lambda: np.ascontiguousarray(x[::-1, ::-1, ::-1])[::-1, ::-1, ::-1],
        "every_other": lambda: np.repeat(x, 2, axis=1)[:, ::2],
        "fortran": lambda: np.asfortranarray(x),
        "transposed": lambda: np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2),
    }[view]()
    np.testing.assert_array_equal(v, x)
    np.testing.assert_array_equal(layer(v), layer(x))
    m = rnncore.Sequential([rnncore.Input((5, 2)), cls(3)])
    np.testing.assert_array_equal(m.predict(v), m.predict(x))


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "kernel", "state"])
def test_nan_inf_propagate_like_reference(cell, value, where):
    cls = {"simple_rnn": L.SimpleRNN, "lstm": L.LSTM, "gru": L.GRU}[cell]
    layer = _built(cls, dtype="float64", return_sequences=True, return_state=True)
    W, U, b = layer.get_weights()
    x = _x(b=3, t=4, dtype=np.float64)
    init = [np.zeros((3, 3)) for _ in layer._state_names]
    if where == "x":
        x[1, 1, 0] = value
    elif where == "kernel":
        W = W.copy()
        W[0, 0] = value
        layer.set_weights([W, U, b])
    else:
        init[0][2, 1] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = layer(x, initial_state=init)
        want = getattr(R, cell)(x, W, U, b, initial_state=init, return_sequences=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        fin = np.isfinite(w)
        np.testing.assert_allclose(g[fin], w[fin], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(g[~fin & ~np.isnan(w)], w[~fin & ~np.isnan(w)])
    clean = _x(b=3, t=4, dtype=np.float64)
    # one poisoned call leaves nothing behind in a non-stateful layer
    if where != "kernel":
        np.testing.assert_array_equal(layer(clean)[0], layer(clean.copy())[0])
        assert np.isfinite(layer(clean)[0]).all()


# ---- absurd sizes (in a memory-limited child process) -------------------------------------

_ABSURD = {
    # name: code run in the child; it must raise MemoryError or ValueError
    "SimpleRNN(10**9).build": "L.SimpleRNN(10**9).build((None, None, 2))",
    "LSTM(10**9).build": "L.LSTM(10**9).build((None, None, 2))",
    "GRU(10**9).build": "L.GRU(10**9).build((None, None, 2))",
    "LSTM(10**9) in Sequential": "rnncore.Sequential([rnncore.Input((5, 2)), L.LSTM(10**9)])",
    "Dense(10**12).build": "L.Dense(10**12).build((None, 2))",
    "LSTM(10**9) call": "L.LSTM(10**9)(np.zeros((1, 1, 2), np.float32))",
    "functional lstm zero-size input, huge output": (
        "F.lstm(np.zeros((2**20, 2**20, 0), np.float32), np.zeros((0, 16), np.float32),"
        " np.zeros((4, 16), np.float32), return_sequences=True)"
    ),
    "functional lstm output size overflows int64": (
        "F.lstm(np.zeros((2**30, 2**30, 0), np.float32), np.zeros((0, 32), np.float32),"
        " np.zeros((8, 32), np.float32), return_sequences=True)"
    ),
    "functional gru projection overflows int64": (
        "F.gru(np.zeros((2**30, 2**30, 0), np.float32), np.zeros((0, 12), np.float32),"
        " np.zeros((4, 12), np.float32), training=True)"
    ),
    "functional simple_rnn backward workspace overflows int64": (
        "F.simple_rnn(np.zeros((2**31, 2**29, 0), np.float64), np.zeros((0, 64), np.float64),"
        " np.zeros((64, 64), np.float64), training=True)"
    ),
    "functional dense output overflows int64": (
        "F.dense(np.zeros((2**30, 2**30, 0), np.float32), np.zeros((0, 2**10), np.float32))"
    ),
    "stream batch_size 2**62": (
        "F.stream('lstm', np.zeros((2, 16), np.float32), np.zeros((4, 16), np.float32),"
        " batch_size=2**62)"
    ),
    "stream batch_size 2**40": (
        "F.stream('lstm', np.zeros((2, 16), np.float32), np.zeros((4, 16), np.float32),"
        " batch_size=2**40)"
    ),
    "zero-stride view 2**30 x 2**30": (
        "F.lstm(np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**30, 2**30, 1),"
        " (0, 0, 0)), np.zeros((1, 16), np.float32), np.zeros((4, 16), np.float32))"
    ),
    "layer zero-stride view": (
        "L.LSTM(4)(np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**30, 2**30, 2),"
        " (0, 0, 0)))"
    ),
    "predict zero-stride view": (
        "rnncore.Sequential([rnncore.Input((2**30, 2)), L.GRU(4)]).predict("
        "np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**30, 2**30, 2), (0, 0, 0)),"
        " batch_size=2**29)"
    ),
}

_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import rnncore
    from rnncore import functional as F, layers as L
    # a generous limit over what the import needs: no case may allocate more than this
    soft = int(open('/proc/self/statm').read().split()[0]) * 4096 + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    cases = json.loads(sys.argv[1])
    out = {}
    for name, code in cases.items():
        try:
            eval(code)
            out[name] = ["no error", ""]
        except BaseException as e:
            out[name] = [type(e).__module__ + "." + type(e).__qualname__, str(e)[:300]]
        print(json.dumps({name: out[name]}), flush=True)
""")


@pytest.fixture(scope="module")
def absurd_results():
    proc, results = run_json_child(_CHILD, json.dumps(_ABSURD), timeout=300)
    return proc.returncode, proc.stderr[-2000:], results


@pytest.mark.parametrize("name", sorted(_ABSURD))
def test_absurd_sizes_fail_cleanly_before_allocating(name, absurd_results):
    rc, err, results = absurd_results
    assert name in results, f"the child process died before/at this case (rc={rc}): {err}"
    kind, msg = results[name]
    if name.startswith("zero-stride"):
        # NumPy's copy of an impossible 4 EiB view fails in NumPy (can never succeed)
        assert kind.endswith("MemoryError") or kind == "builtins.ValueError", (kind, msg)
        return
    assert kind in ("builtins.MemoryError", "builtins.ValueError", "builtins.OverflowError") or (
        kind.endswith("Error")
        and not kind.endswith("_ArrayMemoryError")
        and kind.split(".")[-1] in ("ModelFileError", "UnsupportedArgumentError")
    ), f"{name}: {kind}: {msg}"
    assert "Unable to allocate" not in msg, (
        f"{name}: the library tried to allocate the absurd size instead of checking it "
        f"first ({kind}: {msg}); without an address-space limit the allocation may succeed "
        f"(overcommit) and the OOM killer ends the interpreter"
    )
