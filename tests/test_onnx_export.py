"""``to_onnx``: rnncore models written as ONNX, run by onnxruntime, equal ``model.predict``.

* Unmasked models of every recurrent layer and the simple layers (and read back by
  ``load_onnx``).
* Masks: ``Masking`` and ``Embedding(mask_zero=True)`` feeding SimpleRNN / LSTM / GRU (both
  GRU bias layouts) and ``Bidirectional`` (every merge mode), for every mask pattern of
  ``conftest.MASK_PATTERNS`` (right and left padding, holes, a fully masked row): the graph
  is exact for all of them; layers after the recurrent ones (a second recurrent layer,
  TimeDistributed Dense, GlobalAveragePooling1D's masked mean) get predict's numbers.
* Stateful layers: the model and the ONNX graph stepped side by side over several chunks,
  the graph's state outputs fed back as its next state inputs.
* Conv1D, pooling, reshaping, normalisation, Embedding.
* Refusals, naming what is refused.

float32 everywhere (onnxruntime's recurrent kernels are float32 only); the tolerance is
``ATOL = 2e-6`` absolute (and ``rtol=1e-5``); the largest differences are in ``MAX_ERR``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore.errors import UnsupportedModelError
from rnncore.formats.onnx.export import to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import MASK_PATTERNS, make_mask  # noqa: E402

ATOL = 2e-6  # float32; onnxruntime and the core sum products in different orders
MAX_ERR: dict[str, float] = {}


def record(what, got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    diff = np.abs(got - want)
    err = float(np.max(diff[~np.isnan(diff)], initial=0.0))
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL, err_msg=what)


def session(proto):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def set_random_weights(model, rng):
    weights = [
        rng.standard_normal(w.shape) * (0.6 / np.sqrt(w.shape[0] if w.ndim == 2 else 8))
        for w in model.get_weights()
    ]
    model.set_weights(weights)


def as_list(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def check_export(model, x, what, opset=17):
    """The model exported, run by onnxruntime on ``x``, against ``model.predict(x)``."""
    want = as_list(model.predict(x))
    proto = to_onnx(model, opset=opset)
    got = session(proto).run(None, {"input": x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        record(what, g, w)
    return proto


def masked_input(rng, pattern, B=5, T=7, F=3, mask_value=0.0):
    """``x`` with the masked steps set to ``mask_value`` (the others never equal it)."""
    x = rng.standard_normal((B, T, F)).astype(np.float32) + 3.0
    mask = make_mask(rng, pattern, B, T)
    if mask is not None:
        x[~mask] = mask_value
    return x


# ---------------------------------------------------------------------------------------
# Unmasked models (moved from test_interop_onnx.py)

EXPORT_CASES = {
    "lstm_seq_dense": lambda: [L.LSTM(6, return_sequences=True), L.Dense(3)],
    "gru_last_softmax": lambda: [L.GRU(5), L.Dense(4, activation="softmax")],
    "gru_reset_before_backwards": lambda: [
        L.GRU(5, reset_after=False, go_backwards=True, return_sequences=True)
    ],
    "simple_rnn_relu_backwards_last": lambda: [
        L.SimpleRNN(4, activation="relu", go_backwards=True)
    ],
    "stacked_bidirectional": lambda: [
        L.Bidirectional(L.LSTM(4, return_sequences=True)),
        L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
        L.Dropout(0.2),
        L.TimeDistributed(L.Dense(2, activation="tanh")),
    ],
    "bidirectional_last_ave": lambda: [L.Bidirectional(L.SimpleRNN(3), merge_mode="ave")],
    "bidirectional_last_concat_mul": lambda: [
        L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="mul"),
        L.Bidirectional(L.LSTM(2)),
    ],
    "activations": lambda: [
        L.LSTM(4, activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True),
        L.GRU(
            3,
            activation="linear",
            recurrent_activation="hard_sigmoid",
            return_sequences=True,
            use_bias=False,
        ),
        L.Activation("sigmoid"),
        L.Softmax(),
    ],
    "lstm_gru_hard_sigmoid_everywhere": lambda: [
        L.LSTM(
            4, activation="hard_sigmoid", recurrent_activation="hard_sigmoid", return_sequences=True
        ),
        L.Bidirectional(L.GRU(3, activation="hard_sigmoid", reset_after=False)),
    ],
    "lstm_return_state": lambda: [L.LSTM(4, return_sequences=True), L.LSTM(3, return_state=True)],
    "bidirectional_return_state": lambda: [L.Bidirectional(L.GRU(3, return_state=True))],
    "bidirectional_merge_none": lambda: [
        L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode=None)
    ],
    "noise_layers_are_identities": lambda: [
        L.GaussianNoise(0.5),
        L.SpatialDropout1D(0.3),
        L.GRU(3, return_sequences=True),
    ],
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_to_onnx_runs_in_onnxruntime(rng, case, tmp_path):
    model = rnncore.Sequential([rnncore.Input(shape=(None, 5))] + EXPORT_CASES[case]())
    set_random_weights(model, rng)
    x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    want = as_list(model.predict(x))
    path = tmp_path / "m.onnx"
    proto = rnncore.interop.to_onnx(model, path)
    onnx.checker.check_model(proto)
    got = session(onnx.load(path)).run(None, {"input": x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        record("unmasked: onnxruntime vs predict", g, w)
    back = rnncore.interop.load_onnx(path).run(None, {"input": x})  # loads back
    for g, w in zip(back, want):
        record("unmasked: load_onnx of the export vs predict", g, w)


def test_to_onnx_fixed_shapes_and_names():
    model = rnncore.Sequential([rnncore.Input(shape=(7, 5), batch_size=2), L.GRU(3)])
    proto = to_onnx(model)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 7, 5]
    assert [o.name for o in proto.graph.output] == ["output"]


def test_to_onnx_needs_a_built_model():
    with pytest.raises(ValueError, match="built"):
        to_onnx(rnncore.Sequential([L.LSTM(3)]))


# ---------------------------------------------------------------------------------------
# Masks

RNN_KINDS = {
    "simple_rnn": lambda **kw: L.SimpleRNN(4, **kw),
    "lstm": lambda **kw: L.LSTM(4, **kw),
    "gru_reset_after": lambda **kw: L.GRU(4, **kw),
    "gru_reset_before": lambda **kw: L.GRU(4, reset_after=False, **kw),
}
RNN_OPTIONS = {
    "last": {},
    "last_backwards_state": dict(go_backwards=True, return_state=True),
    "sequences_state": dict(return_sequences=True, return_state=True),
    "sequences_backwards": dict(return_sequences=True, go_backwards=True),
    "sequences_zero_output": dict(return_sequences=True, zero_output_for_mask=True),
    "sequences_backwards_zero_output": dict(
        return_sequences=True, go_backwards=True, zero_output_for_mask=True
    ),
}


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
@pytest.mark.parametrize("options", list(RNN_OPTIONS))
@pytest.mark.parametrize("kind", list(RNN_KINDS))
def test_masking_recurrent(rng, kind, options, pattern):
    x = masked_input(rng, pattern)
    layer = RNN_KINDS[kind](**RNN_OPTIONS[options])
    model = rnncore.Sequential([rnncore.Input(shape=(None, 3)), L.Masking(), layer])
    set_random_weights(model, rng)
    check_export(model, x, f"Masking -> recurrent ({pattern})")


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("sequences", [True, False], ids=["sequences", "last"])
def test_masking_bidirectional(rng, merge_mode, sequences, pattern):
    x = masked_input(rng, pattern)
    inner = L.GRU(3, return_sequences=sequences, return_state=True)
    model = rnncore.Sequential(
        [rnncore.Input(shape=(None, 3)), L.Masking(), L.Bidirectional(inner, merge_mode=merge_mode)]
    )
    set_random_weights(model, rng)
    proto = check_export(model, x, f"Masking -> Bidirectional ({pattern})")
    names = [o.name for o in proto.graph.output]
    assert names[-2:] == ["h_forward", "h_backward"]


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
def test_mask_reaches_the_layers_after(rng, pattern):
    """A second recurrent layer, TimeDistributed Dense, a Bidirectional and the masked mean
    of GlobalAveragePooling1D all read the mask of the first layer (NaN for a fully masked
    row, as predict)."""
    x = masked_input(rng, pattern, mask_value=-1.5)
    model = rnncore.Sequential(
        [
            rnncore.Input(shape=(None, 3)),
            L.Masking(mask_value=-1.5),
            L.Dense(5, activation="tanh"),
            L.LSTM(4, return_sequences=True),
            L.TimeDistributed(L.Dense(3)),
            L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="sum"),
            L.LayerNormalization(),
            L.GRU(3, return_sequences=True, go_backwards=True),
            L.GlobalAveragePooling1D(),
        ]
    )
    set_random_weights(model, rng)
    check_export(model, x, f"mask through a stack ({pattern})")
    # opset 18 takes the reduction axes as an input
    check_export(model, x, f"mask through a stack, opset 18 ({pattern})", opset=18)


@pytest.mark.parametrize("pattern", ["right_pad", "holes", "full_row"])
@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
def test_embedding_mask_zero(rng, kind, pattern):
    B, T = 5, 8
    ids = rng.integers(1, 20, size=(B, T)).astype(np.int64)
    mask = make_mask(rng, pattern, B, T)
    ids[~mask] = 0
    model = rnncore.Sequential(
        [
            rnncore.Input(shape=(None,)),
            L.Embedding(20, 6, mask_zero=True),
            RNN_KINDS[kind](return_sequences=True),
            L.Bidirectional(L.LSTM(3)),
            L.Dense(2),
        ]
    )
    set_random_weights(model, rng)
    check_export(model, ids, f"Embedding(mask_zero) -> recurrent ({pattern})")


def test_embedding_without_mask_and_its_mask_ignored_by_conv(rng):
    ids = rng.integers(0, 11, size=(3, 9)).astype(np.int64)
    model = rnncore.Sequential(
        [rnncore.Input(shape=(9,)), L.Embedding(11, 4), L.Conv1D(3, 2), L.LSTM(3)]
    )
    set_random_weights(model, rng)
    check_export(model, ids, "Embedding -> Conv1D -> LSTM")


def test_the_graph_does_not_assume_right_padding(rng):
    """A left-padded batch gives what predict gives, and differs from the right-padded
    reading of the same data (so the comparison can tell the two apart)."""
    x = masked_input(rng, "left_pad", B=4, T=6)
    model = rnncore.Sequential(
        [rnncore.Input(shape=(None, 3)), L.Masking(), L.LSTM(3, return_sequences=True)]
    )
    set_random_weights(model, rng)
    check_export(model, x, "Masking -> recurrent (left_pad)")
    lengths = (x != 0).any(-1).sum(1)
    right = np.zeros_like(x)
    for b, n in enumerate(lengths):
        right[b, :n] = x[b, x.shape[1] - n :]
    y_left, y_right = model.predict(x), model.predict(right)
    assert np.abs(y_left - y_right).max() > 1e-3


# ---------------------------------------------------------------------------------------
# Stateful layers


def _step_side_by_side(model, chunks, masks=None):
    sess = session(to_onnx(model))
    names = [i.name for i in sess.get_inputs()]
    assert names[0] == "input" and all("_initial_" in n for n in names[1:])
    out_names = [o.name for o in sess.get_outputs()]
    state_in = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()[1:]}
    model.reset_states()
    steps = 0
    for x in chunks:
        steps += 1
        want = as_list(model.predict(x, batch_size=x.shape[0]))
        got = sess.run(None, {"input": x, **state_in})
        for g, w in zip(got, want):
            record("stateful: onnxruntime vs predict, chunk by chunk", g, w)
        outs = dict(zip(out_names, got))
        state_in = {n: outs[n.replace("_initial_", "_Y_")] for n in state_in}
        for layer in model.layers:  # the carried states equal the graph's state outputs
            subs = (
                [layer.forward_layer, layer.backward_layer]
                if isinstance(layer, L.Bidirectional)
                else [layer]
            )
            for sub in subs:
                if getattr(sub, "stateful", False):
                    for s, value in zip(sub._state_names, sub.states):
                        record("stateful: carried states", outs[f"{sub.name}_Y_{s}"], value)
    return steps


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_stateful_stepped_side_by_side(rng, masked):
    B, T, F = 3, 5, 3
    layers = [
        L.LSTM(4, stateful=True, return_sequences=True),
        L.Bidirectional(L.GRU(3, stateful=True, return_sequences=True), merge_mode="ave"),
        L.SimpleRNN(2, stateful=True, go_backwards=True),
    ]
    if masked:
        layers.insert(0, L.Masking())
    model = rnncore.Sequential([rnncore.Input(shape=(T, F), batch_size=B)] + layers)
    set_random_weights(model, rng)
    chunks = [masked_input(rng, "full_row" if masked else "none", B, T, F) for _ in range(4)]
    assert _step_side_by_side(model, chunks) == 4


def test_stateful_state_names(rng):
    model = rnncore.Sequential(
        [rnncore.Input(shape=(4, 2), batch_size=2), L.LSTM(3, stateful=True, name="enc")]
    )
    proto = to_onnx(model)
    assert [i.name for i in proto.graph.input] == ["input", "enc_initial_h", "enc_initial_c"]
    assert [o.name for o in proto.graph.output] == ["output", "enc_Y_h", "enc_Y_c"]
    dims = [d.dim_value for d in proto.graph.input[1].type.tensor_type.shape.dim]
    assert dims == [2, 3]


# ---------------------------------------------------------------------------------------
# Other layers

LAYER_CASES = {
    "conv_valid_strides": lambda: [L.Conv1D(4, 3, strides=2, activation="relu")],
    "conv_same": lambda: [L.Conv1D(4, 4, padding="same", strides=2)],
    "conv_causal_dilated": lambda: [L.Conv1D(3, 3, padding="causal", dilation_rate=2)],
    "conv_groups_no_bias": lambda: [L.Conv1D(6, 2, groups=3, use_bias=False)],
    "conv_channels_first": lambda: [L.Conv1D(4, 2, data_format="channels_first")],
    "max_pool_same": lambda: [L.MaxPooling1D(3, strides=2, padding="same")],
    "avg_pool_same": lambda: [L.AveragePooling1D(2, padding="same")],
    "avg_pool_valid": lambda: [L.AveragePooling1D(3, strides=1)],
    "max_pool_channels_first": lambda: [L.MaxPooling1D(2, data_format="channels_first")],
    "global_avg": lambda: [L.GlobalAveragePooling1D()],
    "global_max_keepdims": lambda: [L.GlobalMaxPooling1D(keepdims=True)],
    "global_avg_channels_first": lambda: [L.GlobalAveragePooling1D(data_format="channels_first")],
    "flatten_dense": lambda: [L.Flatten(), L.Dense(3)],
    "reshape_permute": lambda: [L.Reshape((3, -1)), L.Permute((2, 1))],
    "repeat_vector": lambda: [L.LSTM(3), L.RepeatVector(4), L.GRU(2, return_sequences=True)],
    "zero_pad_crop_upsample": lambda: [
        L.ZeroPadding1D((1, 2)),
        L.Cropping1D((2, 1)),
        L.UpSampling1D(3),
    ],
    "cropping_one_side": lambda: [L.Cropping1D((0, 2))],
    "layer_norm": lambda: [L.LayerNormalization(epsilon=1e-2)],
    "layer_norm_rms_two_axes": lambda: [L.LayerNormalization(axis=[1, 2], rms_scaling=True)],
    "batch_norm": lambda: [L.BatchNormalization()],
    "conv_pool_rnn": lambda: [
        L.Conv1D(5, 3, padding="same"),
        L.MaxPooling1D(2),
        L.BatchNormalization(),
        L.Bidirectional(L.LSTM(3)),
    ],
}


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layers(rng, case, opset):
    model = rnncore.Sequential([rnncore.Input(shape=(9, 6))] + LAYER_CASES[case]())
    set_random_weights(model, rng)
    for layer in model.layers:  # moving statistics away from 0 and 1
        if isinstance(layer, L.BatchNormalization):
            mean, var = layer.moving_mean, layer.moving_variance
            layer.set_weights(
                [w.value for w in layer.weights if w not in (mean, var)]
                + [rng.standard_normal(mean.shape), rng.random(var.shape) + 0.5]
            )
    x = rng.standard_normal((3, 9, 6)).astype(np.float32)
    check_export(model, x, "other layers", opset=opset)


# ---------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    "layers,match",
    [
        (lambda: [L.Masking(), L.LSTM(3, return_sequences=True), L.Softmax()], "Softmax"),
        (lambda: [L.Softmax(axis=(1, 2))], "several axes"),
    ],
)
def test_refusals(layers, match):
    model = rnncore.Sequential([rnncore.Input(shape=(4, 5), batch_size=2)] + layers())
    with pytest.raises(UnsupportedModelError, match=match):
        to_onnx(model)


@pytest.mark.parametrize(
    "inner,match",
    [
        (lambda: L.LSTM(2, stateful=True), "TimeDistributed of a stateful layer"),
        (lambda: L.LSTM(2, return_state=True), "TimeDistributed of a layer with several"),
    ],
)
def test_time_distributed_refusals(inner, match):
    """TimeDistributed of a layer whose export is not one tensor per sample: refused."""
    model = rnncore.Sequential(
        [rnncore.Input(shape=(4, 5, 3), batch_size=2), L.TimeDistributed(inner())]
    )
    with pytest.raises(UnsupportedModelError, match=match):
        to_onnx(model)


# ---------------------------------------------------------------------------------------
# Functional models


def _functional_run(model, feeds, what):
    want = as_list(model.predict([feeds[t.name] for t in model.inputs]))
    proto = to_onnx(model)
    assert [o.name for o in proto.graph.output] == list(model.output_names)
    got = session(proto).run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        record(what, g, w)


@pytest.mark.parametrize("pattern", ["right_pad", "left_pad", "full_row"])
def test_functional_encoder_decoder_with_merges(rng, pattern):
    """Masked encoder states given as the decoder's initial_state, element-wise merges of
    different ranks, Concatenate of a masked and an unmasked tensor, the masked mean."""
    enc_in, dec_in = rnncore.Input((None, 3), name="enc"), rnncore.Input((None, 3), name="dec")
    _, h, c = L.LSTM(4, return_state=True)(L.Masking()(enc_in))
    seq = L.LSTM(4, return_sequences=True)(L.Masking()(dec_in), initial_state=[h, c])
    summed = L.add([L.Dense(4)(seq), L.TimeDistributed(L.Dense(4))(seq)])
    both = L.concatenate([summed, L.Dense(3)(dec_in)])
    mixed = L.average([both, L.Dense(7)(h)])  # (B, T, 7) with (B, 7): an axis inserted
    steps = L.concatenate([mixed, L.subtract([mixed, both])], axis=1)
    out = L.GlobalAveragePooling1D()(L.GRU(3, return_sequences=True)(steps))
    model = rnncore.Model([enc_in, dec_in], [out, L.Dense(2, name="head")(h)])
    set_random_weights(model, rng)
    feeds = {"enc": masked_input(rng, pattern, 4, 5), "dec": masked_input(rng, pattern, 4, 6)}
    _functional_run(model, feeds, f"functional, masked ({pattern})")


def test_functional_unmasked_merges(rng):
    a, b = rnncore.Input((6, 4), name="a"), rnncore.Input((6, 4), name="b")
    ya = L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode=None)(a)
    y = L.maximum([ya[0], ya[1]])
    y = L.multiply([y, L.minimum([L.Dense(3)(b), L.Dense(3)(a)])])
    y = L.Conv1D(2, 3, padding="causal")(y)
    model = rnncore.Model([a, b], y)
    set_random_weights(model, rng)
    feeds = {n: rng.standard_normal((3, 6, 4)).astype(np.float32) for n in ("a", "b")}
    _functional_run(model, feeds, "functional, unmasked")


def _dot_model():
    q, v = rnncore.Input((5, 4)), rnncore.Input((6, 4))
    return rnncore.Model([q, v], L.Dot(axes=2)([q, v]))


def _explicit_mask_attention_model():
    q, v = rnncore.Input((5, 4)), rnncore.Input((6, 4))
    qk, vk = rnncore.Input((5,), dtype="bool"), rnncore.Input((6,), dtype="bool")
    return rnncore.Model([q, v, qk, vk], L.Attention()([q, v], mask=[qk, vk]))


def _masked_multiply_model():
    a = rnncore.Input((5, 4))
    m = L.Masking()(a)
    return rnncore.Model(a, L.multiply([m, L.Dense(4)(m)]))


def _nested_model():
    inner = rnncore.Sequential([rnncore.Input((5, 4)), L.GRU(2)])
    a = rnncore.Input((5, 4))
    return rnncore.Model(a, inner(a))


@pytest.mark.parametrize(
    "make,match",
    [
        (_dot_model, "Dot"),
        (_explicit_mask_attention_model, "mask="),
        (_masked_multiply_model, "Multiply.*masks"),
        (_nested_model, "nested model"),
    ],
)
def test_functional_refusals(make, match):
    with pytest.raises(UnsupportedModelError, match=match):
        to_onnx(make())
