"""Conv1D and the 1-D pooling layers against live Keras 3: outputs for each padding,
stride, dilation, group count and data format in both float dtypes, masks (dropped, or
averaged over by GlobalAveragePooling1D: left and right padding, holes), backward by finite
differences, and Conv1D -> LSTM -> Dense and pooling models against Keras's (predict, one SGD
step, save/load)."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
import single_input_checks as checks
from rnncore import layers as L
from rnncore.errors import UnsupportedArgumentError
from single_input_checks import keras

pytestmark = checks.KERAS_WARNINGS

B, T, C = 3, 10, 4
DTYPES = ["float32", "float64"]

CONV_CASES = {
    "valid": dict(filters=5, kernel_size=3),
    "same_stride2": dict(filters=5, kernel_size=4, strides=2, padding="same"),
    "same_dilated": dict(filters=3, kernel_size=3, padding="same", dilation_rate=2),
    "causal_dilated_relu": dict(
        filters=4, kernel_size=2, padding="causal", dilation_rate=3, activation="relu"
    ),
    "causal_stride3_no_bias": dict(
        filters=2, kernel_size=3, strides=3, padding="causal", use_bias=False
    ),
    "groups2_tanh": dict(filters=6, kernel_size=3, groups=2, activation="tanh"),
    "depthwise_groups4": dict(filters=4, kernel_size=2, groups=4, padding="same"),
    "channels_first": dict(filters=3, kernel_size=3, strides=2, data_format="channels_first"),
    "kernel1_softmax": dict(filters=3, kernel_size=1, activation="softmax"),
}

POOL_CASES = {
    "max_default": ("MaxPooling1D", {}),
    "max_3_2_same": ("MaxPooling1D", dict(pool_size=3, strides=2, padding="same")),
    "max_4_1_same_first": (
        "MaxPooling1D",
        dict(pool_size=4, strides=1, padding="same", data_format="channels_first"),
    ),
    "avg_3": ("AveragePooling1D", dict(pool_size=3)),
    "avg_3_1_same": ("AveragePooling1D", dict(pool_size=3, strides=1, padding="same")),
    "avg_2_same": ("AveragePooling1D", dict(pool_size=2, padding="same")),
    "avg_2_3_valid_first": (
        "AveragePooling1D",
        dict(pool_size=2, strides=3, data_format="channels_first"),
    ),
    "global_avg": ("GlobalAveragePooling1D", {}),
    "global_avg_keepdims_first": (
        "GlobalAveragePooling1D",
        dict(keepdims=True, data_format="channels_first"),
    ),
    "global_max": ("GlobalMaxPooling1D", {}),
    "global_max_keepdims": ("GlobalMaxPooling1D", dict(keepdims=True)),
}


def _x(rng, kw, steps=T, dtype="float64"):
    x = rng.standard_normal((B, steps, C)).astype(dtype)
    return x.transpose(0, 2, 1).copy() if kw.get("data_format") == "channels_first" else x


@pytest.mark.parametrize(
    "name",
    ["Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling1D"],
)
def test_signature_matches_keras(name):
    checks.signature_matches_keras(getattr(L, name), getattr(keras.layers, name))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", [T, T + 1], ids=["even", "odd"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv1d_matches_keras(case, steps, dtype, rng):
    kw = CONV_CASES[case]
    ours, theirs = L.Conv1D(**kw, dtype=dtype), keras.layers.Conv1D(**kw, dtype=dtype)
    x = _x(rng, kw, steps, dtype)
    theirs.build(x.shape)
    theirs.set_weights([rng.standard_normal(w.shape) for w in theirs.get_weights()])
    checks.compare_with_keras(ours, theirs, x)
    assert ours.compute_output_shape(x.shape) == theirs.compute_output_shape(x.shape)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv1d_gradients(case, rng):
    kw = CONV_CASES[case]
    layer = L.Conv1D(**kw, dtype="float64")
    x = _x(rng, kw)
    layer.build(x.shape)
    layer.set_weights([rng.standard_normal(w.shape) for w in layer.get_weights()])
    assert max(checks.gradient_errors(layer, x)) < 1e-7


@pytest.mark.parametrize("pattern", ["right_pad", "holes"])
def test_conv1d_and_pooling_drop_the_mask_as_keras(pattern, rng):
    x = _x(rng, {}, dtype="float32")
    mask = checks.make_mask(rng, pattern, B, T)
    for ours, theirs in [
        (L.Conv1D(2, 3, padding="same"), keras.layers.Conv1D(2, 3, padding="same")),
        (L.MaxPooling1D(), keras.layers.MaxPooling1D()),
        (L.GlobalMaxPooling1D(), keras.layers.GlobalMaxPooling1D()),
    ]:
        if isinstance(ours, L.Conv1D):
            theirs.build(x.shape)
        checks.compare_with_keras(ours, theirs, x, mask)  # masked steps count; no output mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", [T, T + 1], ids=["even", "odd"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_matches_keras(case, steps, dtype, rng):
    name, kw = POOL_CASES[case]
    ours = getattr(L, name)(**kw, dtype=dtype)
    theirs = getattr(keras.layers, name)(**kw, dtype=dtype)
    x = _x(rng, kw, steps, dtype)
    # Keras's torch backend takes torch.mean in float32 for GlobalAveragePooling1D
    tol = checks.TOL["float32"] if name == "GlobalAveragePooling1D" else checks.TOL[dtype]
    checks.compare_with_keras(ours, theirs, x, tol=tol)
    assert ours.compute_output_shape(x.shape) == tuple(theirs.compute_output_shape(x.shape))
    if name == "GlobalAveragePooling1D":  # float64: against NumPy
        axis = 2 if kw.get("data_format") == "channels_first" else 1
        want = x.mean(axis=axis, keepdims=kw.get("keepdims", False))
        np.testing.assert_allclose(ours(x), want, **checks.TOL[dtype])


def test_average_pooling_same_excludes_the_padding(rng):
    """Pool 3, stride 2, 10 steps: one step of padding after; the last window averages its
    two real steps (TensorFlow's and JAX's rule; Keras's torch backend repeats the edge)."""
    x = rng.standard_normal((B, T, C))
    y = L.AveragePooling1D(3, strides=2, padding="same", dtype="float64")(x)
    assert y.shape == (B, 5, C)
    np.testing.assert_allclose(y[:, :4], (x[:, 0:8:2] + x[:, 1:9:2] + x[:, 2:10:2]) / 3)
    np.testing.assert_allclose(y[:, 4], (x[:, 8] + x[:, 9]) / 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", ["right_pad", "left_pad", "holes"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling_averages_unmasked_steps(pattern, keepdims, dtype, rng):
    x = _x(rng, {}, dtype=dtype)
    mask = checks.make_mask(rng, pattern, B, T)
    ours = L.GlobalAveragePooling1D(keepdims=keepdims, dtype=dtype)
    theirs = keras.layers.GlobalAveragePooling1D(keepdims=keepdims, dtype=dtype)
    checks.compare_with_keras(ours, theirs, x, mask, tol=checks.TOL["float32"])  # no output mask
    m = mask[:, :, None]
    want = (x * m).sum(axis=1, keepdims=keepdims) / m.sum(axis=1, keepdims=keepdims)
    np.testing.assert_allclose(ours(x, mask=mask), want, **checks.TOL[dtype])
    layer = L.GlobalAveragePooling1D(keepdims=keepdims, dtype="float64")
    assert max(checks.gradient_errors(layer, x, mask)) < 1e-7


GRADIENT_CASES = {
    **POOL_CASES,
    "avg_3_2_same": ("AveragePooling1D", dict(pool_size=3, strides=2, padding="same")),
}


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_pooling_gradients(case, rng):
    name, kw = GRADIENT_CASES[case]
    layer = getattr(L, name)(**kw, dtype="float64")
    assert max(checks.gradient_errors(layer, _x(rng, kw))) < 1e-7


def test_bad_input_and_arguments_named(rng):
    x = rng.standard_normal((B, T, C))
    layer = L.Conv1D(2, 3)
    layer(x)
    want = r"expected input of shape \(batch, steps, channels\) with 4 channels, got \(3, 10, 5\)"
    with pytest.raises(ValueError, match=want):
        layer(rng.standard_normal((B, T, 5)))
    with pytest.raises(ValueError, match="output would have -1 steps"):
        L.Conv1D(2, 12)(x)
    with pytest.raises(ValueError, match="divisible by groups=3"):
        L.Conv1D(6, 3, groups=3)(x)
    with pytest.raises(ValueError, match="strides > 1 is not supported with dilation_rate"):
        L.Conv1D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="padding must be one of"):
        L.MaxPooling1D(padding="causal")
    with pytest.raises(ValueError, match="expected a 3-D input"):
        L.GlobalMaxPooling1D()(x[0])
    with pytest.raises(UnsupportedArgumentError, match="kernel_regularizer"):
        L.Conv1D(2, 3, kernel_regularizer="l2")
    with pytest.raises(UnsupportedArgumentError, match="lora_rank"):
        L.Conv1D(2, 3, lora_rank=2)


def test_config_from_keras_round_trips():
    theirs = keras.layers.Conv1D(4, 3, strides=1, padding="causal", dilation_rate=2, name="c")
    ours = L.Conv1D.from_config(theirs.get_config())
    assert (ours.kernel_size, ours.padding, ours.dilation_rate) == ((3,), "causal", (2,))
    for name, kw in POOL_CASES.values():
        ours = getattr(L, name).from_config(getattr(keras.layers, name)(**kw).get_config())
        assert getattr(L, name).from_config(ours.get_config()).get_config() == ours.get_config()


def test_conv1d_lstm_dense_matches_keras(rng, tmp_path):
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = rng.standard_normal((B, 2)).astype(np.float32)
    model = checks.one_sgd_step(
        [keras.Input((T, C)), keras.layers.Conv1D(5, 3, padding="causal", activation="relu"),
         keras.layers.LSTM(3), keras.layers.Dense(2)],
        [rnncore.Input((T, C)), L.Conv1D(5, 3, padding="causal", activation="relu"),
         L.LSTM(3), L.Dense(2)],
        x, y,
    )  # fmt: skip
    checks.round_trips(model, x, tmp_path)


def test_conv_pooling_stack_matches_keras(rng, tmp_path):
    x = rng.standard_normal((B, T + 1, C)).astype(np.float32)
    y = rng.standard_normal((B, 2)).astype(np.float32)
    model = checks.one_sgd_step(
        [keras.Input((T + 1, C)), keras.layers.Conv1D(6, 3, strides=2, padding="same",
                                                      groups=2),
         keras.layers.MaxPooling1D(2, padding="same"), keras.layers.AveragePooling1D(2, 1),
         keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(2)],
        [rnncore.Input((T + 1, C)), L.Conv1D(6, 3, strides=2, padding="same", groups=2),
         L.MaxPooling1D(2, padding="same"), L.AveragePooling1D(2, 1), L.GlobalMaxPooling1D(),
         L.Dense(2)],
        x, y,
    )  # fmt: skip
    checks.round_trips(model, x, tmp_path)


def test_masked_mean_of_embeddings_matches_keras(rng):
    ids = rng.integers(1, 9, size=(B, T)).astype(np.int32)
    ids[~checks.make_mask(rng, "holes", B, T)] = 0
    y = rng.standard_normal((B, 1)).astype(np.float32)
    checks.one_sgd_step(
        [keras.Input((T,), dtype="int32"), keras.layers.Embedding(9, 4, mask_zero=True),
         keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)],
        [rnncore.Input((T,), dtype="int32"), L.Embedding(9, 4, mask_zero=True),
         L.GlobalAveragePooling1D(), L.Dense(1)],
        ids, y,
    )  # fmt: skip
