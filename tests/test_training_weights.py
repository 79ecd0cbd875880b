"""sample_weight, class_weight and weighted_metrics against real Keras 3 (torch backend):
weighted loss values and gradients, the reductions, fit / evaluate / train_on_batch /
test_on_batch of a model with the same weights, validation data with weights, and the
refusals."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import rnncore  # noqa: E402
from rnncore import losses, optimizers  # noqa: E402
from rnncore.layers import GRU, LSTM, Dense, SimpleRNN  # noqa: E402
from support import LOSS_CASES  # noqa: E402

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

KERAS_CLASS = {
    "mse": "MeanSquaredError",
    "mae": "MeanAbsoluteError",
    "binary_crossentropy": "BinaryCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
}


#: Keras's losses compute in floatx (float64 below) except the final division, which its torch
#: backend's divide_no_nan rounds to float32: values and gradients agree to float32 rounding
F32_DIVISION = dict(rtol=1.2e-7, atol=1e-15)


def _loss_pair(name, from_logits, reduction="sum_over_batch_size"):
    kw = {"reduction": reduction}
    if name not in ("mse", "mae"):
        kw["from_logits"] = from_logits
    cls = KERAS_CLASS[name]
    return getattr(losses, cls)(**kw), getattr(keras.losses, cls)(**kw)


def _loss_data(name, from_logits, shape, rng):
    """Targets and predictions for one loss: probabilities kept inside Keras's clipping."""
    k = shape[-1]
    z = rng.standard_normal(shape)
    kind = name.split("_")[0]
    y = {
        "sparse": lambda: rng.integers(0, k, shape[:-1]),
        "categorical": lambda: np.eye(k)[rng.integers(0, k, shape[:-1])],
        "binary": lambda: (rng.random(shape) < 0.5).astype(np.float64),
    }.get(kind, lambda: rng.standard_normal(shape))()
    if from_logits or kind in ("mse", "mae"):
        return y, z
    return y, (
        1 / (1 + np.exp(-z)) if kind == "binary" else np.exp(z) / np.exp(z).sum(-1)[..., None]
    )


def _weights(kind, shape, rng):
    return {
        "per_sample": lambda: rng.random(shape[0]) * 2,
        "column": lambda: rng.random((shape[0], 1)) * 2,
        "per_timestep": lambda: rng.random(shape[:2]) * 2,
    }[kind]()


def _keras_value_and_gradient(loss, y, p, sw):
    pt = torch.tensor(p, requires_grad=True)
    value = loss(torch.tensor(y), pt, sample_weight=None if sw is None else torch.tensor(sw))
    value.backward()
    return float(value.detach()), pt.grad.numpy()


WEIGHT_CASES = [
    ((5, 3), "per_sample"),
    ((5, 3), "column"),
    ((4, 6, 3), "column"),
    ((4, 6, 3), "per_timestep"),
]


@pytest.mark.parametrize(
    "shape,kind", WEIGHT_CASES, ids=[f"{len(s)}d-{k}" for s, k in WEIGHT_CASES]
)
@pytest.mark.parametrize(
    "name,from_logits", LOSS_CASES, ids=[f"{n}{'-logits' if lg else ''}" for n, lg in LOSS_CASES]
)
def test_weighted_loss_and_gradient_match_keras(name, from_logits, shape, kind, rng,
                                                keras_float64):  # fmt: skip
    """sum(w * loss) / (number of loss values), and its gradient (Keras's by autograd)."""
    ours, theirs = _loss_pair(name, from_logits)
    y, p = _loss_data(name, from_logits, shape, rng)
    sw = _weights(kind, shape, rng)
    value, grad = ours.value_and_gradient(y, p, sw)
    k_value, k_grad = _keras_value_and_gradient(theirs, y, p, sw)
    np.testing.assert_allclose(value, k_value, **F32_DIVISION)
    assert ours(y, p, sw) == value
    np.testing.assert_allclose(grad, k_grad, **F32_DIVISION)


@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_with_sample_weight"])
@pytest.mark.parametrize("kind", ["column", "per_timestep", None])
def test_other_reductions_match_keras(reduction, kind, rng, keras_float64):
    ours, theirs = _loss_pair("categorical_crossentropy", True, reduction)
    shape = (4, 6, 3)
    y, p = _loss_data("categorical_crossentropy", True, shape, rng)
    sw = None if kind is None else _weights(kind, shape, rng)
    value, grad = ours.value_and_gradient(y, p, sw)
    k_value, k_grad = _keras_value_and_gradient(theirs, y, p, sw)
    np.testing.assert_allclose(value, k_value, **F32_DIVISION)
    np.testing.assert_allclose(grad, k_grad, **F32_DIVISION)
    assert ours.get_config()["reduction"] == reduction


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
def test_mask_folds_into_the_weights_as_keras(reduction, rng, keras_float64):
    """A mask on the loss values (Keras: the output's mask) with and without weights. (Keras
    fails on (B, 1) weights with a (B, T) mask, an in-place product that cannot broadcast:
    rnncore weighs each sample's timesteps, as (B, T) weights repeating them.)"""
    values = rng.random((4, 6))
    mask = rng.random((4, 6)) < 0.6
    column = rng.random((4, 1))
    for sw in (None, rng.random((4, 6)), np.repeat(column, 6, axis=1)):
        ours, _ = losses.reduce_weighted(values, sw, mask, reduction)
        theirs = keras.src.losses.loss.reduce_weighted_values(
            values, sample_weight=sw, mask=mask, reduction=reduction
        )
        np.testing.assert_allclose(ours, float(theirs), **F32_DIVISION)
    assert losses.reduce_weighted(values, column, mask, reduction)[0] == ours


def test_per_sample_weights_on_a_sequence_loss_weigh_each_sample(rng):
    """(B,) weights on (B, T) loss values: one weight per sample, as (B, 1) (Keras 3 fails on
    this shape: its broadcasting aligns the weights with the timesteps)."""
    loss = losses.MeanSquaredError()
    y, p = rng.standard_normal((4, 6, 2)), rng.standard_normal((4, 6, 2))
    sw = rng.random(4)
    a = loss.value_and_gradient(y, p, sw)
    b = loss.value_and_gradient(y, p, sw[:, None])
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


# ---- models -----------------------------------------------------------------------------

B, T, D = 12, 5, 3


def _models(rng, cell, units_out, activation=None, sequences=False):
    """The same recurrent -> Dense model in Keras and rnncore, weights from the test's seed."""
    k_cell = getattr(keras.layers, cell)(4, return_sequences=sequences)
    km = keras.Sequential(
        [keras.Input((T, D)), k_cell, keras.layers.Dense(units_out, activation=activation)]
    )
    r_cell = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}[cell]
    ours = rnncore.Sequential(
        [rnncore.Input((T, D)), r_cell(4, return_sequences=sequences),
         Dense(units_out, activation=activation)]
    )  # fmt: skip
    weights = [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in km.get_weights()]
    km.set_weights(weights)
    ours.set_weights(weights)
    return km, ours


def _compile_both(km, ours, loss, opt, **kw):
    km.compile(optimizer=getattr(keras.optimizers, opt[0])(**opt[1]), loss=loss, **kw)
    ours.compile(optimizer=getattr(optimizers, opt[0])(**opt[1]), loss=loss, **kw)


def _assert_same_weights(ours, km, atol=2e-5):
    for a, b in zip(ours.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def _assert_same_logs(ours, theirs, rtol=2e-5):
    assert set(ours) == set(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=1e-6, err_msg=key)


def _classification(rng, n=B):
    x = rng.standard_normal((n, T, D)).astype(np.float32)
    return x, rng.integers(0, 3, n)


FIT_CASES = {
    # (cell, weighting): sample weights or class weights on a 3-class classifier
    "lstm-sample_weight": ("LSTM", "sample_weight"),
    "gru-class_weight": ("GRU", "class_weight"),
    "simple_rnn-column_weights": ("SimpleRNN", "column"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_weighted_fit_matches_keras(case, rng):
    """Three epochs of batches of 5 (the last one short), no shuffling, SGD with momentum:
    the History (loss, accuracy, weighted accuracy) and every weight as Keras's (measured:
    within 1.5e-7 absolute, float32; asserted with the shared limits of _assert_same_weights,
    atol 2e-5 + rtol 1e-4)."""
    cell, how = FIT_CASES[case]
    km, ours = _models(rng, cell, 3, "softmax")
    x, y = _classification(rng)
    kw = {
        "sample_weight": {"sample_weight": rng.random(B) * 2},
        "column": {"sample_weight": rng.random((B, 1)) * 2},
        "class_weight": {"class_weight": {0: 0.3, 2: 2.5}},
    }[how]
    opt = ("SGD", {"learning_rate": 0.2, "momentum": 0.5})
    _compile_both(km, ours, "sparse_categorical_crossentropy", opt, metrics=["accuracy"],
                  weighted_metrics=["accuracy"])  # fmt: skip
    fit = dict(batch_size=5, epochs=3, shuffle=False, verbose=0, **kw)
    k_hist = km.fit(x, y, **fit).history
    r_hist = ours.fit(x, y, **fit).history
    _assert_same_logs(r_hist, k_hist)
    _assert_same_weights(ours, km)


def test_fit_with_per_timestep_weights_matches_keras(rng):
    """A sequence output (return_sequences) with (B, T) weights, Adam and mse."""
    km, ours = _models(rng, "LSTM", 2, sequences=True)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    y = rng.standard_normal((B, T, 2)).astype(np.float32)
    sw = (rng.random((B, T)) < 0.7) * rng.random((B, T))  # zeros too: timesteps left out
    _compile_both(km, ours, "mse", ("Adam", {"learning_rate": 0.01}), weighted_metrics=["mae"])
    fit = dict(batch_size=4, epochs=2, shuffle=False, verbose=0, sample_weight=sw)
    _assert_same_logs(ours.fit(x, y, **fit).history, km.fit(x, y, **fit).history)
    _assert_same_weights(ours, km)


def test_validation_data_and_split_with_weights_match_keras(rng):
    """validation_data=(x, y, sample_weight); validation_split splits sample_weight; with
    class_weight the held-out part is not weighted (Keras)."""
    km, ours = _models(rng, "GRU", 3, "softmax")
    x, y = _classification(rng, 20)
    xv, yv = _classification(rng, 7)
    sw, swv = rng.random(20) * 2, rng.random(7) * 2
    _compile_both(km, ours, "sparse_categorical_crossentropy", ("SGD", {"learning_rate": 0.1}),
                  metrics=["accuracy"], weighted_metrics=["accuracy"])  # fmt: skip
    fit = dict(batch_size=6, epochs=2, shuffle=False, verbose=0)
    for extra in (
        {"validation_data": (xv, yv, swv), "sample_weight": sw},
        {"validation_split": 0.3, "sample_weight": sw},
        {"validation_split": 0.3, "class_weight": {1: 3.0}},
    ):
        _assert_same_logs(ours.fit(x, y, **fit, **extra).history,
                          km.fit(x, y, **fit, **extra).history)  # fmt: skip
        _assert_same_weights(ours, km)


def test_weighted_evaluate_matches_keras(rng):
    """evaluate with sample weights: the weighted loss, the plain and the weighted metrics
    (``weighted_`` prefix when a name is taken), over uneven batches."""
    km, ours = _models(rng, "LSTM", 2)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    y = rng.standard_normal((B, 2)).astype(np.float32)
    sw = rng.random(B) * 3
    _compile_both(km, ours, "mae", ("SGD", {}), metrics=["mse", "mae"],
                  weighted_metrics=["mse"])  # fmt: skip
    for batch_size in (5, B):
        theirs = km.evaluate(x, y, sample_weight=sw, batch_size=batch_size, verbose=0,
                             return_dict=True)  # fmt: skip
        got = ours.evaluate(x, y, sample_weight=sw, batch_size=batch_size, verbose=0,
                            return_dict=True)  # fmt: skip
        _assert_same_logs(got, theirs, rtol=1e-5)
    assert "weighted_mse" in got
    # without weights, the weighted metrics equal the plain ones (Keras: weights of 1)
    plain = ours.evaluate(x, y, verbose=0, return_dict=True)
    assert plain["weighted_mse"] == pytest.approx(plain["mse"])
    _assert_same_logs(plain, km.evaluate(x, y, verbose=0, return_dict=True), rtol=1e-5)


def test_train_and_test_on_batch_with_weights_match_keras(rng):
    km, ours = _models(rng, "SimpleRNN", 1, "sigmoid")
    x = rng.standard_normal((8, T, D)).astype(np.float32)
    y = (rng.random((8, 1)) < 0.5).astype(np.float32)
    _compile_both(km, ours, "binary_crossentropy", ("Adam", {"learning_rate": 0.05}),
                  weighted_metrics=["accuracy"])  # fmt: skip
    sw = rng.random(8)
    for kw in ({"class_weight": {0: 0.2, 1: 4.0}}, {"sample_weight": sw}, {"class_weight": {1: 2}}):
        theirs = km.train_on_batch(x, y, return_dict=True, **kw)
        _assert_same_logs(ours.train_on_batch(x, y, return_dict=True, **kw), theirs)
    _assert_same_weights(ours, km)
    theirs = km.test_on_batch(x, y, sample_weight=sw, return_dict=True)
    _assert_same_logs(ours.test_on_batch(x, y, sample_weight=sw, return_dict=True), theirs)


def test_class_weights_follow_keras_rule(rng):
    from keras.src.trainers.data_adapters.data_adapter_utils import (
        class_weight_to_sample_weights as keras_rule,
    )

    cw = {0: 0.5, 2: 3.0, 7: 9.0}
    for y in (
        rng.integers(0, 4, 9),  # sparse labels
        rng.integers(0, 4, (9, 1)).astype(np.float32),  # a column of labels
        np.eye(4)[rng.integers(0, 4, 9)],  # one-hot
        rng.random((9, 1)) * 2.4,  # rounded, as Keras
    ):
        np.testing.assert_allclose(
            losses.class_weight_to_sample_weights(y, cw), keras_rule(y, cw), rtol=1e-7
        )


def test_bad_weights_are_refused_before_any_update(rng):
    km, ours = _models(rng, "LSTM", 3, "softmax")
    del km
    x, y = _classification(rng)
    ours.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    w0 = ours.get_weights()
    bad = [
        (dict(sample_weight=np.ones(B), class_weight={0: 2.0}), ValueError, "not both"),
        (dict(sample_weight=np.ones(B - 1)), ValueError, "one entry per sample"),
        (dict(sample_weight=np.ones((B, 2))), ValueError, "does not fit"),
        (dict(sample_weight=np.full(B, np.nan)), ValueError, "finite"),
        (dict(sample_weight=np.array(["a"] * B)), TypeError, "numbers"),
        (dict(class_weight=[1.0, 2.0]), TypeError, "dict"),
        (dict(sample_weight=np.ones(B), validation_data=(x, y, np.ones(3))), ValueError,
         "validation_data"),
        (dict(validation_data=(x, y, np.ones(B), 1)), ValueError, "validation_data"),
    ]  # fmt: skip
    for kw, err, match in bad:
        with pytest.raises(err, match=match):
            ours.fit(x, y, epochs=1, verbose=0, **kw)
    with pytest.raises(ValueError, match="not both"):
        ours.train_on_batch(x, y, sample_weight=np.ones(B), class_weight={0: 1.0})
    with pytest.raises(ValueError, match="one entry per sample"):
        ours.evaluate(x, y, sample_weight=np.ones(3), verbose=0)
    for a, b in zip(w0, ours.get_weights()):
        np.testing.assert_array_equal(a, b)
    seq = rnncore.Sequential([rnncore.Input((T, D)), LSTM(4, return_sequences=True), Dense(3)])
    seq.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="one class per sample"):
        seq.fit(x, rng.integers(0, 3, (B, T)), class_weight={0: 2.0}, verbose=0)
    y_nan = y.astype(np.float64)
    y_nan[0] = np.nan  # no class: refused (a NaN converted to an integer varies by CPU)
    with pytest.raises(ValueError, match="integer class labels"):
        ours.fit(x, y_nan, class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="NaN or inf, which name no class"):
        losses.class_weight_to_sample_weights(y_nan, {0: 2.0})
