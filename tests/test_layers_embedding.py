"""Embedding against live Keras 3: outputs and masks (mask_zero with left and right padding
and holes), both float dtypes, ids of several ranks and integer dtypes, the gradient of the
embeddings by finite differences, bad ids, and Embedding(mask_zero) -> LSTM -> Dense in a
Sequential against the same Keras model (predict, one SGD step, save/load)."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
import single_input_checks as checks
from rnncore import layers as L
from rnncore.errors import UnsupportedArgumentError
from single_input_checks import keras

pytestmark = checks.KERAS_WARNINGS

V, D, B, T = 11, 4, 5, 7


def _ids(rng, pattern, shape=(B, T), dtype=np.int64):
    """Ids in 1..V-1 with zeros (padding) where the mask pattern leaves steps unused."""
    ids = rng.integers(1, V, size=shape).astype(dtype)
    mask = checks.make_mask(rng, pattern, *shape[:2]) if len(shape) > 1 else None
    if mask is not None:
        ids[~mask] = 0
    return ids


def test_signature_matches_keras():
    checks.signature_matches_keras(L.Embedding, keras.layers.Embedding)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pattern", ["none", "right_pad", "left_pad", "holes"])
@pytest.mark.parametrize("mask_zero", [True, False], ids=["mask_zero", "no_mask"])
def test_matches_keras(dtype, pattern, mask_zero, rng):
    ids = _ids(rng, pattern)
    ours = L.Embedding(V, D, mask_zero=mask_zero, dtype=dtype)
    theirs = keras.layers.Embedding(V, D, mask_zero=mask_zero, dtype=dtype)
    assert checks.compare_with_keras(ours, theirs, ids) == 0.0  # a gather: exact


@pytest.mark.parametrize("shape", [(B,), (B, T), (B, 3, T)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint8, np.float32])
def test_ids_of_any_rank_and_integer_dtype(shape, id_dtype, rng):
    ids = _ids(rng, "none", shape, id_dtype)
    ours, theirs = L.Embedding(V, D, mask_zero=True), keras.layers.Embedding(V, D, mask_zero=True)
    checks.compare_with_keras(ours, theirs, ids)
    assert ours.compute_output_shape((None,) + shape[1:]) == (None,) + shape[1:] + (D,)


def test_embeddings_gradient_by_finite_differences(rng):
    layer = L.Embedding(V, D, dtype="float64")
    ids = _ids(rng, "holes")
    ids[0, :3] = 5  # repeated ids: their gradients add up
    assert max(checks.gradient_errors(layer, ids, wrt_input=False)) < 1e-7
    dE = layer.gradients[0]
    assert np.all(dE[np.setdiff1d(np.arange(V), ids)] == 0)  # rows never read: no gradient
    assert layer.backward(np.ones((B, T, D))) is None  # ids have no gradient


@pytest.mark.parametrize("id_dtype", [np.int64, np.int32, np.uint16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embeddings_gradient_is_np_add_at_bit_for_bit(dtype, id_dtype, rng, threads):
    # Many repeated ids (20000 positions into 1000 rows): the sums' order decides their bits.
    # Large enough for two threads to split the rows.
    V2, D2 = 1000, 64
    ids = rng.integers(0, V2, size=(40, 50, 10)).astype(id_dtype)
    ids[0, 0, :] = 7  # one id at many positions
    dy = rng.standard_normal(ids.shape + (D2,)).astype(dtype)
    expected = np.zeros((V2, D2), dtype)
    np.add.at(expected, ids.reshape(-1).astype(np.int64), dy.reshape(-1, D2))
    for n in (1, 2):
        rnncore.set_num_threads(n)
        got = rnncore.functional.embedding_backward(ids, dy, V2)
        assert got.dtype == dtype and got.shape == (V2, D2)
        assert np.array_equal(got, expected), f"{n} threads"
        assert np.array_equal(np.signbit(got), np.signbit(expected))  # zeros' signs too


def test_embeddings_gradient_refuses_bad_ids_and_shapes(rng):
    dy = np.ones((2, 3, D))
    with pytest.raises(ValueError, match=r"id 11 at position 4 is out of range for input_dim=11"):
        rnncore.functional.embedding_backward(np.array([[0, 1, 2], [3, 11, 4]]), dy, V)
    with pytest.raises(ValueError, match=r"id -1 at position 0"):
        rnncore.functional.embedding_backward(np.full((2, 3), -1), dy, V)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\) \+ \(output_dim,\)"):
        rnncore.functional.embedding_backward(np.zeros((2, 3), np.int64), np.ones((3, 2, D)), V)
    with pytest.raises(TypeError, match="ids: expected integer ids, got dtype float64"):
        rnncore.functional.embedding_backward(np.zeros((2, 3)), dy, V)


def test_initial_weights_config_and_input_length(rng):
    w = rng.standard_normal((V, D)).astype(np.float32)
    layer = L.Embedding(V, D, weights=w)
    np.testing.assert_array_equal(layer.get_weights()[0], w)
    theirs = keras.layers.Embedding(V, D, mask_zero=True, name="emb")
    ours = L.Embedding.from_config(theirs.get_config())  # Keras's config as it is
    assert (ours.name, ours.input_dim, ours.output_dim, ours.mask_zero) == ("emb", V, D, True)
    again = L.Embedding.from_config(ours.get_config())
    assert again.get_config() == ours.get_config()
    with pytest.warns(UserWarning, match="input_length"):  # Keras 3 ignores it too
        assert not L.Embedding(V, D, input_length=T).built


@pytest.mark.parametrize(
    "bad, match",
    [
        (-1, "token id -1 at index .* out of range for input_dim=11"),
        (V, "token id 11 at index .* out of range"),
        (2.5, "whole numbers, got 2.5"),
        (np.nan, "whole numbers"),
        # beyond int64: refused before any conversion (which would warn and vary by CPU)
        (1e30, "token id 1e\\+30 at index .* out of range"),
        (-1e30, "token id -1e\\+30 at index .* out of range"),
    ],
)
def test_bad_ids_named(bad, match, rng):
    ids = _ids(rng, "none").astype(np.float64)
    ids[1, 2] = bad
    with pytest.raises(ValueError, match=match):
        L.Embedding(V, D)(ids)


def test_bad_arguments_refused_by_name():
    with pytest.raises(TypeError, match="integer token ids"):
        L.Embedding(V, D)(np.array([["a", "b"]]))
    with pytest.raises(UnsupportedArgumentError, match="embeddings_regularizer"):
        L.Embedding(V, D, embeddings_regularizer="l2")
    with pytest.raises(UnsupportedArgumentError, match="lora_rank"):
        L.Embedding(V, D, lora_rank=2)
    with pytest.raises(ValueError, match="input_dim"):
        L.Embedding(0, D)


def _text_models():
    keras_layers = [
        keras.Input((T,), dtype="int32"),
        keras.layers.Embedding(V, D, mask_zero=True),
        keras.layers.LSTM(3),
        keras.layers.Dense(2),
    ]
    ours = [
        rnncore.Input((T,), dtype="int32"),
        L.Embedding(V, D, mask_zero=True),
        L.LSTM(3),
        L.Dense(2),
    ]
    return keras_layers, ours


@pytest.mark.parametrize("pattern", ["right_pad", "left_pad", "holes"])
def test_text_model_predict_and_sgd_step_match_keras(pattern, rng, tmp_path):
    ids = _ids(rng, pattern, dtype=np.int32)
    y = rng.standard_normal((B, 2)).astype(np.float32)
    model = checks.one_sgd_step(*_text_models(), ids, y)
    checks.round_trips(model, ids, tmp_path)
    model.fit(ids, y, epochs=1, batch_size=2, verbose=0)  # fit batches and shuffles ids


def test_fit_passes_integer_ids_unconverted(rng, monkeypatch):
    """Ids above 2**24 have no float32: fit must hand integer x to the Embedding as it is."""
    model = rnncore.Sequential([L.Embedding(V, 2), L.Flatten(), L.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    layer = model.layers[0]
    monkeypatch.setattr(layer, "_convert", lambda x: seen.append(np.asarray(x)) or np.asarray(x))
    ids = _ids(rng, "none", (4, 2))
    model.fit(ids, np.zeros((4, 1)), epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert seen and seen[0].dtype == ids.dtype
    np.testing.assert_array_equal(seen[0], ids)
