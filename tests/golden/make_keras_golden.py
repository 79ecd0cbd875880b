"""Generate the Keras golden values the layer tests compare against (keras_golden.npz).

Run from the repository root with Keras 3 on the torch backend installed::

    KERAS_BACKEND=torch python3 tests/golden/make_keras_golden.py

Each case builds Keras layers from a small spec (class name + constructor arguments), sets
random weights (biases included, so every term is exercised), runs it and stores the input,
mask, initial states, weights and outputs. The specs travel inside the .npz as JSON, so the
tests rebuild the same layers with rnncore without importing Keras. Sizes are tiny on
purpose (the file stays well under 200 KB).

The .npz also stores :func:`recipe_hash` -- a SHA-256 of the case list and of the constants
the inputs are drawn from -- and the tests compare it with the hash of this file's current
recipe, so a case added or changed here without regenerating the .npz fails the suite.
Keras is imported only by :func:`main`: the tests import this module to read the recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras_golden.npz")
SEED = 20240607
WEIGHT_STDDEV = 0.5  # random weights: N(0, WEIGHT_STDDEV**2)
B, T, D = 3, 7, 4
# per-sample used steps for the masked cases: padding at the end, at the start, and a hole
MASK = np.array(
    [
        [1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1],
        [1, 1, 0, 1, 1, 1, 1],
    ],
    dtype=bool,
)


def make_layer(spec, L):
    """``[class_name, kwargs]`` -> layer; nested specs for ``layer``/``backward_layer``."""
    name, kwargs = spec
    kwargs = dict(kwargs)
    for key in ("layer", "backward_layer"):
        if key in kwargs:
            kwargs[key] = make_layer(kwargs[key], L)
    return getattr(L, name)(**kwargs)


def cell(name, **kw):
    return [name, kw]


CASES = []


def case(
    name,
    layers,
    *,
    mode="model",
    masked=False,
    mask_arg=False,
    initial_state=None,
    dtype="float32",
    chunks=None,
    batch_size=None,
):
    """mode: 'model' (Sequential + predict), 'layer' (one call), 'stateful' (chunks)."""
    CASES.append(
        dict(
            name=name,
            layers=layers,
            mode=mode,
            masked=masked,
            mask_arg=mask_arg,
            initial_state=initial_state,
            dtype=dtype,
            chunks=chunks,
            batch_size=batch_size,
        )
    )


# ---- single layers, every option ----
case("lstm_seq", [cell("LSTM", units=5, return_sequences=True)])
case(
    "lstm_last_relu_hardsig_nobias",
    [cell("LSTM", units=5, activation="relu", recurrent_activation="hard_sigmoid", use_bias=False)],
)
case(
    "lstm_state_backwards_init",
    [cell("LSTM", units=5, return_sequences=True, return_state=True, go_backwards=True)],
    mode="layer",
    initial_state=(2, 5),
)
# float64: a direct layer call (Keras's fused torch path computes in float64 throughout; its
# generic path, taken inside Sequential.predict, loses precision to ~1e-8 somewhere)
case(
    "lstm_float64",
    [cell("LSTM", units=5, return_sequences=True, return_state=True, dtype="float64")],
    mode="layer",
    dtype="float64",
)
case(
    "gru_float64",
    [cell("GRU", units=5, return_sequences=True, dtype="float64")],
    mode="layer",
    dtype="float64",
)
case(
    "gru_reset_after_state_init",
    [cell("GRU", units=5, return_sequences=True, return_state=True)],
    mode="layer",
    initial_state=(1, 5),
)
case("gru_reset_before_seq", [cell("GRU", units=5, reset_after=False, return_sequences=True)])
case(
    "gru_reset_before_backwards",
    [cell("GRU", units=4, reset_after=False, go_backwards=True, return_state=True)],
    mode="layer",
)
case("gru_backwards_last", [cell("GRU", units=4, go_backwards=True)])
case(
    "simple_rnn_seq_state",
    [cell("SimpleRNN", units=5, return_sequences=True, return_state=True)],
    mode="layer",
    initial_state=(1, 5),
)
case(
    "simple_rnn_relu_backwards", [cell("SimpleRNN", units=5, activation="relu", go_backwards=True)]
)

# ---- masks: the Masking layer and the mask= argument ----
for cls in ("LSTM", "GRU", "SimpleRNN"):
    case(
        f"masked_{cls.lower()}_seq",
        [cell("Masking"), cell(cls, units=4, return_sequences=True)],
        masked=True,
    )
    case(f"masked_{cls.lower()}_last", [cell("Masking"), cell(cls, units=4)], masked=True)
    case(
        f"masked_{cls.lower()}_backwards_seq",
        [cell("Masking"), cell(cls, units=4, return_sequences=True, go_backwards=True)],
        masked=True,
    )
case(
    "mask_arg_lstm_state",
    [cell("LSTM", units=4, return_sequences=True, return_state=True)],
    mode="layer",
    mask_arg=True,
)
case(
    "mask_arg_gru_reset_before",
    [cell("GRU", units=4, reset_after=False, return_sequences=True)],
    mode="layer",
    mask_arg=True,
)

# ---- Bidirectional: each merge mode, with and without masks ----
for mode in ("concat", "sum", "mul", "ave", None):
    case(
        f"bidi_lstm_{mode}_masked_seq",
        [
            cell("Masking"),
            cell(
                "Bidirectional", layer=cell("LSTM", units=4, return_sequences=True), merge_mode=mode
            ),
        ],
        masked=True,
    )
    case(
        f"bidi_gru_{mode}_seq",
        [cell("Bidirectional", layer=cell("GRU", units=4, return_sequences=True), merge_mode=mode)],
    )
case(
    "bidi_gru_masked_last",
    [cell("Masking"), cell("Bidirectional", layer=cell("GRU", units=4))],
    masked=True,
)
case(
    "bidi_simple_rnn_masked_seq",
    [
        cell("Masking"),
        cell("Bidirectional", layer=cell("SimpleRNN", units=4, return_sequences=True)),
    ],
    masked=True,
)
case(
    "bidi_gru_reset_before_ave",
    [cell("Bidirectional", layer=cell("GRU", units=4, reset_after=False), merge_mode="ave")],
)
case(
    "bidi_lstm_state_init",
    [cell("Bidirectional", layer=cell("LSTM", units=4, return_sequences=True, return_state=True))],
    mode="layer",
    initial_state=(4, 4),
)
case(
    "bidi_lstm_state_masked_none",
    [cell("Bidirectional", layer=cell("LSTM", units=4, return_state=True), merge_mode=None)],
    mode="layer",
    mask_arg=True,
)
case(
    "bidi_backward_layer",
    [
        cell("Masking"),
        cell(
            "Bidirectional",
            layer=cell("LSTM", units=4, return_sequences=True),
            backward_layer=cell(
                "LSTM", units=3, activation="relu", return_sequences=True, go_backwards=True
            ),
        ),
    ],
    masked=True,
)

# ---- stateful: chunks of the same stream, a reset in between ----
case(
    "stateful_lstm",
    [cell("LSTM", units=4, stateful=True, return_sequences=True)],
    mode="stateful",
    chunks=[3, 1, 3, "reset", 2, 5],
)
case(
    "stateful_gru_state",
    [cell("GRU", units=4, stateful=True, return_state=True)],
    mode="stateful",
    chunks=[2, 1, 4],
)
case(
    "stateful_simple_rnn",
    [cell("SimpleRNN", units=4, stateful=True, return_sequences=True)],
    mode="stateful",
    chunks=[4, 3],
)

# ---- Dense / TimeDistributed / Activation / Dropout and a whole model ----
case("dense_3d_tanh", [cell("Dense", units=3, activation="tanh")])
case(
    "dense_softmax_timedistributed",
    [cell("TimeDistributed", layer=cell("Dense", units=3, activation="softmax"))],
)
case(
    "full_model",
    [
        cell("Masking", mask_value=0.0),
        cell("Bidirectional", layer=cell("LSTM", units=6, return_sequences=True)),
        cell("GRU", units=5, return_sequences=True, reset_after=False),
        cell("TimeDistributed", layer=cell("Dense", units=4, activation="relu")),
        cell("SimpleRNN", units=3),
        cell("Dropout", rate=0.3),
        cell("Dense", units=2, activation="softmax"),
        cell("Activation", activation="linear"),
    ],
    masked=True,
    batch_size=2,
)


def recipe() -> dict:
    """What the golden values are computed from: the cases and the inputs' constants."""
    return {
        "cases": CASES,
        "seed": SEED,
        "weight_stddev": WEIGHT_STDDEV,
        "shape": [B, T, D],
        "mask": MASK.astype(int).tolist(),
    }


def recipe_hash() -> str:
    """SHA-256 of :func:`recipe` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(recipe(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def np_(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def shapes(t):
    if isinstance(t, (tuple, list)):
        return [shapes(e) for e in t]
    return list(t.shape)


def flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def run_chunks(layer, x, chunks):
    """A stateful layer's outputs for ``x`` fed in chunks of timesteps ("reset":
    ``reset_states()`` between chunks); the test replays the same with rnncore."""
    outs, start = [], 0
    for n in chunks:
        if n == "reset":
            layer.reset_states()
            continue
        outs.extend(flat(layer(x[:, start : start + n])))
        start += n
    return outs


def randomize(layers, rng, dtype):
    for layer in layers:
        layer.set_weights(
            [rng.normal(0.0, WEIGHT_STDDEV, w.shape).astype(dtype) for w in layer.get_weights()]
        )


def main():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    rng = np.random.default_rng(SEED)
    arrays, specs = {}, []
    L = keras.layers
    for c in CASES:
        name, dtype = c["name"], c["dtype"]
        x = rng.standard_normal((B, T, D)).astype(dtype)
        if c["masked"]:
            x[~MASK] = 0.0
        arrays[f"{name}/x"] = x
        info = {k: v for k, v in c.items()}
        if c["mode"] == "model":
            layers = [make_layer(s, L) for s in c["layers"]]
            model = keras.Sequential([keras.Input((None, D), dtype=dtype)] + layers)
            randomize(model.layers, rng, dtype)
            out = model.predict(x, batch_size=c["batch_size"] or B, verbose=0)
            info["summary"] = [
                {
                    "name": lyr.name,
                    "class_name": type(lyr).__name__,
                    "output_shape": shapes(lyr.output),
                    "params": int(lyr.count_params()),
                }
                for lyr in model.layers
            ]
            # the shapes Keras prints for this model built with Input((timesteps, D))
            model_t = keras.Sequential(
                [keras.Input((T, D), dtype=dtype)] + [make_layer(s, L) for s in c["layers"]]
            )
            info["summary_fixed_t"] = [
                {"output_shape": shapes(lyr.output), "params": int(lyr.count_params())}
                for lyr in model_t.layers
            ]
            weights = model.get_weights()
        elif c["mode"] == "layer":
            (layer,) = [make_layer(s, L) for s in c["layers"]]
            layer.build((B, T, D))
            randomize([layer], rng, dtype)
            kwargs = {}
            if c["mask_arg"]:
                kwargs["mask"] = MASK
                arrays[f"{name}/mask"] = MASK
            if c["initial_state"]:
                n, units = c["initial_state"]  # how many states, of which size
                states = [rng.standard_normal((B, units)).astype(dtype) for _ in range(n)]
                for k, s in enumerate(states):
                    arrays[f"{name}/s{k}"] = s
                kwargs["initial_state"] = states
            out = layer(x, **kwargs)
            weights = layer.get_weights()
        else:  # stateful
            (layer,) = [make_layer(s, L) for s in c["layers"]]
            layer.build((B, None, D))
            randomize([layer], rng, dtype)
            steps = sum(n for n in c["chunks"] if n != "reset")
            x = rng.standard_normal((B, steps, D)).astype(dtype)
            arrays[f"{name}/x"] = x
            out = run_chunks(layer, x, c["chunks"])
            weights = layer.get_weights()
        for k, w in enumerate(weights):
            arrays[f"{name}/w{k}"] = w
        for k, y in enumerate(flat(out)):
            arrays[f"{name}/y{k}"] = np_(y)
        info["n_weights"], info["n_outputs"] = len(weights), len(flat(out))
        specs.append(info)
    arrays["specs"] = np.array(
        json.dumps(
            {"keras_version": keras.__version__, "backend": keras.backend.backend(), "cases": specs}
        )
    )
    arrays["recipe_sha256"] = np.array(recipe_hash())
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(specs)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    sys.exit(main())
