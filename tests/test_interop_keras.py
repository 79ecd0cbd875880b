"""rnncore.load_keras against real Keras 3 (torch backend; a test-only dependency).

Models are built with Keras and given random weights, saved as ``.keras`` and as legacy
``.h5`` in ``tmp_path``, read by rnncore (which does not use Keras), and their predictions
compared on random inputs with masked (all-zero) timesteps. Also: Keras 2 files (written
here with h5py in tf.keras's layout, since Keras 2 is not installed), refusals, and broken
files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is imported

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from keras import layers as K  # noqa: E402

import rnncore  # noqa: E402
from rnncore.interop import ModelFileError, UnsupportedModelError, load_keras  # noqa: E402

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# Keras runs on torch: keep torch's thread pool from contending with rnncore's own
# threads on small machines (torch's work here is tiny).
torch.set_num_threads(1)

ATOL = 2e-6
MAX_ERR: dict[str, float] = {}


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def randomize(model, rng):
    model.set_weights(
        [(rng.standard_normal(w.shape) * 0.4).astype(w.dtype) for w in model.get_weights()]
    )


def inputs(rng, B=4, T=7, D=3, masked=True):
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    if masked:
        x[1, 4:] = 0  # right padding
        x[2, :2] = 0  # left padding
        x[3, 3] = 0  # a hole
    return x


def compare(kmodel, rmodel, x, what):
    want = kmodel.predict(x, verbose=0)
    got = rmodel.predict(x)
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        err = float(np.max(np.abs(g - w)))
        MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=ATOL)


def save_both(kmodel, tmp_path):
    p3, p2 = tmp_path / "m.keras", tmp_path / "m.h5"
    kmodel.save(p3)
    kmodel.save(p2)  # Keras 3's legacy HDF5 writer (tf.keras's layout)
    return p3, p2


SEQUENTIAL_CASES = {
    "lstm_dense": lambda: [K.Input((7, 3)), K.LSTM(5), K.Dense(2)],
    "masked_stack": lambda: [
        K.Input((7, 3)),
        K.Masking(0.0),
        K.LSTM(5, return_sequences=True),
        K.GRU(4, return_sequences=True, reset_after=False),
        K.SimpleRNN(3, activation="relu", return_sequences=True),
        K.TimeDistributed(K.Dense(2, activation="tanh")),
        K.Dropout(0.3),
        K.LSTM(3),
        K.Dense(4, activation="softmax"),
        K.Activation("relu"),
    ],
    "bidirectional_modes": lambda: [
        K.Input((7, 3)),
        K.Masking(),
        K.Bidirectional(K.LSTM(4, return_sequences=True)),
        K.Bidirectional(K.GRU(3, return_sequences=True), merge_mode="sum"),
        K.Bidirectional(K.SimpleRNN(3, return_sequences=True), merge_mode="mul"),
        K.Bidirectional(K.GRU(2), merge_mode="ave"),
    ],
    "go_backwards_activations": lambda: [
        K.Input((7, 3)),
        K.LSTM(
            4,
            go_backwards=True,
            return_sequences=True,
            recurrent_activation="hard_sigmoid",
            activation="relu",
        ),
        K.GRU(
            3,
            go_backwards=True,
            recurrent_activation="hard_sigmoid",
            activation="linear",
            use_bias=False,
            return_sequences=True,
        ),
        K.SimpleRNN(2, activation="sigmoid", use_bias=False),
    ],
    # the weights file numbers layers by class (gru, gru_1, ...), never by user names
    "confusing_names": lambda: [
        K.Input((7, 3)),
        K.GRU(4, name="lstm", return_sequences=True),
        K.LSTM(3, name="gru", return_sequences=True),
        K.GRU(2, name="gru_1", return_sequences=True),
        K.Dense(2, name="dense_7"),
        K.Dense(3, name="layer"),
    ],
    "return_state_last": lambda: [K.Input((7, 3)), K.Masking(), K.LSTM(3, return_state=True)],
    "no_input_layer": lambda: [K.GRU(3, return_sequences=True), K.Dense(2)],
}


@pytest.mark.parametrize("case", list(SEQUENTIAL_CASES))
def test_sequential(rng, tmp_path, case):
    kmodel = keras.Sequential(SEQUENTIAL_CASES[case]())
    x = inputs(rng)
    if not kmodel.built:
        kmodel.build((None, 7, 3))
    randomize(kmodel, rng)
    for path in save_both(kmodel, tmp_path):
        rmodel = load_keras(path)
        assert isinstance(rmodel, rnncore.Sequential)
        compare(kmodel, rmodel, x, f"keras {path.suffix}")


def test_functional_chain_with_masking_and_states(rng, tmp_path):
    i = keras.Input((7, 3))
    x = K.Masking()(i)
    x = K.Bidirectional(K.LSTM(4, return_sequences=True), name="b_second")(x)
    x = K.GRU(3, return_sequences=True, name="a_first")(x)
    x = K.TimeDistributed(K.Dense(3))(x)
    out = K.LSTM(2, return_state=True)(x)
    kmodel = keras.Model(i, out)
    randomize(kmodel, rng)
    for path in save_both(kmodel, tmp_path):
        compare(kmodel, load_keras(path), inputs(rng), f"keras {path.suffix}")


def test_functional_single_output(rng, tmp_path):
    i = keras.Input((None, 3))
    kmodel = keras.Model(i, K.Dense(2)(K.GRU(4)(i)))
    randomize(kmodel, rng)
    for path in save_both(kmodel, tmp_path):
        compare(kmodel, load_keras(path), inputs(rng, masked=False), f"keras {path.suffix}")


def test_float64_model(rng, tmp_path):
    kmodel = keras.Sequential(
        [K.Input((7, 3), dtype="float64"), K.LSTM(4, dtype="float64"), K.Dense(2, dtype="float64")]
    )
    randomize(kmodel, rng)
    path = tmp_path / "m.keras"
    kmodel.save(path)
    rmodel = load_keras(path)
    x = inputs(rng).astype(np.float64)
    y = rmodel.predict(x)
    assert y.dtype == np.float64
    # Keras 3.15's float64 LSTM on torch is only float32-accurate (~1e-8 off the float64
    # reference); rnncore's is float64-accurate
    np.testing.assert_allclose(y, kmodel.predict(x, verbose=0), atol=1e-6)
    kernel, recurrent, bias, dense_kernel, dense_bias = (
        np.asarray(v.numpy()) for v in kmodel.weights
    )
    h = rnncore.reference.lstm(x, kernel, recurrent, bias)[0]
    np.testing.assert_allclose(y, h @ dense_kernel + dense_bias, rtol=1e-12, atol=1e-12)


def test_loading_does_not_import_keras(rng, tmp_path):
    kmodel = keras.Sequential([K.Input((7, 3)), K.LSTM(4)])
    randomize(kmodel, rng)
    p3, p2 = save_both(kmodel, tmp_path)
    code = (
        "import sys, rnncore.interop as I; I.load_keras(sys.argv[1]); "
        "I.load_keras(sys.argv[2]); "
        "bad = [m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(p3), str(p2)], check=True)


# ---------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: [K.Input((7, 3)), K.Conv1DTranspose(2, 3)], "Conv1DTranspose"),
        (lambda: [K.Input((7, 3)), K.LSTM(3, activation="gelu")], "gelu"),
        (lambda: [K.Input((7, 3)), K.GroupNormalization(groups=1)], "GroupNormalization"),
        (
            lambda: [K.Input((7, 3)), K.Dense(2, kernel_regularizer="l2", dtype="bfloat16")],
            "bfloat16",
        ),
    ],
)
def test_unsupported_layers_are_named(tmp_path, make, match):
    kmodel = keras.Sequential(make())
    for path in save_both(kmodel, tmp_path):
        with pytest.raises(UnsupportedModelError, match=match):
            load_keras(path)


def test_branching_functional_model_loads(rng, tmp_path):
    """A model that branches and merges (refused before the functional Model existed)."""
    i = keras.Input((7, 3))
    a, b = K.LSTM(3)(i), K.GRU(3)(i)
    kmodel = keras.Model(i, K.Dense(2)(K.Concatenate()([a, b])))
    path = tmp_path / "m.keras"
    kmodel.save(path)
    x = rng.standard_normal((4, 7, 3)).astype(np.float32)
    model = load_keras(path)
    assert isinstance(model, rnncore.Model)
    np.testing.assert_allclose(model.predict(x), kmodel.predict(x, verbose=0), atol=1e-6)


def test_initial_state_from_another_layer_loads(rng, tmp_path):
    i = keras.Input((7, 3))
    _, h, c = K.LSTM(3, return_state=True)(i)
    kmodel = keras.Model(i, K.LSTM(3)(i, initial_state=[h, c]))
    path = tmp_path / "m.keras"
    kmodel.save(path)
    x = rng.standard_normal((4, 7, 3)).astype(np.float32)
    got = load_keras(path).predict(x)
    np.testing.assert_allclose(got, kmodel.predict(x, verbose=0), atol=1e-6)


def test_custom_class_refused(rng, tmp_path):
    kmodel = keras.Sequential([K.Input((7, 3)), K.LSTM(4)])
    path = tmp_path / "m.keras"
    kmodel.save(path)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    layer = config["config"]["layers"][1]
    layer["module"], layer["registered_name"] = "my_package.layers", "MyPackage>LSTM"
    edited = rewrite(path, tmp_path / "custom.keras", {"config.json": json.dumps(config)})
    with pytest.raises(UnsupportedModelError, match="custom class"):
        load_keras(edited)


# ---------------------------------------------------------------------------------------
# Broken files


def rewrite(src, dst, replace: dict):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = replace.get(item.filename, zin.read(item.filename))
            zout.writestr(item.filename, data)
    return dst


def test_truncated_and_corrupted_files(rng, tmp_path):
    kmodel = keras.Sequential([K.Input((7, 3)), K.LSTM(16), K.Dense(2)])
    randomize(kmodel, rng)
    p3, p2 = save_both(kmodel, tmp_path)
    for path in (p3, p2):
        data = path.read_bytes()
        for k, cut in enumerate((len(data) // 2, len(data) - 100)):
            bad = tmp_path / f"cut{k}{path.suffix}"
            bad.write_bytes(data[:cut])
            with pytest.raises(ModelFileError):
                load_keras(bad)
    # a flipped byte inside the archive's weights: the ZIP CRC catches it
    data = bytearray(p3.read_bytes())
    with zipfile.ZipFile(p3) as zf:
        info = zf.getinfo("model.weights.h5")
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "flipped.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        load_keras(bad)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a Keras model file"):
        load_keras(garbage)


def test_config_not_matching_the_weights(rng, tmp_path):
    kmodel = keras.Sequential([K.Input((7, 3)), K.LSTM(4), K.Dense(2)])
    p3, p2 = save_both(kmodel, tmp_path)
    config = json.loads(zipfile.ZipFile(p3).read("config.json"))
    config["config"]["layers"][1]["config"]["units"] = 5
    bad = rewrite(p3, tmp_path / "units.keras", {"config.json": json.dumps(config)})
    with pytest.raises(ModelFileError, match=r"shape \(3, 16\).*\(3, 20\)"):
        load_keras(bad)
    with h5py.File(p2, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][2]["config"]["units"] = 3
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(ModelFileError, match="dense"):
        load_keras(p2)


def test_swapped_layer_order_detected(rng, tmp_path):
    """The weights file records each layer's name next to its weights: checked."""
    kmodel = keras.Sequential([K.Input((7, 3)), K.LSTM(3, return_sequences=True), K.LSTM(3)])
    path = tmp_path / "m.keras"
    kmodel.save(path)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    layers = config["config"]["layers"]
    layers[1]["config"]["name"], layers[2]["config"]["name"] = (
        layers[2]["config"]["name"],
        layers[1]["config"]["name"],
    )
    bad = rewrite(path, tmp_path / "swapped.keras", {"config.json": json.dumps(config)})
    with pytest.raises(ModelFileError, match="do not match"):
        load_keras(bad)


def test_weights_only_h5_refused(tmp_path):
    kmodel = keras.Sequential([K.Input((7, 3)), K.LSTM(4)])
    path = tmp_path / "w.weights.h5"
    kmodel.save_weights(path)
    with pytest.raises(ModelFileError):
        load_keras(path)


# ---------------------------------------------------------------------------------------
# Keras 2 (tf.keras) files, written with h5py in their layout


def keras2_hard_sigmoid(x):
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def write_keras2_h5(path, kmodel, layer_configs):
    """A Keras 2 style .h5: model_config JSON, model_weights/<layer>/<weight names>."""
    layers = [
        {
            "class_name": "InputLayer",
            "config": {
                "batch_input_shape": [None, 7, 3],
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": "input_1",
            },
        }
    ]
    layers += layer_configs
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.13.1"
        f.attrs["backend"] = "tensorflow"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [c["config"]["name"].encode() for c in layer_configs]
        for spec, klayer in zip(layer_configs, kmodel.layers):
            name = spec["config"]["name"]
            g = mw.create_group(name)
            cell = {"LSTM": "lstm_cell", "GRU": "gru_cell"}.get(spec["class_name"])
            parts = ["kernel", "recurrent_kernel", "bias"] if cell else ["kernel", "bias"]
            names = [f"{name}/{cell + '/' if cell else ''}{p}:0" for p in parts]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, klayer.get_weights()):
                g.create_dataset(n, data=w)


def test_keras2_h5_with_keras2_hard_sigmoid(rng, tmp_path):
    kmodel = keras.Sequential(
        [
            K.Input((7, 3)),
            K.LSTM(4, recurrent_activation=keras2_hard_sigmoid, return_sequences=True),
            K.GRU(
                3,
                recurrent_activation=keras2_hard_sigmoid,
                activation=keras2_hard_sigmoid,
                reset_after=False,
            ),
            K.Dense(2, activation=keras2_hard_sigmoid),
        ]
    )
    randomize(kmodel, rng)

    def rnn(cls, name, units, **kw):
        return {
            "class_name": cls,
            "config": {
                "name": name,
                "trainable": True,
                "dtype": "float32",
                "units": units,
                "activation": kw.get("activation", "tanh"),
                "recurrent_activation": "hard_sigmoid",
                "use_bias": True,
                "return_sequences": kw.get("return_sequences", False),
                "return_state": False,
                "go_backwards": False,
                "stateful": False,
                "unroll": False,
                "time_major": False,
                "dropout": 0.0,
                "recurrent_dropout": 0.0,
                "implementation": 2,
                "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                "kernel_regularizer": None,
                **kw.get("extra", {}),
            },
        }

    configs = [
        rnn("LSTM", "lstm", 4, return_sequences=True, extra={"unit_forget_bias": True}),
        rnn("GRU", "gru", 3, activation="hard_sigmoid"),  # Keras 2.2: no reset_after
        {
            "class_name": "Dense",
            "config": {
                "name": "dense",
                "trainable": True,
                "dtype": "float32",
                "units": 2,
                "activation": "hard_sigmoid",
                "use_bias": True,
            },
        },
    ]
    path = tmp_path / "keras2.h5"
    write_keras2_h5(path, kmodel, configs)
    compare(kmodel, load_keras(path), inputs(rng, masked=False), "keras 2 .h5")

    configs[0]["config"]["activation"] = "hard_sigmoid"  # on an LSTM's cell: no equivalent
    write_keras2_h5(path, kmodel, configs)
    with pytest.raises(UnsupportedModelError, match="hard_sigmoid"):
        load_keras(path)


def test_top_level_entry_points():
    from rnncore.interop import from_torch, load_onnx

    assert rnncore.load_keras is load_keras
    assert rnncore.from_torch is from_torch and rnncore.load_onnx is load_onnx
