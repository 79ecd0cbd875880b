"""Weight-only low precision (``quantize="bf16"`` / ``"int8"``): the formats, the core's
kernels against float32 runs of the dequantized weights, error bounds derived from the
formats, and ``model.quantize`` end to end (predict, streaming, save/load, refusals).

The bounds, from the formats (:mod:`rnncore.quantization`):

* bf16 rounds each weight to 8 significant bits: ``|w - bf16(w)| <= 2**-8 |w|``;
* int8 rounds to half a step of its column's scale: ``|w - s_j q| <= s_j / 2``.

One product ``y = x W`` then moves by at most ``sum_k |x_k| err_kj`` per output; a SimpleRNN
step ``h = tanh(x W + h0 U + b)`` (tanh is 1-Lipschitz) by at most
``sum_k |x_k| errW_kj + sum_k |h0_k| errU_kj``. Over sequences (and for the LSTM and GRU
gate products) the tests compare instead against a float32 run of the dequantized weights,
which the kernels match exactly for bf16 (the widening is exact and the FMA chain is
packed_gemm's) and to float32 rounding for int8 (the scale is applied once per output).

These are properties of the portable path (weights widened, activations float32), which every
test here pins; the hardware paths (AVX512-BF16, VNNI), which also round the activations, are
held against it in tests/test_lowp_paths.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import rnncore
from rnncore import functional
from rnncore.quantization import Quantized, dequantize, quantize

MODES = ("bf16", "int8")
EPS32 = np.finfo(np.float32).eps


@pytest.fixture(autouse=True)
def portable_path():
    """The portable path for the test; then the cap the process had (RNNCORE_LOWP_PATH)."""
    rnncore._core.set_lowp_path("portable")
    yield
    rnncore._core.set_lowp_path(os.environ.get("RNNCORE_LOWP_PATH") or rnncore._core.lowp_paths[-1])


def weight_error(w, mode):
    """Per-weight bound of |w - dequantize(quantize(w))| from the format."""
    if mode == "bf16":
        return np.abs(w).astype(np.float64) * 2.0**-8
    return np.broadcast_to(quantize(w, "int8").scale.astype(np.float64) / 2, w.shape)


def rounding(x, w):
    """A float32 rounding bound of x W (K terms): K eps sum |x| |w|."""
    return x.shape[-1] * EPS32 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64))


def cell_weights(rng, cell, D, H, dtype=np.float32):
    G = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    W = (rng.standard_normal((D, G * H)) * 0.5 / np.sqrt(D)).astype(dtype)
    U = (rng.standard_normal((H, G * H)) * 0.5 / np.sqrt(H)).astype(dtype)
    b = (rng.standard_normal((2, G * H) if cell == "gru" else (G * H,)) * 0.1).astype(dtype)
    return W, U, b


# ---- the formats --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_format_error_within_its_bound(rng, mode):
    w = (rng.standard_normal((300, 70)) * rng.uniform(0.01, 10, 70)).astype(np.float32)
    w[:, 3] = 0  # a zero column: scale 0, values 0
    q = quantize(w, mode)
    err = np.abs(w.astype(np.float64) - dequantize(q))
    bound = weight_error(w, mode)
    assert np.all(err <= bound * (1 + 1e-6)), (err - bound).max()
    assert err.max() > 0.25 * bound.max()  # the bound is not loose
    if mode == "int8":
        assert q.values.dtype == np.int8 and np.abs(q.values).max() == 127
        assert q.scale[3] == 0 and not q.values[:, 3].any()
    else:
        assert q.values.dtype == np.uint16


def test_bf16_rounds_to_nearest_even():
    # 1 + 2**-8 is halfway between bf16 1 and 1 + 2**-7: even is 1; 1 + 3 * 2**-8 goes up
    w = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), np.inf, np.nan], np.float32)
    d = dequantize(quantize(w, "bf16"))
    assert d[0] == 1 and d[1] == 1 + 2.0**-6 and d[2] == -1 and d[3] == np.inf
    assert np.isnan(d[4])


def test_refusals(rng):
    w = rng.standard_normal((4, 8))
    with pytest.raises(TypeError, match="float32 weights only, got float64"):
        quantize(w, "int8")
    with pytest.raises(ValueError, match=r"expected one of \('bf16', 'int8'\), got 'fp8'"):
        quantize(w.astype(np.float32), "fp8")
    with pytest.raises(ValueError, match="finite"):
        quantize(np.array([[np.inf]], np.float32), "int8")
    W, U, b = cell_weights(rng, "lstm", 4, 3, np.float64)
    x = rng.standard_normal((1, 2, 4))
    with pytest.raises(TypeError, match="float32 weights only"):
        functional.lstm(x, W, U, b, quantize="bf16")
    W, U, b = cell_weights(rng, "lstm", 4, 3)
    with pytest.raises(ValueError, match="inference only"):
        functional.lstm(x.astype(np.float32), W, U, b, quantize="int8", training=True)
    with pytest.raises(ValueError, match="quantized as 'bf16', but quantize='int8'"):
        functional.lstm(x.astype(np.float32), quantize(W, "bf16"), U, b, quantize="int8")
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        functional.lstm(x, W, U, b, quantize="int8")


# ---- Dense: one product, the bound propagated -----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rows", [1, 5, 37])
def test_dense_within_format_bound(rng, mode, rows):
    D, U = 150, 70  # more than one panel, a partial last panel
    x = rng.standard_normal((rows, D)).astype(np.float32)
    W = (rng.standard_normal((D, U)) / np.sqrt(D)).astype(np.float32)
    b = rng.standard_normal(U).astype(np.float32)
    y = functional.dense(x, W, b, quantize=mode)
    exact = x.astype(np.float64) @ W + b
    bound = np.abs(x).astype(np.float64) @ weight_error(W, mode) + rounding(x, W) + EPS32 * abs(b)
    err = np.abs(y - exact)
    assert np.all(err <= bound), (err - bound).max()
    # against the dequantized weights: float32 rounding only
    deq = x.astype(np.float64) @ dequantize(quantize(W, mode)) + b
    assert np.all(np.abs(y - deq) <= rounding(x, W) + EPS32 * abs(b))


# ---- the recurrent kernels -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_simple_rnn_step_within_format_bound(rng, mode):
    D, H, B = 64, 128, 3
    W, U, b = cell_weights(rng, "simple_rnn", D, H)
    x = rng.standard_normal((B, 1, D)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (B, H)).astype(np.float32)
    y, _ = functional.simple_rnn(x, W, U, b, initial_state=h0, quantize=mode)
    exact = np.tanh(x[:, 0].astype(np.float64) @ W + h0.astype(np.float64) @ U + b)
    bound = (
        np.abs(x[:, 0]).astype(np.float64) @ weight_error(W, mode)
        + np.abs(h0).astype(np.float64) @ weight_error(U, mode)
        + rounding(x[:, 0], W) + rounding(h0, U) + 4 * EPS32
    )  # fmt: skip
    err = np.abs(y - exact)
    assert np.all(err <= bound), (err - bound).max()


CELL_CASES = [("simple_rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}),
              ("lstm", {"go_backwards": True})]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("cell", "opts"), CELL_CASES, ids=lambda c: str(c))
def test_recurrent_matches_dequantized_float_run(rng, mode, cell, opts):
    """bf16: bit for bit the float32 kernels on the dequantized weights; int8: within
    float32 rounding (the scale applied once per output), over 30 steps."""
    D, H, B, T = 40, 70, 9, 30
    W, U, b = cell_weights(rng, cell, D, H)
    if opts.get("reset_after") is False:
        b = b[0]
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = rng.random((B, T)) > 0.2
    fn = getattr(functional, cell)
    got = fn(x, W, U, b, mask=mask, return_sequences=True, quantize=mode, **opts)
    Wd, Ud = dequantize(quantize(W, mode)), dequantize(quantize(U, mode))
    want = fn(x, Wd, Ud, b, mask=mask, return_sequences=True, **opts)
    for g, w in zip(got, want, strict=True):
        if mode == "bf16":
            np.testing.assert_array_equal(g, w)
        else:  # per step a few float32 roundings of O(1) values; states stay bounded
            np.testing.assert_allclose(g, w, rtol=0, atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
def test_rows_independent_of_threads_and_batch(rng, mode, threads):
    W, U, b = cell_weights(rng, "lstm", 33, 50)
    x = rng.standard_normal((13, 7, 33)).astype(np.float32)
    rnncore.set_num_threads(1)
    one = functional.lstm(x, W, U, b, quantize=mode)[0]
    rnncore.set_num_threads(2)
    two = functional.lstm(x, W, U, b, quantize=mode)[0]
    alone = functional.lstm(x[4:5], W, U, b, quantize=mode)[0]
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[4:5], alone)


@pytest.mark.parametrize("mode", MODES)
def test_stream_steps_equal_whole_sequence(rng, mode):
    W, U, b = cell_weights(rng, "gru", 16, 24)
    x = rng.standard_normal((2, 12, 16)).astype(np.float32)
    whole = functional.gru(x, W, U, b, quantize=mode, return_sequences=True)[0]
    s = functional.stream("gru", W, U, b, batch_size=2, quantize=mode)
    assert s.quantize == mode
    steps = [s.run(np.ascontiguousarray(x[:, t : t + 1]), return_sequences=True) for t in range(12)]
    steps = np.concatenate(steps, axis=1)
    np.testing.assert_array_equal(steps, whole)


def test_core_refuses_tampered_arrays(rng):
    W, U, b = cell_weights(rng, "lstm", 4, 3)
    q = quantize(W, "int8")
    with pytest.raises(ValueError, match=r"kernel_scale: expected float32 scales of shape \(12,\)"):
        rnncore._core.make_stream("lstm", q.values, quantize(U, "int8").values, b, None, "tanh",
                                  "sigmoid", True, False, quantize="int8")  # fmt: skip
    with pytest.raises(TypeError, match=r"kernel: expected dtype uint16 \(bfloat16 bits\)"):
        functional.dense(np.ones((1, 4), np.float32), Quantized("bf16", q.values), quantize="bf16")


# ---- models ----------------------------------------------------------------------------------


def _model(rng, stateful=False):
    L = rnncore.layers
    batch = (2,) if stateful else (None,)
    m = rnncore.Sequential([
        L.Input(batch_shape=batch + (6, 5)),
        L.Bidirectional(L.LSTM(12, return_sequences=True, stateful=stateful)),
        L.GRU(10, return_sequences=True, stateful=stateful),
        L.TimeDistributed(L.Dense(7, activation="tanh")),
        L.SimpleRNN(8, stateful=stateful),
        L.Dense(3),
    ])  # fmt: skip
    m.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in m.get_weights()])
    return m


@pytest.mark.parametrize("mode", MODES)
def test_model_quantize_predict_save_load(rng, tmp_path, mode):
    m = _model(rng)
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    y32 = m.predict(x, verbose=0)
    m.quantize(mode)
    assert m.quantization_mode == mode
    assert all(layer.quantization_mode == mode for layer in m._quantizable())
    assert len(m._quantizable()) == 6  # both directions, GRU, TimeDistributed's Dense, ...
    yq = m.predict(x, verbose=0)
    assert 0 < np.abs(yq - y32).max() < 0.05
    np.testing.assert_array_equal(m(x), yq)

    # get_weights: the dequantized values; a float model of them predicts the same
    f = _model(rng)
    f.set_weights(m.get_weights())
    np.testing.assert_allclose(f.predict(x, verbose=0), yq, rtol=0, atol=1e-5)

    path = tmp_path / "q.rnncore"
    m.save(path)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("rnncore_model.json"))
    quantized = [e for e in manifest["weights"] if "quantized" in e]
    assert manifest["format_version"] == 2 and len(quantized) == 2 * 4 + 2
    assert {e["quantized"]["mode"] for e in quantized} == {mode}
    loaded = rnncore.load_model(path)
    assert loaded.quantization_mode == mode
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), yq)

    m.compile(optimizer="adam", loss="mse")
    with pytest.raises(RuntimeError, match=f"fit: the model is quantized \\({mode}\\)"):
        m.fit(x, np.zeros((2, 3), np.float32), verbose=0)


@pytest.mark.parametrize("mode", MODES)
def test_stateful_streaming_quantized(rng, mode):
    m = _model(rng, stateful=True)
    m.quantize(mode)
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    whole = m.predict(x, batch_size=2, verbose=0)
    m.reset_states()
    first = m.predict(x[:, :3], batch_size=2, verbose=0)
    assert first.shape == (2, 3)
    m.reset_states()
    np.testing.assert_array_equal(m.predict(x, batch_size=2, verbose=0), whole)


def test_set_weights_after_quantize_quantizes_again(rng):
    m = _model(rng)
    m.quantize("int8")
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    new = [w * 0.5 for w in m.get_weights()]
    m.set_weights(new)
    want = _model(rng)
    want.set_weights(new)
    want.quantize("int8")
    np.testing.assert_array_equal(m.predict(x, verbose=0), want.predict(x, verbose=0))


def _tamper(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        manifest = json.loads(zin.read("rnncore_model.json"))
        files = {n: zin.read(n) for n in zin.namelist() if n != "rnncore_model.json"}
        edit(manifest, files)
        zout.writestr("rnncore_model.json", json.dumps(manifest))
        for n, data in files.items():
            zout.writestr(n, data)


def _npy(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _first_quantized(manifest):
    return next(e for e in manifest["weights"] if "quantized" in e)


TAMPERS = {
    "values as float32": (
        lambda m, f: f.__setitem__(
            _first_quantized(m)["file"], _npy(np.zeros((5, 48), np.float32))
        ),
        "expected uint16 or int8 values, got dtype float32",
    ),
    "wrong shape": (
        lambda m, f: f.__setitem__(_first_quantized(m)["file"], _npy(np.zeros((4, 48), np.int8))),
        "expected int8 values of shape",
    ),
    "missing scale": (
        lambda m, f: _first_quantized(m)["quantized"].__setitem__("scale", None),
        "expected float32 scales of shape",
    ),
    "scale float64": (
        lambda m, f: f.__setitem__(_first_quantized(m)["quantized"]["scale"], _npy(np.ones(48))),
        "expected float32 scales of shape",
    ),
    "unknown mode": (
        lambda m, f: _first_quantized(m)["quantized"].__setitem__("mode", "fp8"),
        "'quantized' must name a mode",
    ),
}


@pytest.mark.parametrize("how", list(TAMPERS))
def test_tampered_file_is_a_model_file_error(rng, tmp_path, how):
    m = _model(rng)
    m.quantize("int8")
    m.save(tmp_path / "ok.rnncore")
    edit, message = TAMPERS[how]
    _tamper(tmp_path / "ok.rnncore", tmp_path / "bad.rnncore", edit)
    with pytest.raises(rnncore.ModelFileError, match=message):
        rnncore.load_model(tmp_path / "bad.rnncore")


def test_quantize_refusals(rng):
    m = rnncore.Sequential([rnncore.layers.Input((3, 2)), rnncore.layers.LSTM(4, dtype="float64")])
    with pytest.raises(TypeError, match="float32 layers only, got dtype float64"):
        m.quantize("bf16")
    with pytest.raises(ValueError, match="expected one of"):
        m.quantize("int4")


def test_build_info_names_the_path():
    info = rnncore.build_info()
    assert info["lowp_paths"][0] == "portable"
    assert info["lowp_path"] == {"bf16": "portable", "int8": "portable"}  # pinned here
    assert set(info["lowp_cpu"]) >= {"avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"}
    env = dict(os.environ, RNNCORE_LOWP_PATH="amx")
    r = subprocess.run([sys.executable, "-c", "import rnncore"], env=env, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode != 0
    assert f"RNNCORE_LOWP_PATH='amx': expected one of {rnncore._core.lowp_paths}" in r.stderr
    env["RNNCORE_LOWP_PATH"] = "portable"
    r = subprocess.run([sys.executable, "-c", "import rnncore; print(rnncore.build_info())"],
                       env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0
    assert "'lowp_path': {'bf16': 'portable', 'int8': 'portable'}" in r.stdout
