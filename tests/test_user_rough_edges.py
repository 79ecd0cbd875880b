"""Small things a new user hit (issue 22, item 4), each held to its fixed behaviour.

* How ``x`` is read, one rule for a Sequential and a functional Model: a list of arrays one
  axis short of a single input is a ragged batch, a list of one full-rank array is that
  input (Keras), nested Python lists that form one array are that array, anything else
  (None, a list of batches, irregular nested lists) is refused naming ``x`` and the shapes.
* Declared batch sizes and shapes checked where they are given.
* ``set_num_threads`` beyond the CPUs the process may use: capped, with a warning.
* ``quantize`` in a second mode refused (it rounded the rounded weights); ``summary``
  shows each quantized layer's mode and the parameters' sizes as held.
* ``from_torch`` models refuse an input of another dtype than their weights, as torch.
* ``VerificationError`` writes plain numbers.
"""

from __future__ import annotations

import copy
import os
import re
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import Input, VerificationError, from_torch  # noqa: E402
from rnncore import layers as L  # noqa: E402
from support import available_cpus  # noqa: E402

D = 3


def _both_kinds(rng):
    """The same network as a Sequential and as a functional Model (same weights)."""
    seq = rnncore.Sequential([Input((None, D)), L.LSTM(4), L.Dense(2)])
    seq.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in seq.get_weights()])
    inp = Input((None, D))
    fm = rnncore.Model(inp, L.Dense(2)(L.LSTM(4)(inp)))
    fm.set_weights(seq.get_weights())
    return {"Sequential": seq, "Model": fm}


def _seqs(rng, *lengths):
    return [rng.standard_normal((n, D)).astype(np.float32) for n in lengths]


# ---- 1. lists as x ---------------------------------------------------------------------------


def test_a_list_of_samples_is_a_ragged_batch_for_both_model_kinds(rng):
    models = _both_kinds(rng)
    samples = _seqs(rng, 5, 7, 2)
    alone = [models["Sequential"].predict(a[None])[0] for a in samples]
    for kind, model in models.items():
        for got in (model.predict(samples), model.predict_on_batch(tuple(samples))):
            assert isinstance(got, list) and len(got) == 3, kind
            for g, w in zip(got, alone, strict=True):
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=kind)
    # one rule: the functional model returns what the Sequential returns, bit for bit
    for g, w in zip(models["Model"].predict(samples), models["Sequential"].predict(samples)):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", ["Sequential", "Model"])
def test_lists_that_are_one_array_stay_one_array(kind, rng):
    model = _both_kinds(rng)[kind]
    x = rng.standard_normal((2, 5, D)).astype(np.float32)
    want = model.predict(x)
    # nested Python lists that form one regular array (Keras reads them so)
    np.testing.assert_array_equal(model.predict(x.tolist()), want)
    np.testing.assert_array_equal(model(x.tolist()), want)
    # a list of one array of the input's rank: one entry per input, as Keras
    for got in (model.predict([x]), model([x]), model.predict_on_batch([x])):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["Sequential", "Model"])
def test_lists_that_are_neither_are_refused_naming_x_and_shapes(kind, rng):
    model = _both_kinds(rng)[kind]
    a, b = _seqs(rng, 5, 7)
    calls = {
        "predict": model.predict,
        "__call__": model,
        "predict_on_batch": model.predict_on_batch,
    }
    for what, call in calls.items():
        # a list of batches (3-D arrays) for a model with one input
        with pytest.raises(ValueError) as e:
            call([a[None], b[None]])
        msg = str(e.value)
        assert f"{what}: x is a list of 2 arrays of shapes [(1, 5, 3), (1, 7, 3)]" in msg, msg
        assert "one input of shape (None, None, 3)" in msg, msg
        assert "one array of shape (None, None, 3) (a batch)" in msg, msg
        assert "a list of arrays of shape (None, 3) (a ragged batch)" in msg, msg
        assert "inhomogeneous" not in msg
        # nested Python lists of different lengths: no regular array, and no NumPy error
        with pytest.raises(ValueError, match=f"{what}: x is a list that is not one regular array"):
            call([a.tolist(), b.tolist()])
        # arrays of mixed ranks
        with pytest.raises(ValueError, match=r"shapes \[\(5, 3\), \(1, 7, 3\)\]"):
            call([a, b[None]])
        # None
        with pytest.raises(TypeError, match=f"{what}: x must be one array of shape .* got None"):
            call(None)
    # a call computes one array: a ragged batch is pointed to predict
    with pytest.raises(ValueError, match=r"__call__: x is a list of 2 arrays of shapes "
                       r"\[\(5, 3\), \(7, 3\)\], a ragged batch, which predict"):  # fmt: skip
        model([a, b])
    with pytest.raises(TypeError, match="predict: x must be .* or an iterable of batches, got int"):
        model.predict(3)


def test_a_model_with_several_inputs_takes_one_entry_per_input(rng):
    i, j = Input((None, D), name="i"), Input((None, D), name="j")
    model = rnncore.Model([i, j], L.Add()([L.LSTM(3)(i), L.LSTM(3)(j)]))
    a = rng.standard_normal((2, 5, D)).astype(np.float32)
    assert model.predict([a, a]).shape == (2, 3)
    np.testing.assert_array_equal(model.predict({"i": a, "j": a}), model.predict((a, a)))
    with pytest.raises(ValueError, match=r"2 input\(s\) \['i', 'j'\], got a list of 3 for x"):
        model.predict([a, a, a])
    with pytest.raises(TypeError, match=r"x must be a list with one array per input \['i', 'j'\]"):
        model.predict(None)


# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue)
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_keras_reads_the_same_lists(rng):
    """Keras 3 (torch backend): a list of one batch is that input, for both model kinds; a
    list of two batches for a one-input functional model is refused (a Keras Sequential takes
    the first with a warning: rnncore refuses it as the functional model does)."""
    keras = pytest.importorskip("keras")
    models = _both_kinds(rng)
    kseq = keras.Sequential([keras.Input((None, D)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    kseq.set_weights(models["Sequential"].get_weights())
    kin = keras.Input((None, D))
    kfm = keras.Model(kin, kseq.layers[1](kseq.layers[0](kin)))
    x = rng.standard_normal((2, 5, D)).astype(np.float32)
    for kind, kmodel in (("Sequential", kseq), ("Model", kfm)):
        with warnings.catch_warnings():  # Keras warns that a list is not its input structure
            warnings.filterwarnings("ignore", "(?s).*structure of `inputs`", UserWarning)
            want = np.asarray(kmodel.predict([x], verbose=0))
        np.testing.assert_allclose(models[kind].predict([x]), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        kfm.predict([x, x], verbose=0)
    with pytest.raises(ValueError):
        models["Model"].predict([x, x])


# ---- 2. declared shapes, threads, quantize twice, summary ------------------------------------


POSITIVE = "must be a positive integer, got"
DECLARED = {
    "batch -2": (lambda: Input((D,), batch_size=-2), ValueError, f"batch_size {POSITIVE} -2"),
    "batch 0": (lambda: Input((D,), batch_size=0), ValueError, f"batch_size {POSITIVE} 0"),
    "batch 2.5": (lambda: Input((D,), batch_size=2.5), ValueError, f"batch_size {POSITIVE} 2.5"),
    "batch_shape 0": (
        lambda: Input(batch_shape=(0, D)),
        ValueError,
        rf"batch_shape: the batch size \(first dimension\) {POSITIVE} 0",
    ),
    "shape -2": (
        lambda: Input((-2, D)),
        ValueError,
        r"shape: dimensions must be >= 0 .* got -2 in \(-2, 3\)",
    ),
    "shape 3.5": (
        lambda: Input((3.5,)),
        TypeError,
        "shape: each dimension must be a whole number or None, got 3.5",
    ),
    "batch_input_shape -1": (
        lambda: L.Dense(2, batch_input_shape=(-1, D)),
        ValueError,
        r"Dense: batch_input_shape: the batch size .* got -1",
    ),
    "layer batch_size 0": (
        lambda: L.LSTM(2, input_shape=(None, D), batch_size=0),
        ValueError,
        f"LSTM: batch_size {POSITIVE} 0",
    ),
    "layer input_shape -3": (
        lambda: L.LSTM(2, input_shape=(None, -D)),
        ValueError,
        "LSTM: input_shape: dimensions must be >= 0",
    ),
}


@pytest.mark.parametrize("case", list(DECLARED))
def test_declared_shapes_are_checked_where_given(case):
    make, error, message = DECLARED[case]
    with pytest.raises(error, match=message):
        make()


def test_declared_shapes_that_are_valid_still_work():
    assert Input((None, D), batch_size=4).shape == (4, None, D)
    assert Input(batch_shape=(None, 0, D)).shape == (None, 0, D)  # size 0 allowed, as Keras
    m = rnncore.Sequential([L.LSTM(2, input_shape=(None, D), batch_size=1, stateful=True)])
    assert m.input_shape == (1, None, D)


def test_set_num_threads_is_capped_at_the_cpus(threads):
    cpus = available_cpus()
    with pytest.warns(UserWarning, match=f"n={cpus + 998} is more than the {cpus} CPU"):
        rnncore.set_num_threads(cpus + 998)
    assert rnncore.get_num_threads() == cpus
    rnncore.set_num_threads(cpus)  # no warning (filterwarnings=error would raise it)
    assert rnncore.get_num_threads() == cpus


def _quantizable(rng):
    model = rnncore.Sequential(
        [Input((None, 5)), L.Bidirectional(L.LSTM(8, return_sequences=True)), L.GRU(6),
         L.Dense(300), L.Dense(4)]
    )  # fmt: skip
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3
                       for w in model.get_weights()])  # fmt: skip
    return model


def test_quantize_in_a_second_mode_is_refused_and_changes_nothing(rng):
    model = _quantizable(rng)
    x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    fresh_bf16 = copy.deepcopy(model)
    fresh_bf16.quantize("bf16")
    model.quantize("int8")
    weights, y = model.get_weights(), model.predict(x)
    with pytest.raises(ValueError, match=r"already quantized \(int8\); quantize\('bf16'\) would "
                       r"round its int8-rounded weights again"):  # fmt: skip
        model.quantize("bf16")
    with pytest.raises(ValueError, match=r"LSTM 'forward_lstm.*already quantized \(int8\)"):
        model.quantize("bf16")
    assert model.quantization_mode == "int8"
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), y)
    # the same mode again changes nothing (it re-rounded the rounded weights before)
    model.quantize("int8")
    np.testing.assert_array_equal(model.predict(x), y)
    # a float32 copy quantizes as bf16: what the refusal points to
    assert not np.array_equal(fresh_bf16.predict(x), y)


def test_quantize_refusal_leaves_no_layer_half_done(rng):
    model = _quantizable(rng)
    model.layers[-1].quantize("int8")  # one layer by itself
    with pytest.raises(ValueError, match=r"Dense 'dense_\d+': already quantized \(int8\)"):
        model.quantize("bf16")
    assert [layer.quantization_mode for layer in model.layers[1:]] == [None, None, "int8"]
    # after new float weights, quantizing in another mode is from those weights: allowed
    model.set_weights(model.get_weights())
    model.quantize("bf16")
    assert model.quantization_mode == "bf16"


def test_summary_shows_modes_and_the_sizes_as_held(rng):
    model = _quantizable(rng)
    lines = []
    model.summary(print_fn=lines.append, line_length=100)
    floats = lines[0]
    n = model.count_params()
    assert f"Total params: {n:,} ({n * 4 / 1024:.2f} KB)" in floats
    assert "int8" not in floats
    model.quantize("int8")
    model.summary(print_fn=lines.append, line_length=100)
    text = lines[1]
    for label in ("bidirectional (Bidirectional, int8)", "gru (GRU, int8)",
                  "dense (Dense, int8)", "dense_1 (Dense, int8)"):  # fmt: skip
        assert label.split("(")[1] in text.replace("\n", " "), text

    # by hand: each kernel and recurrent kernel 1 byte a value + a float32 scale per column;
    # biases float32 (Bidirectional: two LSTM(8) on 5 features; GRU(6) on 16; Dense 16->300->4)
    def int8(rows, cols):
        return rows * cols + 4 * cols

    held = (
        2 * (int8(5, 32) + int8(8, 32) + 4 * 32)
        + int8(16, 18) + int8(6, 18) + 4 * 2 * 18
        + int8(6, 300) + 4 * 300
        + int8(300, 4) + 4 * 4
    )  # fmt: skip
    assert f"Total params: {n:,} ({held / 1024:.2f} KB)" in text, text
    assert held < n * 4 / 2  # the real size, far below the float32 one


def test_functional_summary_shows_modes_too(rng):
    inp = Input((None, 5))
    model = rnncore.Model(inp, L.Dense(2)(L.LSTM(4)(inp)))
    model.quantize("bf16")
    lines = []
    model.summary(print_fn=lines.append, line_length=100)
    assert re.search(r"lstm(_\d+)? \(LSTM, bf16\)", lines[0]), lines[0]
    assert re.search(r"dense(_\d+)? \(Dense, bf16\)", lines[0]), lines[0]
    held = 2 * (5 * 16 + 4 * 16) + 4 * 16 + 2 * 4 * 2 + 4 * 2
    assert held == 376 and "Total params: 170 (376.00 B)" in lines[0], lines[0]


# ---- 3. from_torch: dtypes as torch -----------------------------------------------------------


def test_a_float64_torch_module_refuses_float32_input_as_torch_does():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(D, 4).double()
    x64 = np.random.default_rng(1).standard_normal((5, 2, D))
    model = from_torch(module)
    with pytest.raises(ValueError, match="dtype"):  # what torch does
        module(torch.from_numpy(x64.astype(np.float32)))
    with pytest.raises(ValueError, match=r"TorchRNN: input dtype \(float32\) does not match the "
                       r"weights' dtype \(float64\)"):  # fmt: skip
        model(x64.astype(np.float32))
    with pytest.raises(ValueError, match=r"TorchRNN: h_0 dtype \(float32\) does not match"):
        model(x64, (np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4))))
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x64.astype(np.float32)), [5, 3]
    )
    with pytest.raises(ValueError, match=r"PackedSequence data dtype \(float32\)"):
        model(packed)
    # the right dtype: float64 out, torch's values
    with torch.no_grad():
        want = module(torch.from_numpy(x64))[0].numpy()
    got = model(x64)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # a float32 module refuses float64 NumPy arrays (NumPy's default) the same way
    with pytest.raises(ValueError, match=r"input dtype \(float64\) does not match the weights' "
                       r"dtype \(float32\)"):  # fmt: skip
        from_torch(torch.nn.GRU(D, 4))(x64)


def test_a_float64_torch_cell_refuses_float32_input():
    torch = pytest.importorskip("torch")
    cell = from_torch(torch.nn.GRUCell(D, 4).double())
    with pytest.raises(ValueError, match=r"GRUCell: input dtype \(float32\) does not match"):
        cell(np.zeros((2, D), np.float32))
    with pytest.raises(ValueError, match=r"GRUCell: hx h dtype \(float32\) does not match"):
        cell(np.zeros((2, D)), np.zeros((2, 4), np.float32))
    assert cell([[0.0] * D]).dtype == np.float64  # Python lists carry no dtype: the cell's


# ---- 4. VerificationError: plain numbers ------------------------------------------------------


def test_verification_error_writes_plain_numbers():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.GRU(D, 4)
    x = np.random.default_rng(2).standard_normal((5, 2, D)).astype(np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x))[0].numpy()
    wrong = y.copy()
    wrong[4, 1, 3] += 0.5
    with pytest.raises(VerificationError) as e:
        from_torch(module, verify=(x, wrong))
    msg = str(e.value)
    assert "np.float" not in msg, msg
    got = from_torch(module)(x)[4, 1, 3]
    assert f"at index (4, 1, 3) (actual {got}, expected {wrong[4, 1, 3]})" in msg, msg
    assert f"(actual {float(got):.7g}" in msg or f"(actual {float(got)}" in msg, msg
