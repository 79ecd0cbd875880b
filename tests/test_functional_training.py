"""Training functional models (rnncore.Model) against live Keras 3 (torch backend).

``fit`` with SGD for a few steps from the same weights, with several outputs, a loss per
output (list or dict), ``loss_weights`` and metrics per output: the History (Keras's key
names and values) and the weights after training agree with Keras's; also shared layers,
nested models, encoder-decoders whose decoder starts from the encoder's states (the
gradient flows back into the encoder), masked outputs (their masked steps leave the loss),
``evaluate`` / ``train_on_batch`` / ``test_on_batch``. The graph's backward (shared layers
summed, tensors used twice summed, states, nested models) is checked by finite differences
in float64.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import layers as L  # noqa: E402
from rnncore import losses, optimizers  # noqa: E402
from test_functional import (  # noqa: E402
    D,
    T,
    both,
    encoder_decoder,
    nested,
    pad,
    seqs,
    shared_layer,
    text_classifier,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

#: largest relative difference from Keras per training case (printed by conftest)
MAX_ERR: dict[str, float] = {}


def start_equal(km, rm, rng, scale=0.4):
    weights = [rng.normal(0, scale, tuple(w.shape)).astype(np.float32) for w in km.get_weights()]
    km.set_weights(weights)
    rm.set_weights(weights)


def check_history(case, theirs: dict, ours: dict, rtol=2e-5):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=1e-6, err_msg=key)
        err = np.max(
            np.abs(np.subtract(ours[key], theirs[key])) / np.maximum(np.abs(theirs[key]), 1e-3)
        )
        MAX_ERR[f"{case}: history"] = max(MAX_ERR.get(f"{case}: history", 0.0), float(err))


def check_weights(case, km, rm, atol=2e-6):
    for ours, theirs in zip(rm.get_weights(), km.get_weights()):
        theirs = keras.ops.convert_to_numpy(theirs)
        err = float(np.max(np.abs(ours - theirs)))
        MAX_ERR[f"{case}: weights"] = max(MAX_ERR.get(f"{case}: weights", 0.0), err)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=atol)


def fit_both(case, build, x, y, rng, epochs=2, batch_size=4, **compile_kw):
    km, rm = both(build)
    start_equal(km, rm, rng)
    km.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kw)
    rm.compile(optimizer=optimizers.SGD(0.1), **compile_kw)
    fit = dict(epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0)
    theirs, ours = km.fit(x, y, **fit).history, rm.fit(x, y, **fit).history
    check_history(case, theirs, ours)
    check_weights(case, km, rm)
    return km, rm


def two_heads(lib, Lk):
    enc, dec = lib.Input((T, D), name="enc"), lib.Input((5, 2), name="dec")
    _, h, c = Lk.LSTM(6, return_state=True, name="encoder")(Lk.Masking(name="masking")(enc))
    seq = Lk.LSTM(6, return_sequences=True, name="decoder")(dec, initial_state=[h, c])
    shared = Lk.Dense(6, activation="tanh", name="shared")
    joined = Lk.Add(name="add")([shared(h), shared(c)])
    out = Lk.Dense(3, name="out")(seq)
    aux = Lk.Dense(1, activation="sigmoid", name="aux")(joined)
    return lib.Model([enc, dec], [out, aux], name="two_heads")


def two_heads_data(rng, n=8):
    x = [pad(seqs(rng, (n, T, D))[0], "holes", rng), seqs(rng, (n, 5, 2))[0]]
    y = [seqs(rng, (n, 5, 3))[0], (rng.random((n, 1)) > 0.5).astype(np.float32)]
    return x, y


def test_fit_several_outputs_with_loss_weights_and_metrics(rng):
    x, y = two_heads_data(rng)
    km, rm = fit_both(
        "two outputs, lists", two_heads, x, y, rng,
        loss=["mse", "binary_crossentropy"], loss_weights=[1.0, 0.5],
        metrics=[["mae"], ["accuracy"]],
    )  # fmt: skip
    assert sorted(rm.history.history) == ["aux_accuracy", "aux_loss", "loss", "out_loss", "out_mae"]
    theirs, ours = km.evaluate(x, y, verbose=0), rm.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)  # the same list order as Keras
    theirs = km.evaluate(x, y, verbose=0, return_dict=True)
    assert rm.evaluate(x, y, verbose=0, return_dict=True).keys() == theirs.keys()


def test_fit_with_dicts_keyed_by_output_name(rng):
    x, y = two_heads_data(rng)
    xd, yd = {"enc": x[0], "dec": x[1]}, {"out": y[0], "aux": y[1]}
    fit_both(
        "two outputs, dicts", two_heads, xd, yd, rng, batch_size=3,
        loss={"out": "mae", "aux": "binary_crossentropy"}, loss_weights={"out": 2.0, "aux": 0.3},
        metrics={"aux": ["accuracy", "mse"]},
    )  # fmt: skip


def test_validation_split_and_data_with_several_inputs_and_outputs(rng):
    x, y = two_heads_data(rng, n=10)
    km, rm = both(two_heads)
    start_equal(km, rm, rng)
    for m, opt in ((km, keras.optimizers.SGD(0.1)), (rm, optimizers.SGD(0.1))):
        m.compile(opt, loss=["mse", "binary_crossentropy"], metrics=[["mae"], []])
    for kw in (dict(validation_split=0.3, batch_size=3), dict(validation_data=(x, y))):
        fit = dict(epochs=2, shuffle=False, verbose=0, **kw)
        check_history("validation", km.fit(x, y, **fit).history, rm.fit(x, y, **fit).history)
    assert "val_out_mae" in rm.history.history
    check_weights("validation", km, rm)


def test_train_and_test_on_batch(rng):
    x, y = two_heads_data(rng)
    km, rm = both(two_heads)
    start_equal(km, rm, rng)
    for m, opt in ((km, keras.optimizers.SGD(0.05)), (rm, optimizers.SGD(0.05))):
        m.compile(opt, loss=["mse", "binary_crossentropy"], metrics=[["mae"], []])
    for _ in range(2):
        theirs = km.train_on_batch(x, y, return_dict=True)
        ours = rm.train_on_batch(x, y, return_dict=True)
        check_history("train_on_batch", {k: [v] for k, v in theirs.items()},
                      {k: [v] for k, v in ours.items()})  # fmt: skip
    np.testing.assert_allclose(rm.test_on_batch(x, y), km.test_on_batch(x, y), rtol=2e-5)
    check_weights("train_on_batch", km, rm)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_encoder_decoder_trains_through_the_states(cell, rng):
    x = seqs(rng, (8, T, D), (8, 5, 4))
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (8, 5))]
    km, rm = fit_both(
        f"encoder-decoder {cell}", encoder_decoder(cell), x, y, rng,
        loss="categorical_crossentropy", metrics=["accuracy"],
    )  # fmt: skip
    assert sorted(rm.history.history) == ["accuracy", "loss"]


def test_shared_layers_and_nested_models_train_as_keras(rng):
    x = seqs(rng, (8, T, D), (8, T + 2, D))
    y = [seqs(rng, (8, 3))[0], seqs(rng, (8, T, 4))[0]]
    fit_both("shared layer", shared_layer, x, y, rng, loss=["mse", "mae"])
    x = seqs(rng, (8, T, D), (8, T, D))
    y = [seqs(rng, (8, T, 6))[0], seqs(rng, (8, T, 2))[0]]
    fit_both("nested models", nested, x, y, rng, loss=["mse", "mse"], loss_weights=[0.7, 1.3])


def test_text_classifier_on_token_ids_trains_as_keras(rng):
    ids = rng.integers(1, 30, (8, T))
    ids[1, 4:] = ids[2, :3] = 0  # padding, masked by the Embedding
    labels = rng.integers(0, 3, 8)
    fit_both("text classifier (Embedding mask_zero)", text_classifier, ids, labels, rng,
             loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # fmt: skip


def test_bidirectional_encoder_states_train_as_keras(rng):
    def build(lib, Lk):
        enc, dec = lib.Input((T, D), name="enc"), lib.Input((5, D), name="dec")
        _, hf, hb = Lk.Bidirectional(Lk.GRU(3, return_state=True), name="benc")(enc)
        seq = Lk.GRU(6, return_sequences=True, name="gdec")(
            dec, initial_state=Lk.Concatenate(name="h")([hf, hb])
        )
        return lib.Model([enc, dec], Lk.Dense(2, name="out")(seq), name="bienc")

    fit_both("Bidirectional encoder", build, seqs(rng, (8, T, D), (8, 5, D)),
             seqs(rng, (8, 5, 2))[0], rng, loss="mse")  # fmt: skip


@pytest.mark.parametrize("padding", ["right_pad", "left_pad", "holes"])
def test_masked_outputs_leave_the_loss_as_in_keras(padding, rng):
    """Keras drops the masked steps of a masked output from its loss and metrics."""

    def build(lib, Lk):
        x = lib.Input((T, D), name="x")
        seq = Lk.LSTM(5, return_sequences=True, name="lstm")(Lk.Masking(name="masking")(x))
        return lib.Model(x, Lk.Dense(2, name="out")(seq), name="tagger")

    x = pad(seqs(rng, (8, T, D))[0], padding, rng)
    fit_both(f"masked output ({padding})", build, x, seqs(rng, (8, T, 2))[0], rng,
             loss="mse", metrics=["mae"])  # fmt: skip


def test_sequential_masked_output_and_sample_weight_as_keras(rng):
    """The same rule for Sequential (which shares the trainer)."""
    x = pad(seqs(rng, (8, T, D))[0], "right_pad", rng)
    y, sw = seqs(rng, (8, T, 2))[0], rng.random((8, T)).astype(np.float32)

    def build(lib, Lk):
        return lib.Sequential([lib.Input((T, D)), Lk.Masking(), Lk.GRU(4, return_sequences=True),
                               Lk.Dense(2)])  # fmt: skip

    km, rm = build(keras, keras.layers), build(rnncore, L)
    start_equal(km, rm, rng)
    for m, opt in ((km, keras.optimizers.SGD(0.1)), (rm, optimizers.SGD(0.1))):
        m.compile(opt, loss="mse")
    fit = dict(epochs=2, batch_size=4, shuffle=False, verbose=0, sample_weight=sw)
    check_history(
        "Sequential masked output", km.fit(x, y, **fit).history, rm.fit(x, y, **fit).history
    )
    check_weights("Sequential masked output", km, rm)


def test_an_output_without_loss_is_not_trained(rng):
    """loss None for an output (Keras's torch optimizer fails on the weights that then get
    no gradient; rnncore leaves them as they are)."""
    x, y = two_heads_data(rng)
    _, rm = both(two_heads)
    rm.compile(optimizers.SGD(0.1), loss=["mse", None], metrics=[[], ["mae"]])
    before = {name: rm.get_layer(name).get_weights() for name in ("aux", "shared", "decoder")}
    history = rm.fit(x, [y[0], None], epochs=1, verbose=0).history
    assert sorted(history) == ["loss"]  # no targets for aux: its metric is not reported
    for name, weights in before.items():
        changed = [
            not np.array_equal(a, b) for a, b in zip(weights, rm.get_layer(name).get_weights())
        ]
        assert all(changed) if name == "decoder" else not any(changed), name


def test_bad_training_data_is_refused_before_any_update(rng):
    x, y = two_heads_data(rng)
    _, rm = both(two_heads)
    before = rm.get_weights()
    with pytest.raises(ValueError, match="loss must have one entry per output"):
        rm.compile("sgd", loss=["mse"])
    with pytest.raises(ValueError, match=r"loss names unknown output\(s\) \['nope'\]"):
        rm.compile("sgd", loss={"nope": "mse"})
    with pytest.raises(ValueError, match=r"metrics must have one entry per output \(2"):
        rm.compile("sgd", loss="mse", metrics=["mae"])  # Keras: "Node arity mismatch"
    rm.compile("sgd", loss=["mse", "binary_crossentropy"])
    with pytest.raises(ValueError, match="no targets y for output 'aux'"):
        rm.fit(x, {"out": y[0]}, verbose=0)
    with pytest.raises(ValueError, match="2 outputs.*give y as a list or a dict"):
        rm.fit(x, y[0], verbose=0)
    with pytest.raises(ValueError, match=r"targets of shape \(None, 5, 2\).*\(None, 5, 3\)"):
        rm.fit(x, [y[0][..., :2], y[1]], verbose=0)
    with pytest.raises(ValueError, match="same number of samples"):
        rm.fit(x, [y[0][:-1], y[1]], verbose=0)
    with pytest.raises(ValueError, match="class_weight is only supported for models with one"):
        rm.fit(x, y, class_weight={0: 1.0}, verbose=0)
    for a, b in zip(before, rm.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- the graph's backward, by finite differences -----------------------------------------

F64 = {"dtype": "float64"}


def gradient_graph():
    """Shared layers (one called on two branches, one inside a nested model called
    twice), a tensor used twice, states into a decoder, return_state outputs, masks."""
    a = rnncore.Input((T, D), dtype="float64", name="a")
    b = rnncore.Input((5, D), dtype="float64", name="b")
    i = rnncore.Input((5, 4), dtype="float64", name="i")
    inner = rnncore.Model(i, L.Dense(3, activation="tanh", name="inner_d", **F64)(i), name="inner")
    _, h, c = L.LSTM(4, return_state=True, name="enc", **F64)(L.Masking(name="m", **F64)(a))
    dec = L.LSTM(4, return_sequences=True, return_state=True, name="dec", **F64)
    seq, h2, _ = dec(b, initial_state=[h, c])
    shared = L.Dense(4, activation="tanh", name="shared", **F64)
    mixed = L.Add(name="add", **F64)([shared(seq), seq, shared(shared(seq))])
    both_inner = L.Concatenate(name="cat", **F64)([inner(mixed), inner(seq)])
    h0 = L.Dense(3, activation="tanh", name="to_h", **F64)(h2)
    gru = L.GRU(3, return_sequences=True, name="gru", **F64)(both_inner, initial_state=h0)
    out2 = L.Dense(2, name="head", **F64)(L.Multiply(name="mul", **F64)([h2, h2]))
    return rnncore.Model([a, b], [gru, out2], name="grad")


def test_graph_gradients_match_finite_differences(rng):
    model = gradient_graph()
    for v in model.weights:
        v.value[...] = rng.normal(0, 0.5, v.shape)
    x = [pad(rng.standard_normal((3, T, D)), "holes", rng), rng.standard_normal((3, 5, D))]
    y = [rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 2))]
    model.compile("sgd", loss=["mse", "mse"], loss_weights=[1.0, 0.7])
    mse = losses.get("mse")

    def loss_value(xs):
        outs = model._run(xs, [None, None], True)[0]
        return mse(y[0], outs[0]) + 0.7 * mse(y[1], outs[1])

    outs, masks, records = model._graph.forward_train(x, [None, None], None)
    _, parts, d_outs = model._losses_and_gradients(y, outs, masks, [None, None])
    d_inputs, grads = model._graph.backward(records, d_outs)
    errors, eps = [], 1e-6
    for v in model.weights:
        r = rng.standard_normal(v.shape)
        w0 = v.value.copy()
        # assign counts the update (Variable.version): the layers' packed copies follow
        v.assign(w0 + eps * r)
        up = loss_value(x)
        v.assign(w0 - eps * r)
        down = loss_value(x)
        v.assign(w0)
        analytic = float(np.sum(grads[id(v)][1] * r))
        numeric = (up - down) / (2 * eps)
        errors.append(abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))
    for k in range(2):
        r = rng.standard_normal(x[k].shape) * (x[k] != 0 if k == 0 else 1)
        xp, xm = list(x), list(x)
        xp[k], xm[k] = x[k] + eps * r, x[k] - eps * r
        numeric = (loss_value(xp) - loss_value(xm)) / (2 * eps)
        analytic = float(np.sum(d_inputs[k] * r))
        errors.append(abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))
    MAX_ERR["graph backward vs finite differences (relative)"] = max(errors)
    assert max(errors) < 1e-6, errors
