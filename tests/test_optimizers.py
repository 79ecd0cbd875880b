"""Optimizers against their published update rules (Keras 3's forms), step by step."""

from __future__ import annotations

import numpy as np
import pytest

from rnncore import optimizers
from rnncore.layers import Variable

STEPS = 4


def _run(opt, w0, grads):
    v = Variable(w0.copy(), "w", "test/w")
    out = []
    for g in grads:
        opt.apply_gradients([(g, v)])
        out.append(v.numpy())
    return out


def _problem(rng, dtype=np.float64):
    w0 = rng.standard_normal((3, 2)).astype(dtype)
    grads = [rng.standard_normal((3, 2)).astype(dtype) for _ in range(STEPS)]
    return w0, grads


def sgd_formula(w, grads, lr=0.01, momentum=0.0, nesterov=False):
    m, out = np.zeros_like(w), []
    for g in grads:
        if momentum:
            m = momentum * m - lr * g
            w = w + (momentum * m - lr * g if nesterov else m)
        else:
            w = w - lr * g
        out.append(w)
    return out


def adam_formula(w, grads, lr=0.001, b1=0.9, b2=0.999, eps=1e-7, amsgrad=False):
    # Kingma & Ba, Algorithm 1 with the "epsilon hat" of section 2 (Keras's placement)
    m, v, vmax, out = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - lr_t * m / (np.sqrt(vmax if amsgrad else v) + eps)
        out.append(w)
    return out


def rmsprop_formula(w, grads, lr=0.001, rho=0.9, momentum=0.0, eps=1e-7, centered=False):
    v, a, mom, out = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w), []
    for g in grads:
        v = rho * v + (1 - rho) * g * g
        a = rho * a + (1 - rho) * g
        denom = (v - a * a if centered else v) + eps
        inc = lr * g / np.sqrt(denom)
        if momentum:
            mom = momentum * mom + inc
            w = w - mom
        else:
            w = w - inc
        out.append(w)
    return out


CASES = {
    "sgd": (lambda: optimizers.SGD(), lambda w, g: sgd_formula(w, g)),
    "sgd_momentum": (
        lambda: optimizers.SGD(0.1, momentum=0.9),
        lambda w, g: sgd_formula(w, g, 0.1, 0.9),
    ),
    "sgd_nesterov": (
        lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        lambda w, g: sgd_formula(w, g, 0.1, 0.9, True),
    ),
    "adam": (lambda: optimizers.Adam(), lambda w, g: adam_formula(w, g)),
    "adam_custom": (
        lambda: optimizers.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3),
        lambda w, g: adam_formula(w, g, 0.01, 0.8, 0.99, 1e-3),
    ),
    "adam_amsgrad": (
        lambda: optimizers.Adam(0.01, amsgrad=True),
        lambda w, g: adam_formula(w, g, 0.01, amsgrad=True),
    ),
    "rmsprop": (lambda: optimizers.RMSprop(), lambda w, g: rmsprop_formula(w, g)),
    "rmsprop_momentum_centered": (
        lambda: optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, epsilon=1e-4, centered=True),
        lambda w, g: rmsprop_formula(w, g, 0.01, 0.8, 0.5, 1e-4, True),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_update_rule_matches_the_formula(name, rng):
    make, formula = CASES[name]
    w0, grads = _problem(rng)
    got = _run(make(), w0, grads)
    for k, (a, e) in enumerate(zip(got, formula(w0, grads))):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14, err_msg=f"step {k + 1}")


def test_float32_variables_stay_float32(rng):
    w0, grads = _problem(rng, np.float32)
    got = _run(optimizers.Adam(0.01), w0, grads)
    assert got[-1].dtype == np.float32
    expected = adam_formula(w0.astype(np.float64), [g.astype(np.float64) for g in grads], 0.01)
    np.testing.assert_allclose(got[-1], expected[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name,cls,defaults",
    [
        ("sgd", optimizers.SGD, {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}),
        (
            "adam",
            optimizers.Adam,
            {
                "learning_rate": 0.001,
                "beta_1": 0.9,
                "beta_2": 0.999,
                "epsilon": 1e-7,
                "amsgrad": False,
            },
        ),
        (
            "rmsprop",
            optimizers.RMSprop,
            {
                "learning_rate": 0.001,
                "rho": 0.9,
                "momentum": 0.0,
                "epsilon": 1e-7,
                "centered": False,
            },
        ),
    ],
)
def test_names_and_keras_defaults(name, cls, defaults):
    for spelling in (name, name.upper(), cls):
        opt = optimizers.get(spelling)
        assert type(opt) is cls
        for k, v in defaults.items():
            assert getattr(opt, k) == v, k
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.get("adagrad")


def test_clipping(rng):
    w0, _ = _problem(rng)
    g = np.full((3, 2), 3.0)  # norm 3 * sqrt(6)
    (w,) = _run(optimizers.SGD(1.0, clipnorm=1.0), w0, [g])
    np.testing.assert_allclose(w, w0 - g / np.linalg.norm(g), rtol=1e-12)
    (w,) = _run(optimizers.SGD(1.0, clipvalue=0.5), w0, [np.array([[3.0, -3.0]] * 3) * [1, 0.1]])
    np.testing.assert_allclose(w, w0 - np.array([[0.5, -0.3]] * 3), rtol=1e-12)
    small = np.full((3, 2), 0.01)  # under the threshold: unchanged
    (w,) = _run(optimizers.SGD(1.0, clipnorm=1.0), w0, [small])
    np.testing.assert_allclose(w, w0 - small, rtol=1e-12)
    with pytest.raises(ValueError, match="at most one"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)


def test_global_clipnorm_scales_all_gradients_together(rng):
    v1, v2 = Variable(np.zeros(2), "a", "a"), Variable(np.zeros(2), "b", "b")
    optimizers.SGD(1.0, global_clipnorm=1.0).apply_gradients(
        [(np.array([3.0, 0.0]), v1), (np.array([0.0, 4.0]), v2)]
    )
    np.testing.assert_allclose(np.concatenate([v1.value, v2.value]), [-0.6, 0, 0, -0.8])


def test_a_bad_gradient_changes_nothing(rng):
    v1, v2 = Variable(np.ones(2), "a", "a"), Variable(np.ones(2), "b", "b")
    opt = optimizers.Adam(0.1)
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.apply_gradients([(np.ones(2), v1), (np.array([1.0, np.nan]), v2)])
    with pytest.raises(ValueError, match="shape"):
        opt.apply_gradients([(np.ones(2), v1), (np.ones(3), v2)])
    np.testing.assert_array_equal(v1.value, 1.0)
    np.testing.assert_array_equal(v2.value, 1.0)
    assert opt.iterations == 0


def test_unsupported_arguments_are_refused():
    with pytest.raises(NotImplementedError, match="use_ema"):
        optimizers.Adam(use_ema=True)
    with pytest.raises(NotImplementedError, match="gradient_accumulation_steps"):
        optimizers.SGD(gradient_accumulation_steps=2)
