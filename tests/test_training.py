"""Training end to end: learning tests with fixed seeds, fit/evaluate/History, callbacks,
reproducibility, and bad input (clear errors, weights never half-updated)."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import callbacks, optimizers
from rnncore.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Masking, SimpleRNN
from support import LOSS_CASES


def adding_problem(n, T, rng):
    """Two marked values in a sequence of random numbers; the target is their sum."""
    x = np.zeros((n, T, 2), np.float32)
    x[:, :, 0] = rng.random((n, T))
    first, second = rng.integers(0, T // 2, n), rng.integers(T // 2, T, n)
    x[np.arange(n), first, 1] = 1
    x[np.arange(n), second, 1] = 1
    return x, (x[:, :, 0] * x[:, :, 1]).sum(axis=1, keepdims=True)


def delayed_copy(n, T, K, delay, rng):
    """Symbols 1..K one-hot; the target at step t is the symbol of step t - delay (0 before)."""
    s = rng.integers(1, K + 1, (n, T))
    x = np.eye(K + 1, dtype=np.float32)[s][:, :, 1:]
    y = np.zeros((n, T), np.int64)
    y[:, delay:] = s[:, :-delay]
    return x, y


# ---- learning ----------------------------------------------------------------------------


def test_lstm_learns_the_adding_problem():
    rnncore.set_random_seed(1)
    rng = np.random.default_rng(1)
    x, y = adding_problem(2000, 20, rng)
    x_test, y_test = adding_problem(500, 20, rng)
    model = rnncore.Sequential([rnncore.Input((20, 2)), LSTM(16), Dense(1)])
    model.compile(optimizer=optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    mse, mae = model.evaluate(x_test, y_test, verbose=0)
    # predicting the mean scores the variance of y (about 0.167): 15x better at least
    assert mse < 0.011, mse
    assert mae < 0.08, mae


def test_gru_learns_a_delayed_copy():
    rnncore.set_random_seed(3)
    rng = np.random.default_rng(3)
    x, y = delayed_copy(1500, 10, 4, 3, rng)
    x_test, y_test = delayed_copy(300, 10, 4, 3, rng)
    model = rnncore.Sequential(
        [
            rnncore.Input((10, 4)),
            GRU(24, return_sequences=True),
            Dense(5, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.98, accuracy  # chance: 0.25 (0.475 counting the known blanks)
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]


def test_masked_bidirectional_classifier_with_dropout_learns():
    """Variable-length sequences (zero padded): is the sum of the values positive?"""
    rnncore.set_random_seed(5)
    rng = np.random.default_rng(5)
    n, T = 1200, 12
    x = rng.standard_normal((n, T, 1)).astype(np.float32)
    lengths = rng.integers(3, T + 1, n)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    y = (x.sum(axis=(1, 2)) > 0).astype(np.float32)
    model = rnncore.Sequential(
        [
            rnncore.Input((T, 1)),
            Masking(0.0),
            Bidirectional(SimpleRNN(8, dropout=0.1), merge_mode="concat"),
            Dropout(0.1),
            Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=6, validation_split=0.25, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.9, history.history


# ---- fit, History, evaluate, reproducibility ------------------------------------------------


def _small_model(seed=None, **lstm):
    return rnncore.Sequential([rnncore.Input((6, 2)), LSTM(4, seed=seed, **lstm), Dense(1)])


def _data(rng, n=40):
    x = rng.standard_normal((n, 6, 2)).astype(np.float32)
    return x, x.sum(axis=(1, 2))[:, None] / 6


def test_seeds_make_training_reproducible(rng):
    x, y = _data(rng)
    runs = []
    for _ in range(2):
        rnncore.set_random_seed(123)
        model = rnncore.Sequential(
            [rnncore.Input((6, 2)), LSTM(4, dropout=0.3), Dropout(0.2), Dense(1)]
        )
        model.compile("adam", "mse")
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=True)
        runs.append((model.get_weights(), history.history["loss"]))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]


def test_history_validation_and_evaluate(rng):
    x, y = _data(rng, 50)
    model = _small_model(seed=0)
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    history = model.fit(x, y, batch_size=16, epochs=3, validation_split=0.2, verbose=0)
    assert isinstance(history, callbacks.History) and history is model.history
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae"}
    assert history.epoch == [0, 1, 2]
    # validation_split holds out the last 20% (10 samples): the same numbers as evaluate
    assert history.history["val_loss"][-1] == pytest.approx(
        model.evaluate(x[40:], y[40:], verbose=0)[0], rel=1e-6
    )
    logs = model.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "mae"}
    assert logs["loss"] == pytest.approx(float(np.mean((model.predict(x) - y) ** 2)), rel=1e-5)
    assert logs["mae"] == pytest.approx(float(np.mean(np.abs(model.predict(x) - y))), rel=1e-5)
    h2 = model.fit(x, y, epochs=1, validation_data=(x[:5], y[:5]), verbose=0)
    assert "val_loss" in h2.history


def test_progress_output(rng, capsys):
    x, y = _data(rng)
    model = _small_model(seed=0)
    model.compile("adam", "mse", metrics=["mae"])
    model.fit(x, y, batch_size=8, epochs=2, verbose=2, validation_split=0.25)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "val_mae" in out
    model.fit(x, y, batch_size=8, epochs=1, verbose=1)
    captured = capsys.readouterr()
    assert "Epoch 1/1" in captured.out + captured.err and "loss" in captured.out + captured.err
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_compile_accepts_objects_and_strings():
    model = _small_model()
    model.compile(
        optimizer=optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=rnncore.losses.MeanAbsoluteError(),
        metrics=["mae", "accuracy"],
    )
    assert isinstance(model.optimizer, optimizers.SGD)
    for bad in (
        {"optimizer": "adagrad", "loss": "mse"},
        {"loss": "hinge"},
        {"loss": "mse", "metrics": ["auc"]},
    ):
        with pytest.raises(ValueError, match="unknown"):
            model.compile(**bad)
    with pytest.raises(ValueError, match="loss is required"):
        model.compile("adam")


def test_non_trainable_layers_are_not_updated(rng):
    x, y = _data(rng)
    model = _small_model(seed=0)
    model.layers[0].trainable = False
    frozen = model.layers[0].get_weights()
    model.compile("adam", "mse")
    model.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(frozen, model.layers[0].get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- metric and loss values against hand computations --------------------------------------

EPS = 1e-7  # Keras's clipping of probabilities


def _hand_loss(name, t, p, from_logits=False):
    """The mean loss, written out in NumPy from Keras 3's definitions."""
    p = np.asarray(p, np.float64)
    t = np.asarray(t, np.float64)
    if name.startswith("sparse"):
        t = np.eye(p.shape[-1])[t.astype(np.int64).reshape(p.shape[:-1])]
    t = t.reshape(p.shape)
    if name == "mse":
        return np.mean((p - t) ** 2)
    if name == "mae":
        return np.mean(np.abs(p - t))
    if name == "binary_crossentropy":
        if from_logits:  # -log(sigmoid(z)) = log(1 + e^-z), -log(1 - sigmoid(z)) = log(1 + e^z)
            return np.mean(t * np.logaddexp(0, -p) + (1 - t) * np.logaddexp(0, p))
        q = np.clip(p, EPS, 1 - EPS)
        return np.mean(-(t * np.log(q) + (1 - t) * np.log(1 - q)))
    # categorical_crossentropy, sparse_categorical_crossentropy
    if from_logits:
        z = p - p.max(axis=-1, keepdims=True)
        log_q = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    else:
        log_q = np.log(np.clip(p / p.sum(axis=-1, keepdims=True), EPS, 1 - EPS))
    return np.mean(-(t * log_q).sum(axis=-1))


def _hand_metric(name, t, p):
    """Every metric rnncore offers, as a mean over all samples (and timesteps)."""
    p = np.asarray(p, np.float64)
    t = np.asarray(t)
    if name == "sparse_categorical_accuracy":
        return np.mean(t.reshape(p.shape[:-1]) == p.argmax(axis=-1))
    t = t.astype(np.float64).reshape(p.shape)
    if name in ("mae", "mean_absolute_error"):
        return np.mean(np.abs(p - t))
    if name in ("mse", "mean_squared_error"):
        return np.mean((p - t) ** 2)
    if name == "binary_accuracy":
        return np.mean((p > 0.5) == (t > 0.5))
    if name == "categorical_accuracy":
        return np.mean(p.argmax(axis=-1) == t.argmax(axis=-1))
    raise AssertionError(name)


N, T_, D_ = 30, 5, 3  # 30 samples, evaluated in batches of 7: the last batch is short


def _one_hot(labels, k):
    return np.eye(k)[labels]


# name: (loss, layers, targets(rng), {metric as given: the function it must be})
METRIC_CASES = {
    "regression": (
        "mse",
        lambda: [LSTM(4, seed=1), Dense(3, seed=2)],
        lambda rng: rng.standard_normal((N, 3)) * 2,
        {
            "mae": "mae",
            "mse": "mse",
            "mean_absolute_error": "mae",
            "mean_squared_error": "mse",
        },
    ),
    "regression_sequence_mae_loss": (
        "mae",
        lambda: [GRU(4, return_sequences=True, seed=1), Dense(2, seed=2)],
        lambda rng: rng.standard_normal((N, T_, 2)) * 2,
        {"mae": "mae", "mse": "mse"},
    ),
    "regression_flat_targets": (
        "mse",
        lambda: [SimpleRNN(4, seed=1), Dense(1, seed=2)],
        lambda rng: rng.standard_normal(N) * 2,  # (N,) targets for a (N, 1) output
        {"mae": "mae", "mean_squared_error": "mse"},
    ),
    "binary": (
        "binary_crossentropy",
        lambda: [LSTM(4, seed=1), Dense(1, activation="sigmoid", seed=2)],
        lambda rng: rng.integers(0, 2, (N, 1)).astype(np.float32),
        {"accuracy": "binary_accuracy", "binary_accuracy": "binary_accuracy", "mse": "mse"},
    ),
    "binary_multilabel": (
        "binary_crossentropy",
        lambda: [LSTM(4, seed=1), Dense(3, activation="sigmoid", seed=2)],
        lambda rng: rng.integers(0, 2, (N, 3)).astype(np.float32),
        {"binary_accuracy": "binary_accuracy", "mae": "mae"},
    ),
    "categorical": (
        "categorical_crossentropy",
        lambda: [GRU(4, seed=1), Dense(4, activation="softmax", seed=2)],
        lambda rng: _one_hot(rng.integers(0, 4, N), 4),
        {"accuracy": "categorical_accuracy", "categorical_accuracy": "categorical_accuracy"},
    ),
    "sparse_sequence": (
        "sparse_categorical_crossentropy",
        lambda: [LSTM(4, return_sequences=True, seed=1), Dense(4, activation="softmax", seed=2)],
        lambda rng: rng.integers(0, 4, (N, T_)),
        {
            "acc": "sparse_categorical_accuracy",
            "sparse_categorical_accuracy": "sparse_categorical_accuracy",
        },
    ),
}


def _metric_case(case, rng):
    loss, layers, targets, metrics = METRIC_CASES[case]
    model = rnncore.Sequential([rnncore.Input((T_, D_))] + layers())
    model.compile(optimizers.SGD(0.1), loss, metrics=list(metrics))
    x = rng.standard_normal((N, T_, D_)).astype(np.float32)
    return model, x, targets(rng), loss, metrics


@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_evaluate_loss_and_metric_values_match_numpy(case, rng):
    model, x, y, loss, metrics = _metric_case(case, rng)
    logs = model.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    assert list(logs) == ["loss", *metrics]
    p = model.predict(x, batch_size=7)
    assert logs["loss"] == pytest.approx(_hand_loss(loss, y, p), rel=1e-9)
    for given, fn in metrics.items():
        want = _hand_metric(fn, y, p)
        assert logs[given] == pytest.approx(want, rel=1e-9, abs=1e-12), (given, fn)
    # the values are not degenerate: accuracies strictly between 0 and 1, mae != mse
    for given, fn in metrics.items():
        if fn.endswith("accuracy"):
            assert 0 < logs[given] < 1, given
        elif fn == "mae":
            assert abs(logs[given] - _hand_metric("mse", y, p)) > 0.1


@pytest.mark.parametrize("case", ["regression", "binary", "sparse_sequence"])
def test_train_on_batch_reports_the_values_before_the_update(case, rng):
    """train_on_batch's loss and metrics are those of the batch's forward pass, i.e. the
    predictions before the step."""
    model, x, y, loss, metrics = _metric_case(case, rng)
    p = model.predict(x)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert list(logs) == ["loss", *metrics]
    assert logs["loss"] == pytest.approx(_hand_loss(loss, y, p), rel=1e-5)
    for given, fn in metrics.items():
        assert logs[given] == pytest.approx(_hand_metric(fn, y, p), rel=1e-5, abs=1e-7), given
    assert not np.allclose(model.predict(x), p)  # the step was applied


def _loss_inputs(name, from_logits, shape, rng):
    k = shape[-1]
    if name.startswith("sparse"):
        t = rng.integers(0, k, shape[:-1])
    elif name.startswith("categorical"):
        t = _one_hot(rng.integers(0, k, shape[:-1]), k)
    elif name.startswith("binary"):
        t = rng.integers(0, 2, shape).astype(np.float64)
    else:
        t = rng.standard_normal(shape)
    z = rng.standard_normal(shape) * 2
    if from_logits or name in ("mse", "mae"):
        return t, z
    if name.startswith("binary"):
        p = 1 / (1 + np.exp(-z))
    else:
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    p[0, ...] = 0.0  # a saturated sample: Keras's clipping to [eps, 1 - eps] matters
    p[0, ..., 0] = 1.0
    return t, p


LOSS_CLASSES = {
    "mse": rnncore.losses.MeanSquaredError,
    "mae": rnncore.losses.MeanAbsoluteError,
    "binary_crossentropy": rnncore.losses.BinaryCrossentropy,
    "categorical_crossentropy": rnncore.losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": rnncore.losses.SparseCategoricalCrossentropy,
}


LOSS_SHAPES = {"2d": (6, 3), "3d": (4, 5, 3), "one_unit": (6, 1)}


@pytest.mark.parametrize(
    "name,from_logits,shape",
    [
        (name, logits, LOSS_SHAPES[s])
        for name, logits in LOSS_CASES
        for s in LOSS_SHAPES
        if not ("categorical" in name and s == "one_unit")  # one class: trivially zero
    ],
    ids=[
        f"{name}{'-logits' if logits else ''}-{s}"
        for name, logits in LOSS_CASES
        for s in LOSS_SHAPES
        if not ("categorical" in name and s == "one_unit")
    ],
)
def test_loss_values_match_numpy(name, from_logits, shape, rng):
    t, p = _loss_inputs(name, from_logits, shape, rng)
    want = _hand_loss(name, t, p, from_logits)
    cls = LOSS_CLASSES[name]
    losses = [cls(from_logits=True)] if from_logits else [cls(), rnncore.losses.get(name)]
    for loss in losses:
        assert loss(t, p) == pytest.approx(want, rel=1e-12)
        value, grad = loss.value_and_gradient(t, p)
        assert value == pytest.approx(want, rel=1e-12)
        assert grad.shape == p.shape
    if name == "binary_crossentropy" and not from_logits:
        assert rnncore.losses.get("bce")(t, p) == pytest.approx(want, rel=1e-12)


# ---- callbacks -------------------------------------------------------------------------------


class Recorder(callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights, self.calls = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch))


def test_user_callback_and_stop_training(rng):
    x, y = _data(rng, 32)

    class StopAfterTwo(Recorder):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 1:
                self.model.stop_training = True

    cb = StopAfterTwo()
    model = _small_model(seed=0)
    model.compile("adam", "mse")
    history = model.fit(x, y, batch_size=16, epochs=10, callbacks=[cb], verbose=0)
    assert history.epoch == [0, 1]
    assert cb.calls[:3] == [("batch_end", 0), ("batch_end", 1), ("epoch_end", 0, ["loss"])]
    assert cb.params["steps"] == 2 and cb.params["epochs"] == 10


def test_early_stopping_restores_the_best_weights(rng):
    x, y = _data(rng)
    model = _small_model(seed=0)
    model.compile(optimizers.Adam(0.05), "mse")
    recorder = Recorder()
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    # validation targets of the opposite sign: fitting the training data makes val_loss worse
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=20,
        validation_data=(x, -y),
        callbacks=[recorder, stop],
        verbose=0,
    )
    val = history.history["val_loss"]
    best = int(np.argmin(val))
    assert len(val) == best + 3  # stopped after `patience` epochs without improvement
    for a, b in zip(model.get_weights(), recorder.weights[best]):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint(rng, tmp_path):
    x, y = _data(rng)
    model = _small_model(seed=0)
    model.compile(optimizers.Adam(0.02), "mse")
    path = str(tmp_path / "ckpt-{epoch:02d}.rnncore")
    model.fit(
        x,
        y,
        epochs=3,
        validation_split=0.25,
        verbose=0,
        callbacks=[callbacks.ModelCheckpoint(path)],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-01.rnncore",
        "ckpt-02.rnncore",
        "ckpt-03.rnncore",
    ]
    last = rnncore.load_model(tmp_path / "ckpt-03.rnncore")
    np.testing.assert_array_equal(last.predict(x), model.predict(x))
    best_path = tmp_path / "best.npz"
    checkpoint = callbacks.ModelCheckpoint(
        str(best_path), save_best_only=True, save_weights_only=True
    )
    history = model.fit(x, y, epochs=4, validation_split=0.25, verbose=0, callbacks=[checkpoint])
    assert checkpoint.best == min(history.history["val_loss"])
    assert best_path.exists()


# ---- bad input -------------------------------------------------------------------------------


def _compiled(loss="mse", units=1, activation=None, **kw):
    model = rnncore.Sequential(
        [rnncore.Input((6, 2)), GRU(4, seed=0), Dense(units, activation=activation, seed=1)]
    )
    model.compile(optimizers.Adam(0.01), loss, **kw)
    return model


def test_mismatched_lengths_and_missing_targets(rng):
    x, y = _data(rng)
    model = _compiled()
    before = model.get_weights()
    with pytest.raises(ValueError, match="same number of samples.*40.*39"):
        model.fit(x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match="x and y are required"):
        model.fit(x, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        _small_model().fit(x, y)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "loss,units,activation,y_shape,match",
    [
        ("mse", 1, None, (40, 3), r"expected targets of shape \(batch, 1\)"),
        ("categorical_crossentropy", 3, "softmax", (40,), "sparse_categorical_crossentropy"),
        ("sparse_categorical_crossentropy", 3, "softmax", (40, 3), "categorical_crossentropy"),
        ("binary_crossentropy", 1, "sigmoid", (40, 6, 1), r"\(batch, 1\)"),
    ],
)
def test_target_shape_that_does_not_fit_the_loss(loss, units, activation, y_shape, match):
    model = _compiled(loss, units, activation)
    before = model.get_weights()
    x = np.zeros((40, 6, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        model.fit(x, np.zeros(y_shape), verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_sparse_labels_out_of_range():
    model = _compiled("sparse_categorical_crossentropy", 3, "softmax")
    with pytest.raises(ValueError, match=r"class labels in \[0, 2\]"):
        model.fit(np.zeros((4, 6, 2), np.float32), np.array([0, 1, 2, 3]), verbose=0)


def test_nan_loss_stops_training_and_keeps_the_last_good_weights(rng):
    x, y = _data(rng, 32)
    y[20] = np.nan  # the third batch of 8 (no shuffling)
    model = _compiled()
    recorder = Recorder()

    class Snapshot(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.last = self.model.get_weights()

    snap = Snapshot()
    with pytest.warns(RuntimeWarning, match="non-finite.*epoch 1, batch 3.*not applied"):
        history = model.fit(
            x, y, batch_size=8, epochs=5, shuffle=False, verbose=0, callbacks=[recorder, snap]
        )
    assert history.epoch == [0] and np.isnan(history.history["loss"][0])
    for a, b in zip(model.get_weights(), snap.last):
        np.testing.assert_array_equal(a, b)
        assert np.all(np.isfinite(a))


def test_an_exception_inside_a_step_leaves_the_weights_untouched(rng, monkeypatch):
    x, y = _data(rng, 32)
    model = _compiled()
    snap = []

    class Snapshot(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snap.append(self.model.get_weights())

    gru = model.layers[0]
    original, calls = gru.backward, []

    def failing_backward(dy):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("simulated failure in the middle of backward")
        return original(dy)

    monkeypatch.setattr(gru, "backward", failing_backward)
    with pytest.raises(MemoryError, match="simulated"):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[Snapshot()])
    assert len(snap) == 2
    for a, b in zip(model.get_weights(), snap[-1]):
        np.testing.assert_array_equal(a, b)
