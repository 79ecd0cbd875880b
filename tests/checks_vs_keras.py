"""What the layer tests against live Keras 3 share (merging, normalization, attention).

* :func:`keras_run`: a Keras layer's outputs, output mask and, given ``dy``, the gradients of
  ``sum(output * dy)`` for the inputs and the trainable weights (torch's autograd; Keras on
  the torch backend). Masks travel as Keras's own, attached to the input tensors.
* :func:`ours_run`: the same from an rnncore layer's ``forward_train`` and ``backward``.
* :func:`fd_check`: rnncore's backward against central finite differences in float64, one
  random direction per input and per trainable weight.
* :func:`round_trips`: a layer rebuilt from its JSON config plus weights, and unpickled,
  gives the same outputs.
* :func:`record` / ``MAX_ERR`` tables: the largest differences seen, printed by conftest.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402, F401  (imported for its backend set-up)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from keras.src import backend as keras_backend  # noqa: E402
from keras.src.backend.common import dtypes as keras_dtypes  # noqa: E402

from conftest import make_mask  # noqa: E402, F401  (re-exported for the tests)
from rnncore.layers import deserialize_layer, serialize_layer  # noqa: E402
from test_layer_signatures import _layout  # noqa: E402

B, T, D = 3, 5, 4
#: mask patterns of conftest.make_mask: padding on the right / left, holes, a masked row
MASKS = ("none", "right_pad", "left_pad", "holes", "full_row")
DTYPES = ("float32", "float64")
#: rnncore against Keras: forward and gradients (float32 gradients of normalisations go
#: through 1/sigma and sums of many terms, so they get a little more room)
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
GRAD_TOL = {"float32": dict(rtol=1e-4, atol=2e-5), "float64": dict(rtol=1e-11, atol=1e-12)}


@contextlib.contextmanager
def keras_float64(dtype):
    """Keras's torch backend rounds float64 results to float32 in its type promotion
    (``BIT64_TO_BIT32_DTYPE``, JAX's default without x64): a float64 matmul or batch
    normalisation is only float32-accurate. Lifted here so Keras computes float64 in float64
    and the comparison can be at 1e-12."""
    table = keras_dtypes.BIT64_TO_BIT32_DTYPE
    saved = table["float64"]
    if np.dtype(dtype) == np.float64:
        table["float64"] = "float64"
    try:
        yield
    finally:
        table["float64"] = saved


def signature_matches_keras(ours, theirs):
    """The constructor's parameters, their order, kinds and defaults are Keras's."""
    assert _layout(ours.__init__) == _layout(theirs.__init__)


def _flat(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def keras_run(layer, inputs, masks=None, dy=None, multi=True, **call_kw):
    """``(outputs, output_mask, input_grads, weight_grads)`` of a Keras layer called on the
    list ``inputs`` (on its one array when not ``multi``); grads are None without ``dy``."""
    dtype = inputs[0].dtype
    with keras_float64(dtype):
        ts = []
        for k, a in enumerate(inputs):
            t = torch.tensor(np.ascontiguousarray(a), requires_grad=dy is not None)
            m = None if masks is None or k >= len(masks) else masks[k]
            if m is not None:
                keras_backend.set_keras_mask(t, torch.tensor(m))
            ts.append(t)
        out = layer(ts if multi else ts[0], **call_kw)
        outs = _flat(out)
        out_mask = keras_backend.get_keras_mask(outs[0])
        out_mask = None if out_mask is None else out_mask.numpy()
        if dy is None:
            return [o.detach().numpy() for o in outs], out_mask, None, None
        loss = sum((o * torch.tensor(d)).sum() for o, d in zip(outs, _flat(dy)))
        params = [v.value for v in layer.trainable_weights]
        grads = torch.autograd.grad(loss, ts + params, allow_unused=True)
        grads = [
            np.zeros(x.shape, dtype) if g is None else g.numpy()
            for g, x in zip(grads, list(ts) + params)
        ]
    return [o.detach().numpy() for o in outs], out_mask, grads[: len(ts)], grads[len(ts) :]


def _args(layer, inputs, masks):
    """``(inputs, mask)`` as the rnncore layer takes them: lists for a multi-input layer."""
    if getattr(layer, "_multi_input", False):
        return inputs, masks
    return inputs[0], None if masks is None else masks[0]


def ours_run(layer, inputs, masks=None, dy=None, rng=None, **call_kw):
    """The same from rnncore: ``forward_train`` then ``backward(dy)``."""
    x, mask = _args(layer, inputs, masks)
    y, out_mask = layer.forward_train(x, mask, rng, **call_kw)
    outs = _flat(y)
    if dy is None:
        return outs, out_mask, None, None
    dxs = layer.backward(dy)
    dxs = dxs if getattr(layer, "_multi_input", False) else [dxs]
    trainable = {id(v) for v in layer.trainable_weights}
    grads = [g for g, v in zip(layer.gradients, layer.weights) if id(v) in trainable]
    return outs, out_mask, dxs, grads


def record(table: dict, key: str, actual, desired) -> float:
    err = max(
        (float(np.max(np.abs(np.asarray(a, np.float64) - d), initial=0.0)))
        for a, d in zip(actual, desired)
    )
    table[key] = max(table.get(key, 0.0), err)
    return err


def assert_close(actual, desired, tol, what):
    assert len(actual) == len(desired), what
    for k, (a, d) in enumerate(zip(actual, desired)):
        a = np.asarray(a)
        assert a.shape == np.shape(d), f"{what}[{k}]: shape {a.shape}, expected {np.shape(d)}"
        np.testing.assert_allclose(a, d, **tol, err_msg=f"{what}[{k}]")


def compare_with_keras(table, name, ours, theirs, inputs, masks=None, seed=0, keras_kw=None,
                       rng=None, **call_kw):  # fmt: skip
    """Forward, output mask and gradients of ``ours`` (rnncore's ``forward_train`` and
    ``backward``) against ``theirs`` (Keras, same weights) on ``inputs``; ``call_kw`` go to
    both, ``keras_kw`` to Keras's call and rnncore's direct call (e.g. ``training=True``).
    ``rng``: the generator of rnncore's training forward (its dropout draw). Records the
    largest differences under ``name``."""
    dtype = str(inputs[0].dtype)
    multi = getattr(ours, "_multi_input", False)
    keras_kw = {**call_kw, **(keras_kw or {})}
    y_k, m_k, _, _ = keras_run(theirs, inputs, masks, None, multi, **keras_kw)
    dy = [np.random.default_rng(seed).standard_normal(y.shape).astype(dtype) for y in y_k]
    dy = dy if len(dy) > 1 else dy[0]
    y_k, m_k, dx_k, dw_k = keras_run(theirs, inputs, masks, dy, multi, **keras_kw)
    y_o, m_o, dx_o, dw_o = ours_run(ours, inputs, masks, dy, rng, **call_kw)
    for y in y_o:
        assert y.dtype == np.dtype(dtype), f"{name}: output dtype {y.dtype}"
    record(table, f"{name} {dtype} forward", y_o, y_k)
    record(table, f"{name} {dtype} gradients", dx_o + dw_o, dx_k + dw_k)
    assert_close(y_o, y_k, TOL[dtype], f"{name}: outputs")
    if m_k is None:
        assert m_o is None, f"{name}: Keras gives no output mask"
    else:
        np.testing.assert_array_equal(np.asarray(m_o), m_k, err_msg=f"{name}: output mask")
    # the direct call gives the training forward's outputs (no dropout) and mask
    if rng is None:  # (a direct call draws its dropout from the layer's seed)
        x, mask = _args(ours, inputs, masks)
        direct = ours(x, mask=mask, **keras_kw)
        assert_close(_flat(direct), y_o, dict(rtol=0, atol=0), f"{name}: call vs forward_train")
    assert_close(dx_o, dx_k, GRAD_TOL[dtype], f"{name}: input gradients")
    assert_close(dw_o, dw_k, GRAD_TOL[dtype], f"{name}: weight gradients")


def fd_check(layer, inputs, masks=None, seed=0, eps=1e-6, rtol=1e-7, rng_seed=None, **call_kw):
    """rnncore's backward against central differences of ``sum(output * dy)`` in float64,
    one random direction per input and trainable weight. ``rng_seed``: the same dropout
    draw for every forward (a fresh generator each time)."""
    rng = np.random.default_rng(seed)

    def forward():
        gen = None if rng_seed is None else np.random.default_rng(rng_seed)
        return ours_run(layer, inputs, masks, None, gen, **call_kw)[0]

    outs = forward()
    dy = [rng.standard_normal(y.shape) for y in outs]
    gen = None if rng_seed is None else np.random.default_rng(rng_seed)
    _, _, dxs, grads = ours_run(layer, inputs, masks, dy if len(dy) > 1 else dy[0], gen, **call_kw)

    def loss():
        return sum(float(np.sum(y * d)) for y, d in zip(forward(), dy))

    arrays = list(inputs) + [v.value for v in layer.weights if v.trainable]
    for k, (a, g) in enumerate(zip(arrays, list(dxs) + list(grads))):
        direction = rng.standard_normal(a.shape)
        a += eps * direction
        up = loss()
        a -= 2 * eps * direction
        down = loss()
        a += eps * direction
        numeric = (up - down) / (2 * eps)
        analytic = float(np.sum(np.asarray(g) * direction))
        scale = max(abs(numeric), abs(analytic), 1e-3)
        assert abs(numeric - analytic) <= rtol * scale + 1e-8, (
            f"array {k}: finite differences {numeric!r}, backward {analytic!r}"
        )


def round_trips(layer, inputs, masks=None, **call_kw):
    """The layer from its JSON config plus weights, and unpickled, gives the same outputs."""
    x, mask = _args(layer, inputs, masks)
    expected = _flat(layer(x, mask=mask, **call_kw))
    spec = json.loads(json.dumps(serialize_layer(layer)))
    clone = deserialize_layer(spec)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    clone.build(layer.input_shape)
    clone.set_weights(layer.get_weights())
    unpickled = pickle.loads(pickle.dumps(layer))
    for other in (clone, unpickled):
        assert [v.name for v in other.weights] == [v.name for v in layer.weights]
        assert_close(_flat(other(x, mask=mask, **call_kw)), expected, dict(rtol=0, atol=0), "")
