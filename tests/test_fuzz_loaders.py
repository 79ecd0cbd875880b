"""Fuzzing the file loaders: rnncore's saved models (load_model, Sequential.load_weights),
Keras files (.keras and legacy .h5 via load_keras) and ONNX (load_onnx, path and bytes).

Valid seed files are written (rnncore's own save / to_onnx; the Keras files with h5py in
Keras 3's exact layout, so Keras itself is not needed), then mutated: truncated at many
offsets, bit-flipped at many positions, and rewritten by hand into hostile files (huge
declared shapes, wrong dtypes, pickled objects, path tricks in archive names, deeply nested
JSON, classes that do not exist, absurd layer sizes). Every case runs in ONE child process
with an address-space limit (RLIMIT_AS: 1 GiB over the imports) and a timeout, so a crash
or a huge allocation fails the test instead of the machine. Each case must either load (a
flip in weight data is still a valid file) or raise a clear error: rnncore's
ModelFileError (a ValueError) or UnsupportedModelError / UnsupportedArgumentError -- never
KeyError, IndexError, AttributeError, RecursionError, MemoryError, a crash or a hang.
Nothing may be written outside the working directory (path tricks) and nothing executed.

RNNCORE_FUZZ_CASES (default 48) sets the number of truncations and bit flips per seed.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import textwrap
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import layers as L  # noqa: E402
from support import run_json_child  # noqa: E402

N = int(os.environ.get("RNNCORE_FUZZ_CASES", "48"))
# Keras 3.15's torch-backend Variable.__array__ lacks NumPy 2's copy= keyword (Keras's issue);
# Keras warns when it saves the legacy .h5 format
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning"),
]
CLEAR = {"ModelFileError", "UnsupportedModelError", "UnsupportedArgumentError"}


# ---- seeds --------------------------------------------------------------------------------


def _model():
    m = rnncore.Sequential(
        [rnncore.Input((5, 3)), L.LSTM(4, return_sequences=True), L.GRU(3), L.Dense(2)]
    )
    rng = np.random.default_rng(0)
    m.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in m.get_weights()])
    return m


def _functional_model():
    """Two inputs (token ids through Embedding(mask_zero) -> LSTM, a series through a GRU),
    merged, one output: the functional seed, rnncore's own."""
    ids, series = rnncore.Input((5,), dtype="int32", name="ids"), rnncore.Input((5, 3), name="x")
    a = L.LSTM(4)(L.Embedding(7, 3, mask_zero=True)(ids))
    out = L.Dense(2)(L.Concatenate()([a, L.GRU(3)(series)]))
    m = rnncore.Model([ids, series], out, name="functional")
    rng = np.random.default_rng(0)
    m.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in m.get_weights()])
    return m


def _keras_functional_bytes(fmt: str) -> bytes:
    """The same model saved by Keras 3 itself (``.keras`` or legacy ``.h5``)."""
    K = keras.layers
    ids, series = keras.Input((5,), dtype="int32", name="ids"), keras.Input((5, 3), name="x")
    a = K.LSTM(4)(K.Embedding(7, 3, mask_zero=True)(ids))
    out = K.Dense(2)(K.Concatenate()([a, K.GRU(3)(series)]))
    model = keras.Model([ids, series], out, name="functional")
    buf_dir = tempfile.mkdtemp()
    path = os.path.join(buf_dir, f"m.{fmt}")
    model.save(path)
    with open(path, "rb") as f:
        return f.read()


def _keras_layer(cls, name, cfg, input_shape):
    return {
        "module": "keras.layers",
        "class_name": cls,
        "registered_name": None,
        "config": {"name": name, "trainable": True, "dtype": "float32", **cfg},
        "build_config": {"input_shape": input_shape},
    }


def _keras_config(lstm_units=4, d=3, extra_layer=None):
    rnn = {
        "return_sequences": True,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
        "use_bias": True,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "seed": None,
    }
    layers = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "registered_name": None,
            "config": {
                "batch_shape": [None, 5, d],
                "dtype": "float32",
                "sparse": False,
                "name": "input_layer",
            },
        },
        _keras_layer(
            "LSTM", "lstm", {**rnn, "units": lstm_units, "unit_forget_bias": True}, [None, 5, d]
        ),
        _keras_layer(
            "Dense",
            "dense",
            {"units": 2, "activation": "linear", "use_bias": True},
            [None, 5, lstm_units],
        ),
    ]
    if extra_layer is not None:
        layers.append(extra_layer)
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": "sequential", "trainable": True, "layers": layers},
        "build_config": {"input_shape": [None, 5, d]},
    }


def _keras_weights(rng, lstm_units=4, d=3):
    h = lstm_units
    return {
        "lstm": [
            rng.standard_normal((d, 4 * h)),
            rng.standard_normal((h, 4 * h)),
            rng.standard_normal(4 * h),
        ],
        "dense": [rng.standard_normal((h, 2)), rng.standard_normal(2)],
    }


def _keras_v3_bytes(config, weights, dtype="<f4", weights_h5=None):
    if weights_h5 is None:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            f.create_group("vars").attrs["name"] = "sequential"
            for layer, ws in weights.items():
                g = f.create_group(f"layers/{layer}")
                if layer == "lstm":
                    g.create_group("vars").attrs["name"] = "lstm"
                    g = g.create_group("cell")
                    name = "lstm_cell"
                else:
                    name = layer
                v = g.create_group("vars")
                v.attrs["name"] = name
                for k, w in enumerate(ws):
                    v.create_dataset(str(k), data=np.asarray(w).astype(dtype))
        weights_h5 = buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        z.writestr("model.weights.h5", weights_h5)
    return out.getvalue()


def _keras_h5_bytes(config, weights, dtype="<f4"):
    buf = io.BytesIO()
    names = {"lstm": ["kernel", "recurrent_kernel", "bias"], "dense": ["kernel", "bias"]}
    with h5py.File(buf, "w") as f:
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["backend"] = "torch"
        f.attrs["model_config"] = config if isinstance(config, str) else json.dumps(config)
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array(list(weights), dtype=object)
        mw.attrs["keras_version"] = "3.15.1"
        mw.attrs["backend"] = "torch"
        for layer, ws in weights.items():
            g = mw.create_group(layer)
            cell = f"sequential/{layer}/lstm_cell" if layer == "lstm" else f"sequential/{layer}"
            g.attrs["weight_names"] = np.array([f"{cell}/{n}" for n in names[layer]], dtype=object)
            for n, w in zip(names[layer], ws):
                g.create_dataset(f"{cell}/{n}", data=np.asarray(w).astype(dtype))
        mw.create_group("top_level_model_weights").attrs["weight_names"] = np.array([])
    return buf.getvalue()


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _npy_header(shape, descr="<f4", payload=b"\0" * 16) -> bytes:
    hdr = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    hdr += b" " * (64 - (len(hdr) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr + payload


def _rewrite_zip(data: bytes, replace=None, add=None, drop=()) -> bytes:
    """The archive with members replaced / added / dropped (names kept verbatim)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in src.namelist():
            if name in drop:
                continue
            body = (replace or {}).get(name, src.read(name))
            z.writestr(name, body(src.read(name)) if callable(body) else body)
        for name, body in (add or {}).items():
            z.writestr(zipfile.ZipInfo(name), body)
    return out.getvalue()


def _manifest_edit(fn):
    def edit(raw):
        m = json.loads(raw)
        fn(m)
        return json.dumps(m)

    return edit


# ---- cases --------------------------------------------------------------------------------


def _global_heap_objects(data: bytes):
    """(offset, index, size) of each object in the file's first global heap collection."""
    at = data.index(b"GCOL")
    end = at + int.from_bytes(data[at + 8 : at + 16], "little")
    p, out = at + 16, []
    while p + 16 <= end:
        index = int.from_bytes(data[p : p + 2], "little")
        size = int.from_bytes(data[p + 8 : p + 16], "little")
        out.append((p, index, size))
        if index == 0:
            break
        p += 16 + (size + 7) // 8 * 8
    return out


def _set_heap_object_size(data: bytes, which: int, size: int) -> bytes:
    p = _global_heap_objects(data)[which][0]
    return data[: p + 8] + size.to_bytes(8, "little") + data[p + 16 :]


def _hostile_cases(seeds):
    """name -> (loader, file bytes)."""
    rn, kv3, ox = seeds["rnncore"], seeds["keras"], seeds["onnx"]
    man = "rnncore_model.json"
    rng = np.random.default_rng(1)
    kw = _keras_weights(rng)
    deep = "[" * 200000 + "]" * 200000

    def set_units(m, u):
        m["model"]["config"]["layers"][-2]["config"]["units"] = u

    def first_layer(m):
        return m["model"]["config"]["layers"][0]

    cases = {
        # rnncore saved model
        "rnncore: npy declaring 2**40 floats": (
            "load_model",
            _rewrite_zip(rn, {"weights/0000.npy": _npy_header((2**40,))}),
        ),
        "rnncore: npy declaring (2**31, 2**31) with manifest agreeing": (
            "load_model",
            _rewrite_zip(
                rn,
                {
                    "weights/0000.npy": _npy_header((2**31, 2**31)),
                    man: _manifest_edit(lambda m: m["weights"][0].update(shape=[2**31, 2**31])),
                },
            ),
        ),
        "rnncore: pickled object weight": (
            "load_model",
            _rewrite_zip(rn, {"weights/0000.npy": _npy(np.array([{"a": 1}], object))}),
        ),
        "rnncore: complex weights (manifest agreeing)": (
            "load_model",
            _rewrite_zip(
                rn,
                {
                    "weights/0000.npy": lambda raw: _npy(
                        np.load(io.BytesIO(raw)).astype(np.complex64) * (1 + 1j)
                    ),
                    man: _manifest_edit(lambda m: m["weights"][0].update(dtype="complex64")),
                },
            ),
        ),
        "rnncore: string weights (manifest agreeing)": (
            "load_model",
            _rewrite_zip(
                rn,
                {
                    "weights/0000.npy": lambda raw: _npy(np.load(io.BytesIO(raw)).astype("U3")),
                    man: _manifest_edit(lambda m: m["weights"][0].update(dtype="<U3")),
                },
            ),
        ),
        "rnncore: weight file path ../../etc/passwd": (
            "load_model",
            _rewrite_zip(
                rn, {man: _manifest_edit(lambda m: m["weights"][0].update(file="../../etc/passwd"))}
            ),
        ),
        "rnncore: weight file absolute /etc/passwd": (
            "load_model",
            _rewrite_zip(
                rn, {man: _manifest_edit(lambda m: m["weights"][0].update(file="/etc/passwd"))}
            ),
        ),
        "rnncore: archive member named ../escape.npy": (
            "load_model",
            _rewrite_zip(
                rn,
                add={"../escape.npy": _npy(np.zeros((3, 16), np.float32)), "/abs_escape.npy": b"x"},
                replace={
                    man: _manifest_edit(lambda m: m["weights"][0].update(file="../escape.npy"))
                },
            ),
        ),
        "rnncore: unknown layer class os.system": (
            "load_model",
            _rewrite_zip(
                rn, {man: _manifest_edit(lambda m: first_layer(m).update(class_name="os.system"))}
            ),
        ),
        "rnncore: layer class __import__ with module": (
            "load_model",
            _rewrite_zip(
                rn,
                {
                    man: _manifest_edit(
                        lambda m: first_layer(m).update(class_name="__import__", module="os")
                    )
                },
            ),
        ),
        "rnncore: units 10**9 in config": (
            "load_model",
            _rewrite_zip(rn, {man: _manifest_edit(lambda m: set_units(m, 10**9))}),
        ),
        "rnncore: units -5 in config": (
            "load_model",
            _rewrite_zip(rn, {man: _manifest_edit(lambda m: set_units(m, -5))}),
        ),
        "rnncore: units as string in config": (
            "load_model",
            _rewrite_zip(rn, {man: _manifest_edit(lambda m: set_units(m, "4"))}),
        ),
        "rnncore: build_input_shape feature size 10**12": (
            "load_model",
            _rewrite_zip(
                rn, {man: _manifest_edit(lambda m: m.update(build_input_shape=[None, 5, 10**12]))}
            ),
        ),
        "rnncore: build_input_shape not a list": (
            "load_model",
            _rewrite_zip(rn, {man: _manifest_edit(lambda m: m.update(build_input_shape=7))}),
        ),
        "rnncore: deeply nested JSON manifest": ("load_model", _rewrite_zip(rn, {man: deep})),
        "rnncore: manifest is a list": ("load_model", _rewrite_zip(rn, {man: "[1, 2]"})),
        "rnncore: manifest weights not a list": (
            "load_model",
            _rewrite_zip(rn, {man: _manifest_edit(lambda m: m.update(weights=5))}),
        ),
        "rnncore: layers is a dict": (
            "load_model",
            _rewrite_zip(
                rn, {man: _manifest_edit(lambda m: m["model"]["config"].update(layers={"a": 1}))}
            ),
        ),
        "rnncore: missing manifest": ("load_model", _rewrite_zip(rn, drop=(man,))),
        "rnncore: empty file": ("load_model", b""),
        "rnncore: load_weights npz with pickled object": (
            "load_weights",
            (lambda b: (np.savez(b, w0000=np.array([object()], object)), b.getvalue())[1])(
                io.BytesIO()
            ),
        ),
        "rnncore: load_weights npz declaring 2**40 floats": (
            "load_weights",
            _rewrite_zip(
                (lambda b: (np.savez(b, w0000=np.zeros(1, np.float32)), b.getvalue())[1])(
                    io.BytesIO()
                ),
                {"w0000.npy": _npy_header((2**40,))},
            ),
        ),
        # Keras 3 .keras
        "keras: huge declared dataset shape in weights": (
            "load_keras",
            _keras_v3_bytes(
                _keras_config(), {**kw, "lstm": [np.zeros((2**20, 16)), *kw["lstm"][1:]]}
            ),
        ),
        "keras: units 10**9 in config.json": (
            "load_keras",
            _keras_v3_bytes(_keras_config(lstm_units=10**9), kw),
        ),
        "keras: input feature size 10**12 in config.json": (
            "load_keras",
            _keras_v3_bytes(_keras_config(d=10**12), kw),
        ),
        "keras: int64 weights": ("load_keras", _keras_v3_bytes(_keras_config(), kw, "<i8")),
        "keras: complex weights": ("load_keras", _keras_v3_bytes(_keras_config(), kw, "<c8")),
        "keras: string weights": ("load_keras", _keras_v3_bytes(_keras_config(), kw, "S4")),
        "keras: deeply nested config.json": ("load_keras", _keras_v3_bytes(deep, kw)),
        "keras: config.json not an object": ("load_keras", _keras_v3_bytes("[]", kw)),
        "keras: custom class with module os": (
            "load_keras",
            _keras_v3_bytes(
                _keras_config(
                    extra_layer={
                        "module": "os",
                        "class_name": "system",
                        "registered_name": "os>system",
                        "config": {"command": "touch PWNED"},
                    }
                ),
                kw,
            ),
        ),
        "keras: lambda layer with code": (
            "load_keras",
            _keras_v3_bytes(
                _keras_config(
                    extra_layer={
                        "module": "keras.layers",
                        "class_name": "Lambda",
                        "registered_name": None,
                        "config": {
                            "name": "l",
                            "function": {
                                "class_name": "__lambda__",
                                "config": {
                                    "code": "open('PWNED','w')",
                                    "defaults": None,
                                    "closure": None,
                                },
                            },
                        },
                    }
                ),
                kw,
            ),
        ),
        "keras: weights h5 not HDF5": (
            "load_keras",
            _keras_v3_bytes(_keras_config(), kw, weights_h5=b"not hdf5" * 10),
        ),
        "keras: archive member ../escape": (
            "load_keras",
            _rewrite_zip(kv3, add={"../escape": b"x", "/abs_escape": b"y"}),
        ),
        # legacy .h5
        "h5: units 10**9 in model_config": (
            "load_keras",
            _keras_h5_bytes(_keras_config(lstm_units=10**9), kw),
        ),
        "h5: deeply nested model_config": ("load_keras", _keras_h5_bytes(deep, kw)),
        "h5: model_config not JSON": ("load_keras", _keras_h5_bytes("{not json", kw)),
        "h5: complex weights": ("load_keras", _keras_h5_bytes(_keras_config(), kw, "<c8")),
        "h5: string weights": ("load_keras", _keras_h5_bytes(_keras_config(), kw, "S4")),
        # libhdf5 loops forever on these (a free-space object that does not advance, an
        # object running over the free space's header): refused before HDF5 reads them
        "h5: global heap free space of size 0": (
            "load_keras",
            _set_heap_object_size(seeds["h5"], -1, 0),
        ),
        "h5: global heap object overrunning the next header": (
            "load_keras",
            _set_heap_object_size(seeds["h5"], -2, _global_heap_objects(seeds["h5"])[-2][2] + 256),
        ),
        "h5: huge declared dataset": (
            "load_keras",
            _keras_h5_bytes(
                _keras_config(), {**kw, "lstm": [np.zeros((2**20, 16)), *kw["lstm"][1:]]}
            ),
        ),
    }
    # ONNX
    proto = onnx.load_from_string(ox)
    big = onnx.ModelProto()
    big.CopyFrom(proto)
    t = big.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([2**40, 2**20])
    cases["onnx: initializer declaring 2**60 elements"] = ("load_onnx", big.SerializeToString())
    ext = onnx.ModelProto()
    ext.CopyFrom(proto)
    t = ext.graph.initializer[0]
    t.ClearField("raw_data")
    del t.float_data[:]
    t.data_location = onnx.TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    cases["onnx: external data path ../../etc/passwd"] = ("load_onnx", ext.SerializeToString())
    cplx = onnx.ModelProto()
    cplx.CopyFrom(proto)
    t = cplx.graph.initializer[0]
    a = onnx.numpy_helper.to_array(t)
    t.CopyFrom(onnx.numpy_helper.from_array(a.astype(np.complex64), t.name))
    cases["onnx: complex64 initializer"] = ("load_onnx", cplx.SerializeToString())
    neg = onnx.ModelProto()
    neg.CopyFrom(proto)
    for node in neg.graph.node:
        for att in node.attribute:
            if att.name == "hidden_size":
                att.i = 10**12
    cases["onnx: hidden_size 10**12"] = ("load_onnx", neg.SerializeToString())
    cases["onnx: empty bytes"] = ("load_onnx_bytes", b"")
    cases["onnx: deeply nested protobuf"] = ("load_onnx_bytes", b"\x3a\x05" + b"\x0a" * 5000)
    cases.update(_functional_hostile_cases(seeds))
    return cases


def _damage_attr_type(data: bytes, name: str) -> bytes:
    """The attribute ``name`` (a variable-length string) with its type's kind bits set to 3,
    no valid kind: libhdf5 crashed the process reading such an attribute."""
    at = data.index(name.encode() + b"\x00")
    pos = at + (len(name) + 1 + 7) // 8 * 8 + 1  # the name is padded to 8 bytes, then the type
    assert data[pos - 1] == 0x19 and data[pos] == 0x01, "not a variable-length string type"
    return data[:pos] + b"\x03" + data[pos + 1 :]


def _functional_hostile_cases(seeds):
    """Functional graphs that are not graphs: cycles, calls and outputs of missing layers
    or tensors, absurd call counts, deep nesting (Keras's config.json and rnncore's own)."""
    kf, rf = seeds["keras_functional"], seeds["rnncore_functional"]

    def keras_edit(fn):
        return _rewrite_zip(kf, replace={"config.json": _manifest_edit(fn)})

    def layer(m, class_name):
        return next(x for x in m["config"]["layers"] if x["class_name"] == class_name)

    def history(m, class_name, node=0, arg=0):
        return layer(m, class_name)["inbound_nodes"][node]["args"][arg]["config"]["keras_history"]

    def cycle(m):
        dense = layer(m, "Dense")["name"]
        history(m, "LSTM")[0] = dense  # the LSTM now takes the Dense's output, which needs it

    def unknown_layer(m):
        history(m, "LSTM")[0] = "no_such_layer"

    def bad_tensor(m):
        history(m, "LSTM")[2] = 7

    def bad_node(m):
        history(m, "LSTM")[1] = 5

    def missing_output(m):
        m["config"]["output_layers"] = [["no_such_layer", 0, 0]]

    def many_calls(m):
        lstm = layer(m, "LSTM")
        lstm["inbound_nodes"] = lstm["inbound_nodes"] * 200_000

    def deep_args(m):
        lstm = layer(m, "LSTM")
        arg = lstm["inbound_nodes"][0]["args"][0]
        for _ in range(500):
            arg = [arg]
        lstm["inbound_nodes"][0]["args"] = [arg]

    def rnncore_cycle(m):
        layers = m["model"]["config"]["layers"]
        lstm = next(x for x in layers if x["class_name"] == "LSTM")
        dense = next(x for x in layers if x["class_name"] == "Dense")
        lstm["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = dense["name"]

    man = "rnncore_model.json"
    hf = seeds["h5_functional"]
    return {
        "h5: the type of an unused attribute damaged": (
            "load_keras", _damage_attr_type(hf, "backend")),
        "h5: the type of model_config damaged": (
            "load_keras", _damage_attr_type(hf, "model_config")),
        "keras functional: a cycle between two layers": ("load_keras", keras_edit(cycle)),
        "keras functional: a call of an unknown layer": ("load_keras", keras_edit(unknown_layer)),
        "keras functional: tensor index out of range": ("load_keras", keras_edit(bad_tensor)),
        "keras functional: node index out of range": ("load_keras", keras_edit(bad_node)),
        "keras functional: output of a missing layer": ("load_keras", keras_edit(missing_output)),
        "keras functional: 200000 calls of one layer": ("load_keras", keras_edit(many_calls)),
        "keras functional: call arguments nested 500 deep": ("load_keras", keras_edit(deep_args)),
        "rnncore functional: a cycle in the saved graph": (
            "load_model", _rewrite_zip(rf, replace={man: _manifest_edit(rnncore_cycle)})),
    }  # fmt: skip


def _mutation_cases(seeds):
    rng = np.random.default_rng(2)
    cases = {}
    for kind, loader in (
        ("rnncore", "load_model"),
        ("keras", "load_keras"),
        ("h5", "load_keras"),
        ("onnx", "load_onnx"),
        ("rnncore_functional", "load_model"),
        ("keras_functional", "load_keras"),
        ("h5_functional", "load_keras"),
    ):
        data = seeds[kind]
        for cut in sorted(set(np.linspace(0, len(data) - 1, N).astype(int))):
            cases[f"{kind}: truncated at {cut}/{len(data)}"] = (loader, data[:cut])
        for k in range(N):
            b = bytearray(data)
            for _ in range(1 + k % 3):
                pos = int(rng.integers(len(b)))
                b[pos] ^= 1 << int(rng.integers(8))
            cases[f"{kind}: bit flips #{k}"] = (loader, bytes(b))
    return cases


HOSTILE_NAMES = None  # filled at collection below


_CHILD = textwrap.dedent("""
    import json, os, resource, sys, traceback
    import numpy as np
    import rnncore, h5py, onnx
    from rnncore.interop.onnx_io import load_onnx
    soft = int(open('/proc/self/statm').read().split()[0]) * 4096 + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    cases = json.load(open(sys.argv[1]))
    os.chdir(sys.argv[2])
    for name, (loader, path) in cases.items():
        try:
            if loader == "load_model":
                rnncore.load_model(path)
            elif loader == "load_keras":
                rnncore.load_keras(path)
            elif loader == "load_onnx":
                load_onnx(path)
            elif loader == "load_onnx_bytes":
                load_onnx(open(path, "rb").read())
            elif loader == "load_weights":
                m = rnncore.Sequential([rnncore.Input((5, 3)), rnncore.layers.LSTM(4)])
                m.load_weights(path)
            res = ["loaded", ""]
        except BaseException as e:
            res = [type(e).__name__, (str(e) + " | " + traceback.format_exc(limit=-2)
                                      .replace("\\n", " "))[:500]]
        print(json.dumps({name: res}), flush=True)
""")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    m = _model()
    m.save(base / "seed.rnncore")
    rng = np.random.default_rng(1)
    seeds = {
        "rnncore": (base / "seed.rnncore").read_bytes(),
        "keras": _keras_v3_bytes(_keras_config(), _keras_weights(rng)),
        "h5": _keras_h5_bytes(_keras_config(), _keras_weights(np.random.default_rng(1))),
        "onnx": m.to_onnx().SerializeToString(),
        "keras_functional": _keras_functional_bytes("keras"),
        "h5_functional": _keras_functional_bytes("h5"),
    }
    functional = _functional_model()
    functional.save(base / "seed.functional")
    seeds["rnncore_functional"] = (base / "seed.functional").read_bytes()
    # the seeds themselves load
    for kind, data in seeds.items():
        p = base / f"seed_{kind}"
        p.write_bytes(data)
    assert rnncore.load_model(base / "seed_rnncore").count_params() == m.count_params()
    assert rnncore.load_keras(base / "seed_keras").count_params() > 0
    assert rnncore.load_keras(base / "seed_h5").count_params() > 0
    rnncore.load_onnx(base / "seed_onnx")
    for kind in ("rnncore_functional", "keras_functional", "h5_functional"):
        assert isinstance(rnncore.load_model(base / f"seed_{kind}"), rnncore.Model)
    cases = {**_hostile_cases(seeds), **_mutation_cases(seeds)}
    files = base / "cases"
    files.mkdir()
    spec = {}
    for k, (name, (loader, data)) in enumerate(cases.items()):
        p = files / f"case{k:04d}"
        p.write_bytes(data)
        spec[name] = [loader, str(p)]
    (base / "spec.json").write_text(json.dumps(spec))
    cwd = base / "cwd"
    cwd.mkdir()
    proc, results = run_json_child(_CHILD, str(base / "spec.json"), str(cwd), timeout=600)
    written = sorted(os.listdir(cwd)) + [
        p
        for p in os.listdir(base)
        if p not in ("cases", "cwd", "spec.json") and not p.startswith("seed")
    ]
    return dict(
        results=results,
        cases=cases,
        rc=proc.returncode,
        stderr=proc.stderr[-3000:],
        written=written,
    )


def _check(fuzz, name):
    r = fuzz["results"]
    assert name in r, (
        f"{name}: the loader process died or hung on this case (rc={fuzz['rc']}): {fuzz['stderr']}"
    )
    kind, msg = r[name]
    assert kind == "loaded" or kind in CLEAR, f"{name}: {kind}: {msg}"
    return kind, msg


_SEEDLESS_HOSTILE = [
    "rnncore: npy declaring 2**40 floats",
    "rnncore: npy declaring (2**31, 2**31) with manifest agreeing",
    "rnncore: pickled object weight",
    "rnncore: complex weights (manifest agreeing)",
    "rnncore: string weights (manifest agreeing)",
    "rnncore: weight file path ../../etc/passwd",
    "rnncore: weight file absolute /etc/passwd",
    "rnncore: archive member named ../escape.npy",
    "rnncore: unknown layer class os.system",
    "rnncore: layer class __import__ with module",
    "rnncore: units 10**9 in config",
    "rnncore: units -5 in config",
    "rnncore: units as string in config",
    "rnncore: build_input_shape feature size 10**12",
    "rnncore: build_input_shape not a list",
    "rnncore: deeply nested JSON manifest",
    "rnncore: manifest is a list",
    "rnncore: manifest weights not a list",
    "rnncore: layers is a dict",
    "rnncore: missing manifest",
    "rnncore: empty file",
    "rnncore: load_weights npz with pickled object",
    "rnncore: load_weights npz declaring 2**40 floats",
    "keras: huge declared dataset shape in weights",
    "keras: units 10**9 in config.json",
    "keras: input feature size 10**12 in config.json",
    "keras: int64 weights",
    "keras: complex weights",
    "keras: string weights",
    "keras: deeply nested config.json",
    "keras: config.json not an object",
    "keras: custom class with module os",
    "keras: lambda layer with code",
    "keras: weights h5 not HDF5",
    "keras: archive member ../escape",
    "h5: units 10**9 in model_config",
    "h5: deeply nested model_config",
    "h5: model_config not JSON",
    "h5: complex weights",
    "h5: string weights",
    "h5: huge declared dataset",
    "h5: global heap free space of size 0",
    "h5: global heap object overrunning the next header",
    "onnx: initializer declaring 2**60 elements",
    "onnx: external data path ../../etc/passwd",
    "onnx: complex64 initializer",
    "onnx: hidden_size 10**12",
    "onnx: empty bytes",
    "onnx: deeply nested protobuf",
    "h5: the type of an unused attribute damaged",
    "h5: the type of model_config damaged",
    "keras functional: a cycle between two layers",
    "keras functional: a call of an unknown layer",
    "keras functional: tensor index out of range",
    "keras functional: node index out of range",
    "keras functional: output of a missing layer",
    "keras functional: 200000 calls of one layer",
    "keras functional: call arguments nested 500 deep",
    "rnncore functional: a cycle in the saved graph",
]

# Hostile files that must be refused (not loaded): everything above but the path trick on
# a member name that only duplicates a valid weight, and the harmless extra archive members.
# The build_input_shape cases only matter for a model without an Input layer: this one has one.
_MAY_LOAD = {
    "rnncore: archive member named ../escape.npy",
    "keras: archive member ../escape",
    "rnncore: build_input_shape feature size 10**12",
    "rnncore: build_input_shape not a list",
    "h5: the type of an unused attribute damaged",  # never read: the model loads
}


@pytest.mark.parametrize("name", _SEEDLESS_HOSTILE)
def test_hostile_file(fuzz, name):
    assert name in fuzz["cases"], "case list out of date"
    kind, msg = _check(fuzz, name)
    if name not in _MAY_LOAD:
        assert kind != "loaded", f"{name}: the hostile file was accepted"


@pytest.mark.parametrize(
    "kind",
    ["rnncore", "keras", "h5", "onnx", "rnncore_functional", "keras_functional", "h5_functional"],
)
@pytest.mark.parametrize("mutation", ["truncated", "bit flips"])
def test_mutated_files(fuzz, kind, mutation):
    names = [n for n in fuzz["cases"] if n.startswith(f"{kind}: {mutation}")]
    assert len(names) >= N // 2
    bad = []
    for name in names:
        try:
            k, _ = _check(fuzz, name)
            if mutation == "truncated" and k == "loaded":
                bad.append(f"{name}: a truncated file loaded")
        except AssertionError as e:
            bad.append(str(e)[:400])
    assert not bad, f"{len(bad)}/{len(names)} cases:\n" + "\n".join(bad[:10])


def test_nothing_written_or_executed(fuzz):
    assert fuzz["written"] == [], f"the loaders wrote {fuzz['written']}"
    assert not os.path.exists("PWNED")
