"""rnncore.formats: the file readers and writers below the models.

The layering (formats import nothing above them; imports inside functions only for optional
dependencies), and the contracts the models and interop build on: ``read_keras`` gives the
layers and name that ``load_keras`` wraps into a Sequential, ``is_keras_file`` tells Keras
files from rnncore's own, ``formats.onnx.export.to_onnx`` reads a built model duck-typed,
and the ONNX activation table covers rnncore's activations.
"""

from __future__ import annotations

import ast
import io
import json
import pathlib
import zipfile

import h5py
import numpy as np
import pytest

import rnncore
from rnncore import activations
from rnncore import layers as L
from rnncore.formats import keras as fk
from rnncore.formats.onnx import export, recurrent

PACKAGE = pathlib.Path(rnncore.__file__).parent
#: what modules under formats/ may import from rnncore (everything else is above them)
BELOW_FORMATS = {"errors", "_memory", "_version", "activations", "functional", "reference"}
OPTIONAL = {"h5py", "onnx", "google", "ml_dtypes", "torch"}  # google, ml_dtypes: onnx's


def _imports(path: pathlib.Path):
    """(rnncore module or None, top-level name, inside a function) for each import."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        nested = id(node) in in_function
        if isinstance(node, ast.Import):
            for a in node.names:
                yield (a.name if a.name.startswith("rnncore") else None), a.name, nested
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                if node.module:
                    mod = ".".join(base + [node.module])
                    yield mod, mod, nested
                else:  # from .. import x: x is a module
                    for a in node.names:
                        mod = ".".join(base + [a.name])
                        yield mod, mod, nested
            else:
                yield None, node.module, nested


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "formats").rglob("*.py")) + sorted((PACKAGE / "interop").rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_imports_point_down(path):
    in_formats = "formats" in path.relative_to(PACKAGE).parts
    for mod, name, nested in _imports(path):
        if nested:
            assert name.split(".")[0] in OPTIONAL, f"{path.name}: import of {name} in a function"
        if in_formats and mod is not None:
            parts = mod.split(".")[1:]
            assert parts and (parts[0] in BELOW_FORMATS | {"layers", "formats"}), (
                f"{path.name} imports {mod}, which is above the formats"
            )


# ---- Keras: read_keras / is_keras_file ------------------------------------------------------


def _keras_file(path, rng, *, input_layer=True, name="seq"):
    """A Keras 3 .keras archive (Keras's layout, written with h5py): LSTM(4) then Dense(2)."""
    layers = [
        {"class_name": "LSTM", "config": {"name": "lstm", "units": 4, "dtype": "float32"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 2, "dtype": "float32"}},
    ]
    if input_layer:
        layers.insert(
            0, {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 5, 3]}}
        )
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": name, "layers": layers},
        "build_config": {"input_shape": [None, 5, 3]},
    }
    weights = {
        "layers/lstm/cell/vars": [(3, 16), (4, 16), (16,)],
        "layers/dense/vars": [(4, 2), (2,)],
    }
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for group, shapes in weights.items():
            g = f.create_group(group)
            for k, shape in enumerate(shapes):
                g.create_dataset(str(k), data=rng.standard_normal(shape).astype(np.float32))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", buf.getvalue())
    return path


@pytest.mark.parametrize("input_layer", [True, False], ids=["input_layer", "build_config"])
def test_read_keras_hands_the_layers_to_assemble_before_the_weights(rng, tmp_path, input_layer):
    path = _keras_file(tmp_path / "m.keras", rng, input_layer=input_layer)
    seen = []

    def assemble(spec):
        # called with built layers (the Sequential's input shape known) and no weights read
        assert spec.graph is None and spec.name == "seq" and spec.input_shape == (None, 5, 3)
        assert isinstance(spec.layers[0], L.InputLayer) == input_layer
        assert all(layer.built for layer in spec.layers)
        model = rnncore.Sequential(spec.layers, name=spec.name)
        if not model.built:
            model.build(spec.input_shape)
        seen.append([w.copy() for w in model.get_weights()])
        return model

    model = fk.read_keras(path, assemble)
    loaded = rnncore.load_keras(path)
    assert loaded.name == model.name and loaded.input_shape == model.input_shape
    assert loaded.get_config() == model.get_config()
    for a, b, before in zip(loaded.get_weights(), model.get_weights(), seen[0], strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, before)  # the file's weights came in after assemble
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_is_keras_file(rng, tmp_path):
    assert fk.is_keras_file(_keras_file(tmp_path / "m.keras", rng))
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.attrs["model_config"] = "{}"
    assert fk.is_keras_file(tmp_path / "m.h5")
    own = rnncore.Sequential([rnncore.Input((5, 3)), L.Dense(2)])
    own.save(tmp_path / "own.rnncore")
    assert not fk.is_keras_file(tmp_path / "own.rnncore")
    (tmp_path / "junk").write_bytes(b"not a model")
    assert not fk.is_keras_file(tmp_path / "junk")


# ---- ONNX ------------------------------------------------------------------------------------


def test_onnx_activation_table_covers_rnncore_activations():
    assert set(recurrent.ONNX_ACTIVATIONS) == set(activations.NAMES) - {"softmax"}


def test_export_reads_a_model_duck_typed(rng):
    model = rnncore.Sequential([rnncore.Input((None, 3)), L.GRU(4), L.Dense(2)])

    class Model:  # what export.to_onnx reads of a model, and nothing else
        built, input_shape, layers = model.built, model.input_shape, model.layers
        dtype, name = model.dtype, model.name

    proto = export.to_onnx(Model())
    assert proto.SerializeToString() == rnncore.interop.to_onnx(model).SerializeToString()
    assert proto.producer_version == rnncore.__version__
