"""rnncore.Sequential: building, calling, masks, predict in batches, summary, weights, and
the saved-model file (round trip, safety, corrupted and truncated files)."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest

import rnncore
from rnncore.layers.core import Activation, Dense, Dropout, Input, Masking
from rnncore.layers.recurrent import GRU, LSTM, SimpleRNN
from rnncore.layers.wrappers import Bidirectional, TimeDistributed
from rnncore.models import ModelFileError, Sequential, load_model
from support import randomize, seeded

B, T, D = 5, 8, 3


def padded(rng, n=B, t=T):
    x = rng.standard_normal((n, t, D)).astype(np.float32)
    for b in range(n):
        x[b, max(1, t - b) :] = 0.0  # sample b has b padded steps at the end
    return x


def big_model(dtype="float32", timesteps=None):
    model = Sequential(
        [
            Input((timesteps, D), dtype=dtype),
            Masking(dtype=dtype),
            Bidirectional(LSTM(6, return_sequences=True, dtype=dtype), merge_mode="sum"),
            GRU(5, return_sequences=True, reset_after=False, dtype=dtype),
            TimeDistributed(Dense(4, activation="relu", dtype=dtype)),
            SimpleRNN(4, dtype=dtype),
            Dropout(0.2, dtype=dtype),
            Dense(3, activation="softmax", dtype=dtype),
        ]
    )
    randomize(model, seeded(1))
    return model


# ---------------------------------------------------------------------------------------
# structure and building
# ---------------------------------------------------------------------------------------


def test_sequential_builds_from_input_and_add():
    model = Sequential()
    model.add(Input((None, D)))
    model.add(LSTM(4, return_sequences=True))
    assert model.built and model.output_shape == (None, None, 4)
    model.add(Dense(2))
    assert model.output_shape == (None, None, 2)
    assert [type(layer).__name__ for layer in model.layers] == ["LSTM", "Dense"]
    assert model.count_params() == 4 * (4 * (D + 4) + 4) + 4 * 2 + 2
    assert model.pop().units == 2 and len(model.layers) == 1
    assert model.get_layer(index=0) is model.layers[0]
    assert model.get_layer(model.layers[0].name) is model.layers[0]
    with pytest.raises(ValueError, match="first"):
        model.add(Input((None, D)))
    with pytest.raises(TypeError, match="rnncore layers"):
        model.add("lstm")


def test_sequential_builds_lazily_on_first_call():
    model = Sequential([LSTM(4), Dense(2)])
    assert not model.built and not model.layers[0].built
    y = model(np.zeros((2, 6, D), np.float32))
    assert y.shape == (2, 2) and model.built
    assert model.input_shape == (2, 6, D)  # as Keras: the first call's shape
    with pytest.raises(ValueError, match="not built"):
        Sequential([LSTM(4)]).set_weights([])


def test_return_state_only_allowed_last():
    model = Sequential([Input((None, D)), LSTM(4, return_state=True)])
    out = model(np.zeros((2, 3, D), np.float32))
    assert isinstance(out, tuple) and len(out) == 3
    pred = model.predict(np.zeros((7, 3, D), np.float32), batch_size=3)
    assert isinstance(pred, tuple) and [p.shape for p in pred] == [(7, 4)] * 3
    with pytest.raises(ValueError, match="several outputs"):
        Sequential([Input((None, D)), LSTM(4, return_state=True), Dense(2)])


def test_model_call_equals_layer_by_layer_with_mask_propagation():
    model = big_model()
    x = padded(seeded(2))
    y = x
    for layer in model.layers:
        y = layer(y)  # masks ride along on the arrays (Keras's _keras_mask)
    np.testing.assert_array_equal(model(x), y)
    # explicit mask computation: Masking -> Bidirectional(return_sequences) -> GRU ...
    mask = np.any(x != 0, axis=-1)
    h = model.layers[1](x, mask=mask)
    np.testing.assert_array_equal(h._keras_mask, mask)


def test_mask_changes_results_and_stops_after_last_output():
    x = padded(seeded(3))
    with_mask = Sequential([Input((None, D)), Masking(), GRU(4)])
    without = Sequential([Input((None, D)), GRU(4)])
    without.set_weights(with_mask.get_weights())
    assert not np.allclose(with_mask(x)[1:], without(x)[1:])
    np.testing.assert_allclose(with_mask(x)[0], without(x)[0], rtol=1e-6)  # unpadded row
    # per sample: masked model == unmasked model on the unpadded sequence
    for b in range(B):
        n = max(1, T - b)
        np.testing.assert_allclose(
            with_mask(x)[b], without(x[b : b + 1, :n])[0], rtol=1e-5, atol=1e-6
        )
    out = Sequential([Input((None, D)), Masking(), GRU(4), Dense(2)])(x)
    assert getattr(out, "_keras_mask", None) is None


# ---------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 1, 2, 3, 5, 100])
def test_predict_in_batches_equals_one_call(batch_size):
    model = big_model()
    x = padded(seeded(4), n=11)
    y = model.predict(x, batch_size=batch_size)
    assert type(y) is np.ndarray and y.shape == (11, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, model(x), rtol=1e-6, atol=1e-7)


class LazyArray:
    """An array-like too big to load: serves slices and counts how much was read."""

    def __init__(self, x):
        self._x, self.shape, self.largest = x, x.shape, 0

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        part = self._x[key]
        self.largest = max(self.largest, part.shape[0])
        return part

    def __array__(self, *args, **kwargs):
        raise AssertionError("predict must not load the whole input at once")


def test_predict_reads_inputs_larger_than_memory_one_batch_at_a_time(tmp_path):
    model = big_model()
    x = padded(seeded(5), n=23)
    lazy = LazyArray(x)
    y = model.predict(lazy, batch_size=4)
    assert lazy.largest == 4
    np.testing.assert_allclose(y, model(x), rtol=1e-6, atol=1e-7)
    # a memory-mapped file works the same
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(model.predict(mm, batch_size=4), y)


def test_predict_from_a_generator_and_steps():
    model = big_model()
    x = padded(seeded(6), n=12)
    gen = (x[i : i + 5] for i in range(0, 12, 5))
    np.testing.assert_allclose(model.predict(gen), model(x), rtol=1e-6, atol=1e-7)
    gen = ((x[i : i + 4], None) for i in range(0, 12, 4))  # (x, y) batches as in Keras
    # steps=2: the first two batches of 4 only
    y = model.predict(gen, steps=2)
    assert y.shape == (8, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, model(x[:8]), rtol=1e-6, atol=1e-7)
    y = model.predict(x, batch_size=4, steps=2)
    assert y.shape == (8, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, model(x[:8]), rtol=1e-6, atol=1e-7)
    y = model.predict_on_batch(x[:2])
    assert y.shape == (2, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, model(x[:2]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y, model.predict(x)[:2], rtol=1e-6, atol=1e-7)


def test_predict_argument_errors():
    model = big_model()
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(np.zeros((2, T, D), np.float32), batch_size=0)
    with pytest.raises(NotImplementedError, match="callbacks"):
        model.predict(np.zeros((2, T, D), np.float32), callbacks=[object()])


def test_stateful_model_streams_and_resets():
    rng = seeded(7)
    x = rng.standard_normal((2, 10, D)).astype(np.float32)
    model = Sequential(
        [Input(batch_shape=(2, None, D)), LSTM(4, stateful=True, return_sequences=True), Dense(2)]
    )
    randomize(model, rng)
    whole = Sequential([Input((None, D)), LSTM(4, return_sequences=True), Dense(2)])
    whole.set_weights(model.get_weights())
    steps = np.concatenate([model(x[:, t : t + 1]) for t in range(10)], 1)
    np.testing.assert_allclose(steps, whole(x), rtol=1e-5, atol=1e-6)
    model.reset_states()
    np.testing.assert_allclose(model(x[:, :3]), whole(x[:, :3]), rtol=1e-5, atol=1e-6)


def test_training_entry_points():
    rnncore.set_random_seed(8)  # the dropout draws below are reproducible
    model = big_model()
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, T, D)), np.zeros((2, 3)))
    model.compile(optimizer="adam", loss="mse")
    out_shape = model.output_shape
    history = model.fit(np.zeros((2, T, D)), np.zeros((2,) + tuple(out_shape[1:])), verbose=0)
    assert list(history.history) == ["loss"]
    # training=True: Dropout(0.2) is active and the only random layer. Each row of the
    # output is the final Dense applied to the SimpleRNN's output with some units zeroed and
    # the others scaled by 1 / 0.8: find that mask among the 16 of the 4 units, per row.
    x = padded(seeded(8), n=40)
    y_train = model(x, training=True)
    y_infer = model(x)
    assert y_train.shape == y_infer.shape == (40, 3) and y_train.dtype == np.float32
    h = x
    for layer in model.layers[:5]:  # up to the SimpleRNN(4), before the Dropout
        h = layer(h)
    np.testing.assert_allclose(model.layers[6](h), y_infer, rtol=1e-6, atol=1e-7)
    masks = np.array(np.meshgrid(*[[0, 1]] * 4)).reshape(4, -1).T  # (16, 4)
    scale = np.float32(1 / 0.8)
    dropped = []
    for row in range(40):
        candidates = model.layers[6](h[row] * masks.astype(np.float32) * scale)  # (16, 3)
        err = np.abs(candidates - y_train[row]).max(axis=1)
        best = int(np.argmin(err))
        assert err[best] < 1e-6, (row, err.min())
        dropped.append(4 - masks[best].sum())
    # about a fifth of the 160 units dropped; rows with and without drops
    assert 10 <= sum(dropped) <= 60, sum(dropped)
    assert 0 in dropped and max(dropped) > 0


# ---------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------


def test_summary_shapes_and_parameter_counts():
    lines = []
    big_model().summary(print_fn=lines.append, line_length=90)
    text = lines[0]
    assert text.startswith('Model: "sequential')
    for row in [
        "(Masking)",
        "(None, None, 3)",
        "(Bidirectional)",
        "(None, None, 6)",
        "480",
        "(None, None, 5)",
        "time_distributed",
        "24",
        "(None, 4)",
        "36",
        "(Dropout)",
        "(None, 3)",
        "15",
    ]:
        assert row in text, row
    total = 2 * 4 * (6 * (D + 6) + 6) + 3 * (5 * (6 + 5) + 5) + 24 + 36 + 15
    assert f"Total params: {total:,} ({total * 4 / 1024:.2f} KB)" in text
    assert f"Trainable params: {total:,}" in text
    assert "Non-trainable params: 0 (0.00 B)" in text
    assert all(len(line) == 90 for line in text.splitlines()[1:-3])


def test_summary_of_unbuilt_model(capsys):
    Sequential([LSTM(4), Dense(2)]).summary()
    out = capsys.readouterr().out
    assert "?" in out and "0 (unbuilt)" in out and "Total params: 0 (0.00 B)" in out


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------


def test_model_weights_in_keras_order_and_atomic_set():
    model = big_model()
    names = [v.path for v in model.weights]
    # Keras's paths: "<layer name>/<weight>", layer names unique in the process ("dense",
    # "dense_1", ...: the numbers depend on the layers made before, so they are taken from
    # the layers themselves)
    bidirectional, gru, time_distributed, simple_rnn, dense = (
        model.layers[k] for k in (1, 2, 3, 4, 6)
    )
    rnn = ["kernel", "recurrent_kernel", "bias"]
    expected = (
        [f"{bidirectional.forward_layer.name}/{w}" for w in rnn]
        + [f"{bidirectional.backward_layer.name}/{w}" for w in rnn]
        + [f"{gru.name}/{w}" for w in rnn]
        + [f"{time_distributed.layer.name}/{w}" for w in ("kernel", "bias")]
        + [f"{simple_rnn.name}/{w}" for w in rnn]
        + [f"{dense.name}/{w}" for w in ("kernel", "bias")]
    )
    assert names == expected
    # with the process-wide counters stripped, the names Keras gives
    assert [re.sub(r"_[0-9]+(?=/)", "", n) for n in names] == (
        [f"forward_lstm/{w}" for w in rnn]
        + [f"backward_lstm/{w}" for w in rnn]
        + [f"gru/{w}" for w in rnn]
        + ["dense/kernel", "dense/bias"]
        + [f"simple_rnn/{w}" for w in rnn]
        + ["dense/kernel", "dense/bias"]
    )
    forward = bidirectional.forward_layer.name
    assert bidirectional.backward_layer.name == "backward_" + forward.removeprefix("forward_")
    assert time_distributed.layer.name != dense.name
    assert [v.name for v in model.weights] == [n.split("/")[1] for n in names]
    w = model.get_weights()
    assert len(w) == 6 + 3 + 2 + 3 + 2
    bad = list(w)
    bad[-1] = np.zeros(7)
    with pytest.raises(ValueError, match=r"'bias' expects shape \(3,\), got \(7,\)"):
        model.set_weights([x * 2 for x in bad])
    for a, b in zip(w, model.get_weights()):  # nothing changed
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="16 weights, got a list of 15"):
        model.set_weights(w[:-1])


# ---------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_is_bit_identical(tmp_path, dtype):
    model = big_model(dtype)
    x = padded(seeded(8), n=7)
    path = tmp_path / "model.rnncore"
    model.save(path)
    loaded = load_model(path)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    # float32 predictions are bit-identical. In float64 the core itself is not bit-
    # reproducible from one call to the next (last-ulp differences that depend on where
    # its buffers land in memory), so the loaded model is held to what the original gives.
    same = (
        np.testing.assert_array_equal
        if dtype == "float32"
        else lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    )
    same(loaded.predict(x, batch_size=3), model.predict(x, batch_size=3))
    loaded.save(tmp_path / "again.rnncore")  # and again
    same(load_model(tmp_path / "again.rnncore").predict(x), model.predict(x))


def test_save_load_of_models_built_by_a_call_or_stateful(tmp_path):
    model = Sequential([GRU(3, return_sequences=True, go_backwards=True), LSTM(2)])
    x = seeded(9).standard_normal((4, 5, D)).astype(np.float32)
    y = model(x)
    model.save(tmp_path / "m.zip")
    np.testing.assert_array_equal(load_model(tmp_path / "m.zip")(x), y)
    stateful = Sequential([Input(batch_shape=(4, None, D)), SimpleRNN(3, stateful=True)])
    stateful.save(tmp_path / "s.zip")
    loaded = load_model(tmp_path / "s.zip")
    np.testing.assert_array_equal(loaded(x), stateful(x))
    Sequential([LSTM(2)]).save(tmp_path / "unbuilt.zip")
    assert not load_model(tmp_path / "unbuilt.zip").built


def test_saved_file_is_an_open_format(tmp_path):
    model = big_model()
    path = tmp_path / "model.rnncore"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("rnncore_model.json"))
        assert manifest["format"] == "rnncore.model" and manifest["format_version"] == 1
        assert manifest["model"]["class_name"] == "Sequential"
        layers = manifest["model"]["config"]["layers"]
        assert [spec["class_name"] for spec in layers][:3] == [
            "InputLayer",
            "Masking",
            "Bidirectional",
        ]
        assert len(manifest["weights"]) == len(model.get_weights())
        for entry, w in zip(manifest["weights"], model.get_weights()):
            a = np.load(io.BytesIO(zf.read(entry["file"])), allow_pickle=False)
            np.testing.assert_array_equal(a, w)
            assert entry["shape"] == list(w.shape) and entry["dtype"] == "float32"


def test_to_json_and_model_from_json():
    from rnncore.models import model_from_json

    model = big_model()
    again = model_from_json(model.to_json())
    assert again.get_config() == model.get_config()
    assert [w.shape for w in again.get_weights()] == [w.shape for w in model.get_weights()]


def test_overwrite_flag(tmp_path):
    path = tmp_path / "m.rnncore"
    big_model().save(path)
    with pytest.raises(FileExistsError):
        big_model().save(path, overwrite=False)


def _rewrite(path, out, change):
    """Copy the archive at ``path`` to ``out`` with ``change(name, data) -> data``."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = change(info.filename, src.read(info.filename))
            if data is not None:
                dst.writestr(info.filename, data)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.rnncore"
    big_model().save(path)
    return path


def test_truncated_file_raises_a_clear_error(saved, tmp_path):
    data = saved.read_bytes()
    for n in (len(data) // 3, len(data) - 10, 10, 0):
        bad = tmp_path / f"trunc{n}"
        bad.write_bytes(data[:n])
        with pytest.raises(ModelFileError, match="corrupted or truncated"):
            load_model(bad)


def test_corrupted_file_raises_a_clear_error(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("weights/0001.npy")
    # flip bytes inside a weight's compressed data: the CRC-32 check catches it
    start = info.header_offset + 30 + len(info.filename) + 8
    data[start : start + 4] = bytes(b ^ 0xFF for b in data[start : start + 4])
    bad = tmp_path / "flipped"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupted|truncated"):
        load_model(bad)


def test_not_a_model_file(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"definitely not a zip archive" * 10)
    with pytest.raises(ModelFileError, match="not a readable rnncore model"):
        load_model(junk)
    keras_like = tmp_path / "model.keras"
    with zipfile.ZipFile(keras_like, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(ModelFileError, match="Keras"):
        load_model(keras_like)


def test_load_model_names_onnx_files(tmp_path):
    pytest.importorskip("onnx")
    model = Sequential([Input((4, 3)), LSTM(2)])
    model.to_onnx(tmp_path / "m.onnx")
    # by the suffix, and by the content under another name
    (tmp_path / "m.bin").write_bytes((tmp_path / "m.onnx").read_bytes())
    for name in ("m.onnx", "m.bin"):
        with pytest.raises(ModelFileError, match=r"is an ONNX model.*rnncore\.load_onnx\("):
            load_model(tmp_path / name)
    # what load_onnx then reads
    rnncore.load_onnx(tmp_path / "m.bin")


@pytest.mark.parametrize("suffix,what", [(".keras", "Keras .keras file"), (".h5", "Keras .h5")])
def test_load_model_describes_an_empty_or_truncated_keras_file(suffix, what, tmp_path):
    model = Sequential([Input((4, 3)), LSTM(2)])
    path = tmp_path / f"m{suffix}"
    model.save(path)
    data = path.read_bytes()
    for n, detail in ((0, "empty"), (4, "corrupted or truncated"), (len(data) // 2, "truncated")):
        bad = tmp_path / f"bad{n}{suffix}"
        bad.write_bytes(data[:n])
        with pytest.raises(ModelFileError) as info:
            load_model(bad)
        message = str(info.value)
        assert what in message and detail in message and "rnncore model" not in message
    # rnncore's own files keep their description
    (tmp_path / "empty.rnncore").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty \(0 bytes\): not a readable rnncore model"):
        load_model(tmp_path / "empty.rnncore")


def test_load_model_keras_suffix_zip_without_config(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(ModelFileError, match=r"not a Keras \.keras file.*without config\.json"):
        load_model(path)


def test_load_model_help_names_the_formats():
    doc = load_model.__doc__
    for words in (".keras", ".h5", "Keras", "load_onnx", "rnncore"):
        assert words in doc


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda n, d: b"{not json" if n == "rnncore_model.json" else d, "not valid JSON"),
        (
            lambda n, d: d.replace(b'"rnncore.model"', b'"other"') if n.endswith(".json") else d,
            "not an rnncore model file",
        ),
        (
            lambda n, d: (
                d.replace(b'"format_version": 1', b'"format_version": 99')
                if n.endswith(".json")
                else d
            ),
            "newer",
        ),
        (lambda n, d: None if n == "weights/0002.npy" else d, "missing weight file"),
        (
            lambda n, d: d.replace(b'"Masking"', b'"os.system"') if n.endswith(".json") else d,
            "unknown layer class 'os.system'",
        ),
        (
            lambda n, d: d.replace(b'"units": 6', b'"units": 7') if n.endswith(".json") else d,
            "do not fit",
        ),
        (lambda n, d: b"garbage" if n == "weights/0000.npy" else d, "not a valid .npy"),
    ],
)
def test_malformed_archives(saved, tmp_path, change, message):
    bad = tmp_path / "bad"
    _rewrite(saved, bad, change)
    with pytest.raises(ModelFileError, match=message):
        load_model(bad)


def test_loading_never_unpickles(saved, tmp_path):
    """An object array (which np.load could only read by unpickling) is refused."""
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    bad = tmp_path / "pickled"
    _rewrite(saved, bad, lambda n, d: buf.getvalue() if n == "weights/0000.npy" else d)
    with pytest.raises(ModelFileError, match="not a valid .npy"):
        load_model(bad)


def test_save_and_load_weights(tmp_path):
    model = big_model()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other = big_model()
    randomize(other, seeded(10))
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ModelFileError):
        other.load_weights(path)


def test_top_level_exports():
    assert rnncore.Sequential is Sequential and rnncore.Input is Input
    assert rnncore.layers.LSTM is LSTM and rnncore.models.load_model is load_model
    assert Activation("relu").activation == "relu"
