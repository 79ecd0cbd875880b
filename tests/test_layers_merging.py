"""The merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot)
against live Keras 3: outputs, output masks and gradients (Keras's through torch autograd)
in both float dtypes with masks (padding on either side, holes, a masked row, an unmasked
input), broadcasting of unequal shapes and ranks; finite differences in float64; configs,
weights and pickles round trip; bad input is refused naming the layer and shapes."""

from __future__ import annotations

import numpy as np
import pytest

import checks_vs_keras as ck
from checks_vs_keras import DTYPES, MASKS, TOL, B, D, T, keras, make_mask
from rnncore import layers as L

#: largest differences from Keras, by layer, dtype and forward / gradients (conftest prints)
MAX_ERR: dict = {}

ELEMENTWISE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
ALL = ELEMENTWISE + ("Concatenate", "Dot")


def _inputs(rng, dtype, shapes):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _masks(rng, pattern, n):
    """Input 0 gets ``pattern``; the others holes and left padding; "unmasked_second": only
    the first input has a mask (Keras then gives no output mask for the element-wise
    merges, and all-True for the second input's part of a Concatenate)."""
    if pattern == "none":
        return None
    if pattern == "unmasked_second":
        return [make_mask(rng, "holes", B, T), None] + [None] * (n - 2)
    others = [make_mask(rng, p, B, T) for p in ("holes", "left_pad")]
    return [make_mask(rng, pattern, B, T)] + others[: n - 1]


def _pair(name, dtype, **kw):
    return getattr(L, name)(dtype=dtype, **kw), getattr(keras.layers, name)(dtype=dtype, **kw)


@pytest.mark.parametrize("name", ALL)
def test_signature_matches_keras(name):
    ck.signature_matches_keras(getattr(L, name), getattr(keras.layers, name))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", MASKS + ("unmasked_second",))
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_merge_matches_keras(name, pattern, dtype, rng):
    n = 2 if name == "Subtract" else 3
    xs = _inputs(rng, dtype, [(B, T, D)] * n)
    ck.compare_with_keras(MAX_ERR, name, *_pair(name, dtype), xs, _masks(rng, pattern, n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_merge_broadcasts_as_keras(name, dtype, rng):
    """Unequal shapes broadcast; a lower rank gets axes inserted after the batch axis."""
    shapes = [(B, T, D), (B, 1, D)] if name == "Subtract" else [(B, T, D), (B, 1, D), (B, D)]
    xs = _inputs(rng, dtype, shapes)
    ours, theirs = _pair(name, dtype)
    ck.compare_with_keras(MAX_ERR, name + " broadcast", ours, theirs, xs)
    assert ours.compute_output_shape([(None,) + s[1:] for s in shapes]) == (None, T, D)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", MASKS + ("unmasked_second",))
@pytest.mark.parametrize("axis", [-1, 1])
def test_concatenate_matches_keras(axis, pattern, dtype, rng):
    """On the feature axis the mask is the OR of the inputs' (all-True for an unmasked
    one); on the time axis the masks are concatenated."""
    shapes = [(B, T, D), (B, T, 2)] if axis == -1 else [(B, T, D), (B, T, D)]
    xs = _inputs(rng, dtype, shapes)
    ours, theirs = _pair("Concatenate", dtype, axis=axis)
    masks = _masks(rng, pattern, 2)
    ck.compare_with_keras(MAX_ERR, f"Concatenate(axis={axis})", ours, theirs, xs, masks)
    assert ours.compute_output_shape([(None,) + s[1:] for s in shapes])[axis] == sum(
        s[axis] for s in shapes
    )


DOT_CASES = {  # axes: the two inputs' shapes
    2: [(B, T, D), (B, T + 1, D)],
    (1, 1): [(B, T, D), (B, T, 2)],
    (2, 1): [(B, T, D), (B, D, 3)],
    1: [(B, D), (B, D)],
    (1, 2): [(B, D), (B, T, D)],
    -1: [(B, T, 2, D), (B, D)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("axes", list(DOT_CASES), ids=str)
def test_dot_matches_keras(axes, normalize, dtype, rng):
    shapes = DOT_CASES[axes]
    xs = _inputs(rng, dtype, shapes)
    masks = [make_mask(rng, "holes", B, T), None] if len(shapes[0]) == 3 else None
    ours, theirs = _pair("Dot", dtype, axes=axes, normalize=normalize)
    ck.compare_with_keras(MAX_ERR, "Dot", ours, theirs, xs, masks)  # the mask is dropped
    out = ours.compute_output_shape([(None,) + s[1:] for s in shapes])
    assert out[1:] == ours(xs).shape[1:]


def test_dot_normalize_of_a_zero_vector_is_zero_as_keras(rng):
    """x * min(1/|x|, 1e7) is 0 for x = 0; its gradient there is 1e7 dy, where Keras's
    autograd gives NaN (inf * 0 through rsqrt): only the outputs are compared."""
    xs = _inputs(rng, "float64", [(B, D), (B, D)])
    xs[0][1] = 0.0
    ours, theirs = _pair("Dot", "float64", axes=1, normalize=True)
    (y_k,), _, _, _ = ck.keras_run(theirs, xs)
    np.testing.assert_allclose(ours(xs), y_k, **TOL["float64"])
    assert ours(xs)[1, 0] == 0.0
    ours.forward_train(xs)
    assert all(np.isfinite(d).all() for d in ours.backward(np.ones((B, 1))))


# ---- finite differences (float64) --------------------------------------------------------


@pytest.mark.parametrize("pattern", ["none", "holes", "full_row", "unmasked_second"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_merge_gradients_by_finite_differences(name, pattern, rng):
    n = 2 if name == "Subtract" else 3
    shapes = [(B, T, D), (B, T, 1), (B, T, D)][:n]
    if pattern != "none":  # masks act on values only at equal ranks
        shapes = [(B, T, D)] * n
    xs = _inputs(rng, "float64", shapes)
    ck.fd_check(getattr(L, name)(dtype="float64"), xs, _masks(rng, pattern, n))


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_concatenate_gradients_by_finite_differences(axis, rng):
    xs = _inputs(rng, "float64", [(B, T, D), (B, T, D)])
    ck.fd_check(L.Concatenate(axis=axis, dtype="float64"), xs, _masks(rng, "right_pad", 2))


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("axes", list(DOT_CASES), ids=str)
def test_dot_gradients_by_finite_differences(axes, normalize, rng):
    xs = _inputs(rng, "float64", DOT_CASES[axes])
    ck.fd_check(L.Dot(axes=axes, normalize=normalize, dtype="float64"), xs)


# ---- round trips, functional forms, bad input ------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_config_weights_and_pickle_round_trip(name, rng):
    kw = {"Concatenate": dict(axis=1), "Dot": dict(axes=[2, 2], normalize=True)}.get(name, {})
    layer = getattr(L, name)(name=f"my_{name.lower()}", **kw)
    xs = _inputs(rng, "float32", [(B, T, D), (B, T, D)])
    ck.round_trips(layer, xs, _masks(rng, "holes", 2))
    keras_config = getattr(keras.layers, name)(**kw).get_config()  # a Keras file's config
    unbuilt = getattr(L, name)(**kw)
    unbuilt.set_weights([])  # no weights: nothing to build from, nothing to set
    assert unbuilt.get_weights() == [] and not unbuilt.built
    assert type(L.LAYER_CLASSES[name].from_config(keras_config)) is getattr(L, name)


def test_functional_forms_equal_the_layers(rng):
    a, b = _inputs(rng, "float32", [(B, T, D), (B, T, D)])
    for name in ELEMENTWISE:
        layer = getattr(L, name)()
        np.testing.assert_array_equal(getattr(L, name.lower())([a, b]), layer([a, b]))
    np.testing.assert_array_equal(L.concatenate([a, b], axis=1), np.concatenate([a, b], 1))
    np.testing.assert_array_equal(L.dot([a, b], axes=2), L.Dot(axes=2)([a, b]))


def test_masks_attached_to_the_inputs_are_used(rng):
    """As in Keras, a layer's output carries its mask, and a merge reads its inputs'."""
    a, b = _inputs(rng, "float32", [(B, T, D), (B, T, D)])
    ma, mb = make_mask(rng, "right_pad", B, T), make_mask(rng, "left_pad", B, T)
    masked = [L.Masking(mask_value=9.0)(a), L.Masking(mask_value=9.0)(b)]
    masked[0]._keras_mask, masked[1]._keras_mask = ma, mb
    y = L.Multiply()(masked)
    np.testing.assert_array_equal(y, L.Multiply()([a, b], mask=[ma, mb]))
    np.testing.assert_array_equal(y._keras_mask, ma | mb)


def test_bad_input_is_refused_naming_the_layer_and_shapes(rng):
    a = rng.standard_normal((B, T, D)).astype("float32")
    with pytest.raises(ValueError, match="list of inputs"):
        L.Add(name="add_x")(a)
    with pytest.raises(ValueError, match=r"exactly|2 inputs"):
        L.Subtract()([a, a, a])
    with pytest.raises(ValueError, match=r"incompatible shapes \(5, 4\) and \(5, 3\)"):
        L.Add()([a, a[..., :3]])
    with pytest.raises(ValueError, match="different batch sizes"):
        L.Add()([a, a[:2]])
    with pytest.raises(ValueError, match=r"mask\[1\] must have shape \(3, 5\)"):
        L.Add()([a, a], mask=[None, np.ones((B, T + 1), bool)])
    with pytest.raises(ValueError, match="must match except on the concatenation axis"):
        L.Concatenate(axis=1)([a, a[..., :3]])
    with pytest.raises(ValueError, match="batch axis 0"):
        L.Dot(axes=0)([a, a])
    with pytest.raises(ValueError, match=r"dot axes differ in size: 4 .* != 5"):
        L.Dot(axes=(2, 1))([a, a])
    with pytest.raises(TypeError, match="axes must be integers"):
        L.Dot(axes="1")
    with pytest.raises(TypeError, match=r"inputs\[1\].*real numbers"):
        L.Add()([a, np.full((B, T, D), "x")])
