"""Every layer kind, before and after a recurrent layer, through every way of running a model
other than a plain whole-batch predict:

* ``ragged``: ``predict`` on a list of samples of different lengths; each output equals
  predicting that sample alone (a batch of one);
* ``pool``: ``model.stream_pool``; each stream's outputs equal a stateful batch-1 copy of
  the model fed the same steps and chunks;
* ``stateful``: a stateful copy fed the sequence chunk by chunk (single steps among them)
  equals one whole-sequence ``predict``.

The tests go through the public API only (predict, stream_pool, a stateful model's calls),
so they carry over when those paths are replaced by another executor. Each case says, per
executor, what it must do: ``exact`` (bit for bit), ``close`` (within float32 rounding: the
executor computes a product over a different number of rows, see the case's comment), or a
refusal (``UnsupportedModelError`` whose message matches) where the layer cannot run on that
path by design. ``whole`` (stateful only): the layer reads a window of timesteps or the
whole sequence, so a stateful model fed in chunks computes it per chunk (Keras's semantics,
not refused); there the stateful copy fed the whole sequence in one call must equal predict.
``sequence`` (pool only): the pool carries the layer's window between calls (a causal
Conv1D), so each stream's outputs equal, bit for bit, ``predict`` on the whole sequence the
stream was fed so far, where the stateful copy convolves each call's chunk alone.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import rnncore
from rnncore.errors import UnsupportedModelError
from rnncore.layers import (
    GRU,
    LSTM,
    Activation,
    Add,
    AdditiveAttention,
    Attention,
    Average,
    AveragePooling1D,
    BatchNormalization,
    Bidirectional,
    Concatenate,
    Conv1D,
    Cropping1D,
    Dense,
    Dot,
    Dropout,
    Embedding,
    Flatten,
    GaussianNoise,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    Input,
    LayerNormalization,
    Masking,
    Maximum,
    MaxPooling1D,
    Minimum,
    Multiply,
    Permute,
    RepeatVector,
    Reshape,
    SimpleRNN,
    Softmax,
    SpatialDropout1D,
    Subtract,
    TimeDistributed,
    UpSampling1D,
    ZeroPadding1D,
)
from rnncore.models.ragged import predict_ragged

D = 4  # features per step
VOCAB = 11
T_FIXED = 6  # the time length of the cases whose input length is fixed
LENGTHS = [7, 1, 12, 7, 3, 9, 12, 2, 5, 7]  # a ragged batch: repeats, a single step, unsorted
CHUNKS = [1, 3, 1, 2, 1]  # a stateful model's calls (sums to 8), single steps among them
B = 3  # the stateful copy's batch size


class Case(NamedTuple):
    build: object  # (stateful, batch_size) -> model: recurrent layers stateful when asked
    ragged: str = "exact"
    pool: str = "exact"  # or "sequence", or "refused:<regex>"
    stateful: str = "exact"  # or "whole"
    tokens: bool = False  # integer ids in (an Embedding first)
    holes: bool = False  # zero steps in the input (for a Masking layer)
    fixed: bool = False  # the input's time length is fixed (T_FIXED)


def _seq(*make, tokens=False, fixed=False):
    """A Sequential builder: ``make`` are functions of ``stateful`` giving layers."""

    def build(stateful, batch):
        t = T_FIXED if fixed else None
        shape, dtype = ((t,), "int32") if tokens else ((t, D), "float32")
        layers = [Input(shape, batch_size=batch, dtype=dtype)]
        return rnncore.Sequential(layers + [m(stateful) for m in make])

    return build


def _fn(body, fixed=False):
    """A functional builder: ``body(x, stateful)`` gives the output tensor."""

    def build(stateful, batch):
        x = Input((T_FIXED if fixed else None, D), batch_size=batch)
        return rnncore.Model(x, body(x, stateful))

    return build


def lstm(units=6, seq=True, **kw):
    return lambda s: LSTM(units, return_sequences=seq, stateful=s, **kw)


def gru(units=6, seq=True, **kw):
    return lambda s: GRU(units, return_sequences=seq, stateful=s, **kw)


def rnn(units=6, seq=True, **kw):
    return lambda s: SimpleRNN(units, return_sequences=seq, stateful=s, **kw)


def same(factory, *args, **kw):
    """A layer with no stateful option."""
    return lambda s: factory(*args, **kw)


def _merge(kind):
    def body(x, s):
        a = LSTM(6, return_sequences=True, stateful=s)(x)
        b = Dense(6)(x)
        y = kind()([a, b])
        return GRU(5, return_sequences=True, stateful=s)(y)

    return _fn(body)


def _merge_last(x, s):  # merges of vectors (no time axis): the last outputs of two layers
    a = LSTM(5, stateful=s)(x)
    b = GRU(5, stateful=s)(x)
    return Dense(3)(Concatenate()([Add()([a, b]), Multiply()([a, b])]))


def _attention(kind, **call):
    def body(x, s):
        q = LSTM(6, return_sequences=True, stateful=s)(x)
        return Dense(3)(kind()([q, Dense(6)(x)], **call))

    return _fn(body)


def _dot_sequences(x, s):
    a = LSTM(5, return_sequences=True, stateful=s)(x)
    return Dot(axes=2)([a, GRU(5, return_sequences=True, stateful=s)(x)])


def _dot_last(x, s):
    return Dot(axes=1)([LSTM(5, stateful=s)(x), GRU(5, stateful=s)(x)])


def _return_state(x, s):
    y, h, c = LSTM(5, return_sequences=True, return_state=True, stateful=s)(x)
    return Dense(3)(y)


FUTURE = "refused:need the future"
WINDOW = "refused:convolves a window"
MOVES = "refused:pools, reshapes"
ATTENDS = "refused:attends across timesteps"

# ``close`` for ragged: a model the layer-by-layer plan refuses runs the samples of each length
# together (ragged.py), and Dense / Conv1D compute through Eigen's matrix product, whose
# kernel (so its rounding) may depend on the rows of the call (bit-identical where this was
# written, not promised).
CASES = {
    # ---- per-timestep layers: each executor bit for bit --------------------------------
    "lstm_softmax": Case(_seq(lstm(), same(Softmax))),
    "last_softmax": Case(_seq(lstm(), gru(5, seq=False), same(Softmax))),
    "dense_after": Case(_seq(gru(), same(Dense, 12))),
    "dense_before": Case(_seq(same(Dense, 7, activation="tanh"), lstm())),
    "dense_softmax_last": Case(_seq(lstm(), lstm(5, seq=False), same(Dense, 4,
                                                                     activation="softmax"))),
    "td_dense": Case(_seq(same(lambda: TimeDistributed(Dense(5))), rnn(),
                          same(lambda: TimeDistributed(Dense(3))))),
    "td_softmax": Case(_seq(lstm(), same(lambda: TimeDistributed(Softmax())))),
    "td_layernorm": Case(_seq(same(lambda: TimeDistributed(LayerNormalization())), gru(),
                              same(lambda: TimeDistributed(LayerNormalization())))),
    "td_activation": Case(_seq(lstm(), same(lambda: TimeDistributed(Activation("sigmoid"))))),
    "activation": Case(_seq(same(Activation, "tanh"), rnn(), same(Activation, "relu"))),
    "dropout": Case(_seq(same(Dropout, 0.5), lstm(), same(Dropout, 0.3))),
    "spatial_dropout": Case(_seq(same(SpatialDropout1D, 0.5), gru(),
                                 same(SpatialDropout1D, 0.2))),
    "gaussian_noise": Case(_seq(same(GaussianNoise, 1.0), lstm(), same(GaussianNoise, 0.5))),
    "masking": Case(_seq(same(Masking, 0.0), lstm(), gru(5), same(Dense, 3)), holes=True),
    "masking_td": Case(_seq(same(Masking, 0.0), same(lambda: TimeDistributed(
        LayerNormalization())), gru(), same(lambda: TimeDistributed(Softmax())), lstm(5)),
                       holes=True),
    "masking_zero_out_seq": Case(_seq(same(Masking, 0.0), lstm(zero_output_for_mask=True),
                                      same(Dense, 3)), holes=True),
    "masking_zero_out": Case(_seq(same(Masking, 0.0), rnn(zero_output_for_mask=True),
                                  lstm(5, seq=False), same(Softmax)), holes=True),
    # (Softmax refuses the (batch, time) mask of a sequence, as Keras's: Activation instead)
    "embedding_mask": Case(_seq(same(Embedding, VOCAB, D, mask_zero=True), gru(),
                                same(Activation, "softmax"), tokens=True), tokens=True,
                           holes=True),
    "embedding": Case(_seq(same(Embedding, VOCAB, D), lstm(), same(Dense, 3), tokens=True),
                      tokens=True),
    "layernorm": Case(_seq(same(LayerNormalization), lstm(), same(LayerNormalization))),
    "batchnorm": Case(_seq(same(BatchNormalization), gru(), same(BatchNormalization))),
    "stacked": Case(_seq(lstm(), gru(5, reset_after=False), rnn(4))),
    "lstm_variants": Case(_seq(lstm(6, use_peepholes=True, projection_units=4, cell_clip=2.0),
                               same(Softmax))),
    **{f"merge_{k.__name__.lower()}": Case(_merge(k))
       for k in (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate)},
    "merge_last": Case(_fn(_merge_last)),
    # ---- layers of vectors (after the time axis is gone): per sample, bit for bit -------
    "dot_last": Case(_fn(_dot_last)),
    "flatten_last": Case(_seq(lstm(6, seq=False), same(Flatten), same(Dense, 3))),
    "reshape_last": Case(_seq(lstm(6, seq=False), same(Reshape, (2, 3)), same(Flatten))),
    "repeat_last": Case(_seq(gru(6, seq=False), same(RepeatVector, 3),
                             same(GlobalMaxPooling1D))),
    # ---- layers over several timesteps: refused by the pool; whole sequences only -------
    "bidirectional": Case(_seq(lambda s: Bidirectional(LSTM(5, return_sequences=True,
                                                            stateful=s)), same(Dense, 3)),
                          ragged="close", pool=FUTURE, stateful="whole"),
    "bidirectional_last": Case(_seq(lambda s: Bidirectional(GRU(5, stateful=s),
                                                            merge_mode="sum")),
                               pool=FUTURE, stateful="whole"),
    # a causal Conv1D: the pool carries its window (bit for bit the whole sequence); a
    # stateful model convolves each call's chunk alone (Keras's semantics)
    "conv1d_before": Case(_seq(same(Conv1D, 5, 3, padding="causal"), lstm(), same(Dense, 3)),
                          pool="sequence", stateful="whole"),
    "conv1d_dilated_groups": Case(_seq(same(Conv1D, 6, 3, padding="causal", dilation_rate=2,
                                            groups=2, activation="tanh"), gru(),
                                       same(Conv1D, 4, 2, padding="causal", activation="relu",
                                            use_bias=False)),
                                  pool="sequence", stateful="whole"),
    "conv1d_masking_last": Case(_seq(same(Masking, 0.0), same(Conv1D, 5, 4, padding="causal",
                                                              activation="softmax"),
                                     same(LayerNormalization), lstm(5, seq=False)),
                                pool="sequence", stateful="whole", holes=True),
    "conv1d_after": Case(_seq(gru(), same(Conv1D, 4, 2, padding="same")),
                         ragged="close", pool=WINDOW + ".*padding='same'", stateful="whole"),
    "conv1d_strided": Case(_seq(same(Conv1D, 4, 2, padding="causal", strides=2), gru()),
                           ragged="close", pool=WINDOW + ".*strides=2", stateful="whole"),
    "max_pooling": Case(_seq(lstm(), same(MaxPooling1D, 2, padding="same")),
                        pool=MOVES, stateful="whole"),
    "average_pooling": Case(_seq(same(AveragePooling1D, 2, padding="same"), gru()),
                            pool=MOVES, stateful="whole"),
    "global_average": Case(_seq(lstm(), same(GlobalAveragePooling1D), same(Dense, 3)),
                           ragged="close", pool=MOVES, stateful="whole"),
    "global_max": Case(_seq(rnn(), same(GlobalMaxPooling1D)), pool=MOVES, stateful="whole"),
    "attention": Case(_attention(Attention), ragged="close", pool=ATTENDS, stateful="whole"),
    "attention_causal": Case(_attention(Attention, use_causal_mask=True), ragged="close",
                             pool="refused:is called with \\['use_causal_mask'\\]",
                             stateful="whole"),
    "additive_attention": Case(_attention(AdditiveAttention), ragged="close", pool=ATTENDS,
                               stateful="whole"),
    "dot_sequences": Case(_fn(_dot_sequences), pool="refused:products across timesteps",
                          stateful="whole"),
    "repeat_then_recurrent": Case(_seq(lstm(5, seq=False), same(RepeatVector, 3), gru(4)),
                                  pool="refused:gru.*needs a time axis", stateful="whole"),
    "zero_padding": Case(_seq(lstm(), same(ZeroPadding1D, 1)), pool=MOVES, stateful="whole"),
    "cropping": Case(_seq(same(ZeroPadding1D, (0, 1)), same(Cropping1D, (1, 0)), lstm()),
                     pool=MOVES, stateful="whole"),
    "upsampling": Case(_seq(gru(), same(UpSampling1D, 2)), pool=MOVES, stateful="whole"),
    "reshape_time": Case(_seq(lstm(6), same(Reshape, (-1, 3))), pool=MOVES, stateful="whole"),
    "go_backwards": Case(_seq(lstm(go_backwards=True), same(Dense, 3)), ragged="close",
                         pool="refused:go_backwards", stateful="whole"),
    "return_state": Case(_fn(_return_state), ragged="close", pool="refused:lstm.*several outputs",
                         stateful="whole"),
    # ---- a fixed time length: the ragged batch must have it -----------------------------
    "flatten_time": Case(_seq(lstm(), same(Flatten), same(Dense, 3), fixed=True),
                         ragged="close", pool=MOVES, stateful="whole", fixed=True),
    "permute_time": Case(_seq(gru(), same(Permute, (2, 1)), fixed=True), pool=MOVES,
                         stateful="whole", fixed=True),
}  # fmt: skip


def _weights(model, rng):
    model.set_weights([rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()])
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, BatchNormalization):  # a positive moving variance
            inner.moving_variance.assign(np.abs(inner.moving_variance.value) + 0.5)
    return model


def _models(case, rng, batch=None):
    """The model and, with ``batch``, a stateful copy of it with the same weights."""
    model = _weights(case.build(False, None), rng)
    if batch is None:
        return model
    twin = case.build(True, batch)
    twin.set_weights(model.get_weights())
    return model, twin


def _sequence(case, rng, shape, chunk_starts=None):
    """Inputs of ``shape`` (batch, time). With ``case.holes``, zero (masked) steps: anywhere,
    runs of them too; with ``chunk_starts``, only isolated ones that do not start a chunk
    (Keras restarts a chunk's "previous output" at zeros, so a masked step at a chunk's start
    differs from the whole sequence by design)."""
    if case.tokens:
        x = rng.integers(1, VOCAB, shape).astype(np.int32)
    else:
        x = rng.standard_normal(shape + (D,)).astype(np.float32)
    if case.holes:
        hole = rng.random(shape) < 0.4
        if chunk_starts is not None:
            t = np.arange(shape[-1])
            hole &= (t % 3 == 2) & ~np.isin(t, chunk_starts)
        x[hole] = 0
    return x


def _samples(case, rng):
    lengths = [T_FIXED] * 5 if case.fixed else LENGTHS
    return [_sequence(case, rng, (n,)) for n in lengths]


def _check(got, want, how):
    assert got.shape == want.shape and got.dtype == want.dtype
    if how == "exact":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def _ragged(model, samples, batch_size):
    """predict on a list of samples: Sequential.predict's ragged form; functional models
    have no public ragged form yet, so the function Sequential.predict calls."""
    if isinstance(model, rnncore.Sequential):
        return model.predict(samples, batch_size=batch_size)
    return predict_ragged(model, samples, batch_size)


def _stateful_calls(twin, chunks):
    """The stateful copy's outputs for its calls in order (from zero states)."""
    twin.reset_states()
    return [twin.predict_on_batch(c) for c in chunks]


def _refusal(mode):
    return mode.startswith("refused:") and mode[len("refused:") :]


@pytest.mark.parametrize("name", list(CASES))
def test_ragged(name, rng):
    case = CASES[name]
    model = _models(case, rng)
    samples = _samples(case, rng)
    alone = [model.predict(a[None])[0] for a in samples]
    for batch_size in (3, 32):  # several batches, one batch
        got = _ragged(model, samples, batch_size)
        assert isinstance(got, list) and len(got) == len(samples)
        for g, w in zip(got, alone, strict=True):
            _check(g, w, case.ragged)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.fixed])
def test_ragged_refuses_other_lengths_of_a_fixed_length_input(name, rng):
    model = _models(CASES[name], rng)
    samples = [rng.standard_normal((n, D)).astype(np.float32) for n in (T_FIXED, 3)]
    with pytest.raises(ValueError, match=rf"sample 1: expected shape \({T_FIXED}, {D}\)"):
        model.predict(samples)


@pytest.mark.parametrize("name", list(CASES))
def test_stream_pool(name, rng):
    case = CASES[name]
    refused = _refusal(case.pool)
    if refused:
        with pytest.raises(UnsupportedModelError, match=refused):
            _models(case, rng).stream_pool(2)
        return
    model, twin = _models(case, rng, batch=1)
    pool = model.stream_pool(4)
    ids = [pool.open() for _ in range(4)]
    feeds = {s: [] for s in ids}
    got = {s: [] for s in ids}
    for _ in range(6):
        chosen = [s for s in ids if rng.random() < 0.75] or ids[:1]
        step = {}
        for s in chosen:
            n = int(rng.integers(0, 4))  # 0: one step without a time axis
            x = _sequence(case, rng, (max(n, 1),))
            step[s] = x[0] if n == 0 else x
            feeds[s].append(step[s])
        out = pool.step(step)
        assert list(out) == chosen
        for s in chosen:
            got[s].append(out[s])
    step_rank = 0 if case.tokens else 1
    if case.pool == "sequence":
        _check_sequences(model, feeds, got, step_rank)
        return
    for s in ids:
        calls = [f[None, None] if f.ndim == step_rank else f[None] for f in feeds[s]]
        want = _stateful_calls(twin, calls)
        for g, f, w in zip(got[s], feeds[s], want, strict=True):
            w = w[0]
            if f.ndim == step_rank and model.output_shape[1:] != w.shape:
                w = w[0]  # one step: no time axis
            _check(g, w, "exact")


def _check_sequences(model, feeds, got, step_rank):
    """Each stream's outputs: those of ``predict`` on all it was fed so far, bit for bit."""
    for s in feeds:
        x = np.concatenate([f[None] if f.ndim == step_rank else f for f in feeds[s]])
        ends = np.cumsum([1 if f.ndim == step_rank else len(f) for f in feeds[s]])
        whole = model.predict(x[None])[0]
        for g, f, end in zip(got[s], feeds[s], ends, strict=True):
            if len(model.output_shape) != 3:  # no time axis: the prefix's output
                want = model.predict(x[None, :end])[0]
            elif f.ndim == step_rank:  # one step: its output, without a time axis
                want = whole[end - 1]
            else:
                want = whole[end - len(f) : end]
            _check(g, want, "exact")


@pytest.mark.parametrize("name", list(CASES))
def test_stateful_steps(name, rng):
    case = CASES[name]
    model, twin = _models(case, rng, batch=B)
    if case.stateful == "whole":
        t = T_FIXED if case.fixed else 8
        x = _sequence(case, rng, (B, t))
        (whole,) = _stateful_calls(twin, [x])
        _check(whole, model.predict(x), "exact")
        return
    ends = np.cumsum(CHUNKS)
    starts = ends - np.array(CHUNKS)
    x = _sequence(case, rng, (B, int(ends[-1])), chunk_starts=starts)
    outs = _stateful_calls(twin, [x[:, a:b] for a, b in zip(starts, ends)])
    if len(model.output_shape) == 3:  # a sequence: the calls' outputs end to end
        _check(np.concatenate(outs, axis=1), model.predict(x), "exact")
    else:  # each call's output: that of the sequence up to its end
        for y, b in zip(outs, ends, strict=True):
            _check(y, model.predict(x[:, :b]), "exact")
