"""Sequential.predict on a list of sequences of different lengths: one output per sample,
each that of predicting the sample alone."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore.errors import UnsupportedModelError  # noqa: E402
from rnncore.layers import (  # noqa: E402
    GRU,
    LSTM,
    Bidirectional,
    Conv1D,
    Dense,
    Embedding,
    Input,
    LayerNormalization,
    Masking,
    SimpleRNN,
    TimeDistributed,
)
from rnncore.models.stream_plan import StreamPlan  # noqa: E402

D = 6


def _randomized(model, rng):
    model.set_weights([rng.standard_normal(w.shape) * 0.4 for w in model.get_weights()])
    return model


def _alone(model, samples):
    return [model.predict(a[None])[0] for a in samples]


def _samples(rng, lengths, dtype=np.float32, holes=False):
    out = []
    for n in lengths:
        a = rng.standard_normal((n, D)).astype(dtype)
        if holes:  # masked steps anywhere, runs of them across the spans' starts
            a[rng.random(n) < 0.35] = 0.0
        out.append(a)
    return out


CAUSAL = {
    "lstm_dense": lambda dt: [LSTM(16, return_sequences=True, dtype=dt), Dense(12, dtype=dt)],
    "gru_last": lambda dt: [GRU(10, reset_after=False, return_sequences=True, dtype=dt),
                            SimpleRNN(7, dtype=dt)],
    "stack_norm": lambda dt: [LSTM(9, return_sequences=True, dtype=dt),
                              LayerNormalization(dtype=dt), TimeDistributed(Dense(11, dtype=dt)),
                              GRU(5, return_sequences=True, dtype=dt)],
    "masked": lambda dt: [Masking(0.0, dtype=dt), LSTM(8, return_sequences=True, dtype=dt),
                          GRU(6, return_sequences=True, dtype=dt), Dense(4, dtype=dt)],
    "masked_zero_out": lambda dt: [Masking(0.0, dtype=dt), SimpleRNN(8, return_sequences=True,
                                   zero_output_for_mask=True, dtype=dt), LSTM(5, dtype=dt),
                                   Dense(3, dtype=dt)],
}  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CAUSAL))
def test_causal_models_are_bitwise_each_sample_alone(name, dtype, rng):
    layers = CAUSAL[name](np.dtype(dtype).name)
    model = _randomized(rnncore.Sequential([Input((None, D), dtype=dtype)] + layers), rng)
    StreamPlan(model)  # the layer-by-layer route, not the fallback
    lengths = [7, 1, 12, 7, 3, 9, 12, 2, 5]
    samples = _samples(rng, lengths, dtype, holes=name.startswith("masked"))
    got = model.predict(samples, batch_size=4)
    assert isinstance(got, list) and len(got) == len(samples)
    for g, w in zip(got, _alone(model, samples), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_token_ids_with_mask_zero(rng):
    model = _randomized(
        rnncore.Sequential([Input((None,), dtype="int32"), Embedding(15, D, mask_zero=True),
                            GRU(8, return_sequences=True), Dense(3)]), rng
    )  # fmt: skip
    samples = [rng.integers(0, 15, n).astype(np.int32) for n in (4, 9, 1, 9, 6)]
    for g, w in zip(model.predict(samples), _alone(model, samples), strict=True):
        np.testing.assert_array_equal(g, w)


def test_models_that_need_the_whole_sequence_run_by_length(rng):
    # no padding: each length's samples together; the recurrent rows stay bitwise
    bidi = _randomized(
        rnncore.Sequential([Input((None, D)), Bidirectional(LSTM(5, return_sequences=True))]),
        rng,
    )
    samples = _samples(rng, [5, 3, 5, 8, 3, 1])
    for g, w in zip(bidi.predict(samples, batch_size=2), _alone(bidi, samples), strict=True):
        np.testing.assert_array_equal(g, w)
    conv = _randomized(
        rnncore.Sequential([Input((None, D)), Conv1D(7, 3, padding="causal"),
                            LSTM(16, return_sequences=True), Dense(12)]), rng
    )  # fmt: skip
    samples = _samples(rng, [6, 4, 6, 9, 4])
    for g, w in zip(conv.predict(samples), _alone(conv, samples), strict=True):
        assert g.shape == w.shape
        # Dense through Eigen's GEMM: its rounding depends on the rows of the call
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_how_a_list_is_read(rng):
    model = _randomized(rnncore.Sequential([Input((None, D)), LSTM(4, return_sequences=True)]), rng)
    same = _samples(rng, [5, 5, 5])
    got = model.predict(same)  # a list of 2-D arrays: a ragged batch, even of one length
    assert isinstance(got, list)
    np.testing.assert_array_equal(np.stack(got), model.predict(np.stack(same)))
    as_tuple = model.predict(tuple(same))
    assert isinstance(as_tuple, list)
    nested = [a.tolist() for a in same]  # nested Python lists: one array, as before
    np.testing.assert_array_equal(model.predict(nested), model.predict(np.stack(same)))
    # a functional model: a list is its inputs, as before
    a, b = Input((None, D)), Input((None, D))
    two = rnncore.Model([a, b], rnncore.layers.Add()([LSTM(3)(a), LSTM(3)(b)]))
    assert two.predict([same[0][None], same[1][None]]).shape == (1, 3)


def test_bad_samples_are_refused_by_index(rng):
    model = rnncore.Sequential([Input((None, D)), LSTM(4)])
    good = np.zeros((3, D), np.float32)
    with pytest.raises(ValueError, match=r"sample 1: expected shape \(length,\) \+ \(6,\)"):
        model.predict([good, np.zeros((3, D + 1), np.float32)])
    with pytest.raises(ValueError, match=r"sample 0: .*length >= 1, got \(0, 6\)"):
        model.predict([np.zeros((0, D), np.float32), good])
    with pytest.raises(TypeError, match="sample 1: expected real numbers"):
        model.predict([good, np.zeros((3, D), complex)])
    with pytest.raises(ValueError, match="takes no steps"):
        model.predict([good, good], steps=1)
    stateful = rnncore.Sequential([Input((None, D), batch_size=1), LSTM(4, stateful=True)])
    with pytest.raises(UnsupportedModelError, match=r"stateful layers \['lstm"):
        stateful.predict([good, good])


# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_against_keras_each_sample_alone(rng):
    kmodel = keras.Sequential(
        [keras.Input((None, D)), keras.layers.LSTM(8, return_sequences=True),
         keras.layers.GRU(5), keras.layers.Dense(3)]
    )  # fmt: skip
    model = rnncore.Sequential([Input((None, D)), LSTM(8, return_sequences=True), GRU(5), Dense(3)])
    model.set_weights(kmodel.get_weights())
    samples = _samples(rng, [4, 11, 2, 7])
    for g, a in zip(model.predict(samples), samples, strict=True):
        np.testing.assert_allclose(g, kmodel.predict(a[None], verbose=0)[0], rtol=1e-5, atol=1e-5)
