"""Attention (dot and concat scores) and AdditiveAttention against live Keras 3: outputs,
attention scores, output masks and gradients (Keras's through torch autograd) in both float
dtypes, with query and value masks (padding on either side, holes, a fully masked row), a
separate key, use_causal_mask and dropout (Keras given rnncore's dropout draw); finite
differences in float64; configs, weights and pickles round trip; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import checks_vs_keras as ck
from checks_vs_keras import DTYPES, MASKS, B, D, T, keras, make_mask
from rnncore import layers as L

pytestmark = pytest.mark.filterwarnings(  # Keras 3.15's torch Variable vs NumPy 2 (Keras's)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

#: largest differences from Keras, by layer, dtype and forward / gradients (conftest prints)
MAX_ERR: dict = {}

TV, DV = T + 2, 3  # value steps and value size (the key has the query's size D)
CASES = {
    "dot": ("Attention", {}),
    "dot_scale": ("Attention", {"use_scale": True}),
    "concat": ("Attention", {"score_mode": "concat"}),
    "concat_scale": ("Attention", {"score_mode": "concat", "use_scale": True}),
    "additive": ("AdditiveAttention", {}),
    "additive_no_scale": ("AdditiveAttention", {"use_scale": False}),
}


def _pair(case, dtype, rng, **kw):
    """rnncore's and Keras's layer with the same random weights."""
    name, args = CASES[case]
    ours = getattr(L, name)(dtype=dtype, **args, **kw)
    theirs = getattr(keras.layers, name)(dtype=dtype, **args, **kw)
    theirs.build([(B, T, D), (B, TV, D)])
    theirs.set_weights([rng.normal(1.0, 0.5, w.shape) for w in theirs.get_weights()])
    ours.build([(B, T, D), (B, TV, D)])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def _inputs(rng, dtype, with_key):
    """[query, value] (value of size D, also the key) or [query, value, key]."""
    if not with_key:
        return [rng.standard_normal(s).astype(dtype) for s in [(B, T, D), (B, TV, D)]]
    return [rng.standard_normal(s).astype(dtype) for s in [(B, T, D), (B, TV, DV), (B, TV, D)]]


@pytest.mark.parametrize("name", ["Attention", "AdditiveAttention"])
def test_signature_matches_keras(name):
    ck.signature_matches_keras(getattr(L, name), getattr(keras.layers, name))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", MASKS)
@pytest.mark.parametrize("case", list(CASES))
def test_attention_matches_keras(case, pattern, dtype, rng):
    """The value mask follows ``pattern`` (a fully masked row attends uniformly, as Keras),
    the query mask has holes; a separate key with left padding and the full row; the
    scores returned too with holes."""
    ours, theirs = _pair(case, dtype, rng)
    with_key = pattern in ("left_pad", "full_row")
    xs = _inputs(rng, dtype, with_key)
    masks = None
    if pattern != "none":
        masks = [make_mask(rng, "holes", B, T), make_mask(rng, pattern, B, TV)]
    scores = pattern == "holes"
    ck.compare_with_keras(
        MAX_ERR, CASES[case][0], ours, theirs, xs, masks, return_attention_scores=scores
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tq", [T, TV, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_causal_attention_matches_keras(case, tq, dtype, rng):
    """use_causal_mask: query i sees keys j <= i (with a value mask too)."""
    ours, theirs = _pair(case, dtype, rng)
    q, v = rng.standard_normal((B, tq, D)).astype(dtype), rng.standard_normal((B, TV, D))
    masks = [None, make_mask(rng, "right_pad", B, TV)]
    ck.compare_with_keras(
        MAX_ERR, CASES[case][0], ours, theirs, [q, v.astype(dtype)], masks,
        use_causal_mask=True, return_attention_scores=True,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["dot_scale", "additive"])
def test_dropout_matches_keras_given_the_same_draw(case, dtype, rng, monkeypatch):
    """In training the attention weights are dropped (kept ones scaled by 1/(1-rate)) after
    the softmax; Keras's dropout is handed rnncore's draw, then both must agree."""
    ours, theirs = _pair(case, dtype, rng, dropout=0.4)
    xs = _inputs(rng, dtype, False)
    ours.forward_train(xs, None, np.random.default_rng(5))
    noise = ours._train_cache[0][1]
    assert set(np.unique(noise)) == {0.0, np.dtype(dtype).type(1) / np.dtype(dtype).type(0.6)}
    monkeypatch.setattr(
        keras.src.backend.random, "dropout", lambda w, rate, seed=None: w * torch.tensor(noise)
    )
    ck.compare_with_keras(
        MAX_ERR, CASES[case][0] + " dropout", ours, theirs, xs, seed=1,
        keras_kw={"training": True}, rng=np.random.default_rng(5),
    )  # fmt: skip


def test_dropout_only_in_training(rng):
    layer = L.Attention(dropout=0.5, seed=3)
    xs = _inputs(rng, "float32", False)
    plain = L.Attention()(xs)
    np.testing.assert_array_equal(layer(xs), plain)
    np.testing.assert_array_equal(layer(xs, training=False), plain)
    dropped = layer(xs, training=True)
    assert not np.allclose(dropped, plain)
    again = L.Attention(dropout=0.5, seed=3)(xs, training=True)  # the seed fixes the draw
    np.testing.assert_array_equal(dropped, again)


# ---- finite differences (float64) --------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "masked_key", "causal_scores", "dropout"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_by_finite_differences(case, variant, rng):
    ours, _ = _pair(case, "float64", rng, dropout=0.3 if variant == "dropout" else 0.0)
    xs = _inputs(rng, "float64", variant == "masked_key")
    masks = None
    if variant == "masked_key":  # (not a fully masked row: S - 1e9 rounds away an eps step)
        masks = [make_mask(rng, "right_pad", B, T), make_mask(rng, "left_pad", B, TV)]
    kw = {"use_causal_mask": True, "return_attention_scores": True}
    kw = kw if variant == "causal_scores" else {}
    ck.fd_check(ours, xs, masks, rng_seed=7 if variant == "dropout" else None, **kw)


# ---- round trips, functional shapes, bad input -----------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_config_weights_and_pickle_round_trip(case, rng):
    ours, theirs = _pair(case, "float32", rng)
    xs = _inputs(rng, "float32", False)
    masks = [make_mask(rng, "holes", B, T), make_mask(rng, "left_pad", B, TV)]
    ck.round_trips(ours, xs, masks, return_attention_scores=True)
    clone = L.LAYER_CLASSES[CASES[case][0]].from_config(theirs.get_config())  # a Keras file's
    assert clone.get_config().keys() == ours.get_config().keys()
    assert ("score_mode" in clone.get_config()) == (CASES[case][0] == "Attention")


def test_output_shapes_and_mask(rng):
    layer = L.Attention()
    shapes = [(None, 4, D), (None, 6, DV), (None, 6, D)]
    assert layer.compute_output_shape(shapes) == (None, 4, DV)
    assert layer.compute_output_shape(shapes, return_attention_scores=True) == (
        (None, 4, DV),
        (None, 4, 6),
    )
    xs = _inputs(rng, "float32", True)
    mq = make_mask(rng, "holes", B, T)
    out, scores = layer(xs, mask=[mq, None], return_attention_scores=True)
    np.testing.assert_array_equal(out._keras_mask, mq)  # the query mask, on the output only
    assert getattr(scores, "_keras_mask", None) is None
    assert (out[~mq] == 0).all()


def test_bad_input_is_refused_naming_the_layer_and_shapes(rng):
    q, v = _inputs(rng, "float32", False)
    layer = L.Attention(name="att")
    with pytest.raises(ValueError, match="'att': expects a list of 2 to 3 inputs, got 1"):
        layer([q])
    with pytest.raises(ValueError, match=r"query must be 3-D .* got shape \(3, 4\)"):
        layer([q[:, 0], v])
    with pytest.raises(ValueError, match="same last size"):
        layer([q, v[..., :2]])
    with pytest.raises(ValueError, match=r"value \(batch, Tv, dim_v\) and key"):
        layer([q, v, v[:, :3]])
    with pytest.raises(ValueError, match=r"mask\[1\] must have shape \(3, 7\)"):
        layer([q, v], mask=[None, np.ones((B, T), bool)])
    with pytest.raises(ValueError, match="list of 2 to 3 masks"):
        layer([q, v], mask=[None])
    with pytest.raises(ValueError, match="score_mode"):
        L.Attention(score_mode="general")
    with pytest.raises(ValueError, match="dropout"):
        L.AdditiveAttention(dropout=1.5)
    additive = L.AdditiveAttention()
    additive([q, v])
    with pytest.raises(ValueError, match="same last size 4"):
        additive([q[..., :3], v[..., :3]])
