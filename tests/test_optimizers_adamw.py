"""AdamW and weight_decay (Keras 3's decoupled decay) against Keras's optimizers, variable by
variable, and inside fit against a Keras model with the same weights."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import optimizers  # noqa: E402
from rnncore.layers import LSTM, Dense, Variable  # noqa: E402

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


NAMES = ("kernel", "bias", "recurrent_kernel")


def _trajectories(ours, theirs, rng, dtype, steps=12, exclude=None):
    """Both optimizers update three named variables from the same gradients; returns the
    final values (rnncore's, Keras's), one pair per variable. ``exclude``: a function of
    (optimizer, its variables) called before the first step."""
    w0 = [rng.standard_normal((3, 2)).astype(dtype) for _ in NAMES]
    vs = [Variable(w.copy(), n, f"m/{n}") for w, n in zip(w0, NAMES)]
    kvs = [keras.Variable(w.copy(), dtype=str(np.dtype(dtype)), name=n) for w, n in zip(w0, NAMES)]
    if exclude is not None:
        exclude(ours, vs)
        exclude(theirs, kvs)
    for _ in range(steps):
        gs = [rng.standard_normal((3, 2)).astype(dtype) for _ in NAMES]
        ours.apply_gradients(list(zip(gs, vs)))
        theirs.apply_gradients([(keras.ops.convert_to_tensor(g), kv) for g, kv in zip(gs, kvs)])
    return [(v.value, keras.ops.convert_to_numpy(kv)) for v, kv in zip(vs, kvs)]


CASES = {
    "adamw": ("AdamW", {}),
    "adamw_strong_amsgrad": ("AdamW", {"learning_rate": 0.05, "weight_decay": 0.3,
                                       "amsgrad": True}),
    "adamw_clipvalue": ("AdamW", {"learning_rate": 0.02, "clipvalue": 0.5}),
    "sgd_momentum_decay": ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.2}),
    "adam_decay": ("Adam", {"learning_rate": 0.05, "weight_decay": 0.1}),
    "rmsprop_decay": ("RMSprop", {"learning_rate": 0.01, "weight_decay": 0.5,
                                  "centered": True}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_weight_decay_matches_keras_float64(case, rng, keras_float64):
    """Decoupled decay w <- w (1 - lr wd) before the update: measured within 1e-15."""
    cls, kw = CASES[case]
    pairs = _trajectories(
        getattr(optimizers, cls)(**kw), getattr(keras.optimizers, cls)(**kw), rng, np.float64
    )
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("case", ["adamw", "sgd_momentum_decay"])
def test_weight_decay_matches_keras_float32(case, rng):
    """Keras's default float32: measured within 2.4e-7 after 12 updates (asserted 2e-6)."""
    cls, kw = CASES[case]
    pairs = _trajectories(
        getattr(optimizers, cls)(**kw), getattr(keras.optimizers, cls)(**kw), rng, np.float32
    )
    for ours, theirs in pairs:
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    "exclude",
    [
        lambda opt, vs: opt.exclude_from_weight_decay(var_names=["bias"]),
        lambda opt, vs: opt.exclude_from_weight_decay(var_names=["^kernel$", "bia"]),
        lambda opt, vs: opt.exclude_from_weight_decay(var_list=[vs[2]]),
        lambda opt, vs: opt.exclude_from_weight_decay(var_list=[vs[0]], var_names=["recurrent"]),
    ],
    ids=["names", "patterns", "var_list", "both"],
)
def test_exclude_from_weight_decay_matches_keras(exclude, rng, keras_float64):
    """Keras's rule: a variable given, or one whose name a pattern matches (re.search)."""
    kw = {"learning_rate": 0.05, "weight_decay": 0.5}
    opt = optimizers.AdamW(**kw)
    pairs = _trajectories(opt, keras.optimizers.AdamW(**kw), rng, np.float64, exclude=exclude)
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)


def test_excluded_variable_follows_plain_adam(rng):
    w0, grads = rng.standard_normal(4), [rng.standard_normal(4) for _ in range(5)]
    decayed, kept, ref = (Variable(w0.copy(), n, n) for n in ("kernel", "bias", "ref"))
    opt = optimizers.AdamW(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    adam = optimizers.Adam(0.1)
    for g in grads:
        opt.apply_gradients([(g, decayed), (g, kept)])
        adam.apply_gradients([(g, ref)])
    np.testing.assert_array_equal(kept.value, ref.value)
    assert np.abs(decayed.value - ref.value).max() > 1e-3


def test_arguments_defaults_and_config():
    opt = optimizers.get("adamw")
    assert type(opt) is optimizers.AdamW
    assert (opt.learning_rate, opt.weight_decay, opt.beta_1, opt.beta_2, opt.epsilon) == (
        0.001, 0.004, 0.9, 0.999, 1e-7)  # fmt: skip
    assert opt.amsgrad is False
    config = optimizers.AdamW(0.01, weight_decay=0.1).get_config()
    assert config["weight_decay"] == 0.1
    again = optimizers.AdamW.from_config(config)
    assert (again.learning_rate, again.weight_decay) == (0.01, 0.1)
    assert optimizers.SGD().weight_decay is None
    with pytest.raises(ValueError, match="weight_decay"):
        optimizers.AdamW(weight_decay=None)
    with pytest.raises(ValueError, match="weight_decay"):
        optimizers.Adam(weight_decay=-0.1)
    with pytest.raises(TypeError, match="weight_decay"):
        optimizers.SGD(weight_decay="0.1")


def test_fit_with_adamw_matches_keras(rng):
    """Three epochs of batches of 4 (no shuffling) of an LSTM -> Dense model, AdamW with
    exclude_from_weight_decay(["bias"]): every weight as Keras's (measured within 1.5e-6;
    asserted atol 2e-5 + rtol 1e-4: float32 gradients through an LSTM)."""
    x = rng.standard_normal((12, 5, 3)).astype(np.float32)
    y = rng.standard_normal((12, 2)).astype(np.float32)
    km = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    ours = rnncore.Sequential([rnncore.Input((5, 3)), LSTM(4), Dense(2)])
    weights = [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in km.get_weights()]
    km.set_weights(weights)
    ours.set_weights(weights)
    k_opt = keras.optimizers.AdamW(0.01, weight_decay=0.2)
    k_opt.exclude_from_weight_decay(var_names=["bias"])
    r_opt = optimizers.AdamW(0.01, weight_decay=0.2)
    r_opt.exclude_from_weight_decay(var_names=["bias"])
    km.compile(optimizer=k_opt, loss="mse")
    ours.compile(optimizer=r_opt, loss="mse")
    k_hist = km.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history
    r_hist = ours.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose(r_hist["loss"], k_hist["loss"], rtol=1e-5)
    for a, b in zip(ours.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
