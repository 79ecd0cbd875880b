"""Verify on load: ``load_keras``, ``from_torch`` and ``load_onnx`` with ``verify=``.

Each loader is given sample outputs computed by the original framework (Keras 3, PyTorch,
onnxruntime): they pass as ``(x, expected)`` and as a ``.npz`` path, and a perturbed sample
raises :class:`rnncore.VerificationError` whose message names the output, the maximum
absolute difference (checked against the difference computed here), its index and the
tolerance. Bad ``verify`` / ``verify_tol`` arguments raise ``TypeError`` / ``ValueError``
naming them. The argument checks run on ``from_torch`` of a NumPy state dict (no torch).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import VerificationError, from_torch, load_keras, load_onnx  # noqa: E402
from rnncore.formats.verify import default_tolerance  # noqa: E402

# Keras 3's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def perturbed(a, index, by):
    out = np.array(a, copy=True)
    out[index] += by
    return out


def assert_reports(err, got, wrong, index, output="output 0"):
    """The message names the output, the max |difference| (as computed here) and its index."""
    msg = str(err.value)
    d = np.abs(np.asarray(got, np.float64) - np.asarray(wrong, np.float64))
    assert f"{output}: max |actual - expected| = {d.max():.6g} at index {index}" in msg, msg
    assert "tolerance atol" in msg, msg


# ---- a NumPy GRU state dict: the argument checks, without torch ------------------------------

D, H = 3, 4


def gru_state_dict(dtype=np.float32):
    rng = np.random.default_rng(7)
    return {
        "weight_ih_l0": (rng.standard_normal((3 * H, D)) * 0.5).astype(dtype),
        "weight_hh_l0": (rng.standard_normal((3 * H, H)) * 0.5).astype(dtype),
        "bias_ih_l0": (rng.standard_normal(3 * H) * 0.3).astype(dtype),
        "bias_hh_l0": (rng.standard_normal(3 * H) * 0.3).astype(dtype),
    }


def gru(**kw):
    return from_torch(gru_state_dict(), mode="GRU", input_size=D, hidden_size=H, **kw)


@pytest.fixture
def sample():
    x = np.random.default_rng(3).standard_normal((5, 2, D)).astype(np.float32)
    return x, gru()(x)


def test_state_dict_verify_passes_and_returns_the_model(sample):
    x, y = sample
    model = gru(verify=(x, y))
    assert isinstance(model, rnncore.interop.TorchRNN)
    np.testing.assert_array_equal(model(x), y)


def test_mismatch_names_the_max_difference_its_index_and_the_tolerance(sample):
    x, y = sample
    wrong = perturbed(y, (3, 1, 2), 0.01)
    with pytest.raises(VerificationError) as err:
        gru(verify=(x, wrong))
    assert_reports(err, y, wrong, (3, 1, 2))
    assert "1 of 40 element(s)" in str(err.value)
    assert "atol 1e-05 + rtol 0.0001 * |expected| (the default for float32)" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_verify_tol_number_and_pair(sample):
    x, y = sample
    wrong = perturbed(y, (0, 0, 0), 0.01)
    assert isinstance(gru(verify=(x, wrong), verify_tol=0.02), rnncore.interop.TorchRNN)
    with pytest.raises(VerificationError, match=r"atol 0\.005 \+ rtol 0 "):
        gru(verify=(x, wrong), verify_tol=0.005)
    # rtol scales with |expected|: 0.01 is within 0 + 1.0 * |y| unless y is tiny there
    assert abs(y[0, 0, 0]) > 0.01
    gru(verify=(x, wrong), verify_tol=(0, 1.0))


def test_float64_default_tolerance_is_tighter():
    sd = gru_state_dict(np.float64)
    x = np.random.default_rng(4).standard_normal((4, 2, D))
    y = from_torch(sd, mode="GRU", input_size=D, hidden_size=H)(x)
    from_torch(sd, mode="GRU", input_size=D, hidden_size=H, verify=(x, y))
    with pytest.raises(VerificationError, match=r"atol 1e-10 \+ rtol 1e-10 .*float64"):
        from_torch(
            sd, mode="GRU", input_size=D, hidden_size=H, verify=(x, perturbed(y, (1, 1, 1), 1e-8))
        )
    # float32 samples of a float64 model: compared at float32's tolerance
    from_torch(
        sd, mode="GRU", input_size=D, hidden_size=H, verify=(x, (y + 2e-6).astype(np.float32))
    )


def test_default_tolerance_by_dtype():
    assert default_tolerance(np.float64, np.float64) == (1e-10, 1e-10)
    assert default_tolerance(np.float32, np.float64) == (1e-5, 1e-4)
    assert default_tolerance(np.float16) == (1e-3, 1e-2)
    assert default_tolerance(np.int64, np.bool_) == (0.0, 0.0)


def test_shape_and_count_mismatch(sample):
    x, y = sample
    with pytest.raises(VerificationError, match=r"output 0: shape \(2, 5, 4\) expected, .*"
                       r"returns shape \(5, 2, 4\)"):  # fmt: skip
        gru(verify=(x, y.transpose(1, 0, 2)))
    with pytest.raises(VerificationError, match=r"verify: expected holds 2 array\(s\), the "
                       r"loaded model returns 1 output"):  # fmt: skip
        gru(verify=(x, [y, y]))


def test_nan_matches_nan_only(sample):
    x, y = sample
    with pytest.raises(VerificationError, match=r"max \|actual - expected\| = inf at index "
                       r"\(2, 0, 1\)"):  # fmt: skip
        gru(verify=(x, perturbed(y, (2, 0, 1), np.nan)))


def test_npz_path_forms(sample, tmp_path):
    x, y = sample
    np.savez(tmp_path / "one.npz", x=x, expected=y)
    gru(verify=tmp_path / "one.npz")
    gru(verify=str(tmp_path / "one.npz"))
    np.savez(tmp_path / "wrong.npz", x=x, expected=perturbed(y, (4, 0, 3), -0.5))
    with pytest.raises(VerificationError) as err:
        gru(verify=tmp_path / "wrong.npz")
    assert_reports(err, y, perturbed(y, (4, 0, 3), -0.5), (4, 0, 3))
    # several outputs: expected0, expected1 (the dict of the same keys works too)
    h = gru(return_state=True)(x)[1]
    np.savez(tmp_path / "two.npz", x=x, expected0=y, expected1=h)
    gru(return_state=True, verify=tmp_path / "two.npz")
    with pytest.raises(VerificationError, match="output 1: max"):
        gru(return_state=True, verify={"x": x, "expected0": y, "expected1": h + 1})


@pytest.mark.parametrize(
    "keys, message",
    [
        (("x", "expected", "extra"), "unexpected key 'extra'"),
        (("x0", "x2", "expected"), r"x0 \.\.\. x1 expected, got x0, x2"),
        (("x", "x0", "expected"), "give x or x0, x1, ..., not both"),
        (("x",), r"no expected \(or expected0"),
        (("x:X", "x0", "expected"), "not both"),
    ],
)
def test_bad_npz_keys(sample, tmp_path, keys, message):
    x, y = sample
    np.savez(tmp_path / "bad.npz", **{k: y if k.startswith("expected") else x for k in keys})
    with pytest.raises(ValueError, match=message):
        gru(verify=tmp_path / "bad.npz")


def test_bad_files(sample, tmp_path):
    x, _ = sample
    np.save(tmp_path / "a.npy", x)
    with pytest.raises(ValueError, match=r"verify: .*a\.npy' holds one array \(\.npy\)"):
        gru(verify=tmp_path / "a.npy")
    (tmp_path / "junk.npz").write_bytes(b"not an npz file at all")
    with pytest.raises(ValueError, match=r"verify: .*junk\.npz' is not a readable \.npz"):
        gru(verify=tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="verify: no such file"):
        gru(verify=tmp_path / "missing.npz")


def test_bad_verify_arguments(sample):
    x, y = sample
    with pytest.raises(TypeError, match="from_torch: verify must be None, a pair"):
        gru(verify=5)
    with pytest.raises(ValueError, match=r"verify must be a pair \(x, expected\), got a tuple "
                       r"of 3 item"):  # fmt: skip
        gru(verify=(x, y, y))
    with pytest.raises(ValueError, match=r"verify must be a pair .* list of 1 item"):
        gru(verify=[x])
    with pytest.raises(TypeError, match="verify: x must hold numeric arrays, got str"):
        gru(verify=("abc", y))
    with pytest.raises(TypeError, match="verify: expected must hold numeric arrays"):
        gru(verify=(x, [y, None]))
    with pytest.raises(ValueError, match="verify: x is empty"):
        gru(verify=([], y))
    with pytest.raises(ValueError, match="cannot run on the sample input x: TorchRNN: expected"):
        gru(verify=(x[..., :2], y))
    with pytest.raises(TypeError, match="verify_tol must be a number"):
        gru(verify=(x, y), verify_tol="1e-3")
    with pytest.raises(TypeError, match="verify_tol must be a number"):
        gru(verify=(x, y), verify_tol=(1e-3, 1e-3, 0))
    with pytest.raises(ValueError, match=r"verify_tol must be finite and >= 0, got -1"):
        gru(verify=(x, y), verify_tol=-1)
    with pytest.raises(TypeError, match="verify_tol=0.1 given without verify"):
        gru(verify_tol=0.1)


def test_inputs_are_not_modified(sample):
    x, y = sample
    x_before, y_before = x.copy(), y.copy()
    with pytest.raises(VerificationError):
        gru(verify=(x, perturbed(y, (0, 0, 0), 1.0)))
    gru(verify=(x, y))
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


# ---- PyTorch ------------------------------------------------------------------------------


def test_from_torch_lstm_against_its_own_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True).eval()
    x = torch.randn(2, 6, 3)
    h0, c0 = torch.randn(2, 2, 5), torch.randn(2, 2, 5)
    out, (h, c) = lstm(x, (h0, c0))  # tensors that require grad: verify detaches them
    model = from_torch(lstm, verify=([x, (h0, c0)], out))
    got = model(x.numpy(), (h0.numpy(), c0.numpy()))
    np.testing.assert_allclose(got, out.detach().numpy(), rtol=1e-4, atol=1e-5)
    # with return_state: (output, (h_n, c_n)) nested or flat
    from_torch(lstm, return_state=True, verify=([x, (h0, c0)], (out, (h, c))))
    from_torch(lstm, return_state=True, verify=([x, (h0, c0)], [out, h, c]))
    wrong_c = perturbed(c.detach().numpy(), (1, 0, 4), 0.03)
    with pytest.raises(VerificationError) as err:
        from_torch(lstm, return_state=True, verify=([x, (h0, c0)], (out, (h, wrong_c))))
    _, (_, c_got) = from_torch(lstm, return_state=True)(x.numpy(), (h0.numpy(), c0.numpy()))
    assert_reports(err, c_got, wrong_c, (1, 0, 4), output="output 2")
    # the state dict (no torch needed) and a .npz of the samples
    np.savez(tmp_path / "s.npz", x=x.numpy(), expected=lstm(x)[0].detach().numpy())
    sd = {k: v.numpy() for k, v in lstm.state_dict().items()}
    from_torch(sd, mode="LSTM", input_size=3, hidden_size=5, num_layers=2, batch_first=True,
               verify=tmp_path / "s.npz")  # fmt: skip


def test_from_torch_cell_and_keywords():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    cell = torch.nn.GRUCell(3, 4)
    x, hx = torch.randn(5, 3), torch.randn(5, 4)
    want = cell(x, hx).detach().numpy()
    model = from_torch(cell, verify=({"input": x, "hx": hx}, want))
    np.testing.assert_allclose(model(x.numpy(), hx.numpy()), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(VerificationError, match=r"max \|actual - expected\| = 0\.\d+ at index"):
        from_torch(cell, verify=([x], want))  # without hx: not torch's output for (x, hx)


# ---- Keras --------------------------------------------------------------------------------


@pytest.fixture
def keras():
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    pytest.importorskip("torch").set_num_threads(1)
    keras.utils.set_random_seed(11)
    return keras


def test_load_keras_sequential(keras, tmp_path):
    K = keras.layers
    kmodel = keras.Sequential([K.Input((6, 3)), K.LSTM(4), K.Dense(2)])
    x = np.random.default_rng(5).standard_normal((3, 6, 3)).astype(np.float32)
    want = kmodel.predict(x, verbose=0)
    kmodel.save(tmp_path / "m.keras")
    model = load_keras(tmp_path / "m.keras", verify=(x, want))
    got = model.predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    wrong = perturbed(want, (2, 1), 0.02)
    with pytest.raises(VerificationError) as err:
        load_keras(tmp_path / "m.keras", verify=(x, wrong))
    assert_reports(err, got, wrong, (2, 1))
    assert str(err.value).startswith("load_keras: the loaded model does not reproduce")
    np.savez(tmp_path / "s.npz", x=x, expected=want)
    load_keras(tmp_path / "m.keras", verify=str(tmp_path / "s.npz"))
    with pytest.raises(ValueError, match="load_keras: verify: the loaded model cannot run"):
        load_keras(tmp_path / "m.keras", verify=(x[:, :, :2], want))


def test_load_keras_several_inputs_and_outputs(keras, tmp_path):
    K = keras.layers
    a, b = keras.Input((5, 3), name="a"), keras.Input((4,), name="b")
    seq = K.GRU(4)(a)
    out1 = K.Dense(2, name="head")(K.Concatenate()([seq, b]))
    out2 = K.Dense(3, name="aux")(b)
    kmodel = keras.Model([a, b], [out1, out2])
    rng = np.random.default_rng(6)
    xa = rng.standard_normal((2, 5, 3)).astype(np.float32)
    xb = rng.standard_normal((2, 4)).astype(np.float32)
    want = [np.asarray(w) for w in kmodel.predict([xa, xb], verbose=0)]
    kmodel.save(tmp_path / "f.keras")
    model = load_keras(tmp_path / "f.keras", verify=([xa, xb], want))
    got = model.predict([xa, xb])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    load_keras(tmp_path / "f.keras", verify=({"a": xa, "b": xb}, want))
    np.savez(tmp_path / "s.npz", x0=xa, x1=xb, expected0=want[0], expected1=want[1])
    load_keras(tmp_path / "f.keras", verify=tmp_path / "s.npz")
    wrong = perturbed(want[1], (0, 2), -0.25)
    with pytest.raises(VerificationError) as err:
        load_keras(tmp_path / "f.keras", verify=([xa, xb], [want[0], wrong]))
    assert_reports(err, got[1], wrong, (0, 2), output="output 1")
    assert "output 0" not in str(err.value)
    with pytest.raises(VerificationError, match="expected holds 1 array"):
        load_keras(tmp_path / "f.keras", verify=([xa, xb], want[0]))


# ---- ONNX ---------------------------------------------------------------------------------


def gru_onnx():
    """A GRU node with graph inputs X and h0, outputs Y and Y_h; and a feed for it."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(9)
    W = (rng.standard_normal((1, 3 * H, D)) * 0.5).astype(np.float32)
    R = (rng.standard_normal((1, 3 * H, H)) * 0.5).astype(np.float32)
    B = (rng.standard_normal((1, 6 * H)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=H)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("X", f32, ["T", "B", D]),
            helper.make_tensor_value_info("h0", f32, [1, "B", H]),
        ],
        [helper.make_tensor_value_info(o, f32, None) for o in ("Y", "Y_h")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feed = {
        "X": rng.standard_normal((5, 2, D)).astype(np.float32),
        "h0": rng.standard_normal((1, 2, H)).astype(np.float32),
    }
    return model, feed


def test_load_onnx_against_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, feed = gru_onnx()
    data = model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    want = sess.run(None, feed)
    loaded = load_onnx(data, verify=(feed, want))
    got = loaded.run(None, feed)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    load_onnx(data, verify=([feed["X"], feed["h0"]], want))
    path = tmp_path / "g.onnx"
    path.write_bytes(data)
    np.savez(tmp_path / "s.npz", **{"x:X": feed["X"], "x:h0": feed["h0"]},
             expected0=want[0], expected1=want[1])  # fmt: skip
    load_onnx(path, verify=tmp_path / "s.npz")
    wrong = perturbed(want[0], (4, 0, 1, 3), 0.125)
    with pytest.raises(VerificationError) as err:
        load_onnx(path, verify=(feed, [wrong, want[1]]))
    assert_reports(err, got[0], wrong, (4, 0, 1, 3))
    with pytest.raises(VerificationError, match=r"output 1: shape \(2, 4\) expected, the model "
                       r"returns shape \(1, 2, 4\)"):  # fmt: skip
        load_onnx(path, verify=(feed, [want[0], want[1][0]]))
    with pytest.raises(ValueError, match="load_onnx: verify: the loaded model cannot run .*"
                       "missing input 'h0'"):  # fmt: skip
        load_onnx(path, verify=({"X": feed["X"]}, want))
