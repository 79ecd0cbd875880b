"""rnncore.layers: every recurrent-layer option against the NumPy reference, and the Keras
contract (arguments, defaults, weights, states, masks, dtypes, errors).

Keras's own numbers are checked in test_layers_keras_golden.py; Bidirectional, Dense and the
other layers in test_layers_wrappers.py; Sequential and files in test_models.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnncore
from rnncore import reference
from rnncore.layers import GRU, LSTM, Dense, SimpleRNN, UnsupportedArgumentError

B, T, D, H = 3, 6, 4, 5

# variant -> (layer class, extra constructor kwargs, reference function, reference kwargs)
VARIANTS = {
    "simple_rnn": (SimpleRNN, {}, reference.simple_rnn, {}),
    "lstm": (LSTM, {}, reference.lstm, {}),
    "gru_reset_after": (GRU, {}, reference.gru, {"reset_after": True}),
    "gru_reset_before": (GRU, {"reset_after": False}, reference.gru, {"reset_after": False}),
}
N_STATES = {"simple_rnn": 1, "lstm": 2, "gru_reset_after": 1, "gru_reset_before": 1}
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


def seeded(seed=0):
    return np.random.default_rng(seed)


def random_weights(layer, rng):
    """Random weights of Keras's shapes (biases nonzero so every term counts), scaled
    ``1 / sqrt(fan_in)`` so that unbounded activations stay in range."""
    layer.set_weights(
        [
            rng.normal(0, 1 / np.sqrt(w.shape[0]) if w.ndim == 2 else 0.3, w.shape)
            for w in layer.get_weights()
        ]
    )


def make(variant, dtype="float32", seed=0, **kwargs):
    cls, extra, _, _ = VARIANTS[variant]
    layer = cls(H, dtype=dtype, **{**extra, **kwargs})
    layer.build((None, None, D))
    random_weights(layer, seeded(seed))
    return layer


def ref(variant, layer, x, **kwargs):
    """The reference's result for ``layer`` on ``x`` (float64 arithmetic)."""
    _, _, fn, ref_kwargs = VARIANTS[variant]
    w = [np.asarray(a, np.float64) for a in layer.get_weights()]
    bias = w[2] if layer.use_bias else None
    options = {"activation": layer.activation}
    if variant != "simple_rnn":
        options["recurrent_activation"] = layer.recurrent_activation
    if kwargs.get("initial_state") is not None:
        kwargs["initial_state"] = [np.asarray(s, np.float64) for s in kwargs["initial_state"]]
    return fn(
        np.asarray(x, np.float64),
        w[0],
        w[1],
        bias,
        **options,
        **ref_kwargs,
        go_backwards=layer.go_backwards,
        return_sequences=layer.return_sequences,
        **kwargs,
    )


def assert_close(got, want, dtype):
    got = list(got) if isinstance(got, tuple) else [got]
    want = list(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == np.dtype(dtype)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **TOL[dtype])


def mask_pattern(kind):
    m = np.ones((B, T), bool)
    if kind == "holes":
        m[0, 4:] = False
        m[1, :2] = False
        m[2, [1, 3]] = False
    elif kind == "all_masked_row":
        m[1] = False
    return m


# ---------------------------------------------------------------------------------------
# every option against the reference
# ---------------------------------------------------------------------------------------

OPTIONS = list(
    itertools.product(
        ["return_sequences", "last"],
        [False, True],
        ["none", "holes", "all_masked_row"],
        [False, True],
    )
)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "output,go_backwards,mask_kind,with_state",
    OPTIONS,
    ids=["-".join(map(str, o)) for o in OPTIONS],
)
def test_options_match_reference(variant, output, go_backwards, mask_kind, with_state):
    layer = make(
        variant,
        return_sequences=output == "return_sequences",
        go_backwards=go_backwards,
        return_state=True,
    )
    rng = seeded(1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = None if mask_kind == "none" else mask_pattern(mask_kind)
    states = (
        [rng.standard_normal((B, H)).astype(np.float32) for _ in range(N_STATES[variant])]
        if with_state
        else None
    )
    got = layer(x, mask=mask, initial_state=states)
    assert_close(got, ref(variant, layer, x, mask=mask, initial_state=states), "float32")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "activation,recurrent_activation,use_bias",
    [
        ("tanh", "sigmoid", False),
        ("relu", "hard_sigmoid", True),
        ("linear", "tanh", True),
        ("sigmoid", "relu", True),
        (None, "sigmoid", True),
    ],
)
def test_activations_and_bias_match_reference(variant, activation, recurrent_activation, use_bias):
    kwargs = {"activation": activation, "use_bias": use_bias, "return_sequences": True}
    if variant != "simple_rnn":
        kwargs["recurrent_activation"] = recurrent_activation
    layer = make(variant, **kwargs)
    assert len(layer.get_weights()) == (3 if use_bias else 2)
    x = seeded(2).standard_normal((B, T, D)).astype(np.float32)
    assert_close(layer(x), ref(variant, layer, x)[:1], "float32")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float64_layer_computes_in_float64(variant):
    layer = make(variant, dtype="float64", return_sequences=True, return_state=True)
    assert layer.dtype == "float64"
    assert all(w.dtype == np.float64 for w in layer.get_weights())
    x = seeded(3).standard_normal((B, T, D))
    assert_close(layer(x), ref(variant, layer, x), "float64")
    # a float32 input is converted to the layer's dtype, as Keras does
    out = layer(x.astype(np.float32))
    assert out[0].dtype == np.float64


def test_inputs_are_converted_to_the_layer_dtype():
    layer = make("lstm")
    x64 = seeded(4).standard_normal((B, T, D))
    y = layer(x64)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, layer(x64.astype(np.float32)))
    assert layer(x64.tolist()).dtype == np.float32  # nested lists too
    assert layer(np.ones((B, T, D), dtype=np.int64)).dtype == np.float32


def test_non_contiguous_inputs_and_fast_path_agree():
    layer = make("gru_reset_after", return_sequences=True)
    big = seeded(5).standard_normal((B, T, 2 * D)).astype(np.float32)
    x = big[:, :, ::2]
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(layer(x), layer(np.ascontiguousarray(x)))


# ---------------------------------------------------------------------------------------
# constructor: Keras's arguments and defaults, refusals
# ---------------------------------------------------------------------------------------

KERAS_DEFAULTS = {
    "activation": "tanh",
    "use_bias": True,
    "dropout": 0.0,
    "recurrent_dropout": 0.0,
    "return_sequences": False,
    "return_state": False,
    "go_backwards": False,
    "stateful": False,
    "seed": None,
}


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_defaults_are_keras(cls):
    layer = cls(7)
    config = layer.get_config()
    for k, v in KERAS_DEFAULTS.items():
        assert config[k] == v, k
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert config["recurrent_initializer"]["class_name"] == "Orthogonal"
    assert config["bias_initializer"]["class_name"] == "Zeros"
    assert layer.dtype == "float32"
    if cls is not SimpleRNN:
        assert config["recurrent_activation"] == "sigmoid"
    if cls is LSTM:
        assert config["unit_forget_bias"] is True
    if cls is GRU:
        assert config["reset_after"] is True
    assert cls.from_config(config).get_config() == config


def test_positional_arguments_follow_keras_order():
    assert LSTM(3, "relu", "hard_sigmoid").recurrent_activation == "hard_sigmoid"
    assert GRU(3, "relu", "linear", False).use_bias is False
    assert SimpleRNN(3, "relu", False).use_bias is False


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
@pytest.mark.parametrize(
    "arg,value",
    [
        ("kernel_regularizer", "l2"),
        ("recurrent_regularizer", "l1"),
        ("bias_regularizer", "l2"),
        ("activity_regularizer", "l2"),
        ("kernel_constraint", "max_norm"),
        ("recurrent_constraint", "unit_norm"),
        ("bias_constraint", "non_neg"),
        ("unroll", True),
        ("time_major", True),
        ("dtype", "float16"),
        ("dtype", "mixed_float16"),
        ("activation", "elu"),
        ("activation", lambda z: z),
    ],
)
def test_unsupported_arguments_raise_naming_them(cls, arg, value):
    with pytest.raises(UnsupportedArgumentError, match=arg if arg != "dtype" else "dtype"):
        cls(3, **{arg: value})


def test_unsupported_arguments_are_not_implemented_errors():
    assert issubclass(UnsupportedArgumentError, NotImplementedError)
    with pytest.raises(NotImplementedError, match="use_cudnn"):
        LSTM(3, use_cudnn=True)
    LSTM(3, use_cudnn=False), GRU(3, use_cudnn="auto")  # speed-only, accepted
    LSTM(3, implementation=1), LSTM(3, unroll=False, time_major=False)
    with pytest.raises(NotImplementedError, match="recurrent_activation"):
        LSTM(3, recurrent_activation="softmax")


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU, Dense])
def test_unknown_keyword_arguments_are_type_errors(cls):
    with pytest.raises(TypeError, match="'bogus_arg'"):
        cls(3, bogus_arg=1)


def test_invalid_values():
    with pytest.raises(ValueError, match="units"):
        LSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, dropout=1.5)
    with pytest.raises(ValueError, match="initializer"):
        LSTM(3, kernel_initializer="no_such_init")


def test_activation_callables_by_name():
    assert LSTM(3, activation=np.tanh).activation == "tanh"
    assert SimpleRNN(3, activation=None).activation == "linear"


def test_names_are_unique_like_keras():
    a, b = LSTM(2), LSTM(2)
    assert a.name != b.name and a.name.startswith("lstm") and b.name.startswith("lstm")
    assert SimpleRNN(2).name.startswith("simple_rnn")
    assert LSTM(2, name="enc").name == "enc"


# ---------------------------------------------------------------------------------------
# dropout: stored, identity at inference, refused in training
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dropout_is_identity_at_inference_and_active_in_training(variant):
    layer = make(variant, dropout=0.3, recurrent_dropout=0.2)
    plain = make(variant)
    x = seeded(7).standard_normal((B, T, D)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), plain(x))
    np.testing.assert_array_equal(layer(x, training=False), plain(x))
    assert (layer.dropout, layer.recurrent_dropout) == (0.3, 0.2)
    trained = layer(x, training=True)  # Keras's training semantics (see test_training*)
    assert trained.shape == plain(x).shape and not np.array_equal(trained, plain(x))
    np.testing.assert_array_equal(plain(x, training=True), plain(x))  # no dropout: same


# ---------------------------------------------------------------------------------------
# building: lazily, explicitly, with Keras's input-shape arguments
# ---------------------------------------------------------------------------------------


def test_builds_lazily_on_first_call_with_any_timesteps():
    layer = LSTM(H, return_sequences=True)
    assert not layer.built and layer.weights == []
    y = layer(np.zeros((2, 9, D), np.float32))
    assert layer.built and y.shape == (2, 9, H)
    assert layer(np.zeros((5, 3, D), np.float32)).shape == (5, 3, H)  # timesteps vary


def test_build_explicitly():
    layer = GRU(H)
    layer.build((None, None, D))
    assert [w.shape for w in layer.get_weights()] == [(D, 3 * H), (H, 3 * H), (2, 3 * H)]
    with pytest.raises(ValueError, match="input_dim"):
        GRU(H).build((None, D))


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"input_shape": (T, D)}, (None, T, D)),
        ({"input_shape": (None, D)}, (None, None, D)),
        ({"input_length": T, "input_dim": D}, (None, T, D)),
        ({"input_dim": D}, (None, None, D)),
        ({"batch_input_shape": (2, T, D)}, (2, T, D)),
        ({"input_shape": (T, D), "batch_size": 2}, (2, T, D)),
    ],
)
def test_keras_input_shape_arguments(kwargs, expected):
    layer = LSTM(H, **kwargs)
    assert layer.input_shape == expected
    model = rnncore.Sequential([layer])
    assert model.built and layer.built
    assert model.input_shape == expected
    assert model.output_shape == (expected[0], H)


def test_input_shape_argument_errors():
    with pytest.raises(ValueError, match="input_dim"):
        LSTM(H, input_length=T)
    with pytest.raises(ValueError, match="not both"):
        LSTM(H, input_shape=(T, D), input_dim=D)
    with pytest.raises(TypeError, match="input_length"):
        Dense(3, input_dim=4, input_length=2)
    assert Dense(3, input_dim=4).input_shape == (None, 4)


def test_wrong_input_shapes_raise_clear_errors():
    layer = make("lstm")
    with pytest.raises(ValueError, match=r"\(batch, timesteps, 4\)"):
        layer(np.zeros((B, T, D + 1), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, timesteps, 4\)"):
        layer(np.zeros((B, D), np.float32))
    with pytest.raises(ValueError, match="mask"):
        layer(np.zeros((B, T, D), np.float32), mask=np.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="initial state 'c'"):
        layer(
            np.zeros((B, T, D), np.float32), initial_state=[np.zeros((B, H)), np.zeros((B, H + 1))]
        )
    with pytest.raises(ValueError, match="2 array"):
        layer(np.zeros((B, T, D), np.float32), initial_state=[np.zeros((B, H))])


def test_calling_on_symbolic_input_gives_a_symbolic_tensor():
    y = LSTM(3)(rnncore.Input((None, D)))  # Keras's functional API: tests/test_functional.py
    assert isinstance(y, rnncore.KerasTensor) and y.shape == (None, 3)


# ---------------------------------------------------------------------------------------
# weights: Keras's names, shapes, order; get/set; errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,shapes",
    [
        ("simple_rnn", [(D, H), (H, H), (H,)]),
        ("lstm", [(D, 4 * H), (H, 4 * H), (4 * H,)]),
        ("gru_reset_after", [(D, 3 * H), (H, 3 * H), (2, 3 * H)]),
        ("gru_reset_before", [(D, 3 * H), (H, 3 * H), (3 * H,)]),
    ],
)
def test_weights_named_and_shaped_as_keras(variant, shapes):
    layer = make(variant)
    assert [v.name for v in layer.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [w.shape for w in layer.get_weights()] == shapes
    assert layer.kernel.shape == shapes[0] and layer.cell.recurrent_kernel.shape == shapes[1]
    assert layer.weights[0].path == f"{layer.name}/kernel"
    np.testing.assert_array_equal(np.asarray(layer.bias), layer.get_weights()[2])


@pytest.mark.parametrize(
    "variant,count",
    [
        ("simple_rnn", lambda d, u: u * (d + u) + u),
        ("lstm", lambda d, u: 4 * (u * (d + u) + u)),
        ("gru_reset_after", lambda d, u: 3 * (u * (d + u) + 2 * u)),
        ("gru_reset_before", lambda d, u: 3 * (u * (d + u) + u)),
    ],
)
@pytest.mark.parametrize("d,u", [(1, 1), (4, 5), (13, 32)])
def test_parameter_counts_follow_keras_formulas(variant, count, d, u):
    cls, extra, _, _ = VARIANTS[variant]
    layer = cls(u, **extra)
    layer.build((None, None, d))
    assert layer.count_params() == count(d, u)


def test_get_weights_returns_copies_and_set_weights_round_trips():
    layer = make("lstm")
    w = layer.get_weights()
    w[0][:] = 0
    assert not np.all(layer.get_weights()[0] == 0)
    other = LSTM(H)
    other.set_weights(layer.get_weights())  # builds itself from the weights' shapes
    x = seeded(8).standard_normal((B, T, D)).astype(np.float32)
    np.testing.assert_array_equal(other(x), layer(x))


def test_set_weights_converts_to_the_layer_dtype():
    layer = make("gru_reset_after")
    layer.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    assert all(w.dtype == np.float32 for w in layer.get_weights())


def test_set_weights_errors_name_the_weight_and_both_shapes():
    layer = make("lstm")
    before = layer.get_weights()
    with pytest.raises(
        ValueError,
        match=r"3 weight\(s\) \(kernel, recurrent_kernel, bias\)"
        r", got a list of 2",
    ):
        layer.set_weights(before[:2])
    bad = [before[0], before[1], np.zeros(3 * H)]
    with pytest.raises(ValueError, match=r"'bias' expects shape \(20,\), got \(15,\)"):
        layer.set_weights(bad)
    bad = [np.ones((D + 1, 4 * H)), before[1], before[2]]
    with pytest.raises(ValueError, match=r"'kernel' expects shape \(4, 20\), got \(5, 20\)"):
        layer.set_weights(bad)
    for a, b in zip(before, layer.get_weights()):  # nothing changed
        np.testing.assert_array_equal(a, b)


def test_set_weights_after_a_call_updates_the_cached_fast_path():
    layer = make("lstm", stateful=False)
    x = seeded(9).standard_normal((B, T, D)).astype(np.float32)
    layer(x), layer(x)  # the fast path is set up
    new = [w * 0.5 for w in layer.get_weights()]
    layer.set_weights(new)
    fresh = LSTM(H)
    fresh.set_weights(new)
    np.testing.assert_array_equal(layer(x), fresh(x))


def test_changing_an_option_after_calls_is_honoured():
    layer = make("gru_reset_after")
    x = seeded(10).standard_normal((B, T, D)).astype(np.float32)
    layer(x), layer(x)
    layer.return_sequences = True
    layer.go_backwards = True
    assert layer(x).shape == (B, T, H)
    assert_close(layer(x), ref("gru_reset_after", layer, x)[:1], "float32")


# ---------------------------------------------------------------------------------------
# return_state, initial_state, stateful streaming
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_return_state_structure(variant):
    layer = make(variant, return_state=True)
    x = seeded(11).standard_normal((B, T, D)).astype(np.float32)
    out = layer(x)
    assert isinstance(out, tuple) and len(out) == 1 + N_STATES[variant]
    np.testing.assert_array_equal(out[0], out[1])  # output is the last h
    assert all(o.shape == (B, H) for o in out)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("return_sequences", [False, True])
def test_stateful_one_step_at_a_time_equals_one_call(variant, return_sequences):
    x = seeded(12).standard_normal((B, 11, D)).astype(np.float32)
    whole = make(variant, return_sequences=True, return_state=True)(x)
    layer = make(variant, stateful=True, return_sequences=return_sequences, return_state=True)
    steps = [layer(x[:, t : t + 1]) for t in range(x.shape[1])]
    outs = np.concatenate([s[0] if return_sequences else s[0][:, None] for s in steps], 1)
    np.testing.assert_allclose(outs, whole[0], rtol=1e-6, atol=1e-6)
    for got, want in zip(steps[-1][1:], whole[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for got, want in zip(layer.states, whole[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stateful_chunks_reset_and_explicit_states(variant):
    x = seeded(13).standard_normal((B, 9, D)).astype(np.float32)
    ref_layer = make(variant, return_sequences=True)
    layer = make(variant, stateful=True, return_sequences=True)
    chunks = [layer(x[:, :4]), layer(x[:, 4:5]), layer(x[:, 5:])]
    np.testing.assert_allclose(np.concatenate(chunks, 1), ref_layer(x), rtol=1e-6, atol=1e-6)
    layer.reset_states()
    assert all(np.all(s == 0) for s in layer.states)
    np.testing.assert_array_equal(layer(x[:, :4]), chunks[0])  # a fresh stream again
    # explicit states: reset_states(states) or initial_state= on a call
    s = [np.full((B, H), 0.1, np.float32) for _ in range(N_STATES[variant])]
    layer.reset_states(s)
    a = layer(x)
    layer.reset_states()
    b = layer(x, initial_state=s)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, ref(variant, layer, x, initial_state=s)[0], **TOL["float32"])


def test_stateful_layer_checks_batch_size_and_masks_carry_state():
    layer = make("lstm", stateful=True)
    x = seeded(14).standard_normal((B, T, D)).astype(np.float32)
    layer(x)
    with pytest.raises(ValueError, match="batch size 3"):
        layer(x[:2])
    # masked steps carry the states across calls too
    layer.reset_states()
    mask = mask_pattern("holes")
    y1 = layer(x, mask=mask)
    y2 = layer(x[:, :2])
    whole = make("lstm")(
        np.concatenate([x, x[:, :2]], 1), mask=np.concatenate([mask, np.ones((B, 2), bool)], 1)
    )
    np.testing.assert_allclose(y2, whole, rtol=1e-6, atol=1e-6)
    assert y1.shape == (B, H)


def test_non_stateful_layer_does_not_carry_state():
    layer = make("gru_reset_after")
    x = seeded(15).standard_normal((B, T, D)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), layer(x))
    assert layer.states is None


# ---------------------------------------------------------------------------------------
# masks travel with arrays (Keras's _keras_mask) for layer-by-layer scripts
# ---------------------------------------------------------------------------------------


def test_mask_attached_by_masking_is_used_by_the_next_layer():
    from rnncore.layers import Masking

    x = seeded(16).standard_normal((B, T, D)).astype(np.float32)
    mask = mask_pattern("holes")
    x[~mask] = 0.0
    masked = Masking()(x)
    np.testing.assert_array_equal(masked._keras_mask, mask)
    layer = make("lstm", return_sequences=True)
    y = layer(masked)
    np.testing.assert_array_equal(y, layer(x, mask=mask))
    np.testing.assert_array_equal(y._keras_mask, mask)  # return_sequences passes it on
    last = make("lstm")(masked)
    assert getattr(last, "_keras_mask", None) is None  # without it, the mask stops
    assert getattr(masked + 1, "_keras_mask", None) is None  # derived arrays: no mask
