"""SpatialDropout1D and GaussianNoise: Keras's signatures and configs, the identity at
inference (mask passed through, as Keras's), the training noise's structure and scale, its
seeds, backward by finite differences with the noise held fixed, and fit through them."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
import single_input_checks as checks
from rnncore import layers as L
from single_input_checks import keras

pytestmark = checks.KERAS_WARNINGS

B, T, C = 4, 6, 5


@pytest.mark.parametrize("name", ["SpatialDropout1D", "GaussianNoise"])
def test_signature_and_config_match_keras(name):
    checks.signature_matches_keras(getattr(L, name), getattr(keras.layers, name))
    theirs = getattr(keras.layers, name)(0.3, seed=4, name="noise")
    ours = getattr(L, name).from_config(theirs.get_config())
    assert (ours.name, ours.seed) == ("noise", 4)
    assert getattr(L, name).from_config(ours.get_config()).get_config() == ours.get_config()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pattern", ["none", "left_pad", "holes"])
@pytest.mark.parametrize("name", ["SpatialDropout1D", "GaussianNoise"])
def test_identity_at_inference_with_the_mask_passed_on(name, pattern, dtype, rng):
    x = rng.standard_normal((B, T, C)).astype(dtype)
    mask = checks.make_mask(rng, pattern, B, T)
    ours = getattr(L, name)(0.4, dtype=dtype)
    theirs = getattr(keras.layers, name)(0.4, dtype=dtype)
    assert checks.compare_with_keras(ours, theirs, x, mask) == 0.0


def test_spatial_dropout_drops_whole_channels(rng):
    x = rng.standard_normal((64, T, C)) + 3.0  # no zeros of its own
    y = L.SpatialDropout1D(0.5, seed=1, dtype="float64")(x, training=True)
    kept = y != 0
    assert np.all(kept == kept[:, :1])  # one draw per (sample, channel), for every step
    assert 0.35 < kept.mean() < 0.65
    np.testing.assert_allclose(y[kept], 2.0 * x[kept])  # kept channels scaled by 1/(1-rate)


def test_gaussian_noise_scale_and_seeds(rng):
    x = rng.standard_normal((200, T, C))
    noise = L.GaussianNoise(0.3, seed=2, dtype="float64")(x, training=True) - x
    assert abs(noise.std() - 0.3) < 0.01 and abs(noise.mean()) < 0.01
    again = L.GaussianNoise(0.3, seed=2, dtype="float64")(x, training=True) - x
    np.testing.assert_array_equal(noise, again)  # a seed fixes the draws


@pytest.mark.parametrize("name", ["SpatialDropout1D", "GaussianNoise"])
def test_gradients_with_the_noise_held(name, rng):
    layer = getattr(L, name)(0.4, dtype="float64")
    assert max(checks.gradient_errors(layer, rng.standard_normal((B, T, C)))) < 1e-8


def test_bad_arguments_named(rng):
    with pytest.raises(ValueError, match=r"stddev must be in \[0, 1\]"):
        L.GaussianNoise(1.5)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        L.SpatialDropout1D(2.0)
    with pytest.raises(ValueError, match="expected a 3-D input"):
        L.SpatialDropout1D(0.5)(rng.standard_normal((B, C)), training=True)


def test_fit_through_the_noise_and_predict_without_it(rng, tmp_path):
    x = rng.standard_normal((16, T, C)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    layers = [L.SpatialDropout1D(0.2), L.GaussianNoise(0.1), L.LSTM(3), L.Dense(1)]
    model = rnncore.Sequential([rnncore.Input((T, C))] + layers)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    np.testing.assert_array_equal(model.predict(x), model.predict(x))
    model.save(tmp_path / "m.rnncore")
    loaded = rnncore.load_model(tmp_path / "m.rnncore")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
