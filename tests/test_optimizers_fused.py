"""The fused optimizer step (one core call per step) against the NumPy formulas of
rnncore.reference.apply_gradients, bit for bit: every optimizer and option, float32 and
float64, several steps, values and slots; the same bits with 1 and 2 threads; nothing
written when a gradient is not finite."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import optimizers, reference
from rnncore.layers import Variable
from rnncore.optimizers import schedules

STEPS = 3
# A large variable (several chunks of the core's element split, worth two threads), a
# matrix and a small vector, named so that exclude_from_weight_decay can match one.
SHAPES = {"kernel": (97, 700), "recurrent_kernel": (13, 9), "bias": (7,)}

CONFIGS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "sgd_momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optimizers.Adam(0.01),
    "adam_custom": lambda: optimizers.Adam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3),
    "adam_amsgrad": lambda: optimizers.Adam(0.01, amsgrad=True),
    "adamw": lambda: optimizers.AdamW(0.01, weight_decay=0.05),
    "rmsprop": lambda: optimizers.RMSprop(0.01),
    "rmsprop_momentum": lambda: optimizers.RMSprop(0.01, momentum=0.5),
    "rmsprop_centered": lambda: optimizers.RMSprop(0.01, rho=0.8, epsilon=1e-4, centered=True),
    "rmsprop_centered_momentum": lambda: optimizers.RMSprop(0.01, momentum=0.3, centered=True),
}

OPTIONS = {
    "plain": {},
    "clipnorm": {"clipnorm": 2.0},  # below the gradients' norms: every step clips
    "global_clipnorm": {"global_clipnorm": 5.0},
    "clipvalue": {"clipvalue": 0.5},
    "weight_decay": {"weight_decay": 0.1},
    "schedule": {"learning_rate": schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.5)},
}


def _make(config, options):
    opt = CONFIGS[config]()
    kwargs = {k: getattr(opt, k) for k in opt._hyper}
    kwargs["learning_rate"] = opt.learning_rate
    if opt.weight_decay is not None:
        kwargs["weight_decay"] = opt.weight_decay
    kwargs.update(options)
    made = type(opt)(**kwargs)
    if made.weight_decay is not None:
        made.exclude_from_weight_decay(var_names=["bias"])
    return made


def _variables(rng, dtypes):
    return [
        Variable(rng.standard_normal(shape).astype(dtype), name, f"layer/{name}")
        for (name, shape), dtype in zip(SHAPES.items(), dtypes)
    ]


def _grads(rng, variables):
    return [[rng.standard_normal(v.shape).astype(v.value.dtype) for v in variables]
            for _ in range(STEPS)]  # fmt: skip


def _state(opt, variables):
    return [v.numpy() for v in variables] + [
        opt.get_slot(v, name) for v in variables for name in opt._slot_names
    ]


def _assert_same_bits(got, expected, what):
    for k, (a, e) in enumerate(zip(got, expected, strict=True)):
        assert a.dtype == e.dtype, (what, k, a.dtype, e.dtype)
        if not np.array_equal(a, e):
            ulps = np.max(np.abs(a.view(f"i{a.itemsize}") - e.view(f"i{e.itemsize}")))
            raise AssertionError(f"{what}: array {k} differs by up to {ulps} ulp")


def _run(update, opt, variables, grads):
    for step_grads in grads:
        update(opt, list(zip(step_grads, variables)))
    return _state(opt, variables)


def _fused(opt, pairs):
    opt.apply_gradients(pairs)


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_step_is_the_numpy_formula_bit_for_bit(config, options, dtype, rng):
    start = _variables(rng, [dtype] * 3)
    grads = _grads(rng, start)
    if options == "clipvalue":  # so that clipping changes some elements
        grads = [[2 * g for g in step] for step in grads]
    ours, theirs = ([Variable(v.numpy(), v.name, v.path) for v in start] for _ in range(2))
    got = _run(_fused, _make(config, OPTIONS[options]), ours, grads)
    expected = _run(reference.apply_gradients, _make(config, OPTIONS[options]), theirs, grads)
    _assert_same_bits(got, expected, f"{config}/{options}")
    assert all(v.version == STEPS for v in ours)  # each write counted, as assign counts it


@pytest.mark.parametrize("config", ["adam", "rmsprop_centered_momentum", "sgd_nesterov"])
def test_same_bits_with_one_and_two_threads(config, rng, threads):
    start = _variables(rng, [np.float32] * 3)
    grads = _grads(rng, start)
    results = []
    for n in (1, 2):
        rnncore.set_num_threads(n)
        variables = [Variable(v.numpy(), v.name, v.path) for v in start]
        results.append(_run(_fused, _make(config, {"weight_decay": 0.1}), variables, grads))
    _assert_same_bits(results[1], results[0], config)


def test_float32_and_float64_variables_in_one_step(rng):
    start = _variables(rng, [np.float32, np.float64, np.float32])
    grads = _grads(rng, start)
    ours, theirs = ([Variable(v.numpy(), v.name, v.path) for v in start] for _ in range(2))
    got = _run(_fused, optimizers.Adam(0.01, clipnorm=1.0), ours, grads)
    expected = _run(reference.apply_gradients, optimizers.Adam(0.01, clipnorm=1.0), theirs, grads)
    _assert_same_bits(got, expected, "mixed dtypes")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_writes_nothing(bad, rng):
    variables = _variables(rng, [np.float32] * 3)
    opt = optimizers.Adam(0.01)
    opt.apply_gradients(zip(_grads(rng, variables)[0], variables))
    before = _state(opt, variables)
    versions = [v.version for v in variables]
    grads = _grads(rng, variables)[0]
    grads[0][50, 600] = bad  # the large variable, in a chunk the second thread would take
    with pytest.raises(FloatingPointError, match=r"'layer/kernel' is not finite"):
        opt.apply_gradients(zip(grads, variables))
    _assert_same_bits(_state(opt, variables), before, "after the refused step")
    assert [v.version for v in variables] == versions and opt.iterations == 1


def test_a_variable_given_twice_is_refused(rng):
    v = _variables(rng, [np.float64] * 3)[2]
    opt = optimizers.SGD(0.1)
    with pytest.raises(ValueError, match=r"'layer/bias' is given twice"):
        opt.apply_gradients([(np.ones(7), v), (np.ones(7), v)])
    assert opt.iterations == 0 and v.version == 0


def test_gradients_passed_are_not_modified(rng):
    variables = _variables(rng, [np.float32] * 3)
    grads = _grads(rng, variables)[0]
    kept = [g.copy() for g in grads]
    optimizers.Adam(0.1, clipvalue=0.1).apply_gradients(zip(grads, variables))
    _assert_same_bits(grads, kept, "gradients")
