"""The reshaping layers (RepeatVector, Flatten, Reshape, Permute, ZeroPadding1D, Cropping1D,
UpSampling1D) against live Keras 3: outputs and output shapes in both float dtypes, masks
dropped as Keras drops them, backward by finite differences, bad shapes named, and models
built from them (an LSTM autoencoder, a chain of every one) against Keras's: predict, one SGD
step, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
import single_input_checks as checks
from rnncore import layers as L
from single_input_checks import keras

pytestmark = checks.KERAS_WARNINGS

B, T, C = 3, 6, 4
NAMES = ["RepeatVector", "Flatten", "Reshape", "Permute", "ZeroPadding1D", "Cropping1D",
         "UpSampling1D"]  # fmt: skip

#: case -> (class name, constructor kwargs, input shape)
CASES = {
    "repeat_vector": ("RepeatVector", dict(n=3), (B, C)),
    "flatten_3d": ("Flatten", {}, (B, T, C)),
    "flatten_4d_channels_first": ("Flatten", dict(data_format="channels_first"), (B, 2, 3, C)),
    "flatten_1d": ("Flatten", {}, (B,)),
    "reshape": ("Reshape", dict(target_shape=(C, T)), (B, T, C)),
    "reshape_inferred": ("Reshape", dict(target_shape=(2, -1, 3)), (B, T, C)),
    "permute_2d": ("Permute", dict(dims=(2, 1)), (B, T, C)),
    "permute_3d": ("Permute", dict(dims=(3, 1, 2)), (B, 2, 3, C)),
    "zero_padding": ("ZeroPadding1D", dict(padding=2), (B, T, C)),
    "zero_padding_1_3_first": (
        "ZeroPadding1D",
        dict(padding=(1, 3), data_format="channels_first"),
        (B, C, T),
    ),
    "cropping": ("Cropping1D", {}, (B, T, C)),
    "cropping_0_3": ("Cropping1D", dict(cropping=(0, 3)), (B, T, C)),
    "cropping_2": ("Cropping1D", dict(cropping=2), (B, T, C)),
    "up_sampling": ("UpSampling1D", {}, (B, T, C)),
    "up_sampling_3": ("UpSampling1D", dict(size=3), (B, T, C)),
}


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_keras(name):
    checks.signature_matches_keras(getattr(L, name), getattr(keras.layers, name))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_keras(case, dtype, rng):
    name, kw, shape = CASES[case]
    ours = getattr(L, name)(**kw, dtype=dtype)
    theirs = getattr(keras.layers, name)(**kw, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    assert checks.compare_with_keras(ours, theirs, x) == 0.0  # values moved, not computed
    k_shape = tuple(theirs.compute_output_shape((None,) + shape[1:]))
    assert ours.compute_output_shape((None,) + shape[1:]) == k_shape
    # a mask reaching them is dropped, as in Keras (which warns)
    if len(shape) == 3:
        checks.compare_with_keras(ours, theirs, x, checks.make_mask(rng, "right_pad", *shape[:2]))
    config = ours.get_config()
    assert getattr(L, name).from_config(config).get_config() == config
    from_keras = getattr(L, name).from_config(theirs.get_config()).get_config()
    assert from_keras == {**config, "name": theirs.name}


@pytest.mark.parametrize("case", list(CASES))
def test_gradients(case, rng):
    name, kw, shape = CASES[case]
    layer = getattr(L, name)(**kw, dtype="float64")
    assert max(checks.gradient_errors(layer, rng.standard_normal(shape))) < 1e-8


def test_unknown_steps_in_output_shapes():
    assert L.Flatten().compute_output_shape((None, None, C)) == (None, None)
    assert L.Reshape((-1, 2)).compute_output_shape((None, None, C)) == (None, None, 2)
    assert L.UpSampling1D(2).compute_output_shape((None, None, C)) == (None, None, C)
    assert L.Cropping1D(1).compute_output_shape((None, None, C)) == (None, None, C)


def test_bad_shapes_and_arguments_named(rng):
    x = rng.standard_normal((B, T, C))
    with pytest.raises(ValueError, match=r"cannot reshape an input of shape \(3, 6, 4\)"):
        L.Reshape((5, 5))(x)
    with pytest.raises(ValueError, match="at most one -1"):
        L.Reshape((-1, -1))
    with pytest.raises(ValueError, match="permutation of 1..2"):
        L.Permute((0, 1))
    with pytest.raises(ValueError, match="expected a 3-D input"):
        L.Permute((2, 1))(x[:, :, :, None])
    with pytest.raises(ValueError, match=r"cropping=\(3, 3\) must leave at least one step"):
        L.Cropping1D(3)(x)
    with pytest.raises(ValueError, match="expected a 2-D input"):
        L.RepeatVector(2)(x)
    with pytest.raises(ValueError, match="RepeatVector: n must be a positive integer"):
        L.RepeatVector(0)
    with pytest.raises(ValueError, match="padding .* must be a positive integer"):
        L.ZeroPadding1D(-1)


def test_lstm_autoencoder_matches_keras(rng, tmp_path):
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    model = checks.one_sgd_step(
        [keras.Input((T, C)), keras.layers.LSTM(3), keras.layers.RepeatVector(T),
         keras.layers.LSTM(2, return_sequences=True),
         keras.layers.TimeDistributed(keras.layers.Dense(C))],
        [rnncore.Input((T, C)), L.LSTM(3), L.RepeatVector(T), L.LSTM(2, return_sequences=True),
         L.TimeDistributed(L.Dense(C))],
        x, x,
    )  # fmt: skip
    checks.round_trips(model, x, tmp_path)


def test_chain_of_every_reshaping_layer_matches_keras(rng, tmp_path):
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y = rng.standard_normal((B, 1)).astype(np.float32)

    def chain(ns, inp):
        return [
            inp((T, C)), ns.ZeroPadding1D((1, 2)), ns.Cropping1D((2, 1)), ns.UpSampling1D(2),
            ns.Permute((2, 1)), ns.Flatten(), ns.Dense(6), ns.Reshape((3, -1)),
            ns.GRU(2), ns.Dense(1),
        ]  # fmt: skip

    model = checks.one_sgd_step(chain(keras.layers, keras.Input), chain(L, rnncore.Input), x, y)
    checks.round_trips(model, x, tmp_path)
