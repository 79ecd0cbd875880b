"""The LSTM variants as layer options (``use_peepholes``, ``projection_units``, ``cell_clip``,
``input_forget``, ``output_activation``) against :mod:`rnncore.reference`: predict with masks,
directions, initial and returned states, Bidirectional, stateful streaming, config, saving,
and training (the new weights' gradients by finite differences in float64, then ``fit``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import rnncore
from rnncore import layers as L
from rnncore import reference
from rnncore.errors import UnsupportedArgumentError

MAX_ERR: dict[str, float] = {}

#: name -> the layer's variant keywords (each alone, and all together)
VARIANTS = {
    "peepholes": dict(use_peepholes=True),
    "projection": dict(projection_units=3),
    "clip": dict(cell_clip=0.7),
    "input_forget": dict(input_forget=True),
    "output_relu": dict(output_activation="relu"),
    "all": dict(
        use_peepholes=True,
        projection_units=3,
        cell_clip=1.5,
        input_forget=True,
        output_activation="sigmoid",
    ),  # fmt: skip
}
D, H, B, T = 4, 5, 3, 6


def _record(what, got, want, tol=1e-5):
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    assert err <= tol, f"{what}: max error {err:.3g} > {tol}"


def _layer(variant, dtype="float32", seed=0, **kw):
    """A built layer with random weights, peepholes and projection included."""
    layer = L.LSTM(H, dtype=dtype, **VARIANTS[variant], **kw)
    layer.build((None, None, D))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.5, w.shape) for w in layer.get_weights()])
    return layer


def _ref_keywords(layer) -> dict:
    """The layer's weights and options as reference.lstm's keywords (float64)."""
    w = [v.value.astype(np.float64) for v in layer.weights]
    kw = dict(kernel=w[0], recurrent_kernel=w[1], bias=w[2])
    extra = iter(w[3:])
    if layer.use_peepholes:
        kw["peephole"] = next(extra)
    if layer.projection_units:
        kw["projection"] = next(extra)
    for name in ("cell_clip", "input_forget", "output_activation"):
        kw[name] = getattr(layer, name)
    return kw


def _reference(layer, x, mask=None, initial_state=None, go_backwards=None):
    kw = _ref_keywords(layer)
    init = None if initial_state is None else [s.astype(np.float64) for s in initial_state]
    return reference.lstm(
        x.astype(np.float64), kw.pop("kernel"), kw.pop("recurrent_kernel"), kw.pop("bias"),
        initial_state=init, mask=mask, return_sequences=layer.return_sequences,
        go_backwards=layer.go_backwards if go_backwards is None else go_backwards, **kw,
    )  # fmt: skip


def _mask(rng):
    m = rng.random((B, T)) < 0.7
    m[0] = True
    m[1, 4:] = False  # right padding
    m[2, :2] = False  # left padding
    return m


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_predict_matches_reference(variant, go_backwards, masked):
    rng = np.random.default_rng(1)
    layer = _layer(variant, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    mask = _mask(rng) if masked else None
    P = layer.state_size[0]
    init = [rng.normal(size=(B, P)).astype(np.float32), rng.normal(size=(B, H)).astype("f4")]
    y, h, c = layer(x, initial_state=init, mask=mask)
    assert y.shape == (B, T, P) and h.shape == (B, P) and c.shape == (B, H)
    want = _reference(layer, x, mask, init)
    for name, got, ref in zip(("y", "h", "c"), (y, h, c), want):
        _record(f"predict {variant} {name}", got, ref)
    x_before = x.copy()
    layer(x, mask=mask)  # and from zeros; the input stays as it was
    np.testing.assert_array_equal(x, x_before)


def test_plain_lstm_unchanged():
    """Without variants the config, weights and numbers are Keras's LSTM's."""
    layer = L.LSTM(H, seed=3)
    layer.build((None, None, D))
    assert [w.shape for w in layer.get_weights()] == [(D, 4 * H), (H, 4 * H), (4 * H,)]
    assert not {"use_peepholes", "projection_units", "cell_clip"} & set(layer.get_config())
    assert layer.peephole is None and layer.projection is None


@pytest.mark.parametrize("variant", ["all", "projection"])
def test_weights_order_shapes_and_state_widths(variant):
    layer = _layer(variant, return_state=True)
    shapes = [w.shape for w in layer.get_weights()]
    P = 3 if "projection_units" in VARIANTS[variant] else H
    want = [(D, 4 * H), (P, 4 * H), (4 * H,)]
    want += [(3, H)] * layer.use_peepholes + [(H, 3)] * bool(layer.projection_units)
    assert shapes == want
    assert [v.name for v in layer.weights][3:] == (
        ["peephole"] * layer.use_peepholes + ["projection"] * bool(layer.projection_units)
    )
    assert layer.compute_output_shape((B, T, D)) == ((B, P), (B, P), (B, H))
    with pytest.raises(ValueError, match=r"initial state 'h' must have shape \(3, 3\)"):
        layer(np.zeros((B, T, D), "f4"), initial_state=[np.zeros((B, H), "f4")] * 2)


@pytest.mark.parametrize("variant", ["all", "projection", "peepholes"])
def test_stateful_streaming(variant):
    rng = np.random.default_rng(2)
    layer = _layer(variant, stateful=True, return_sequences=True)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    parts = [layer(x[:, :2]), layer(x[:, 2:3]), layer(x[:, 3:])]
    want_y, want_h, want_c = _reference(layer, x)
    _record(f"stateful {variant}", np.concatenate(parts, axis=1), want_y)
    h, c = layer.states
    assert h.shape == (B, layer.state_size[0]) and c.shape == (B, H)
    _record(f"stateful {variant} h", h, want_h)
    _record(f"stateful {variant} c", c, want_c)
    layer.reset_states()
    _record(f"stateful {variant} reset", layer(x), want_y)
    s = [rng.normal(size=(B, w)).astype(np.float32) for w in layer.state_size]
    layer.reset_states(s)
    _record(f"stateful {variant} set", layer(x), _reference(layer, x, initial_state=s)[0])
    with pytest.raises(ValueError, match="state 'c' must have shape"):
        layer.reset_states([s[0], s[1][:, :2]])
    # a set_weights after the stream packed the weights is seen (peephole and projection too)
    layer.reset_states()
    layer.set_weights([w * 0.5 for w in layer.get_weights()])
    _record(f"stateful {variant} repack", layer(x), _reference(layer, x)[0])
    clone = pickle.loads(pickle.dumps(layer))
    _record(f"stateful {variant} pickled", clone(x), layer(x))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
def test_bidirectional(merge_mode):
    rng = np.random.default_rng(4)
    inner = L.LSTM(H, return_sequences=True, return_state=True, **VARIANTS["all"])
    bi = L.Bidirectional(inner, merge_mode=merge_mode)
    bi.build((None, None, D))
    bi.set_weights([rng.normal(0, 0.5, w.shape) for w in bi.get_weights()])
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    mask = _mask(rng)
    init = [rng.normal(size=(B, w)).astype(np.float32) for w in (3, H, 3, H)]
    out = bi(x, mask=mask, initial_state=init)
    n_out = 2 if merge_mode is None else 1
    outs, states = out[:n_out], out[n_out:]
    assert [s.shape for s in states] == [(B, 3), (B, H)] * 2
    fwd = _reference(bi.forward_layer, x, mask, init[:2])
    bwd = _reference(bi.backward_layer, x, mask, init[2:])
    yf, yb = fwd[0] * mask[..., None], (bwd[0] * mask[:, ::-1, None])[:, ::-1]
    if merge_mode == "concat":
        _record("bidirectional concat", outs[0], np.concatenate([yf, yb], axis=-1))
    elif merge_mode == "sum":
        _record("bidirectional sum", outs[0], yf + yb)
    else:
        _record("bidirectional None", outs[0], yf)
        _record("bidirectional None", outs[1], yb)
    for got, want in zip(states, list(fwd[1:]) + list(bwd[1:])):
        _record("bidirectional states", got, want)
    assert bi.compute_output_shape((B, T, D))[-1] == (B, H)


def test_config_save_load_and_pickle(tmp_path):
    rng = np.random.default_rng(5)
    model = rnncore.Sequential(
        [rnncore.Input(shape=(None, D)),
         L.LSTM(H, return_sequences=True, **VARIANTS["all"]),
         L.LSTM(4, use_peepholes=True, peephole_initializer="ones", output_activation="linear")]
    )  # fmt: skip
    model.set_weights([rng.normal(0, 0.5, w.shape) for w in model.get_weights()])
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    want = model.predict(x, verbose=0)
    assert want.shape == (B, 4)
    config = model.layers[0].get_config()
    assert {k: config[k] for k in VARIANTS["all"]} == VARIANTS["all"]
    clone = L.LSTM.from_config(config)
    assert clone.state_size == [3, H] and clone.output_activation == "sigmoid"
    path = tmp_path / "variants.rnncore"
    model.save(path)
    loaded = rnncore.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), want)
    assert loaded.layers[1].get_config()["peephole_initializer"]["class_name"] == "Ones"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(x, verbose=0), want)


def test_peephole_initializer_and_seed():
    a = L.LSTM(H, use_peepholes=True, projection_units=2, seed=7)
    b = L.LSTM(H, use_peepholes=True, projection_units=2, seed=7)
    plain = L.LSTM(H, seed=7)
    for layer in (a, b, plain):
        layer.build((None, None, D))
    np.testing.assert_array_equal(a.peephole.value, np.zeros((3, H), np.float32))
    np.testing.assert_array_equal(a.projection.value, b.projection.value)
    assert np.abs(a.projection.value).max() > 0
    # the kernel is drawn first, as without the variants
    np.testing.assert_array_equal(a.kernel.value, plain.kernel.value)


def _loss_and_grads(layer, x, mask, dy_seed, rng=None):
    """L = sum(w * y) + sum(v * c) for fixed random w, v; returns L and the layer's grads."""
    (y, _, c), _ = layer.forward_train(x, mask, rng=rng)
    r = np.random.default_rng(dy_seed)
    wy, wc = r.normal(size=y.shape), r.normal(size=c.shape)
    loss = float(np.sum(wy * y) + np.sum(wc * c))
    dx = layer.backward([wy, None, wc])
    return loss, layer.gradients, dx


@pytest.mark.parametrize("variant", ["all", "peepholes", "projection", "clip", "input_forget"])
@pytest.mark.parametrize("dropout", [False, True])
def test_gradients_by_finite_differences(variant, dropout):
    """float64: every weight's gradient, the peephole and projection included, and with
    recurrent dropout (per-sample masked weights) the same masks each time."""
    kw = dict(recurrent_dropout=0.3, dropout=0.2) if dropout else {}
    layer = _layer(variant, dtype="float64", seed=8, return_sequences=True, return_state=True,
                   go_backwards=variant == "clip", **kw)  # fmt: skip
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 4, D))
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], bool)

    def run():
        return _loss_and_grads(layer, x, mask, 10, rng=np.random.default_rng(11))

    _, grads, _ = run()
    eps = 1e-6
    for v, g in zip(layer.weights, grads):
        assert g.shape == v.shape, v.name
        num = np.zeros_like(g)
        for idx in np.ndindex(*v.shape):
            old = v.value[idx]
            v.value[idx] = old + eps
            up = run()[0]
            v.value[idx] = old - eps
            down = run()[0]
            v.value[idx] = old
            num[idx] = (up - down) / (2 * eps)
        if variant == "input_forget" and v.name in ("kernel", "recurrent_kernel", "bias"):
            # f = 1 - i: the forget gate's columns are unused, their gradient is zero
            assert np.all(np.take(g, range(H, 2 * H), axis=-1) == 0), v.name
        _record(f"fd {variant} dropout={dropout} {v.name}", g, num, tol=1e-6)


def test_initial_state_gradients_with_projection():
    """A functional model's states (h P wide, c H wide) get their gradients, float64."""
    layer = _layer("all", dtype="float64", seed=13, return_sequences=True, return_state=True)
    rng = np.random.default_rng(14)
    x = rng.normal(size=(2, 4, D))
    init = [rng.normal(size=(2, 3)), rng.normal(size=(2, H))]
    r = np.random.default_rng(15)
    wy, wh = r.normal(size=(2, 4, 3)), r.normal(size=(2, 3))

    def loss(states):
        (y, h, _), _ = layer.forward_train(x, initial_state=states)
        return float(np.sum(wy * y) + np.sum(wh * h))

    loss(init)
    layer.backward([wy, wh, None])
    grads = layer.state_gradients
    assert [g.shape for g in grads] == [(2, 3), (2, H)]
    eps = 1e-6
    for k, g in enumerate(grads):
        num = np.zeros_like(g)
        for idx in np.ndindex(*g.shape):
            up = [s.copy() for s in init]
            down = [s.copy() for s in init]
            up[k][idx] += eps
            down[k][idx] -= eps
            num[idx] = (loss(up) - loss(down)) / (2 * eps)
        _record(f"fd initial state {'hc'[k]}", g, num, tol=1e-6)


def test_fit_trains_the_new_weights():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(32, 5, D)).astype(np.float32)
    y = np.tanh(x.sum(axis=1)[:, :2])
    model = rnncore.Sequential(
        [rnncore.Input(shape=(None, D)),
         L.LSTM(H, seed=1, peephole_initializer="ones", **VARIANTS["all"]), L.Dense(2, seed=2)]
    )  # fmt: skip
    model.compile(optimizer=rnncore.optimizers.Adam(0.02), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    after = model.get_weights()
    for name, k in (("peephole", 3), ("projection", 4)):
        assert not np.array_equal(before[k], after[k]), f"{name} was not trained"


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(projection_units=0), ValueError, "projection_units"),
        (dict(cell_clip=-1.0), ValueError, "cell_clip must be a finite number > 0"),
        (dict(cell_clip=float("nan")), ValueError, "cell_clip"),
        (dict(cell_clip="big"), ValueError, "cell_clip"),
        (dict(use_peepholes="yes"), TypeError, "use_peepholes must be True or False"),
        (dict(input_forget=1), TypeError, "input_forget must be True or False"),
        (dict(output_activation="softmax"), UnsupportedArgumentError, "output_activation"),
        (dict(output_activation="swish?"), UnsupportedArgumentError, "output_activation"),
    ],
)
def test_bad_variant_arguments(kw, error, match):
    with pytest.raises(error, match=match):
        L.LSTM(H, **kw)


def test_gru_refuses_lstm_variants():
    with pytest.raises(TypeError, match="use_peepholes"):
        L.GRU(H, use_peepholes=True)
