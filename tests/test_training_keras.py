"""Training pieces against real Keras 3 (torch backend): optimizer trajectories, loss
values and reductions, and one whole training step of a model with the same weights."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import losses, optimizers  # noqa: E402
from rnncore.layers import LSTM, Bidirectional, Dense, Variable  # noqa: E402
from support import LOSS_CASES  # noqa: E402

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

OPTIMIZERS = {
    "sgd": ({}, {}),
    "sgd_nesterov": ({"learning_rate": 0.1, "momentum": 0.9, "nesterov": True},) * 2,
    "adam": ({"learning_rate": 0.01},) * 2,
    "adam_amsgrad_clipnorm": ({"learning_rate": 0.01, "amsgrad": True, "clipnorm": 0.5},) * 2,
    "rmsprop": ({},) * 2,
    "rmsprop_centered_momentum_clipvalue": (
        {"learning_rate": 0.01, "momentum": 0.5, "centered": True, "clipvalue": 0.3},
    )
    * 2,
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_trajectory_matches_keras(name, rng):
    ours_kw, keras_kw = OPTIMIZERS[name]
    cls = name.split("_")[0]
    ours = optimizers.get(cls).__class__(**ours_kw)
    theirs = {
        "sgd": keras.optimizers.SGD,
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
    }[cls](**keras_kw)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    v = Variable(w0.copy(), "w", "w")
    kv = keras.Variable(w0.copy())
    for _ in range(5):
        g = rng.standard_normal((4, 3)).astype(np.float32)
        ours.apply_gradients([(g, v)])
        theirs.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
    np.testing.assert_allclose(v.value, keras.ops.convert_to_numpy(kv), rtol=2e-6, atol=2e-7)


def _targets(name, rng, shape):
    if name.startswith("sparse"):
        return rng.integers(0, shape[-1], shape[:-1])
    if name.startswith("categorical"):
        return np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]
    if name.startswith("binary"):
        return rng.integers(0, 2, shape).astype(np.float64)
    return rng.standard_normal(shape)


@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    "name,from_logits", LOSS_CASES, ids=[f"{n}{'-logits' if lg else ''}" for n, lg in LOSS_CASES]
)
def test_loss_value_and_reduction_match_keras(name, shape, from_logits, rng):
    y_true = _targets(name, rng, shape)
    logits = rng.standard_normal(shape) * 2
    if from_logits:
        y_pred = logits
    elif name.startswith("binary"):
        y_pred = 1 / (1 + np.exp(-logits))
    elif "categorical" in name:
        y_pred = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    else:
        y_pred = logits
    if not from_logits and name != "mse" and name != "mae":  # a saturated row: clipping
        y_pred[0, ...] = 0.0
        y_pred[0, ..., 0] = 1.0
    kw = {"from_logits": True} if from_logits else {}
    ours = losses.get(name) if not kw else type(losses.get(name))(**kw)
    theirs = (
        keras.losses.get(name)
        if not kw
        else type(
            keras.losses.get(
                {
                    "binary_crossentropy": "BinaryCrossentropy",
                    "categorical_crossentropy": "CategoricalCrossentropy",
                    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                }[name]
            )
        )(**kw)
    )
    if callable(theirs) and not isinstance(theirs, keras.losses.Loss):
        expected = float(np.mean(keras.ops.convert_to_numpy(theirs(y_true, y_pred))))
    else:
        expected = float(keras.ops.convert_to_numpy(theirs(y_true, y_pred)))
    assert ours(y_true, y_pred) == pytest.approx(expected, rel=1e-5)


def _one_step_models(rng):
    """A Bidirectional LSTM -> Dense in Keras and in rnncore with the same weights, a batch."""
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    km = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.Bidirectional(keras.layers.LSTM(4), merge_mode="ave"),
            keras.layers.Dense(2),
        ]
    )
    ours = rnncore.Sequential(
        [rnncore.Input((5, 3)), Bidirectional(LSTM(4), merge_mode="ave"), Dense(2)]
    )
    # weights from the test's seed, not Keras's initializers (whose state depends on what ran
    # before): every weight then has a gradient well above the comparison's tolerance
    weights = [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in km.get_weights()]
    km.set_weights(weights)
    ours.set_weights(weights)
    return km, ours, x, y


def test_one_sgd_step_matches_keras_gradients(rng):
    """Plain SGD with learning rate 1: each weight moves by minus its gradient, so the weight
    changes compare the two gradients element by element. Measured: largest gradients per
    weight 0.01-0.3, changes agreeing within 6e-8 (the float32 rounding of the weights);
    asserted atol 2e-7 + rtol 1e-5."""
    km, ours, x, y = _one_step_models(rng)
    w0 = ours.get_weights()
    km.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    ours.compile(optimizer=optimizers.SGD(1.0), loss="mse")
    k_loss = float(km.train_on_batch(x, y))
    assert ours.train_on_batch(x, y) == pytest.approx(k_loss, rel=1e-6)
    for w, a, b in zip(w0, ours.get_weights(), km.get_weights()):
        k_grad = w - b
        assert np.abs(k_grad).max() > 5e-3  # every weight has a gradient worth comparing
        np.testing.assert_allclose(w - a, k_grad, rtol=1e-5, atol=2e-7)


def test_one_adam_step_matches_keras(rng):
    """Same weights, same batch: the model after one Adam step (Adam's first step is about
    lr * sign(gradient): this checks Adam's bookkeeping, the SGD test the gradients)."""
    km, ours, x, y = _one_step_models(rng)
    km.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    ours.compile(optimizer=optimizers.Adam(0.01), loss="mse")
    k_loss = float(km.train_on_batch(x, y))
    r_loss = ours.train_on_batch(x, y)
    assert r_loss == pytest.approx(k_loss, rel=1e-5)
    for a, b in zip(ours.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "cell,keep_rec,kw",
    [
        ("SimpleRNN", 0.6, {}),
        ("LSTM", 0.6, {}),
        ("GRU", 0.6, {}),
        # (use_cudnn=False: Keras's fused path fails on implementation=1 with dropout)
        ("LSTM", 1.0, {"implementation": 1, "use_cudnn": False}),
        ("GRU", 1.0, {"implementation": 1, "use_cudnn": False}),
    ],
    ids=["simple_rnn", "lstm", "gru", "lstm_implementation_1", "gru_implementation_1"],
)
def test_dropout_and_recurrent_dropout_step_matches_keras(cell, keep_rec, kw, rng):
    """The same dropout masks given to both: one SGD step of Keras's per-gate form."""
    B, T, D, H = 6, 5, 3, 4
    gates = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cell]
    keep_in = 0.7
    in_masks = ((rng.random((gates, B, D)) < keep_in) / keep_in).astype(np.float32)
    rec_masks = ((rng.random((gates, B, H)) < keep_rec) / keep_rec).astype(np.float32)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    y = rng.standard_normal((B, 1)).astype(np.float32)
    k_layer = getattr(keras.layers, cell)(
        H, dropout=1 - keep_in, recurrent_dropout=1 - keep_rec, **kw
    )
    km = keras.Sequential([keras.Input((T, D)), k_layer, keras.layers.Dense(1)])
    k_masks = [keras.ops.convert_to_tensor(m) for m in in_masks]
    k_rec = [keras.ops.convert_to_tensor(m) for m in rec_masks]
    k_layer.cell.get_dropout_mask = lambda _: k_masks if gates > 1 else k_masks[0]
    k_layer.cell.get_recurrent_dropout_mask = lambda _: k_rec if gates > 1 else k_rec[0]
    r_layer = getattr(rnncore.layers, cell)(
        H, dropout=1 - keep_in, recurrent_dropout=1 - keep_rec, **kw
    )
    ours = rnncore.Sequential([rnncore.Input((T, D)), r_layer, Dense(1)])
    ours.set_weights(km.get_weights())
    r_layer._draw_dropout_masks = lambda *_: (in_masks, rec_masks if keep_rec < 1 else None)
    km.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    ours.compile(optimizer=optimizers.SGD(0.5), loss="mse")
    k_loss = float(km.train_on_batch(x, y))
    assert ours.train_on_batch(x, y) == pytest.approx(k_loss, rel=1e-5)
    for a, b in zip(ours.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
