"""Round trips: whatever ``to_onnx`` writes, onnxruntime runs and ``load_onnx`` reads, with
``model.predict``'s outputs, fed the model's own input dtypes.

One small model per layer and option the exporters accept: ``Masking`` (any mask value),
``Embedding`` on int32 / int64 / int16 / float ids with and without ``mask_zero``,
``Conv1D`` (valid, same, causal; dilations, strides, groups, channels_first), the pooling
layers, the normalisations, ``Dense`` with every activation, ``Activation``, ``Softmax``,
the identities at inference, ``TimeDistributed`` (of Dense, and of Conv1D, pooling,
normalisations, a GRU, Flatten, Embedding on ids), ``Attention`` / ``AdditiveAttention``
(the issue's encoder, causal, concat scores with three inputs, masks on query and value,
fully hidden rows, the scores as an output), the shape layers, ``SimpleRNN`` / ``LSTM``
/ ``GRU`` (``go_backwards``, ``return_sequences``, ``return_state``, both GRU bias layouts,
masked), ``Bidirectional`` (every merge mode), functional merges and ``initial_state``, a
stateful layer. For each: the graph's input dtypes are the model's (as onnxruntime and
``load_onnx`` see them), both runtimes give predict's outputs at opsets 14 (the oldest
``to_onnx`` writes), 17 (its default) and 18 (reductions take their axes as an input).
``load_onnx(..., verify="samples.npz")`` (the README's example) accepts a masked model, a
dilated ``same`` Conv1D and a LayerNormalization.

Real Keras 3 (torch backend) builds the attention encoder and a causal / additive /
TimeDistributed(Conv1D) model; the export of rnncore's copy, run by onnxruntime, gives
Keras's outputs.

float32 throughout (onnxruntime's recurrent kernels are float32 only); tolerance ``rtol
1e-5``, ``atol 2e-6``; the largest differences are in ``MAX_ERR``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.errors import VerificationError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

from rnncore.formats.onnx.export import to_onnx  # noqa: E402

B, T, F = 3, 6, 3
VOCAB = 10
MAX_ERR: dict[str, float] = {}


def record(what, got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    got, want = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    diff = np.abs(got - want)
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), float(np.max(diff[~np.isnan(diff)], initial=0)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=what)


def session(data: bytes):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def as_list(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def randomize(model, rng):
    """Weights drawn away from their initial values (so that every one of them matters),
    scaled by their fan-in; moving variances positive."""
    model.set_weights(
        [
            rng.standard_normal(w.shape) * (0.6 / np.sqrt(w.shape[0] if w.ndim == 2 else 6))
            for w in model.get_weights()
        ]
    )
    for layer in _every_layer(model):  # a wrapped one too
        if isinstance(layer, L.BatchNormalization):
            var = layer.moving_variance
            layer.set_weights(
                [rng.random(w.shape) + 0.5 if w is var else w.value for w in layer.weights]
            )


# ---- inputs ------------------------------------------------------------------------------


def floats(rng, shape=(B, T, F)):
    return rng.standard_normal(shape).astype(np.float32)


def masked(rng, mask_value=0.0, shape=(B, T, F)):
    """Masked steps (left padding in row 0, holes in row 1, a fully masked row 2) set to
    ``mask_value``; the other values never equal it."""
    x = rng.standard_normal(shape).astype(np.float32) + 3.0
    keep = np.ones(shape[:2], bool)
    keep[0, :2] = False
    keep[1, [1, 4]] = False
    keep[2, :] = False
    x[~keep] = mask_value
    return x


def ids(rng, dtype, zeros=True, steps=T):
    """Token ids in ``dtype``; with ``zeros``, padding (id 0) at the end, in a hole and as a
    whole row."""
    a = rng.integers(1, VOCAB, size=(B, steps)).astype(dtype)
    if zeros:
        a[0, -2:] = 0
        a[1, 2] = 0
        a[2, :] = 0
    return a


def seq(*layers, shape=(T, F), dtype=None, batch_size=None):
    return rnncore.Sequential(
        [rnncore.Input(shape=shape, dtype=dtype, batch_size=batch_size), *layers]
    )


# ---- the cases: (rng) -> (model, inputs in the model's order and input dtypes) -----------

CASES = {
    # masks
    "masking_lstm_dense": lambda r: (
        seq(L.Masking(), L.LSTM(4, return_sequences=True), L.Dense(2)),
        [masked(r)],
    ),
    "masking_value_gru_global_avg": lambda r: (
        seq(
            L.Masking(mask_value=-1.5), L.GRU(3, return_sequences=True), L.GlobalAveragePooling1D()
        ),
        [masked(r, -1.5)],
    ),  # fmt: skip
    "masking_layer_norm_simple_rnn": lambda r: (
        seq(L.Masking(), L.LayerNormalization(), L.SimpleRNN(3, go_backwards=True)),
        [masked(r)],
    ),
    "masking_timedistributed_bidirectional": lambda r: (
        seq(
            L.Masking(),
            L.TimeDistributed(L.Dense(4)),
            L.Bidirectional(L.LSTM(2, return_sequences=True)),
            L.GlobalMaxPooling1D(),
        ),
        [masked(r)],
    ),  # fmt: skip
    # Embedding: the graph input keeps the Input's integer dtype
    "embedding_int32_mask_zero": lambda r: (
        seq(
            L.Embedding(VOCAB, 4, mask_zero=True),
            L.LSTM(3, return_sequences=True),
            L.GRU(2),
            shape=(T,),
            dtype="int32",
        ),
        [ids(r, np.int32)],
    ),  # fmt: skip
    "embedding_int64_mask_zero": lambda r: (
        seq(
            L.Embedding(VOCAB, 4, mask_zero=True),
            L.GRU(3, go_backwards=True),
            shape=(T,),
            dtype="int64",
        ),
        [ids(r, np.int64)],
    ),  # fmt: skip
    "embedding_int32_no_mask_conv": lambda r: (
        seq(L.Embedding(VOCAB, 4), L.Conv1D(3, 2), L.SimpleRNN(2), shape=(T,), dtype="int32"),
        [ids(r, np.int32, zeros=False)],
    ),
    "embedding_int16_mask_zero": lambda r: (  # Gather takes int32/int64: cast in the graph
        seq(L.Embedding(VOCAB, 4, mask_zero=True), L.SimpleRNN(3), shape=(T,), dtype="int16"),
        [ids(r, np.int16)],
    ),
    "embedding_float_input": lambda r: (  # a float Input reading ids: int64 ids
        seq(L.Embedding(VOCAB, 4, mask_zero=True), L.LSTM(3), shape=(T,)),
        [ids(r, np.int64)],
    ),
    "int32_input_dense": lambda r: (  # integer features, converted as predict converts them
        seq(L.Dense(3, activation="tanh"), dtype="int32"),
        [r.integers(-3, 4, size=(B, T, F)).astype(np.int32)],
    ),
    # Conv1D
    "conv_valid_dilated": lambda r: (seq(L.Conv1D(4, 2, dilation_rate=2)), [floats(r)]),
    "conv_same_dilated": lambda r: (
        seq(L.Conv1D(4, 3, padding="same", dilation_rate=2)),
        [floats(r)],
    ),
    "conv_same_even_kernel_dilated": lambda r: (
        seq(L.Conv1D(2, 2, padding="same", dilation_rate=3, activation="relu")),
        [floats(r)],
    ),
    "conv_causal_dilated": lambda r: (
        seq(L.Conv1D(3, 3, padding="causal", dilation_rate=2)),
        [floats(r)],
    ),
    "conv_same_strided": lambda r: (
        seq(L.Conv1D(3, 4, strides=2, padding="same"), shape=(7, F)),
        [floats(r, (B, 7, F))],
    ),
    "conv_valid_strided": lambda r: (
        seq(L.Conv1D(3, 2, strides=3, activation="sigmoid")),
        [floats(r)],
    ),
    "conv_causal_strided": lambda r: (
        seq(L.Conv1D(3, 3, strides=2, padding="causal")),
        [floats(r)],
    ),
    "conv_groups_no_bias": lambda r: (
        seq(L.Conv1D(4, 2, groups=2, use_bias=False), shape=(T, 4)),
        [floats(r, (B, T, 4))],
    ),
    "conv_channels_first_same_dilated": lambda r: (
        seq(L.Conv1D(2, 3, padding="same", dilation_rate=2, data_format="channels_first")),
        [floats(r)],
    ),
    # pooling
    "max_pool_valid": lambda r: (seq(L.MaxPooling1D(2)), [floats(r)]),
    "max_pool_same_strided": lambda r: (
        seq(L.MaxPooling1D(3, strides=2, padding="same"), shape=(7, F)),
        [floats(r, (B, 7, F))],
    ),
    "max_pool_same_stride_1": lambda r: (
        seq(L.MaxPooling1D(2, strides=1, padding="same")),
        [floats(r)],
    ),
    "avg_pool_same_strided": lambda r: (
        seq(L.AveragePooling1D(3, strides=2, padding="same"), shape=(7, F)),
        [floats(r, (B, 7, F))],
    ),
    "avg_pool_same_stride_1": lambda r: (
        seq(L.AveragePooling1D(4, strides=1, padding="same")),
        [floats(r)],
    ),
    "avg_pool_valid_channels_first": lambda r: (
        seq(L.AveragePooling1D(2, data_format="channels_first"), shape=(F, T)),
        [floats(r, (B, F, T))],
    ),
    "global_max_keepdims": lambda r: (seq(L.GlobalMaxPooling1D(keepdims=True)), [floats(r)]),
    "global_avg_channels_first": lambda r: (
        seq(L.GlobalAveragePooling1D(data_format="channels_first")),
        [floats(r)],
    ),
    # normalisations
    "layer_norm": lambda r: (seq(L.LayerNormalization(epsilon=1e-2)), [floats(r)]),
    "layer_norm_rms_two_axes": lambda r: (
        seq(L.LayerNormalization(axis=[1, 2], rms_scaling=True)),
        [floats(r)],
    ),
    "layer_norm_no_center_scale": lambda r: (
        seq(L.LayerNormalization(center=False, scale=False)),
        [floats(r)],
    ),
    "batch_norm": lambda r: (seq(L.BatchNormalization()), [floats(r)]),
    "batch_norm_channels_axis_1": lambda r: (
        seq(L.BatchNormalization(axis=1, center=False)),
        [floats(r)],
    ),
    # Dense activations, Activation, Softmax, identities at inference
    **{
        f"dense_{act}": (lambda r, act=act: (seq(L.Dense(4, activation=act)), [floats(r)]))
        for act in ("linear", "tanh", "sigmoid", "relu", "hard_sigmoid", "softmax")
    },
    "dense_no_bias_activation_softmax": lambda r: (
        seq(L.Dense(4, use_bias=False), L.Activation("hard_sigmoid"), L.Softmax(axis=1)),
        [floats(r)],
    ),
    "identities": lambda r: (
        seq(
            L.Dropout(0.5),
            L.SpatialDropout1D(0.3),
            L.GaussianNoise(1.0),
            L.TimeDistributed(L.Dropout(0.2)),
            L.TimeDistributed(L.Activation("relu")),
        ),
        [floats(r)],
    ),  # fmt: skip
    # shape layers
    "flatten_reshape_permute": lambda r: (
        seq(L.Permute((2, 1)), L.Reshape((2, -1)), L.Flatten(), L.Dense(2)),
        [floats(r)],
    ),
    "pad_crop_upsample_repeat": lambda r: (
        seq(
            L.ZeroPadding1D((1, 2)),
            L.Cropping1D((2, 1)),
            L.UpSampling1D(2),
            L.GRU(2),
            L.RepeatVector(3),
        ),
        [floats(r)],
    ),  # fmt: skip
    # recurrent layers
    **{
        f"{kind}_{'backwards' if back else 'forwards'}_{'seq' if rs else 'last'}": (
            lambda r, kind=kind, back=back, rs=rs: (
                seq(_RNN[kind](3, go_backwards=back, return_sequences=rs)),
                [floats(r)],
            )
        )
        for kind in ("simple_rnn", "lstm", "gru", "gru_reset_before")
        for back in (False, True)
        for rs in (False, True)
    },
    "lstm_return_state_masked": lambda r: (
        seq(L.Masking(), L.LSTM(3, return_state=True, return_sequences=True)),
        [masked(r)],
    ),
    "gru_activations_return_state": lambda r: (
        seq(L.GRU(3, activation="relu", recurrent_activation="hard_sigmoid", return_state=True)),
        [floats(r)],
    ),
    **{
        f"bidirectional_{mode}": (
            lambda r, mode=mode: (
                seq(L.Masking(), L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode=mode)),
                [masked(r)],
            )
        )
        for mode in ("concat", "sum", "mul", "ave", None)
    },
    "bidirectional_return_state": lambda r: (
        seq(L.Bidirectional(L.LSTM(2, return_state=True), merge_mode="sum")),
        [floats(r)],
    ),
}
_RNN = {
    "simple_rnn": L.SimpleRNN,
    "lstm": L.LSTM,
    "gru": L.GRU,
    "gru_reset_before": lambda *a, **k: L.GRU(*a, reset_after=False, **k),
}


def _merges(r):
    a, b = rnncore.Input((T, F), name="a"), rnncore.Input((T, F), name="b")
    x, y = L.Dense(4)(a), L.Conv1D(4, 3, padding="same", dilation_rate=2)(b)
    out = [
        L.add([x, y]),
        L.subtract([x, y]),
        L.average([x, y]),
        L.multiply([x, y]),
        L.maximum([x, y]),
        L.minimum([x, y]),
        L.concatenate([x, y]),
        L.concatenate([x, y], axis=1),
    ]
    return rnncore.Model([a, b], out), [floats(r), floats(r)]


def _masked_merges_initial_state(r):
    enc, dec = rnncore.Input((T, F), name="enc"), rnncore.Input((T, F), name="dec")
    _, h, c = L.LSTM(4, return_state=True)(L.Masking()(enc))
    y = L.LSTM(4, return_sequences=True)(L.Masking()(dec), initial_state=[h, c])
    z = L.concatenate([L.add([y, L.Dense(4)(y)]), L.Dense(2)(dec)])
    z = L.average([z, L.Dense(6)(h)])  # ranks 3 and 2: an axis inserted, as Keras
    return rnncore.Model([enc, dec], [L.GlobalAveragePooling1D()(z), h]), [masked(r), masked(r)]


def _ids_and_features(r):
    """Two inputs of different dtypes: int32 ids and float32 features."""
    tok, feat = rnncore.Input((T,), dtype="int32", name="tok"), rnncore.Input((T, F), name="feat")
    e = L.Embedding(VOCAB, 3, mask_zero=True)(tok)
    y = L.GRU(2)(L.concatenate([e, L.Dense(3)(feat)]))
    return rnncore.Model([tok, feat], y), [ids(r, np.int32), floats(r)]


def _attention_encoder(r):
    """The issue's attention encoder: Embedding(mask_zero) -> LSTM(seq) -> Attention([h, h])
    -> masked mean -> Dense; padding at the end, a hole and a fully masked row."""
    tok = rnncore.Input((T,), dtype="int32", name="tok")
    h = L.LSTM(4, return_sequences=True)(L.Embedding(VOCAB, 4, mask_zero=True)(tok))
    y = L.GlobalAveragePooling1D()(L.Attention()([h, h]))
    return rnncore.Model(tok, L.Dense(1)(y)), [ids(r, np.int32)]


def _causal_self_attention(r):
    """Causal self-attention, scaled, on a masked input (the value mask AND the causal
    one); dropout is the identity at inference."""
    x = rnncore.Input((T, F), name="x")
    m = L.Masking()(x)
    y = L.Attention(use_scale=True, dropout=0.4)([m, m], use_causal_mask=True)
    return rnncore.Model(x, L.LSTM(3)(y)), [masked(r)]


def _concat_attention_three_inputs(r):
    """score_mode="concat" with a scale, query / value / key of their own lengths; the
    query and the value masked, the key not (Keras reads no key mask)."""
    q, v, k = (rnncore.Input((n, F), name=nm) for nm, n in (("q", 5), ("v", T), ("k", T)))
    y = L.Attention(use_scale=True, score_mode="concat")([L.Masking()(q), L.Masking()(v), k])
    return rnncore.Model([q, v, k], y), [masked(r, shape=(B, 5, F)), masked(r), floats(r)]


def _additive_attention_masks(r):
    """AdditiveAttention (scale per feature, and none) with query and value masks; the
    second causal with an unmasked query, so that rows whose keys are all hidden (a fully
    masked value row; query step 0 of a left-padded value) show in the output: the
    softmax of the scores less 1e9, as the layer, not NaN."""
    q, v = rnncore.Input((5, F), name="q"), rnncore.Input((T, F), name="v")
    mq, mv = L.Masking()(q), L.Masking()(v)
    a = L.AdditiveAttention()([mq, mv])
    b = L.AdditiveAttention(use_scale=False)([q, mv, L.Dense(F)(v)], use_causal_mask=True)
    return rnncore.Model([q, v], [a, b]), [masked(r, shape=(B, 5, F)), masked(r)]


def _attention_scores_two_outputs(r):
    """return_attention_scores: the output (masked by the query mask, which the GRU
    consumes) and the weights, two outputs of the model (their names made unique)."""
    x = rnncore.Input((T, F), name="x")
    h = L.GRU(4, return_sequences=True)(L.Masking()(x))
    out, scores = L.Attention()([h, h], return_attention_scores=True, use_causal_mask=True)
    return rnncore.Model(x, [L.GRU(2)(out), scores]), [masked(r)]


def _time_distributed_layers(r):
    """TimeDistributed of layers beyond Dense: Conv1D, MaxPooling1D, LayerNormalization,
    a GRU and Flatten on (batch, steps, sub-steps, features); the mask passes through."""
    x = rnncore.Input((4, 5, F), name="x")
    y = L.TimeDistributed(L.Conv1D(4, 2, padding="causal", activation="relu"))(x)
    y = L.TimeDistributed(L.MaxPooling1D(2))(y)
    y = L.TimeDistributed(L.LayerNormalization())(y)
    z = L.TimeDistributed(L.GRU(3, go_backwards=True))(y)
    w = L.TimeDistributed(L.Flatten())(y)
    return rnncore.Model(x, [L.concatenate([z, w]), L.TimeDistributed(L.Softmax())(z)]), [
        floats(r, (B, 4, 5, F))
    ]


def _time_distributed_embedding(r):
    """TimeDistributed(Embedding) reads int32 ids (batch, words, chars); a masked
    TimeDistributed(LayerNormalization) and TimeDistributed(BatchNormalization) before an
    LSTM."""
    chars = rnncore.Input((T, 4), dtype="int32", name="chars")
    e = L.TimeDistributed(L.Embedding(VOCAB, 3))(chars)
    y = L.TimeDistributed(L.Flatten())(e)
    x = rnncore.Input((T, F), name="x")
    m = L.TimeDistributed(L.LayerNormalization())(L.Masking()(x))
    m = L.TimeDistributed(L.BatchNormalization())(m)
    z = L.LSTM(3)(L.concatenate([m, L.Dense(F)(y)]))
    ids_ = r.integers(0, VOCAB, size=(B, T, 4)).astype(np.int32)
    return rnncore.Model([chars, x], z), [ids_, masked(r)]


CASES["attention_encoder"] = _attention_encoder
CASES["attention_causal_self"] = _causal_self_attention
CASES["attention_concat_three_inputs"] = _concat_attention_three_inputs
CASES["additive_attention_masks"] = _additive_attention_masks
CASES["attention_scores_two_outputs"] = _attention_scores_two_outputs
CASES["time_distributed_layers"] = _time_distributed_layers
CASES["time_distributed_embedding"] = _time_distributed_embedding
CASES["functional_merges"] = _merges
CASES["functional_masked_merges_initial_state"] = _masked_merges_initial_state
CASES["functional_int32_ids_and_floats"] = _ids_and_features


_ORT_TYPES = {np.dtype(d): f"tensor({n})" for d, n in
              ((np.float32, "float"), (np.int32, "int32"), (np.int64, "int64"),
               (np.int16, "int16"))}  # fmt: skip


def round_trip(model, xs, what, opset):
    """onnxruntime and load_onnx on the export, fed ``xs`` as they are, against predict."""
    want = as_list(model.predict(xs[0] if len(xs) == 1 else xs))
    proto = to_onnx(model, opset=opset)
    data = proto.SerializeToString()
    declared = [helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
                for i in proto.graph.input]  # fmt: skip
    assert declared == [x.dtype for x in xs], what
    names = [i.name for i in proto.graph.input]
    feeds = dict(zip(names, xs))
    sess = session(data)
    assert [i.type for i in sess.get_inputs()] == [_ORT_TYPES[d] for d in declared], what
    loaded = rnncore.load_onnx(data)
    assert [(n, d) for n, d, _ in loaded.inputs] == list(zip(names, declared)), what
    runs = {"onnxruntime": sess.run, "load_onnx": loaded.run}
    for runtime, run in runs.items():
        got = run(None, feeds)
        assert len(got) == len(want), (what, runtime)
        for g, w in zip(got, want):
            record(f"{runtime}: {what}", g, w)
    return data, want


@pytest.mark.parametrize("opset", [14, 17, 18])
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip(case, opset):
    rng = np.random.default_rng(20240611)
    model, xs = CASES[case](rng)
    randomize(model, rng)
    round_trip(model, xs, case, opset)


def test_cases_cover_every_layer_the_exporters_name():
    """Every layer class the exporters dispatch on appears in some case."""
    from rnncore.formats.onnx import export_layers, export_recurrent

    classes = set()
    for cls, _ in export_layers._LAYERS:
        classes.update(cls if isinstance(cls, tuple) else (cls,))
    classes.update(export_recurrent.RECURRENT)
    classes.update({L.Masking, L.Dense, L.Activation, L.Softmax, L.Dropout, L.GaussianNoise,
                    L.TimeDistributed, L.Attention, L.AdditiveAttention})  # fmt: skip
    seen = set()
    rng = np.random.default_rng(0)
    for make in CASES.values():
        model, _ = make(rng)
        for layer in _every_layer(model):
            seen.add(type(layer))
    missing = {c.__name__ for c in classes if not any(issubclass(s, c) for s in seen)}
    assert not missing


def _every_layer(model):
    for layer in model.layers:
        yield layer
        for attr in ("layer", "forward_layer", "backward_layer"):
            inner = getattr(layer, attr, None)
            if inner is not None:
                yield inner


def test_int32_ids_graph_takes_int32():
    """The int32 ids a model was built for are what the graph takes: onnxruntime refuses
    int64 for them, as it refuses any other dtype than the declared one."""
    model, xs = CASES["embedding_int32_mask_zero"](np.random.default_rng(1))
    sess = session(to_onnx(model).SerializeToString())
    assert sess.get_inputs()[0].type == "tensor(int32)"
    with pytest.raises(Exception, match="int64"):
        sess.run(None, {"input": xs[0].astype(np.int64)})


def test_conv_same_dilated_writes_keras_pads():
    """No auto_pad (onnxruntime refuses SAME_UPPER with a dilation): Keras's pads, the odd
    step after."""
    proto = to_onnx(seq(L.Conv1D(2, 2, padding="same", dilation_rate=3)))
    (conv,) = [n for n in proto.graph.node if n.op_type == "Conv"]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert "auto_pad" not in attrs
    assert list(attrs["pads"]) == [1, 2] and list(attrs["dilations"]) == [3]


def test_stateful_from_zero_states():
    """A stateful layer's graph, fed zero states, gives predict's outputs from fresh states
    and the states the layer keeps after the call."""
    rng = np.random.default_rng(2)
    model = seq(L.Masking(), L.LSTM(3, stateful=True, return_sequences=True), batch_size=B)
    randomize(model, rng)
    x = masked(rng)
    model.reset_states()
    want = model.predict(x, batch_size=B)
    h, c = model.layers[-1].states
    data = to_onnx(model).SerializeToString()
    lstm = model.layers[-1].name
    zeros = {f"{lstm}_initial_{s}": np.zeros((B, 3), np.float32) for s in ("h", "c")}
    feeds = {"input": x, **zeros}
    runs = {"onnxruntime": session(data).run, "load_onnx": rnncore.load_onnx(data).run}
    for runtime, run in runs.items():
        y, yh, yc = run(None, feeds)
        record(f"{runtime}: stateful output", y, want)
        record(f"{runtime}: stateful h", yh, np.asarray(h))
        record(f"{runtime}: stateful c", yc, np.asarray(c))


@pytest.mark.parametrize(
    "case",
    ["masking_lstm_dense", "conv_same_dilated", "layer_norm", "embedding_int32_mask_zero"],
)
def test_load_onnx_verify_samples(tmp_path, case):
    """The README's ``load_onnx("m.onnx", verify="samples.npz")`` on exports the user
    reported failing (Masking, Conv1D, LayerNormalization) and int32 ids; a wrong expected
    output is caught, so the check does check."""
    rng = np.random.default_rng(3)
    model, (x,) = CASES[case](rng)
    randomize(model, rng)
    to_onnx(model, tmp_path / "m.onnx")
    expected = model.predict(x)
    np.savez(tmp_path / "samples.npz", x=x, expected=expected)
    loaded = rnncore.load_onnx(tmp_path / "m.onnx", verify=tmp_path / "samples.npz")
    record(f"verify: {case}", loaded(x), expected)
    np.savez(tmp_path / "wrong.npz", x=x, expected=expected + 0.01)
    with pytest.raises(VerificationError):
        rnncore.load_onnx(tmp_path / "m.onnx", verify=tmp_path / "wrong.npz")


# ---- the window operators beyond what to_onnx writes, against onnxruntime ---------------


def _window_configs():
    """Random Conv / MaxPool / AveragePool attributes, 1-D and 2-D (fixed seed)."""
    rng = np.random.default_rng(7)
    configs = []
    for k in range(36):
        op = ("Conv", "MaxPool", "AveragePool")[k % 3]
        nd = 1 + (k // 3) % 2
        kernel = [int(v) for v in rng.integers(1, 4, nd)]
        attrs = {"kernel_shape": kernel, "strides": [int(v) for v in rng.integers(1, 3, nd)]}
        auto = ("NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")[k % 5]
        if auto == "NOTSET":
            attrs["pads"] = [int(min(v, kernel[i % nd] - 1)) for i, v in
                             enumerate(rng.integers(0, 3, 2 * nd))]  # fmt: skip
            attrs["dilations"] = [int(v) for v in rng.integers(1, 3, nd)]
            if op != "Conv":
                attrs["ceil_mode"] = int(k % 4 == 1)
        else:  # onnxruntime refuses SAME_* with dilations
            attrs["auto_pad"] = auto
        if op == "AveragePool":
            attrs["count_include_pad"] = int(k % 2)
        if op == "Conv":
            attrs["group"] = 1 + k % 2
        configs.append((op, nd, attrs))
    return configs


_OUT_TYPES = {"y": onnx.TensorProto.FLOAT, "i": onnx.TensorProto.INT64}


@pytest.mark.parametrize("op,nd,attrs", _window_configs())
def test_window_operators_match_onnxruntime(op, nd, attrs):
    rng = np.random.default_rng(8)
    spatial = [7, 6][:nd]
    x = rng.standard_normal([2, 4, *spatial]).astype(np.float32)
    ins = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))]
    feeds = {"x": x}
    outs = ["y"]
    if op == "Conv":
        w = rng.standard_normal([6, 4 // attrs["group"], *attrs["kernel_shape"]])
        feeds["w"], feeds["b"] = w.astype(np.float32), rng.standard_normal(6).astype(np.float32)
        ins += [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in "wb"]
    elif op == "MaxPool" and nd == 2:
        outs.append("i")  # the argmax's flat indices
    node = helper.make_node(op, list(feeds), outs, **attrs)
    graph = helper.make_graph(
        [node], "g", ins, [helper.make_tensor_value_info(n, _OUT_TYPES[n], None) for n in outs]
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    data.ir_version = 9
    data = data.SerializeToString()
    want = session(data).run(None, feeds)
    got = rnncore.load_onnx(data).run(None, feeds)
    for g, w in zip(got, want):
        record(f"{op} vs onnxruntime", g, w)


# ---- against real Keras ------------------------------------------------------------------


def _keras_pair(kl, rl, keras_input, build):
    """The same graph built twice, by Keras and by rnncore: ``build(layers, Input)``."""
    return build(kl, keras_input), build(rl, rnncore.Input)


def _encoder(layers, Input):
    """The issue's attention encoder (Keras's own example of a text classifier)."""
    tok = Input((T,), dtype="int32", name="tok")
    h = layers.LSTM(4, return_sequences=True)(layers.Embedding(VOCAB, 4, mask_zero=True)(tok))
    y = layers.GlobalAveragePooling1D()(layers.Attention()([h, h]))
    return [tok], [layers.Dense(1)(y)]


def _causal_scores(layers, Input):
    """Scaled concat-score causal self-attention on a masked input, its scores a second
    output; AdditiveAttention over it with the query masked; TimeDistributed(Conv1D)."""
    x = Input((T, F), name="x")
    m = layers.Masking()(x)
    out, scores = layers.Attention(use_scale=True, score_mode="concat")(
        [m, m], return_attention_scores=True, use_causal_mask=True
    )
    y = layers.AdditiveAttention()([out, m])
    parts = Input((T, 5, F), name="parts")
    z = layers.TimeDistributed(layers.Conv1D(2, 3, padding="same"))(parts)
    return [x, parts], [y, scores, z]


@pytest.mark.parametrize("build", [_encoder, _causal_scores])
def test_export_matches_keras(build):
    """Keras 3 (torch backend) builds the model; rnncore takes its weights, exports it, and
    onnxruntime's outputs are Keras's predict (a fully masked row included: NaN where
    Keras's masked mean divides 0 by 0, the shifted-score weights where all keys are
    hidden)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    k_in, k_out = build(keras.layers, lambda shape, **kw: keras.Input(shape, **kw))
    r_in, r_out = build(L, lambda shape, **kw: rnncore.Input(shape, **kw))
    theirs, ours = keras.Model(k_in, k_out), rnncore.Model(r_in, r_out)
    rng = np.random.default_rng(11)
    # away from the initial values (ones, zeros) so that every weight matters; read and
    # run as torch tensors (Keras's NumPy conversions trip NumPy 2's copy= deprecation)
    weights = [v.value.detach().numpy() for v in theirs.weights]
    weights = [(w + rng.standard_normal(w.shape) * 0.3).astype(np.float32) for w in weights]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    xs = [
        ids(rng, np.int32) if t.dtype == "int32" else masked(rng, shape=(B, *t.shape[1:]))
        for t in r_in
    ]
    with torch.no_grad():
        want = [w.numpy() for w in as_list(theirs([torch.from_numpy(x) for x in xs]))]
    proto = to_onnx(ours)
    got = session(proto.SerializeToString()).run(None, dict(zip([t.name for t in r_in], xs)))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        record(f"onnxruntime vs keras: {build.__name__}", g, w)
