"""rnncore layers against values pinned from real Keras 3 (tests/golden/keras_golden.npz).

The .npz is written by tests/golden/make_keras_golden.py (Keras on the torch backend); it
holds each case's layer specs, input, mask, initial states, Keras weights and outputs. These
tests rebuild the same layers with rnncore, load the Keras weights with set_weights and
compare: Keras itself is not needed here. The .npz stores the hash of the generator's recipe
(its case list and input constants); it must equal the hash of the generator's current
recipe, read from make_keras_golden.py without Keras, so a stale .npz fails.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import layers as L

GOLDEN = Path(__file__).parent / "golden" / "keras_golden.npz"
with np.load(GOLDEN, allow_pickle=False) as _data:
    DATA = {k: _data[k] for k in _data.files}
SPECS = json.loads(str(DATA["specs"]))
CASES = {c["name"]: c for c in SPECS["cases"]}
TOL = {"float32": 2e-6, "float64": 1e-12}


def load_generator():
    """tests/golden/make_keras_golden.py as a module, imported with Keras made unimportable
    (the recipe must not need it)."""
    path = GOLDEN.parent / "make_keras_golden.py"
    spec = importlib.util.spec_from_file_location("_make_keras_golden", path)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("keras", None)
    sys.modules["keras"] = None  # `import keras` now raises ImportError
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["keras"]
        else:
            sys.modules["keras"] = saved
    return module


#: the generator, read without Keras: its recipe and the helpers the replay shares with it
GEN = load_generator()


def make_layer(spec):
    """``[class_name, kwargs]`` -> rnncore layer (the generator's specs, rnncore's layers)."""
    return GEN.make_layer(spec, L)


def flat(out):
    return GEN.flat(out)


def arrays(name, prefix, n):
    return [DATA[f"{name}/{prefix}{k}"] for k in range(n)]


def check_outputs(c, got):
    got = flat(got)
    want = arrays(c["name"], "y", c["n_outputs"])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == np.dtype(c["dtype"])
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=TOL[c["dtype"]])


def test_golden_file_is_small_and_complete():
    assert GOLDEN.stat().st_size < 200_000
    assert SPECS["backend"] == "torch" and SPECS["keras_version"].startswith("3.")
    assert len(CASES) >= 40


def test_golden_file_matches_the_generator():
    """The .npz was written from the generator's current recipe (else: regenerate it)."""
    gen = GEN
    stored = str(DATA["recipe_sha256"])
    current = gen.recipe_hash()
    names = [c["name"] for c in gen.CASES]
    assert current == stored, (
        "tests/golden/keras_golden.npz is stale: regenerate it with "
        "`KERAS_BACKEND=torch python tests/golden/make_keras_golden.py` "
        f"(cases only in the generator: {sorted(set(names) - set(CASES))}; "
        f"only in the .npz: {sorted(set(CASES) - set(names))})"
    )
    # the stored specs are the generator's cases, in its order
    assert names == [c["name"] for c in SPECS["cases"]]
    for c in gen.CASES:
        stored_case = {k: CASES[c["name"]][k] for k in c}
        assert stored_case == json.loads(json.dumps(c)), c["name"]


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["mode"] == "model"])
def test_sequential_predict_matches_keras(name):
    c = CASES[name]
    x = DATA[f"{name}/x"]
    model = rnncore.Sequential(
        [rnncore.Input((None, x.shape[2]), dtype=c["dtype"])] + [make_layer(s) for s in c["layers"]]
    )
    model.set_weights(arrays(name, "w", c["n_weights"]))
    check_outputs(c, model.predict(x, batch_size=c["batch_size"] or len(x)))
    # the same model called directly, layer by layer, as a script would
    y = x
    for layer in model.layers:
        y = layer(y)
    check_outputs(c, y)
    # summary(): output shapes and parameter counts equal Keras's
    for layer, k, shape in zip(model.layers, c["summary"], model._output_shapes):
        assert layer.count_params() == k["params"], layer.name
        assert json.loads(json.dumps(shape)) == k["output_shape"], layer.name
    fixed = rnncore.Sequential(
        [rnncore.Input(x.shape[1:], dtype=c["dtype"])] + [make_layer(s) for s in c["layers"]]
    )
    for layer, k, shape in zip(fixed.layers, c["summary_fixed_t"], fixed._output_shapes):
        assert layer.count_params() == k["params"], layer.name
        assert json.loads(json.dumps(shape)) == k["output_shape"], layer.name


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["mode"] == "layer"])
def test_layer_call_matches_keras(name):
    c = CASES[name]
    (layer,) = [make_layer(s) for s in c["layers"]]
    layer.set_weights(arrays(name, "w", c["n_weights"]))
    kwargs = {}
    if c["mask_arg"]:
        kwargs["mask"] = DATA[f"{name}/mask"]
    if c["initial_state"]:
        kwargs["initial_state"] = arrays(name, "s", c["initial_state"][0])
    check_outputs(c, layer(DATA[f"{name}/x"], **kwargs))


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["mode"] == "stateful"])
def test_stateful_chunks_match_keras(name):
    c = CASES[name]
    (layer,) = [make_layer(s) for s in c["layers"]]
    layer.set_weights(arrays(name, "w", c["n_weights"]))
    x = DATA[f"{name}/x"]
    check_outputs(c, GEN.run_chunks(layer, x, c["chunks"]))
