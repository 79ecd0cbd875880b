"""LayerNormalization and BatchNormalization against live Keras 3: outputs, masks and
gradients (Keras's through torch autograd) in both float dtypes; BatchNormalization at
inference (moving statistics), in training (batch statistics over the unmasked entries),
frozen, and its moving statistics after one training call; finite differences in float64;
one SGD step of a masked model with both against Keras's; save/load and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import checks_vs_keras as ck
import rnncore
from checks_vs_keras import DTYPES, MASKS, TOL, B, D, T, keras, make_mask
from rnncore import layers as L
from rnncore import optimizers
from rnncore.errors import UnsupportedArgumentError

pytestmark = pytest.mark.filterwarnings(
    # Keras 3.15's torch Variable vs NumPy 2 (Keras's issue)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    "ignore:You passed `rms_scaling=True`:UserWarning",  # deprecated in Keras, still honoured
)

#: largest differences from Keras, by layer, dtype and forward / gradients (conftest prints)
MAX_ERR: dict = {}

LN_CASES = {
    "default": {},
    "axes_1_2": {"axis": [1, 2]},
    "no_center": {"center": False, "epsilon": 0.1},
    "no_scale": {"scale": False},
    "rms_scaling": {"rms_scaling": True},
}
BN_CASES = {
    "default": {},
    "no_center_no_scale": {"center": False, "scale": False},
    "momentum_epsilon": {"momentum": 0.9, "epsilon": 0.1},
}


def _x(rng, dtype, shape=(B, T, D)):
    """Inputs with a mean and spread that differ per feature (scale * N(0, 1) + shift)."""
    shift, scale = rng.normal(0.0, 2.0, shape[-1]), rng.uniform(0.5, 3.0, shape[-1])
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def _randomize(ours, theirs, rng, shape):
    """Random weights (variances positive) for Keras's layer, copied into ours."""
    theirs.build(shape)
    weights = [
        rng.uniform(0.5, 1.5, w.shape) if "variance" in v.name else rng.normal(0, 1, w.shape)
        for v, w in zip(theirs.weights, theirs.get_weights())
    ]
    theirs.set_weights(weights)
    ours.build(shape)
    ours.set_weights(theirs.get_weights())


def _pair(name, dtype, rng, shape=(B, T, D), **kw):
    ours = getattr(L, name)(dtype=dtype, **kw)
    theirs = getattr(keras.layers, name)(dtype=dtype, **kw)
    _randomize(ours, theirs, rng, shape)
    return ours, theirs


@pytest.mark.parametrize("name", ["LayerNormalization", "BatchNormalization"])
def test_signature_matches_keras(name):
    ck.signature_matches_keras(getattr(L, name), getattr(keras.layers, name))


# ---- LayerNormalization ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LN_CASES))
def test_layer_normalization_matches_keras(case, dtype, rng):
    """Outputs and gradients; the mask passes through unchanged."""
    ours, theirs = _pair("LayerNormalization", dtype, rng, **LN_CASES[case])
    x = _x(rng, dtype)
    mask = make_mask(rng, "holes", B, T)
    ck.compare_with_keras(MAX_ERR, "LayerNormalization", ours, theirs, [x], [mask])
    assert [v.name for v in ours.weights] == [v.name for v in theirs.weights]


def test_layer_normalization_over_a_middle_axis(rng):
    """axis=1 of (batch, steps, features): each (sample, feature) over the steps, gamma of
    shape (steps,). (Keras's torch backend hands a single axis to torch's layer_norm, which
    normalises the LAST axis, so Keras itself is not the reference here.)"""
    x = _x(rng, "float64")
    layer = L.LayerNormalization(axis=1, dtype="float64", epsilon=0.01)
    layer.build(x.shape)
    gamma, beta = rng.normal(size=(T,)), rng.normal(size=(T,))
    layer.set_weights([gamma, beta])
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    want = (x - mu) / np.sqrt(var + 0.01) * gamma[:, None] + beta[:, None]
    np.testing.assert_allclose(layer(x), want, **TOL["float64"])
    ck.fd_check(layer, [x])


@pytest.mark.parametrize("case", list(LN_CASES))
def test_layer_normalization_gradients_by_finite_differences(case, rng):
    ours, _ = _pair("LayerNormalization", "float64", rng, **LN_CASES[case])
    ck.fd_check(ours, [_x(rng, "float64")])


# ---- BatchNormalization ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(BN_CASES))
def test_batch_normalization_inference_matches_keras(case, dtype, rng):
    ours, theirs = _pair("BatchNormalization", dtype, rng, **BN_CASES[case])
    x, mask = _x(rng, dtype), make_mask(rng, "holes", B, T)
    (y_k,), m_k, _, _ = ck.keras_run(theirs, [x], [mask], multi=False)
    y = ours(x, mask=mask)
    np.testing.assert_allclose(y, y_k, **TOL[dtype])
    np.testing.assert_array_equal(y._keras_mask, m_k)
    key = f"BatchNormalization inference {dtype} forward"
    MAX_ERR[key] = max(MAX_ERR.get(key, 0.0), float(np.abs(y - y_k).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", MASKS)
@pytest.mark.parametrize("case", list(BN_CASES))
def test_batch_normalization_training_matches_keras(case, pattern, dtype, rng):
    """Batch statistics over the unmasked entries: outputs and gradients (the training
    forward, and a direct call with training=True)."""
    ours, theirs = _pair("BatchNormalization", dtype, rng, **BN_CASES[case])
    x, mask = _x(rng, dtype), make_mask(rng, pattern, B, T)
    ck.compare_with_keras(
        MAX_ERR, "BatchNormalization training", ours, theirs, [x], [mask],
        keras_kw={"training": True},
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["2d", "axis_1", "frozen"])
def test_batch_normalization_other_layouts_match_keras(case, dtype, rng):
    """(batch, features) inputs; channels on axis 1; trainable=False (moving statistics in
    training, no update, as Keras)."""
    shape = (B + 4, D) if case == "2d" else (B, T, D)
    kw = {"axis": 1} if case == "axis_1" else {}
    ours, theirs = _pair("BatchNormalization", dtype, rng, shape, **kw)
    if case == "frozen":
        ours.trainable = theirs.trainable = False
    before = ours.get_weights()
    ck.compare_with_keras(
        MAX_ERR, "BatchNormalization training", ours, theirs, [_x(rng, dtype, shape)],
        keras_kw={"training": True},
    )  # fmt: skip
    if case == "frozen":
        for a, b in zip(ours.get_weights(), before):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", ["none", "left_pad", "holes"])
def test_batch_normalization_moving_statistics_after_one_training_call(pattern, dtype, rng):
    """moving = moving * momentum + batch * (1 - momentum), the batch statistics over the
    unmasked entries divided by their count + 1e-7, as Keras's after training=True."""
    ours, theirs = _pair("BatchNormalization", dtype, rng, momentum=0.8)
    x, mask = _x(rng, dtype), make_mask(rng, pattern, B, T)
    before = ours.get_weights()
    ck.keras_run(theirs, [x], [mask], multi=False, training=True)
    ours.forward_train(x, mask)
    for v, w in zip(ours.weights[2:], theirs.get_weights()[2:]):
        np.testing.assert_allclose(v.value, w, **TOL[dtype], err_msg=v.name)
        key = f"BatchNormalization {v.name} update {dtype}"
        MAX_ERR[key] = max(MAX_ERR.get(key, 0.0), float(np.abs(v.value - w).max()))
    used = x.reshape(-1, D) if mask is None else x[mask]
    count = len(used) + (0 if mask is None else 1e-7)
    mean = used.sum(0, dtype=np.float64) / count
    var = ((used - mean) ** 2).sum(0) / count
    for k, batch in ((2, mean), (3, var)):  # the batch statistics, recovered from the update
        recovered = (ours.get_weights()[k] - 0.8 * before[k]) / np.float64(0.2)
        np.testing.assert_allclose(recovered, batch, rtol=1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("pattern", ["none", "right_pad", "holes", "full_row"])
@pytest.mark.parametrize("case", list(BN_CASES) + ["frozen"])
def test_batch_normalization_gradients_by_finite_differences(case, pattern, rng):
    ours, _ = _pair("BatchNormalization", "float64", rng, **BN_CASES.get(case, {}))
    ours.trainable = case != "frozen"
    ck.fd_check(ours, [_x(rng, "float64")], [make_mask(rng, pattern, B, T)])


def test_batch_normalization_refuses_what_it_lacks(rng):
    with pytest.raises(UnsupportedArgumentError, match="renorm=True"):
        L.BatchNormalization(renorm=True)
    with pytest.raises(UnsupportedArgumentError, match="synchronized=True"):
        L.BatchNormalization(synchronized=True)
    with pytest.raises(UnsupportedArgumentError, match="gamma_regularizer"):
        L.BatchNormalization(gamma_regularizer="l2")
    with pytest.raises(UnsupportedArgumentError, match="beta_constraint"):
        L.LayerNormalization(beta_constraint="non_neg")
    layer = L.BatchNormalization()
    x = _x(rng, "float32")
    with pytest.raises(ValueError, match=r"mask must have .*\(3, 5\), got \(3, 4\)"):
        layer(x, mask=np.ones((B, D), bool))
    with pytest.raises(ValueError, match="expected 4 channels on axis -1, got inputs of shape"):
        layer(x[..., :3])
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        L.LayerNormalization(axis=3)(x)


# ---- in models, round trips ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["LayerNormalization", "BatchNormalization"])
def test_config_weights_and_pickle_round_trip(name, rng):
    kw = {"LayerNormalization": {"axis": [1, 2], "epsilon": 0.01}}.get(name, {"momentum": 0.5})
    ours, theirs = _pair(name, "float32", rng, **kw)
    ck.round_trips(ours, [_x(rng, "float32")])
    keras_config = theirs.get_config()  # as a Keras file holds it
    clone = L.LAYER_CLASSES[name].from_config(keras_config)
    assert clone.get_config()["axis"] == keras_config["axis"]


def test_masked_model_with_both_trains_one_sgd_step_as_keras(tmp_path, rng):
    """Masking -> LSTM(return_sequences) -> BatchNormalization (its batch statistics over
    the unmasked steps) -> LayerNormalization -> LSTM -> Dense: predictions, one SGD step
    (lr 1: weights move by minus their gradients; moving statistics by Keras's update), and
    save/load and pickling of the model after it."""
    x = _x(rng, "float32")
    mask = make_mask(rng, "right_pad", B, T)
    x[~mask] = 0.0
    y = rng.standard_normal((B, 2)).astype("float32")

    def layers(lib):
        return [lib.Input((T, D)), lib.layers.Masking(), lib.layers.LSTM(4, return_sequences=True),
                lib.layers.BatchNormalization(momentum=0.9), lib.layers.LayerNormalization(),
                lib.layers.LSTM(3), lib.layers.Dense(2)]  # fmt: skip

    km, ours = keras.Sequential(layers(keras)), rnncore.Sequential(layers(rnncore))
    weights = [
        rng.uniform(0.5, 1.5, w.shape) if "variance" in v.path else rng.normal(0, 0.4, w.shape)
        for v, w in zip(km.weights, km.get_weights())
    ]
    km.set_weights(weights)
    ours.set_weights(weights)
    np.testing.assert_allclose(ours.predict(x), km.predict(x, verbose=0), **TOL["float32"])
    km.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    ours.compile(optimizer=optimizers.SGD(1.0), loss="mse")
    assert ours.train_on_batch(x, y) == pytest.approx(float(km.train_on_batch(x, y)), rel=1e-5)
    for w, a, b, v in zip(weights, ours.get_weights(), km.get_weights(), km.weights):
        assert np.abs(w - b).max() > 1e-4, v.path  # every weight moved
        np.testing.assert_allclose(w - a, w - b, rtol=1e-5, atol=2e-6, err_msg=v.path)
        err = float(np.abs(a - b).max())
        MAX_ERR["model SGD step float32"] = max(MAX_ERR.get("model SGD step float32", 0.0), err)
    want = ours.predict(x)
    np.testing.assert_allclose(want, km.predict(x, verbose=0), **TOL["float32"])
    ours.save(tmp_path / "m.rnncore")
    np.testing.assert_array_equal(rnncore.load_model(tmp_path / "m.rnncore").predict(x), want)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ours)).predict(x), want)
