"""Learning-rate schedules against Keras 3's (keras.optimizers.schedules), and optimizers
driven by them against Keras's optimizers step by step."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rnncore import optimizers  # noqa: E402
from rnncore.layers import Variable  # noqa: E402
from rnncore.optimizers import schedules  # noqa: E402

# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

#: (class name, arguments): each evaluated at steps 0..STEPS by both libraries
SCHEDULES = {
    "exponential": ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7,
                                             decay_rate=0.5)),
    "exponential_staircase": ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7,
                                                       decay_rate=0.5, staircase=True)),
    "piecewise": ("PiecewiseConstantDecay", dict(boundaries=[3, 10, 20],
                                                 values=[1.0, 0.5, 0.1, 0.01])),
    "piecewise_one_boundary": ("PiecewiseConstantDecay", dict(boundaries=[5], values=[0.3, 0.2])),
    "cosine": ("CosineDecay", dict(initial_learning_rate=0.2, decay_steps=17)),
    "cosine_alpha": ("CosineDecay", dict(initial_learning_rate=0.2, decay_steps=17, alpha=0.1)),
    "cosine_warmup": ("CosineDecay", dict(initial_learning_rate=0.0, decay_steps=13, alpha=0.05,
                                          warmup_target=0.3, warmup_steps=6)),
    "cosine_warmup_from_lr0": ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=9,
                                                   warmup_target=0.5, warmup_steps=4)),
    "polynomial": ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=11,
                                           end_learning_rate=0.01, power=2.0)),
    "polynomial_cycle": ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=11,
                                                 power=0.5, cycle=True)),
    "inverse_time": ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=5,
                                              decay_rate=0.5)),
    "inverse_time_staircase": ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=5,
                                                        decay_rate=0.5, staircase=True)),
}  # fmt: skip

STEPS = 40  # past every decay_steps (+ warmup) above, so the clamped tails are covered


def _pair(key):
    name, kw = SCHEDULES[key]
    return getattr(schedules, name)(**kw), getattr(keras.optimizers.schedules, name)(**kw)


def _values(schedule):
    return np.array([float(keras.ops.convert_to_numpy(schedule(s))) for s in range(STEPS + 1)])


@pytest.mark.parametrize("key", list(SCHEDULES))
def test_schedule_values_match_keras(key, keras_float64):
    """Keras in float64: measured differences up to 1.2e-15 relative (a few ulps)."""
    ours, theirs = _pair(key)
    np.testing.assert_allclose(_values(ours), _values(theirs), rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("key", ["cosine_warmup", "polynomial_cycle", "exponential"])
def test_schedule_values_match_keras_float32(key):
    """Keras's default float32 arithmetic: within one float32 rounding of the peak rate
    (measured: 1.8e-8 absolute, near the cosine's end where 1 + cos(.) cancels)."""
    ours, theirs = _pair(key)
    got, expected = _values(ours), _values(theirs)
    np.testing.assert_allclose(got, expected, rtol=2e-7, atol=6e-8 * np.abs(expected).max())


@pytest.mark.parametrize("key", list(SCHEDULES))
def test_config_round_trips_and_reads_keras_configs(key):
    ours, theirs = _pair(key)
    assert ours.get_config() == theirs.get_config()
    again = type(ours).from_config(ours.get_config())
    assert [again(s) for s in range(0, STEPS, 3)] == [ours(s) for s in range(0, STEPS, 3)]
    assert schedules.serialize(ours) == keras.optimizers.schedules.serialize(theirs)
    # a Keras schedule object, or its serialized form, becomes rnncore's
    for keras_form in (theirs, keras.optimizers.schedules.serialize(theirs)):
        converted = schedules.get(keras_form)
        assert type(converted) is type(ours)
        assert converted.get_config() == ours.get_config()


def test_keras_import_path():
    from rnncore.optimizers.schedules import CosineDecay  # Keras's module path

    assert CosineDecay is schedules.CosineDecay
    assert optimizers.schedules.ExponentialDecay is schedules.ExponentialDecay


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.ExponentialDecay(0.1, 0, 0.5)
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.CosineDecay(0.1, -3)
    with pytest.raises(ValueError, match="one shorter"):
        schedules.PiecewiseConstantDecay([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="increase"):
        schedules.PiecewiseConstantDecay([5, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        schedules.deserialize({"class_name": "CosineDecayRestarts", "config": {}})
    with pytest.raises(TypeError, match="learning_rate"):
        optimizers.SGD(learning_rate="fast")
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.Adam(learning_rate=float("nan"))


#: (optimizer, its arguments, schedule key): the schedule drives the optimizer
TRAJECTORIES = [
    ("SGD", {"momentum": 0.9}, "exponential_staircase"),
    ("SGD", {}, "piecewise"),
    ("Adam", {}, "cosine_warmup"),
    ("RMSprop", {"centered": True}, "polynomial"),
    ("AdamW", {"weight_decay": 0.1}, "cosine_alpha"),  # the decay uses the scheduled rate
]


@pytest.mark.parametrize(
    "opt,kw,key", TRAJECTORIES, ids=[f"{o.lower()}-{k}" for o, _, k in TRAJECTORIES]
)
def test_optimizer_with_a_schedule_follows_keras(opt, kw, key, rng, keras_float64):
    """The schedule is read at the iteration count before each update (0 first), as Keras:
    25 float64 updates, measured within 2e-15 of Keras's weights."""
    ours_lr, theirs_lr = _pair(key)
    ours = getattr(optimizers, opt)(learning_rate=ours_lr, **kw)
    theirs = getattr(keras.optimizers, opt)(learning_rate=theirs_lr, **kw)
    w0 = rng.standard_normal((4, 3))
    v, kv = Variable(w0.copy(), "w", "w"), keras.Variable(w0.copy(), dtype="float64")
    for step in range(25):
        assert ours.learning_rate == ours_lr(step)
        g = rng.standard_normal((4, 3))
        ours.apply_gradients([(g, v)])
        theirs.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
    assert ours.iterations == 25
    np.testing.assert_allclose(v.value, keras.ops.convert_to_numpy(kv), rtol=1e-13, atol=1e-14)


def test_learning_rate_of_an_optimizer(rng):
    opt = optimizers.SGD(learning_rate=schedules.ExponentialDecay(1.0, 1, 0.5))
    v = Variable(np.zeros(2), "w", "w")
    for _ in range(3):
        opt.apply_gradients([(np.ones(2), v)])
    np.testing.assert_allclose(v.value, -(1.0 + 0.5 + 0.25))
    assert opt.learning_rate == 0.125
    with pytest.raises(TypeError, match="schedule"):
        opt.learning_rate = 0.1  # as Keras: a schedule's rate is not settable
    fixed = optimizers.SGD(0.1)
    fixed.learning_rate = 0.5
    assert fixed.learning_rate == 0.5
    # a callable without arguments is called at each update (Keras)
    rates = iter([1.0, 2.0])
    called = optimizers.SGD(learning_rate=lambda: next(rates))
    w = Variable(np.zeros(1), "w", "w")
    called.apply_gradients([(np.ones(1), w)])
    called.apply_gradients([(np.ones(1), w)])
    np.testing.assert_array_equal(w.value, [-3.0])
    config = optimizers.Adam(learning_rate=schedules.CosineDecay(0.1, 10)).get_config()
    assert config["learning_rate"]["class_name"] == "CosineDecay"
    again = optimizers.Adam.from_config(config)
    assert isinstance(again._learning_rate, schedules.CosineDecay)
    assert again.learning_rate == pytest.approx(0.1)
