"""Checks the single-input layer tests share (test_layers_embedding, _conv, _reshaping):
a layer against live Keras 3 with the same weights, inputs and mask; finite differences of
a layer's backward; one SGD step of a Sequential against Keras's; save/load and pickling."""

from __future__ import annotations

import os
import pickle

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import rnncore  # noqa: E402
from conftest import make_mask  # noqa: E402, F401  (re-exported for the tests)
from rnncore import optimizers  # noqa: E402
from test_layer_signatures import _layout  # noqa: E402

#: tolerance against Keras per dtype (Keras computes float64 in float64 on this backend
#: except where a test says otherwise)
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}

#: warnings from Keras the tests ignore: Keras 3.15's torch Variable against NumPy 2 (Keras's
#: issue), and Keras's note that a layer without mask support drops a mask (rnncore drops it
#: silently)
KERAS_WARNINGS = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Layer .* does not support masking:UserWarning"),
]

#: the largest differences from Keras seen in this run, by check (for the closing note)
MAX_ERR: dict = {}

#: where Keras's torch backend leaves a mask on a tensor
_MASK_ATTR = "_keras_mask"


def record(key: str, err: float) -> float:
    MAX_ERR[key] = max(MAX_ERR.get(key, 0.0), err)
    return err


def keras_call(layer, x, mask=None, training=False):
    """Keras's output and output mask (``None`` when it gives none) as NumPy arrays."""
    t = torch.as_tensor(np.asarray(x))
    if mask is not None:
        setattr(t, _MASK_ATTR, torch.as_tensor(np.asarray(mask)))
    y = layer(t, training=training)
    m = getattr(y, _MASK_ATTR, None)
    return keras.ops.convert_to_numpy(y), None if m is None else keras.ops.convert_to_numpy(m)


def ours_call(layer, x, mask=None):
    y = layer(x, mask=mask)
    m = getattr(y, _MASK_ATTR, None)
    return np.asarray(y), None if m is None else np.asarray(m)


def compare_with_keras(ours, theirs, x, mask=None, tol=None):
    """Same weights (Keras's into ours), same input and mask: outputs and output masks
    agree; records and returns the largest difference of the outputs."""
    ky, kmask = keras_call(theirs, x, mask)
    if theirs.weights:
        ours.build(np.shape(x))
        ours.set_weights(theirs.get_weights())
    y, m = ours_call(ours, x, mask)
    assert y.shape == ky.shape and y.dtype == ky.dtype, (y.shape, ky.shape, y.dtype, ky.dtype)
    np.testing.assert_allclose(y, ky, **(tol or TOL[ours.dtype]))
    if kmask is None:
        assert m is None
    else:
        np.testing.assert_array_equal(m, kmask)
    err = float(np.max(np.abs(y - ky), initial=0.0))
    return record(f"{type(ours).__name__} forward {ours.dtype}", err)


def signature_matches_keras(ours, theirs):
    """The constructor's parameters, their order, kinds and defaults are Keras's."""
    assert _layout(ours.__init__) == _layout(theirs.__init__)


def _directional(f, value, direction, eps):
    v0 = value.copy()
    value[...] = v0 + eps * direction
    up = f()
    value[...] = v0 - eps * direction
    down = f()
    value[...] = v0
    return (up - down) / (2 * eps)


def gradient_errors(layer, x, mask=None, seed=0, eps=1e-6, wrt_input=True):
    """Relative errors of the backward's directional derivatives (each weight, then the
    input) against central differences of ``L = sum(y * g)``, ``g`` random; float64."""
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64) if wrt_input else x

    def loss():  # the same noise at every evaluation: a fresh generator with one seed
        y = layer.forward_train(x, mask, np.random.default_rng(seed))[0]
        return float(np.sum(y * g))

    y = layer.forward_train(x, mask, np.random.default_rng(seed))[0]
    g = rng.standard_normal(np.shape(y))
    dx = layer.backward(g)
    checks = [(v.value, d) for v, d in zip(layer.weights, layer.gradients)]
    if wrt_input:
        assert dx.shape == x.shape and dx.dtype == x.dtype
        checks.append((x, dx))
    errors = []
    for value, grad in checks:
        r = rng.standard_normal(value.shape)
        numeric, analytic = _directional(loss, value, r, eps), float(np.sum(grad * r))
        errors.append(abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))
    return errors


def one_sgd_step(keras_layers, our_layers, x, y, seed=0):
    """The same model in Keras and rnncore with the same weights; predictions agree, and one
    SGD step (learning rate 1: each weight moves by minus its gradient) on ``(x, y)``, loss
    mse, moves the weights alike. Returns our model after the step."""
    km, ours = keras.Sequential(keras_layers), rnncore.Sequential(our_layers)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.4, w.shape).astype(np.float32) for w in km.get_weights()]
    km.set_weights(weights)
    ours.set_weights(weights)
    name = "+".join(type(layer).__name__ for layer in ours.layers)
    k_pred = km.predict(x, verbose=0)
    np.testing.assert_allclose(ours.predict(x), k_pred, **TOL["float32"])
    record(f"{name} predict", float(np.max(np.abs(ours.predict(x) - k_pred))))
    km.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    ours.compile(optimizer=optimizers.SGD(1.0), loss="mse")
    k_loss = float(km.train_on_batch(x, y))
    assert ours.train_on_batch(x, y) == pytest.approx(k_loss, rel=1e-5)
    for w, a, b in zip(weights, ours.get_weights(), km.get_weights()):
        assert np.max(np.abs(w - b)) > 1e-4  # every weight has a gradient worth comparing
        np.testing.assert_allclose(w - a, w - b, rtol=1e-5, atol=2e-6)
        record(f"{name} SGD step", float(np.max(np.abs(a - b))))
    return ours


def round_trips(model, x, tmp_path):
    """``save``/``load_model`` and pickling give the same predictions, bit for bit."""
    want = model.predict(x)
    path = tmp_path / "model.rnncore"
    model.save(path)
    np.testing.assert_array_equal(rnncore.load_model(path).predict(x), want)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(x), want)
