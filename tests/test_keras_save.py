"""rnncore models saved as Keras files (``.keras`` and legacy ``.h5``), opened by real Keras.

Each model is built in rnncore, its weights drawn from a fixed seed, saved by
``model.save``, loaded with ``keras.saving.load_model`` (torch backend) and compared with
rnncore's own predictions on the same inputs; then read back with ``rnncore.load_model``,
bit for bit. Between them the models use every layer class rnncore has. What a Keras file
cannot hold is refused by name.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

import rnncore  # noqa: E402
from rnncore import layers as L  # noqa: E402
from rnncore.errors import UnsupportedModelError  # noqa: E402

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's
# issue); Keras warns that layers without mask support drop a mask (rnncore drops it too)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Layer .* does not support masking:UserWarning"),
]
B, T, D, V = 4, 7, 3, 11  # batch, timesteps, features, vocabulary


def _series(rng, d=D, t=T):
    x = rng.standard_normal((B, t, d)).astype("float32")
    x[0, :2] = 0.0  # left padding (for Masking)
    x[1, -3:] = 0.0  # right padding
    return x


def _tokens(rng):
    ids = rng.integers(1, V, (B, T))
    ids[0, :3] = 0
    ids[1, -2:] = 0
    ids[2, [1, 4]] = 0
    return ids.astype("int32")


# ---- the models (rnncore's API: Keras's names) ------------------------------------------


def recurrent_stack(rng):
    """Sequential, built by build() (no Input): the file gets Keras's InputLayer."""
    model = rnncore.Sequential(
        [
            L.Masking(0.0),
            L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
            L.Bidirectional(
                L.GRU(3, return_sequences=True, reset_after=False),
                backward_layer=L.SimpleRNN(3, return_sequences=True, go_backwards=True),
            ),
            L.TimeDistributed(L.Dense(5, activation="relu")),
            L.SimpleRNN(4, return_sequences=True, activation="relu"),
            L.GRU(3, go_backwards=True),
            L.Dense(2, activation="softmax"),
        ],
        name="recurrent_stack",
    )
    model.build((None, T, D))
    return model, [_series(rng)]


def conv_and_pooling(rng):
    model = rnncore.Sequential(
        [
            L.Input((T + 1, D)),
            L.ZeroPadding1D((1, 2)),
            L.Conv1D(4, 3, padding="causal", activation="tanh", dilation_rate=2),
            L.MaxPooling1D(2, padding="same"),
            L.UpSampling1D(2),
            L.Cropping1D((1, 0)),
            L.Conv1D(5, 2, strides=1, padding="valid"),
            L.AveragePooling1D(2),
            L.SpatialDropout1D(0.3),
            L.GaussianNoise(0.5),
            L.Dropout(0.2),
            L.LSTM(3, return_sequences=True),
            L.GlobalMaxPooling1D(),
            L.Activation("sigmoid"),
        ],
        name="conv_and_pooling",
    )
    return model, [_series(rng, t=T + 1)]


def reshaping(rng):
    model = rnncore.Sequential(
        [
            L.Input((T, D)),
            L.LayerNormalization(),
            L.Permute((2, 1)),
            L.Permute((2, 1)),
            L.Flatten(),
            L.Dense(T * 2),
            L.Reshape((T, 2)),
            L.BatchNormalization(),
            L.GRU(4),
            L.RepeatVector(3),
            L.LSTM(2, return_sequences=True),
            L.GlobalAveragePooling1D(),
            L.Softmax(),
        ],
        name="reshaping",
    )
    return model, [_series(rng)]


def text_classifier(rng):
    ids = L.Input((T,), dtype="int32", name="tokens")
    h = L.Embedding(V, 6, mask_zero=True)(ids)
    h = L.Bidirectional(L.LSTM(5))(h)
    out = L.Dense(3, activation="softmax")(h)
    return rnncore.Model(ids, out, name="text_classifier"), [_tokens(rng)]


def seq2seq_attention(rng, score_mode="concat"):
    """Encoder states into the decoder (initial_state), Attention and AdditiveAttention."""
    enc_in = L.Input((T, D), name="encoder_inputs")
    dec_in = L.Input((4, D), name="decoder_inputs")
    enc, *states = L.LSTM(6, return_sequences=True, return_state=True)(L.Masking(0.0)(enc_in))
    dec = L.LSTM(6, return_sequences=True)(dec_in, initial_state=states)
    context = L.Attention(use_scale=True, score_mode=score_mode)([dec, enc])
    add_context = L.AdditiveAttention()([dec, enc])
    h = L.Concatenate()([dec, context, add_context])
    out = L.TimeDistributed(L.Dense(2))(h)
    model = rnncore.Model([enc_in, dec_in], out, name="seq2seq_attention")
    return model, [_series(rng), rng.standard_normal((B, 4, D)).astype("float32")]


def dot_attention(rng):
    """Attention's default score_mode='dot' (which Keras cannot read from an .h5)."""
    return seq2seq_attention(rng, score_mode="dot")


def merges(rng):
    """Every merge layer; a layer shared by two calls; two outputs."""
    a, b = L.Input((T, D), name="a"), L.Input((T, D), name="b")
    ha, hb = L.GRU(4, name="gru_a")(a), L.LSTM(4, name="lstm_b")(b)
    shared = L.Dense(4, name="shared")
    ha, hb = shared(ha), shared(hb)
    outs = [
        L.Add()([ha, hb]),
        L.Subtract()([ha, hb]),
        L.Multiply()([ha, hb]),
        L.Average()([ha, hb]),
        L.Maximum()([ha, hb]),
        L.Minimum()([ha, hb]),
        L.Dot(axes=1)([ha, hb]),
    ]
    joined = L.Concatenate()(outs)
    model = rnncore.Model([a, b], [L.Dense(1)(joined), L.Dense(2)(ha)], name="merges")
    return model, [_series(rng), _series(rng)]


def nested_models(rng):
    """A Sequential block and a functional encoder used as layers; the encoder shared."""
    enc_in = L.Input((T, D), name="enc_in")
    block = rnncore.Sequential(
        [L.Input((T, D)), L.LSTM(5, return_sequences=True), L.BatchNormalization(), L.Dense(4)],
        name="block",
    )
    encoder = rnncore.Model(enc_in, L.GRU(3)(block(enc_in)), name="encoder")
    a, b = L.Input((T, D), name="a"), L.Input((T, D), name="b")
    code_a, code_b = encoder(a), encoder(b)
    out = L.Dense(1)(L.Concatenate()([code_a, code_b]))
    model = rnncore.Model([a, b], [out, code_b], name="nested_models")
    return model, [_series(rng), _series(rng)]


def float64_model(rng):
    model = rnncore.Sequential(
        [L.Input((T, D), dtype="float64"), L.LSTM(4, dtype="float64"), L.Dense(2, dtype="float64")],
        name="float64_model",
    )
    return model, [_series(rng).astype("float64")]


MODELS = {
    f.__name__: f
    for f in (
        recurrent_stack,
        conv_and_pooling,
        reshaping,
        text_classifier,
        seq2seq_attention,
        dot_attention,
        merges,
        nested_models,
        float64_model,
    )
}


def _randomize(model, rng):
    """Weights from the seed (moving variances kept positive)."""
    weights = []
    for w, v in zip(model.weights, model.get_weights()):
        value = rng.normal(0.0, 0.4, v.shape)
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        weights.append(value.astype(v.dtype))
    model.set_weights(weights)


def _outputs(y) -> list:
    return [np.asarray(a) for a in (y if isinstance(y, (list, tuple)) else [y])]


def test_the_models_use_every_layer_class():
    used = set()

    def collect(layers):
        for layer in layers:
            if isinstance(layer, (rnncore.Sequential, rnncore.Model)):
                collect(layer.layers)
                continue
            used.add(type(layer).__name__)
            for inner in ("forward_layer", "backward_layer", "layer"):
                if hasattr(layer, inner):
                    collect([getattr(layer, inner)])

    for build in MODELS.values():
        collect(build(np.random.default_rng(0))[0].layers)
    assert set(L.LAYER_CLASSES) - used == set()


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("name", list(MODELS))
def test_keras_loads_rnncore_saved_model(name, fmt, tmp_path):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    model, inputs = MODELS[name](rng)
    _randomize(model, rng)
    feed = inputs if len(inputs) > 1 else inputs[0]
    want = _outputs(model.predict(feed, verbose=0))
    path = tmp_path / f"{name}.{fmt}"
    if name == "dot_attention" and fmt == "h5":
        with pytest.raises(UnsupportedModelError, match=r"'attention.*score_mode='dot'.*\.keras"):
            model.save(path)
        assert not path.exists()
        return
    model.save(path)

    kmodel = keras.saving.load_model(path)
    got = _outputs(kmodel.predict(feed, verbose=0))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    # the weights Keras holds are the model's, bit for bit
    kweights = kmodel.get_weights()
    assert len(kweights) == len(model.weights)
    for k, w in zip(kweights, model.get_weights(), strict=True):
        assert k.dtype == w.dtype
        np.testing.assert_array_equal(k, w)

    back = rnncore.load_model(path)
    assert type(back) is type(model) and back.name == model.name
    for g, w in zip(_outputs(back.predict(feed, verbose=0)), want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_keras_archive_layout(tmp_path):
    """Keras 3's own members, JSON and weight groups (as keras.saving writes them)."""
    model, _ = recurrent_stack(np.random.default_rng(1))
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        metadata = json.loads(zf.read("metadata.json"))
        config = json.loads(zf.read("config.json"))
        weights = zf.read("model.weights.h5")
    assert set(metadata) == {"keras_version", "date_saved"}
    assert metadata["keras_version"].startswith("3.")
    assert config["module"] == "keras" and config["class_name"] == "Sequential"
    first, masking, bidi = config["config"]["layers"][:3]
    assert masking["class_name"] == "Masking"
    assert first["class_name"] == "InputLayer"
    assert first["config"]["batch_shape"] == [None, T, D]
    assert bidi["module"] == "keras.layers" and bidi["config"]["layer"]["module"] == "keras.layers"
    init = bidi["config"]["layer"]["config"]["kernel_initializer"]
    assert init["module"] == "keras.initializers" and init["class_name"] == "GlorotUniform"
    with h5py.File(io.BytesIO(weights), "r") as h5:
        assert h5["vars"].attrs["name"] == "recurrent_stack"
        assert h5["layers/bidirectional/forward_layer/cell/vars/0"].shape == (D, 16)
        assert h5["layers/bidirectional_1/backward_layer/cell/vars"].attrs["name"] == (
            "simple_rnn_cell"
        )
        assert h5["layers/time_distributed/layer/vars/1"].shape == (5,)
        assert h5["layers/gru/cell/vars/2"].shape == (2, 9)
        np.testing.assert_array_equal(
            h5["layers/dense/vars/0"][()], model.layers[-1].kernel.numpy()
        )


def test_overwrite_false_keeps_the_file(tmp_path):
    model, _ = float64_model(np.random.default_rng(0))
    for suffix in ("keras", "h5"):
        path = tmp_path / f"m.{suffix}"
        model.save(path)
        before = path.read_bytes()
        with pytest.raises(FileExistsError):
            model.save(path, overwrite=False)
        assert path.read_bytes() == before


def test_other_suffixes_stay_rnncore_format(tmp_path):
    model, inputs = float64_model(np.random.default_rng(0))
    for name in ("m.rnncore", "m.zip", "m"):
        rnncore.save_model(model, tmp_path / name)
        with zipfile.ZipFile(tmp_path / name) as zf:
            assert "rnncore_model.json" in zf.namelist()
        np.testing.assert_array_equal(
            rnncore.load_model(tmp_path / name).predict(inputs[0], verbose=0),
            model.predict(inputs[0], verbose=0),
        )
    rnncore.save_model(model, tmp_path / "M.KERAS")  # the suffix in any case
    with zipfile.ZipFile(tmp_path / "M.KERAS") as zf:
        assert "config.json" in zf.namelist()


def test_quantized_model_refused_by_layer_name(tmp_path):
    model = rnncore.Sequential([L.Input((T, D)), L.LSTM(4, name="enc"), L.Dense(2)])
    model.quantize("int8")
    for suffix in ("keras", "h5"):
        path = tmp_path / f"q.{suffix}"
        with pytest.raises(UnsupportedModelError, match=r"layer 'enc' \(LSTM\).*int8.*rnncore"):
            model.save(path)
        assert not path.exists() and not (tmp_path / f"q.{suffix}.tmp").exists()
    model.save(tmp_path / "q.rnncore")  # rnncore's own format holds them


@pytest.mark.parametrize(
    "variant", [{"use_peepholes": True}, {"projection_units": 2}, {"cell_clip": 3.0}]
)
def test_lstm_variant_refused_by_layer_name(variant, tmp_path):
    model = rnncore.Sequential(
        [L.Input((T, D)), L.Bidirectional(L.LSTM(4, name="peep", **variant)), L.Dense(2)]
    )
    key = next(iter(variant))
    with pytest.raises(UnsupportedModelError, match=rf"layer 'forward_peep' \(LSTM\).*{key}"):
        model.save(tmp_path / "v.keras")
    with pytest.raises(UnsupportedModelError, match=key):
        rnncore.save_model(model, tmp_path / "v.h5")
    assert not (tmp_path / "v.keras").exists() and not (tmp_path / "v.h5").exists()


# ---- compile settings ------------------------------------------------------------------


def _classifier(rng):
    model = rnncore.Sequential(
        [L.Input((T, D)), L.LSTM(5), L.Dense(3, activation="softmax")], name="clf"
    )
    _randomize(model, rng)
    x = rng.standard_normal((8, T, D)).astype("float32")
    return model, x, rng.integers(0, 3, 8)


def _loss_name(loss):
    return loss if isinstance(loss, str) else getattr(loss, "__name__", None) or loss.name


COMPILES = {
    "adam_sparse_cce": (
        lambda: rnncore.optimizers.Adam(learning_rate=0.003, beta_1=0.8, amsgrad=True),
        "sparse_categorical_crossentropy",
        ["accuracy"],
    ),
    "sgd_schedule_mse": (
        lambda: rnncore.optimizers.SGD(
            learning_rate=rnncore.optimizers.schedules.ExponentialDecay(0.05, 10, 0.9),
            momentum=0.5,
        ),
        "mse",
        ["mae"],
    ),
}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", list(COMPILES))
def test_compiled_model_loads_compiled_in_keras(case, fmt, tmp_path):
    make_optimizer, loss, metrics = COMPILES[case]
    model, x, labels = _classifier(np.random.default_rng(5))
    y = labels if loss.startswith("sparse") else np.eye(3, dtype="float32")[labels]
    model.compile(optimizer=make_optimizer(), loss=loss, metrics=metrics)
    want = model.evaluate(x, y, verbose=0, return_dict=True)
    path = tmp_path / f"c.{fmt}"
    model.save(path)

    kmodel = keras.saving.load_model(path)
    assert kmodel.compiled
    opt, kopt = model.optimizer, kmodel.optimizer
    assert type(kopt).__name__ == type(opt).__name__
    assert float(kopt.learning_rate) == pytest.approx(opt.learning_rate, rel=1e-7)
    for key, value in opt.get_config().items():
        if key not in ("name", "learning_rate"):
            assert kopt.get_config()[key] == value, key
    if case == "sgd_schedule_mse":
        schedule = kopt._learning_rate  # Keras keeps the schedule there
        assert type(schedule).__name__ == "ExponentialDecay"
        assert schedule.get_config() == opt._learning_rate.get_config()
    assert _loss_name(kmodel.loss) in (loss, "mean_squared_error")
    got = kmodel.evaluate(x, y, verbose=0, return_dict=True)
    # the same loss and metric, within float32 rounding (Keras's legacy reader names the
    # metric "mae" by its class: mean_absolute_error, as for Keras's own .h5 files)
    (metric,) = metrics
    renamed = {"mae": "mean_absolute_error"}.get(metric, metric) if fmt == "h5" else metric
    assert set(got) == {"loss", renamed}
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
    assert got[renamed] == pytest.approx(want[metric], rel=1e-5, abs=1e-6)


def test_trained_optimizer_state_carries_to_keras(tmp_path):
    """Keras's loaded optimizer goes on from rnncore's: its step count and Adam's moments
    (Keras's variable order), so one more step in each gives the same weights."""
    model, x, labels = _classifier(np.random.default_rng(6))
    model.compile(optimizer=rnncore.optimizers.Adam(learning_rate=0.01), loss="mse")
    y = np.eye(3, dtype="float32")[labels]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert model.optimizer.iterations == 4
    model.save(tmp_path / "t.keras")
    kmodel = keras.saving.load_model(tmp_path / "t.keras")
    assert int(kmodel.optimizer.iterations) == 4
    # rnncore's reader skips the optimizer's state and compile settings (not read)
    back = rnncore.load_model(tmp_path / "t.keras")
    assert not back.compiled
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    model.train_on_batch(x, y)
    kmodel.train_on_batch(x, y)
    for k, w in zip(kmodel.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(k, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_uncompiled_model_loads_uncompiled(fmt, tmp_path):
    model, _, _ = _classifier(np.random.default_rng(7))
    model.save(tmp_path / f"u.{fmt}")
    assert not keras.saving.load_model(tmp_path / f"u.{fmt}").compiled
    if fmt == "keras":
        with zipfile.ZipFile(tmp_path / "u.keras") as zf:
            assert json.loads(zf.read("config.json"))["compile_config"] is None
            with h5py.File(io.BytesIO(zf.read("model.weights.h5"))) as h5:
                assert "optimizer" not in h5
    else:
        with h5py.File(tmp_path / "u.h5") as f:
            assert "training_config" not in f.attrs


class _Halving(rnncore.optimizers.SGD):
    """An optimizer of rnncore's own (Keras has no such class)."""


@pytest.mark.parametrize(
    "optimizer, what",
    [
        (lambda: _Halving(), "optimizer _Halving"),
        (lambda: rnncore.optimizers.Adam(learning_rate=lambda: 0.01), "learning rate .*callable"),
    ],
)
def test_rnncore_only_compile_saved_uncompiled(optimizer, what, tmp_path):
    """What Keras cannot rebuild is left out with a warning naming it: Keras gets the model
    uncompiled, never compiled differently."""
    model, x, labels = _classifier(np.random.default_rng(8))
    model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
    for fmt in ("keras", "h5"):
        path = tmp_path / f"o.{fmt}"
        with pytest.warns(UserWarning, match=rf"'clf' is saved uncompiled.*{what}"):
            model.save(path)
        assert not keras.saving.load_model(path).compiled
    want = model.predict(x, verbose=0)  # the weights are saved all the same
    np.testing.assert_array_equal(rnncore.load_model(tmp_path / "o.keras").predict(x), want)


def test_keras_classes_named_for_compile_exist_in_rnncore():
    """The writer recognises rnncore's optimizers, losses and schedules by module and name
    (formats import nothing above them): every one named exists there, Keras has it."""
    import importlib

    from rnncore.formats.keras_save import _KERAS_CLASSES

    for module, names in _KERAS_CLASSES.items():
        for name in names:
            assert getattr(importlib.import_module(module), name).__module__ == module
            kmodule = {"rnncore.optimizers": keras.optimizers, "rnncore.losses": keras.losses}
            assert hasattr(kmodule.get(module, keras.optimizers.schedules), name)
    from rnncore.optimizers import schedules

    assert _KERAS_CLASSES["rnncore.optimizers.schedules"] == set(schedules._CLASSES)
