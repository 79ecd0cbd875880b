"""Backpropagation through whole models against finite differences (float64).

The analytic gradients come from the layers' ``forward_train``/``backward`` (the core's
training forward and backward); each weight and the input are checked along one random
direction by central differences of the model's loss.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import losses
from rnncore.layers.core import Activation, Dense, Dropout, Masking, Softmax
from rnncore.layers.recurrent import GRU, LSTM, SimpleRNN
from rnncore.layers.wrappers import Bidirectional, TimeDistributed

F64 = {"dtype": "float64"}
B, T, D = 4, 6, 3


def _data(rng, masked=True):
    x = rng.standard_normal((B, T, D))
    if masked:
        x[1, -2:] = 0.0  # right padding
        x[2, :1] = 0.0  # left padding
        x[3, 3] = 0.0  # a hole
    return x


def _forward(model, x, seed):
    for layer in model.layers:  # layers with a seed draw masks from their own generator:
        layer._dropout_rng = None  # restart it, so that every evaluation has the same masks
    return model._forward_train(x, np.random.default_rng(seed))


def _loss_and_grads(model, x, y, loss, seed=7):
    out = _forward(model, x, seed)
    value, d_out = loss.value_and_gradient(y, out)
    dx = model._backward(d_out)
    grads = [g for layer in model.layers for g in layer.gradients]
    return value, dx, grads


def _loss_value(model, x, y, loss, seed=7):
    return loss.value_and_gradient(y, _forward(model, x, seed))[0]


def check_model_gradients(model, x, y, loss, rng, eps=1e-6, x_free=None):
    """Largest relative error of the directional derivatives (every weight, and x)."""
    loss = losses.get(loss)
    _, dx, grads = _loss_and_grads(model, x, y, loss)
    errors = []
    for v, g in zip(model.weights, grads):
        assert g is not None and g.shape == v.shape, v.path
        r = rng.standard_normal(v.shape)
        w0 = v.value.copy()
        v.value[...] = w0 + eps * r
        up = _loss_value(model, x, y, loss)
        v.value[...] = w0 - eps * r
        down = _loss_value(model, x, y, loss)
        v.value[...] = w0
        numeric, analytic = (up - down) / (2 * eps), float(np.sum(g * r))
        errors.append(abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))
    r = rng.standard_normal(x.shape) * (x_free if x_free is not None else 1.0)
    numeric = (
        _loss_value(model, x + eps * r, y, loss) - _loss_value(model, x - eps * r, y, loss)
    ) / (2 * eps)
    analytic = float(np.sum(dx * r))
    errors.append(abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))
    return max(errors)


MERGE_MODES = ["concat", "sum", "mul", "ave"]


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
def test_bidirectional_lstm_with_mask_then_dense(merge_mode, return_sequences, rng):
    """The issue's check: Masking -> Bidirectional(LSTM) -> Dense, float64."""
    model = rnncore.Sequential(
        [
            rnncore.Input((T, D), dtype="float64"),
            Masking(0.0, **F64),
            Bidirectional(
                LSTM(5, return_sequences=return_sequences, seed=1, **F64), merge_mode=merge_mode
            ),
            Dense(2, seed=2, **F64),
        ]
    )
    for v in model.weights:  # non-zero biases, so every path carries a gradient
        v.value[...] += 0.1 * rng.standard_normal(v.shape)
    x = _data(rng)
    y = rng.standard_normal((B, T, 2) if return_sequences else (B, 2))
    free = np.any(x != 0, axis=-1, keepdims=True)  # perturbing a padded step unmasks it
    err = check_model_gradients(model, x, y, "mse", rng, x_free=free)
    assert err < 1e-6, err


def _stack(cell, **kw):
    return rnncore.Sequential(
        [
            rnncore.Input((T, D), dtype="float64"),
            Masking(0.0, **F64),
            cell(4, return_sequences=True, seed=3, dropout=0.3, **kw, **F64),
            Dropout(0.25, **F64),
            cell(3, return_sequences=True, go_backwards=True, seed=4, **kw, **F64),
            TimeDistributed(Dense(3, activation="tanh", seed=5, **F64)),
            cell(4, seed=6, **kw, **F64),
            Dense(3, seed=7, **F64),
            Activation("softmax", **F64),
        ]
    )


@pytest.mark.parametrize(
    "cell,kw",
    [(SimpleRNN, {}), (LSTM, {}), (GRU, {}), (GRU, {"reset_after": False})],
    ids=["simple_rnn", "lstm", "gru", "gru_v1"],
)
def test_stacked_layers_with_dropout_and_masks(cell, kw, rng):
    model = _stack(cell, **kw)
    for v in model.weights:
        v.value[...] += 0.1 * rng.standard_normal(v.shape)
    x = _data(rng)
    y = np.eye(3)[rng.integers(0, 3, B)]
    free = np.any(x != 0, axis=-1, keepdims=True)
    err = check_model_gradients(model, x, y, "categorical_crossentropy", rng, x_free=free)
    assert err < 1e-6, err


@pytest.mark.parametrize(
    "loss,out_act",
    [
        ("mse", "linear"),
        ("mae", "linear"),
        ("binary_crossentropy", "sigmoid"),
        (losses.BinaryCrossentropy(from_logits=True), "linear"),
        ("categorical_crossentropy", "softmax"),
        (losses.CategoricalCrossentropy(from_logits=True), "linear"),
        ("sparse_categorical_crossentropy", "softmax"),
        (losses.SparseCategoricalCrossentropy(from_logits=True), "linear"),
    ],
    ids=["mse", "mae", "bce", "bce_logits", "cce", "cce_logits", "scce", "scce_logits"],
)
def test_every_loss_through_a_gru(loss, out_act, rng):
    units = 1 if "binary" in str(loss) or "Binary" in type(loss).__name__ else 3
    model = rnncore.Sequential(
        [
            rnncore.Input((T, D), dtype="float64"),
            GRU(4, return_sequences=True, seed=8, **F64),
            Dense(units, activation=out_act, seed=9, **F64),
        ]
    )
    x = _data(rng, masked=False)
    name = loss if isinstance(loss, str) else loss.name
    if "sparse" in name:
        y = rng.integers(0, 3, (B, T))
    elif "categorical" in name:
        y = np.eye(3)[rng.integers(0, 3, (B, T))]
    elif "binary" in name:
        y = rng.integers(0, 2, (B, T, 1)).astype(float)
    else:
        y = rng.standard_normal((B, T, units))
    err = check_model_gradients(model, x, y, loss, rng)
    assert err < 1e-6, err


def test_softmax_layer_and_merge_mode_none_at_layer_level(rng):
    layer = Bidirectional(LSTM(3, return_sequences=True, seed=1, **F64), merge_mode=None)
    soft = Softmax(**F64)
    x = _data(rng, masked=False)
    d1, d2 = rng.standard_normal((B, T, 3)), rng.standard_normal((B, T, 3))

    def value(x):
        y1, y2 = layer.forward_train(x)[0]
        return float(np.sum(soft.forward_train(y1)[0] * d1) + np.sum(y2 * d2))

    value(x)
    dy1 = soft.backward(d1)
    dx = layer.backward((dy1, d2))
    r, eps = rng.standard_normal(x.shape), 1e-6
    numeric = (value(x + eps * r) - value(x - eps * r)) / (2 * eps)
    assert abs(numeric - np.sum(dx * r)) < 1e-7 * max(1.0, abs(numeric))


@pytest.mark.parametrize(
    "cell,kw",
    [(SimpleRNN, {}), (LSTM, {}), (GRU, {}), (GRU, {"reset_after": False})],
    ids=["simple_rnn", "lstm", "gru", "gru_v1"],
)
def test_recurrent_dropout_gradients(cell, kw, rng):
    """recurrent_dropout (with and without input dropout, masks, both directions)."""
    rnncore.set_random_seed(1)  # the initial weights, whatever ran before
    model = rnncore.Sequential(
        [
            rnncore.Input((T, D), dtype="float64"),
            Masking(0.0, **F64),
            Bidirectional(
                cell(4, return_sequences=True, dropout=0.3, recurrent_dropout=0.4, **kw, **F64)
            ),
            cell(3, recurrent_dropout=0.5, go_backwards=True, **kw, **F64),
            Dense(2, **F64),
        ]
    )
    for v in model.weights:
        v.value[...] += 0.1 * rng.standard_normal(v.shape)
    x = _data(rng)
    y = rng.standard_normal((B, 2))
    free = np.any(x != 0, axis=-1, keepdims=True)
    err = check_model_gradients(model, x, y, "mse", rng, x_free=free)
    assert err < 1e-6, err


def test_dropout_masks_follow_keras_semantics(rng):
    """One input mask per sequence (same at every step), scaled by 1/(1-rate), train only."""
    layer = SimpleRNN(4, dropout=0.5, seed=0, **F64)
    x = rng.standard_normal((64, T, D))
    layer.forward_train(x)
    noise = layer._train_cache[2]
    assert noise.shape == (64, D)
    assert set(np.unique(noise)) <= {0.0, 2.0}
    assert 0.3 < np.mean(noise == 0) < 0.7
    a = layer(x)  # inference: no dropout
    np.testing.assert_array_equal(a, layer(x, training=False))
