"""The hardware low-precision paths (cpp/include/rnncore/lowp_x86.hpp) against the portable
one, with bounds derived from the formats of what they round besides the weights:

* avx512_bf16 rounds each activation to bf16: ``|a - bf16(a)| <= 2**-8 |a|``, so one output
  of ``a W`` moves from the portable product by at most ``2**-8 sum_k |a_k| |w_kj|``;
* avx512_vnni / avx_vnni quantize each row of activations on its own, ``s_a = max|a| / 127``,
  ``|a_k - s_a qa_k| <= s_a / 2`` (plus the float32 division's rounding, ``127 * 2**-24``
  steps), so an output moves by at most ``s_j (s_a / 2) sum_k |q_kj|``.

Both products round in float32 (K roundings at most, each path): ``2 K eps sum |a| |w|``.
Through a cell step these move the gate pre-activations by ``beta``; the step's outputs move
by the gate math's Lipschitz bounds (sigmoid' <= 1/4, tanh' <= 1, gates in [0, 1], |g| <= 1),
with the products of two perturbations kept, plus ``16 eps`` for the float32 gate math itself
(the same code on both paths, a few roundings of O(1) values each).

Each path is selected with ``_core.set_lowp_path`` in this process, or, for a path of another
module (AVX-VNNI lives in the x86_64_v3 one), by running this file again in a subprocess with
``RNNCORE_ISA`` set; a path this CPU lacks skips, naming the missing feature.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import _core, functional
from rnncore.quantization import dequantize, quantize

EPS32 = float(np.finfo(np.float32).eps)
# path: (the mode it serves, the module that has it, the CPU feature it needs)
PATHS = {
    "avx512_bf16": ("bf16", "x86_64_v4", "avx512_bf16"),
    "avx512_vnni": ("int8", "x86_64_v4", "avx512_vnni"),
    "avx_vnni": ("int8", "x86_64_v3", "avx_vnni"),
}


def _set(name):
    _core.set_lowp_path(name)


def _restore():
    _core.set_lowp_path(os.environ.get("RNNCORE_LOWP_PATH") or _core.lowp_paths[-1])


@pytest.fixture(params=list(PATHS))
def path(request):
    """(name, mode) of a hardware path this module runs, selected for the test."""
    name = request.param
    mode, module, feature = PATHS[name]
    if name not in _core.lowp_paths:
        if not _core.lowp_cpu_features().get(feature):
            pytest.skip(f"needs {feature} (this CPU does not have it)")
        pytest.skip(f"{name} is in the {module} module ({_core.isa} imported): see "
                    f"test_paths_of_other_modules")  # fmt: skip
    _set(name)
    assert _core.lowp_path_for(mode) == name
    yield name, mode
    _restore()


def _run(fn, name):
    """fn() with the path capped at name, then the process's cap again."""
    _set(name)
    try:
        return fn()
    finally:
        _restore()


def rounding(a, w):
    """float32 rounding bound of a W, K terms: K eps sum |a| |w|."""
    return a.shape[-1] * EPS32 * (np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64))


def activation_error(a, q, mode):
    """Per (row, column): how far the path's a Q may be from the portable one's, from the
    activations' format (module docstring), plus both products' float32 rounding."""
    a64, wd = np.abs(a).astype(np.float64), dequantize(q)
    if mode == "bf16":
        fmt = 2.0**-8 * a64 @ np.abs(wd)
    else:
        s_a = (np.abs(a).max(axis=1) / np.float32(127)).astype(np.float64)
        step = s_a * (0.5 + 127 * EPS32 / 2)
        fmt = step[:, None] * (np.abs(q.values).sum(axis=0) * q.scale.astype(np.float64))
    return fmt + 2 * (1 + 2.0**-8) * rounding(a, wd)


def cell_weights(rng, cell, D, H):
    G = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    W = (rng.standard_normal((D, G * H)) * 0.5 / np.sqrt(D)).astype(np.float32)
    U = (rng.standard_normal((H, G * H)) * 0.5 / np.sqrt(H)).astype(np.float32)
    b = (rng.standard_normal((2, G * H) if cell == "gru" else (G * H,)) * 0.1).astype(np.float32)
    return W, U, b


@pytest.mark.parametrize("rows", [1, 5, 37])  # 37: past one block of converted rows
def test_dense_within_activation_bound(rng, path, rows):
    name, mode = path
    D, U = 151, 70  # an odd K (a partial pair and quad), a partial last panel
    x = rng.standard_normal((rows, D)).astype(np.float32)
    x[0, :5] *= 40  # a row with a wide range: a coarse int8 step
    W = (rng.standard_normal((D, U)) / np.sqrt(D)).astype(np.float32)
    b = rng.standard_normal(U).astype(np.float32)
    q = quantize(W, mode)
    got = functional.dense(x, q, b, quantize=mode)
    want = _run(lambda: functional.dense(x, q, b, quantize=mode), "portable")
    err = np.abs(got.astype(np.float64) - want)
    bound = activation_error(x, q, mode) + 2 * EPS32 * np.abs(b)
    assert np.all(err <= bound), (err - bound).max()
    assert err.max() > 0  # the path ran: it rounds what the portable path keeps
    # a row's result does not depend on the rows beside it
    np.testing.assert_array_equal(functional.dense(x[-1:], q, b, quantize=mode), got[-1:])


def _step_bound(cell, beta_x, beta_h, h0, c0, a_h):
    """Bound on |h_hw - h_portable| after one step, given the gate pre-activations' bounds
    beta_x (x W side) and beta_h (h U side), per gate column block."""
    if cell == "simple_rnn":
        return beta_x + beta_h
    H = h0.shape[1]
    bx = [beta_x[:, k * H : (k + 1) * H] for k in range(beta_x.shape[1] // H)]
    bh = [beta_h[:, k * H : (k + 1) * H] for k in range(beta_h.shape[1] // H)]
    if cell == "lstm":  # i f g o: c = f c0 + i g, h = o tanh(c)
        di, df, dg, do = ((x + h) / s for x, h, s in zip(bx, bh, (4, 4, 1, 4), strict=True))
        dc = np.abs(c0) * df + di + dg + di * dg
        return do + dc + do * dc
    # GRU reset_after: z r h; hh = tanh(xW_h + r (h0 U_h + b_h)), h = z h0 + (1 - z) hh
    dz, dr = (bx[0] + bh[0]) / 4, (bx[1] + bh[1]) / 4
    dpre = bx[2] + bh[2] + dr * (np.abs(a_h) + bh[2])
    return dz * (np.abs(h0) + 1) + dz * dpre + dpre


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_cell_step_within_activation_bound(rng, path, cell):
    """One step of B rows at the S1/S2 sizes (D = 64, H = 128) from random states."""
    name, mode = path
    D, H, B = 64, 128, 7
    W, U, b = cell_weights(rng, cell, D, H)
    Wq, Uq = quantize(W, mode), quantize(U, mode)
    x = rng.standard_normal((B, 1, D)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (B, H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    init = [h0, c0] if cell == "lstm" else [h0]
    fn = getattr(functional, cell)
    got = fn(x, Wq, Uq, b, initial_state=init, quantize=mode)[0]
    want = _run(lambda: fn(x, Wq, Uq, b, initial_state=init, quantize=mode)[0], "portable")
    beta_x = activation_error(x[:, 0], Wq, mode)
    beta_h = activation_error(h0, Uq, mode)
    a_h = 0  # GRU: h0 U_h + b_h, which the reset gate scales
    if cell == "gru":
        a_h = h0.astype(np.float64) @ dequantize(Uq)[:, 2 * H :] + b[-1, 2 * H :]
    bound = _step_bound(cell, beta_x, beta_h, h0, c0, a_h) + 16 * EPS32
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= bound), (err - bound).max()
    assert err.max() > 0


def test_rows_independent_of_threads_batch_and_streaming(rng, path, threads):
    name, mode = path
    W, U, b = cell_weights(rng, "lstm", 33, 50)
    x = rng.standard_normal((13, 7, 33)).astype(np.float32)
    rnncore.set_num_threads(1)
    one = functional.lstm(x, W, U, b, quantize=mode, return_sequences=True)[0]
    rnncore.set_num_threads(2)
    two = functional.lstm(x, W, U, b, quantize=mode, return_sequences=True)[0]
    alone = functional.lstm(x[4:5], W, U, b, quantize=mode, return_sequences=True)[0]
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[4:5], alone)
    s = functional.stream("lstm", W, U, b, batch_size=13, quantize=mode)
    steps = [s.run(np.ascontiguousarray(x[:, t : t + 1]), return_sequences=True) for t in range(7)]
    np.testing.assert_array_equal(np.concatenate(steps, axis=1), one)
    # and it differs from the portable path (the path ran), within a few gate-math steps of it
    port = _run(lambda: functional.lstm(x, W, U, b, quantize=mode, return_sequences=True)[0],
                "portable")  # fmt: skip
    assert 0 < np.abs(one - port).max() < 0.05
    # a stream keeps the path capped when it was made, whatever the cap at its first call
    s = _run(lambda: functional.stream("lstm", W, U, b, quantize=mode), "portable")
    np.testing.assert_array_equal(s.run(x, None, True), port)


def test_model_end_to_end(rng, path, tmp_path):
    name, mode = path
    L = rnncore.layers
    m = rnncore.Sequential([L.Input((6, 5)), L.Bidirectional(L.LSTM(12, return_sequences=True)),
                            L.GRU(10), L.Dense(3)])  # fmt: skip
    m.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in m.get_weights()])
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    y32 = m.predict(x, verbose=0)
    m.quantize(mode)
    yq = m.predict(x, verbose=0)
    assert 0 < np.abs(yq - y32).max() < 0.05
    np.testing.assert_array_equal(m.predict(x[1:2], verbose=0), yq[1:2])
    m.save(tmp_path / "q.rnncore")
    loaded = rnncore.load_model(tmp_path / "q.rnncore")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), yq)


def test_cap_names_the_paths():
    """RNNCORE_LOWP_PATH / set_lowp_path cap the path; build_info reports each mode's."""
    best = _core.lowp_paths[-1]
    for name in _core.lowp_paths:
        _set(name)
        info = rnncore.build_info()["lowp_path"]
        for mode in ("bf16", "int8"):
            served = [p for p in _core.lowp_paths[: _core.lowp_paths.index(name) + 1]
                      if p == "portable" or PATHS[p][0] == mode]  # fmt: skip
            assert info[mode] == served[-1]
    _set(best)
    with pytest.raises(ValueError, match=r"set_lowp_path: expected name one of .*got 'amx'"):
        _core.set_lowp_path("amx")
    _restore()


def test_paths_of_other_modules():
    """A hardware path of a module other than the one imported (AVX-VNNI: x86_64_v3), by
    running this file's tests in a subprocess that imports that module."""
    others = {PATHS[n][1] for n in PATHS if n not in _core.lowp_paths} - {_core.isa}
    cpu = _core.lowp_cpu_features()
    runnable = [lvl for lvl in sorted(others) if _core.cpu_supports(lvl)
                and any(cpu.get(f) for n, (_, m, f) in PATHS.items() if m == lvl)]  # fmt: skip
    if not runnable:
        pytest.skip("needs a CPU with avx_vnni or avx512_vnni/avx512_bf16 for another module")
    for level in runnable:
        names = [n for n, (_, m, _) in PATHS.items() if m == level]
        env = dict(os.environ, RNNCORE_ISA=level)
        env.pop("RNNCORE_LOWP_PATH", None)
        args = ["-q", "-p", "no:cacheprovider", __file__, "-k", " or ".join(names),
                "--deselect", f"{__file__}::test_paths_of_other_modules"]  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "pytest", *args], env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        assert "passed" in r.stdout and " failed" not in r.stdout
