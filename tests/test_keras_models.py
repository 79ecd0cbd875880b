"""Whole Keras 3 models, saved by Keras (``.keras`` and legacy ``.h5``), loaded by rnncore.

Each pattern is a model from Keras's examples and from tutorials that use RNNs: built with
real Keras 3 (torch backend), its weights drawn from a fixed seed, saved in both formats,
read with :func:`rnncore.load_model` (no Keras involved) and compared with Keras's own
predictions on the same inputs. Masked inputs use left padding, right padding and holes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402

L = keras.layers
# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue);
# Keras warns that layers without mask support drop a mask (rnncore drops it the same way)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Layer .* does not support masking:UserWarning"),
]
B, T, D, V = 5, 7, 3, 11  # batch, timesteps, features, vocabulary
MAX_ERR: dict[str, float] = {}  # reported by conftest's terminal summary


def _tokens(rng):
    """Token ids with 0 as padding: left padding, right padding and holes."""
    ids = rng.integers(1, V, (B, T))
    ids[0, :3] = 0  # left padding
    ids[1, -2:] = 0  # right padding
    ids[2, [1, 4]] = 0  # holes
    return ids.astype("int32")


def _series(rng, d=D):
    x = rng.standard_normal((B, T, d)).astype("float32")
    x[0, :2] = 0.0  # left padding (for Masking)
    x[1, -3:] = 0.0  # right padding
    return x


def text_classifier(rng):
    ids = keras.Input((T,), dtype="int32", name="tokens")
    h = L.Embedding(V, 6, mask_zero=True)(ids)
    h = L.Bidirectional(L.LSTM(5))(h)
    out = L.Dense(3, activation="softmax")(h)
    return keras.Model(ids, out, name="text_classifier"), [_tokens(rng)]


def conv_forecaster(rng):
    x = keras.Input((T, D), name="series")
    h = L.Conv1D(4, 3, padding="causal", activation="relu")(x)
    h = L.MaxPooling1D(2)(h)
    h = L.LSTM(5)(h)
    out = L.Dense(1)(h)
    return keras.Model(x, out, name="conv_forecaster"), [_series(rng)]


def autoencoder(rng):
    x = keras.Input((T, D), name="series")
    code = L.LSTM(4)(L.Masking(0.0)(x))
    h = L.RepeatVector(T)(code)
    h = L.LSTM(4, return_sequences=True)(h)
    out = L.TimeDistributed(L.Dense(D))(h)
    return keras.Model(x, out, name="autoencoder"), [_series(rng)]


def encoder_decoder(cell):
    def build(rng):
        enc_in = keras.Input((None, D), name="encoder_inputs")
        dec_in = keras.Input((None, 2), name="decoder_inputs")
        rnn = getattr(L, cell)
        _, *states = rnn(6, return_state=True, name="encoder")(enc_in)
        y = rnn(6, return_sequences=True, name="decoder")(dec_in, initial_state=states)
        out = L.Dense(2, activation="softmax", name="probabilities")(y)
        model = keras.Model([enc_in, dec_in], out, name=f"seq2seq_{cell.lower()}")
        return model, [_series(rng), rng.standard_normal((B, 4, 2)).astype("float32")]

    return build


def attention_seq2seq(rng):
    enc_in = keras.Input((T, D), name="encoder_inputs")
    dec_in = keras.Input((4, D), name="decoder_inputs")
    enc = L.LSTM(6, return_sequences=True)(L.Masking(0.0)(enc_in))
    dec = L.LSTM(6, return_sequences=True)(dec_in)
    context = L.Attention()([dec, enc])
    add_context = L.AdditiveAttention()([dec, enc])
    h = L.Concatenate()([dec, context, add_context])
    out = L.TimeDistributed(L.Dense(2))(h)
    model = keras.Model([enc_in, dec_in], out, name="attention_seq2seq")
    return model, [_series(rng), rng.standard_normal((B, 4, D)).astype("float32")]


def merged(merge):
    def build(rng):
        a = keras.Input((T, D), name="a")
        b = keras.Input((T, D), name="b")
        ha = L.GRU(4, name="gru_a")(a)
        hb = L.LSTM(4, name="lstm_b")(b)
        layer = L.Dot(axes=1) if merge == "Dot" else getattr(L, merge)()
        out = L.Dense(2)(layer([ha, hb]))
        model = keras.Model([a, b], out, name=f"merge_{merge.lower()}")
        return model, [_series(rng), _series(rng)]

    return build


def multi_output(rng):
    x = keras.Input((T, D), name="series")
    h = L.LSTM(5, return_sequences=True)(x)
    shared = L.Dense(3, name="shared")
    first = shared(L.GlobalAveragePooling1D()(h))
    second = shared(L.GlobalMaxPooling1D()(h))
    out_a = L.Dense(1, name="value")(first)
    out_b = L.Dense(2, activation="softmax", name="kind")(second)
    return keras.Model(x, [out_a, out_b], name="multi_output"), [_series(rng)]


def normalised(rng):
    x = keras.Input((T, D), name="series")
    h = L.LayerNormalization()(x)
    h = L.LSTM(6, return_sequences=True)(h)
    h = L.BatchNormalization()(h)
    h = L.Flatten()(h)
    h = L.Reshape((T, 6))(h)
    h = L.GRU(3)(h)
    out = L.Dense(1)(h)
    return keras.Model(x, out, name="normalised"), [_series(rng)]


def sequential_block(rng):
    """A Sequential block used as a layer; its BatchNormalization's moving statistics come
    after all trainable weights in a legacy .h5."""
    x = keras.Input((T, D), name="series")
    block = keras.Sequential(
        [L.LSTM(5, return_sequences=True), L.BatchNormalization(), L.Dense(4)], name="block"
    )
    out = L.Dense(1)(L.GRU(3)(block(x)))
    return keras.Model(x, out, name="sequential_block"), [_series(rng)]


def frozen_block(rng):
    """The block with its LSTM frozen: a legacy .h5 lists the LSTM's weights last."""
    model, inputs = sequential_block(rng)
    model.get_layer("block").layers[0].trainable = False
    return model, inputs


def shared_encoder(rng):
    """One encoder model called on two inputs; its own output also a model output."""
    enc_in = keras.Input((T, D), name="enc_in")
    h = L.LSTM(4)(L.Masking(0.0)(enc_in))
    encoder = keras.Model(enc_in, L.Dense(2)(h), name="encoder")
    a = keras.Input((T, D), name="a")
    b = keras.Input((T, D), name="b")
    code_a, code_b = encoder(a), encoder(b)
    out = L.Dense(1)(L.Concatenate()([code_a, code_b]))
    return keras.Model([a, b], [out, code_b], name="shared_encoder"), [_series(rng), _series(rng)]


def nested_twice(rng):
    """A Sequential inside an encoder model inside the model, after a masking Embedding."""
    ids = keras.Input((T,), dtype="int32", name="tokens")
    emb = L.Embedding(V, 6, mask_zero=True)(ids)  # Keras drops the mask at the nested model
    inner = keras.Sequential([keras.Input((T, 6)), L.Dense(5, activation="tanh")], name="inner")
    enc_in = keras.Input((T, 6), name="enc_in")
    encoder = keras.Model(enc_in, L.GRU(4)(inner(enc_in)), name="encoder")
    out = L.Dense(2, activation="softmax")(encoder(emb))
    return keras.Model(ids, out, name="nested_twice"), [_tokens(rng)]


def masked_merge(merge):
    """Masked inputs merged, then an RNN: Keras records the masks' LogicalOr/ExpandDims
    operations in the file; rnncore propagates the same masks itself."""

    def build(rng):
        a, b = keras.Input((T, D), name="a"), keras.Input((T, D), name="b")
        merged = getattr(L, merge)()([L.Masking(0.0)(a), L.Masking(0.0)(b)])
        out = L.Dense(2)(L.LSTM(4)(merged))
        model = keras.Model([a, b], out, name=f"masked_{merge.lower()}")
        b_in = _series(rng)
        b_in[2, [1, 4]] = 0.0  # holes where input a has none: the two masks differ, so a
        b_in[3, :1] = 0.0  # wrong merge rule (AND instead of OR) changes the outputs
        return model, [_series(rng), b_in]

    return build


def embedding_attention(rng):
    """Attention straight on an Embedding(mask_zero) output (its mask as value mask)."""
    ids = keras.Input((T,), dtype="int32", name="tokens")
    e = L.Embedding(V, 6, mask_zero=True)(ids)
    h = L.LSTM(6, return_sequences=True)(e)
    out = L.Dense(2)(L.GlobalAveragePooling1D()(L.Attention()([h, e])))
    return keras.Model(ids, out, name="embedding_attention"), [_tokens(rng)]


def dict_inputs(rng):
    a, b = keras.Input((T, D), name="xa"), keras.Input((T, D), name="xb")
    out = L.Dense(2)(L.Concatenate()([L.GRU(3)(a), L.LSTM(3)(b)]))
    model = keras.Model({"xa": a, "xb": b}, out, name="dict_inputs")
    return model, [{"xa": _series(rng), "xb": _series(rng)}]


PATTERNS = {
    "text_classifier": text_classifier,
    "conv_forecaster": conv_forecaster,
    "autoencoder": autoencoder,
    "seq2seq_lstm": encoder_decoder("LSTM"),
    "seq2seq_gru": encoder_decoder("GRU"),
    "attention_seq2seq": attention_seq2seq,
    **{f"merge_{m.lower()}": merged(m) for m in (
        "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot")},
    "multi_output": multi_output,
    "normalised": normalised,
    "masked_add": masked_merge("Add"),
    "masked_concatenate": masked_merge("Concatenate"),
    "embedding_attention": embedding_attention,
    "dict_inputs": dict_inputs,
    "sequential_block": sequential_block,
    "frozen_block": frozen_block,
    "shared_encoder": shared_encoder,
    "nested_twice": nested_twice,
}  # fmt: skip


def _randomize(model, rng):
    """Weights from the seed (not Keras's initializers); BatchNormalization's moving
    variance kept positive."""
    weights = []
    for w in model.weights:
        value = rng.normal(0.0, 0.4, w.shape)
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        weights.append(value.astype("float32"))
    model.set_weights(weights)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_keras_model_file_matches_keras(pattern, fmt, tmp_path):
    rng = np.random.default_rng(zlib.crc32(pattern.encode()))
    model, inputs = PATTERNS[pattern](rng)
    _randomize(model, rng)
    feed = inputs if len(inputs) > 1 else inputs[0]
    want = model.predict(feed, verbose=0)
    path = tmp_path / f"{pattern}.{fmt}"
    model.save(path)
    ours = rnncore.load_model(path)
    got = ours.predict(feed)
    want, got = (want, got) if isinstance(want, list) else ([want], [got])
    assert len(got) == len(want)
    err = 0.0
    for g, w in zip(got, want):
        assert g.shape == w.shape
        err = max(err, float(np.abs(g - w).max()))
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    key = f"keras {pattern} (.{fmt})"
    MAX_ERR[key] = max(MAX_ERR.get(key, 0.0), err)
    # Keras's weight order
    for g, w in zip(ours.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(g, w)


def _as_keras2(config: dict) -> dict:
    """A Keras 3 functional config in tf.keras 2's form: each call a list of
    ``[layer, node, tensor, kwargs]``, an RNN's initial states appended to its inputs."""

    def ref(t):
        return list(t["config"]["keras_history"])

    for layer in config["config"]["layers"]:
        nodes = []
        for node in layer["inbound_nodes"]:
            (arg,) = node["args"]
            inputs = [ref(t) for t in arg] if isinstance(arg, list) else [ref(arg)]
            kwargs = {k: v for k, v in node["kwargs"].items() if k != "initial_state"}
            inputs += [ref(t) for t in node["kwargs"].get("initial_state") or []]
            nodes.append([[*r, kwargs if k == 0 else {}] for k, r in enumerate(inputs)])
        layer["inbound_nodes"] = nodes
    return config


@pytest.mark.parametrize("pattern", ["seq2seq_lstm", "seq2seq_gru", "merge_concatenate"])
def test_keras2_functional_h5_matches_keras(pattern, tmp_path):
    """tf.keras 2 wrote a functional model's calls as lists (Keras 2's .h5 files): the same
    model with its config rewritten that way loads and gives Keras's outputs."""
    rng = np.random.default_rng(zlib.crc32(pattern.encode()))
    model, inputs = PATTERNS[pattern](rng)
    _randomize(model, rng)
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(_as_keras2(config))
        f.attrs["keras_version"] = "2.15.0"
    got = rnncore.load_model(path).predict(inputs)
    np.testing.assert_allclose(got, model.predict(inputs, verbose=0), rtol=0, atol=1e-5)


def test_nested_model_refusals(tmp_path):
    """What is not read of nested models is refused by name: a model inside a Sequential,
    and nested models in Keras 2 files (tf.keras numbered their calls differently)."""
    inner = keras.Sequential([keras.Input((T, D)), L.Dense(2)], name="inner")
    outer = keras.Sequential([keras.Input((T, D)), inner, L.LSTM(3)], name="outer")
    outer.save(tmp_path / "s.keras")
    with pytest.raises(rnncore.errors.UnsupportedModelError, match="'inner' inside a Sequential"):
        rnncore.load_model(tmp_path / "s.keras")
    model, _ = PATTERNS["shared_encoder"](np.random.default_rng(0))
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = "2.15.0"
    with pytest.raises(rnncore.errors.UnsupportedModelError, match="nested models in Keras 2"):
        rnncore.load_model(path)


def test_nested_model_weights_mismatch(tmp_path):
    """A nested model's weights group missing from model.weights.h5 is the file's error."""
    model, _ = PATTERNS["sequential_block"](np.random.default_rng(0))
    path = tmp_path / "m.keras"
    model.save(path)
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "model.weights.h5":
                buf = io.BytesIO(data)
                with h5py.File(buf, "r+") as h5:
                    del h5["layers/sequential/layers/dense"]
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(rnncore.errors.ModelFileError, match="layers/sequential/layers/dense"):
        rnncore.load_model(broken)
