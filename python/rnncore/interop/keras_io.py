"""Keras models read into rnncore, without Keras or TensorFlow: :func:`load_keras`.

Two file formats:

* **Keras 3 ``.keras``**: a ZIP archive with ``config.json`` (what the model is) and
  ``model.weights.h5`` (the weights). The weights file does not use the user's layer names:
  Keras files each layer under ``layers/<class name in snake case>[_<k>]``, numbered in the
  order of the model's layers (``layers/lstm``, ``layers/lstm_1``, ...), an RNN's weights
  under ``cell/vars/0..2``, a Bidirectional's under ``forward_layer`` and
  ``backward_layer``, a TimeDistributed's under ``layer``. Layers are matched to their
  weights by that order in ``config.json``; the layer name Keras records next to the
  weights (when it does) is checked against the config.
* **Legacy HDF5 ``.h5``** (Keras 2 / tf.keras, or Keras 3's legacy saving): the model config
  as JSON in the ``model_config`` attribute, weights in ``model_weights/<layer name>`` in the
  order of its ``weight_names`` attribute.

What is read: ``Sequential`` models, and functional models that are a chain (one input, each
layer called once on the previous layer's output, the outputs those of the last layer),
made of ``InputLayer, Masking, SimpleRNN, LSTM, GRU, Bidirectional, Dense, TimeDistributed,
Dropout, Activation, Softmax``. The result is an :class:`rnncore.Sequential` with the same
outputs, masks included. Anything else (another layer class, a custom or nested model, a
layer option rnncore lacks, such as ``activation='gelu'`` or a mixed-precision dtype) raises
:class:`UnsupportedModelError` naming it. Options that only matter for training
(initializers, regularizers, constraints, seeds) and options that only change speed
(``unroll``, ``use_cudnn``, ``implementation``) are not carried over.

Keras 2 defined ``hard_sigmoid`` as ``clip(0.2 x + 0.5, 0, 1)`` (Keras 3 and rnncore:
``clip(x / 6 + 0.5, 0, 1)``). In files written by Keras 2 the weights feeding a
``hard_sigmoid`` are scaled by 1.2, which gives the same numbers; where that is not possible
(an LSTM's cell activation, an ``Activation`` layer) the model is refused.

Safety: only JSON is parsed and only numeric HDF5 datasets are read; no class named by the
file is imported and no code from the file runs. Each dataset's shape is compared with the
layer's weight before it is read. A truncated, corrupted or inconsistent file raises
:class:`rnncore.models.ModelFileError` (a ``ValueError``) naming the problem.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
import zipfile
import zlib

import numpy as np

from ..layers import LAYER_CLASSES, InputLayer
from ..layers import UnsupportedArgumentError as _UnsupportedArgument
from ..models import Sequential
from ._common import (
    ModelFileError,
    UnsupportedModelError,
    float_array,
    optional_import,
    read_json,
    read_member,
)

__all__ = ["load_keras", "SUPPORTED_LAYERS"]

#: The Keras layer classes :func:`load_keras` reads.
SUPPORTED_LAYERS = (
    "InputLayer",
    "Masking",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Dense",
    "TimeDistributed",
    "Dropout",
    "Activation",
    "Softmax",
)

_RNN_CLASSES = ("SimpleRNN", "LSTM", "GRU")

#: Config keys that only matter for training or speed: not carried over.
_DROPPED_KEYS = frozenset(
    (
        "kernel_initializer",
        "recurrent_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "recurrent_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "recurrent_constraint",
        "bias_constraint",
        "unit_forget_bias",
        "seed",
        "unroll",
        "use_cudnn",
        "implementation",
    )
)

#: Keras operations (not layers) a functional model records to compute a Masking's mask.
_MASK_OPS = frozenset(("NotEqual", "Any"))

_MAX_CONFIG_BYTES = 64 << 20
_MAX_WEIGHTS_BYTES = 16 << 30


def load_keras(filepath) -> Sequential:
    """Read a Keras model file (``.keras`` or legacy ``.h5``) as an :class:`rnncore.Sequential`.

    The format is recognised from the file's content, not its name. Needs ``h5py``
    (``pip install "rnncore[keras]"``); Keras and TensorFlow are not used. See the module
    documentation for what is supported and how layers are matched to their weights.
    """
    filepath = os.fspath(filepath)
    with open(filepath, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PK\x03\x04":
        return _load_keras_v3(filepath)
    h5py = optional_import("h5py", "rnncore.load_keras")
    if head == b"\x89HDF\r\n\x1a\n" or h5py.is_hdf5(filepath):
        return _load_h5(filepath, h5py)
    raise ModelFileError(
        f"{filepath}: not a Keras model file (neither a .keras ZIP archive nor an HDF5 .h5 "
        f"file; the first bytes are {head!r})"
    )


# ---------------------------------------------------------------------------------------
# The two containers
# ---------------------------------------------------------------------------------------


def _load_keras_v3(filepath: str) -> Sequential:
    h5py = optional_import("h5py", "rnncore.load_keras")
    try:
        zf = zipfile.ZipFile(filepath)
    except (zipfile.BadZipFile, NotImplementedError) as e:  # e.g. a damaged version field
        raise ModelFileError(f"{filepath}: corrupted or truncated .keras archive ({e})") from None
    try:
        with zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelFileError(
                    f"{filepath}: a ZIP archive without config.json is not a Keras .keras file"
                )
            config = _read_json(zf, "config.json", filepath)
            if "model.weights.h5" in names:
                weights_bytes = _read_member(zf, "model.weights.h5", filepath, _MAX_WEIGHTS_BYTES)
            elif names & {"model.weights.json", "model.weights.npz"}:
                raise UnsupportedModelError(
                    f"{filepath}: weights stored as "
                    f"{sorted(names & {'model.weights.json', 'model.weights.npz'})[0]} "
                    f"(sharded or npz) are not supported; save with the default "
                    f"weights_format='h5' and no max_shard_size"
                )
            else:
                weights_bytes = None
    except zipfile.BadZipFile as e:
        raise ModelFileError(f"{filepath}: corrupted or truncated .keras archive ({e})") from None
    except (zlib.error, EOFError) as e:
        raise ModelFileError(
            f"{filepath}: corrupted or truncated .keras archive ({type(e).__name__}: {e})"
        ) from None
    plan = _Plan(filepath, config, keras_version=3)
    model = plan.build()
    if weights_bytes is None:
        if model.weights:
            raise ModelFileError(f"{filepath}: the archive has no model.weights.h5")
        return model
    _check_global_heaps(weights_bytes, f"{filepath}: model.weights.h5")
    try:
        h5 = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as e:
        raise ModelFileError(
            f"{filepath}: model.weights.h5 is not a readable HDF5 file "
            f"(corrupted or truncated?): {e}"
        ) from None
    with h5, _h5_errors(filepath):
        plan.load_weights_v3(h5)
    return model


def _read_member(zf: zipfile.ZipFile, name: str, filepath: str, limit: int) -> bytes:
    return read_member(zf, name, filepath, limit)  # CRC-checked by zipfile


def _read_json(zf: zipfile.ZipFile, name: str, filepath: str):
    return read_json(_read_member(zf, name, filepath, _MAX_CONFIG_BYTES), f"{filepath}: {name}")


def _load_h5(filepath: str, h5py) -> Sequential:
    with open(filepath, "rb") as raw:
        if os.fstat(raw.fileno()).st_size:
            with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _check_global_heaps(buf, filepath)
    try:
        f = h5py.File(filepath, "r")
    except OSError as e:
        raise ModelFileError(
            f"{filepath}: not a readable HDF5 file (corrupted or truncated?): {e}"
        ) from None
    with f:
        try:
            attrs = dict(f.attrs)
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:  # h5py's kinds
            raise ModelFileError(f"{filepath}: cannot read the file's attributes ({e})") from None
        if "model_config" not in attrs:
            what = (
                " (it holds weights only, as written by save_weights: load the model itself)"
                if "layer_names" in attrs
                else ""
            )
            raise ModelFileError(
                f"{filepath}: an HDF5 file without a model_config attribute "
                f"is not a Keras model file{what}"
            )
        try:
            text = _text(attrs["model_config"])
        except (UnicodeDecodeError, TypeError) as e:
            raise ModelFileError(f"{filepath}: model_config is not valid JSON ({e})") from None
        config = read_json(text, f"{filepath}: model_config")
        version = _text(attrs.get("keras_version", "2"))
        major = version.split(".")[0]
        if major == "1":
            raise UnsupportedModelError(
                f"{filepath}: Keras 1 files (keras_version {version}) "
                f"are not supported; re-save the model with Keras 2+"
            )
        plan = _Plan(filepath, config, keras_version=3 if major == "3" else 2)
        model = plan.build()
        with _h5_errors(filepath):
            plan.load_weights_h5(f)
    return model


def _check_global_heaps(buf, where: str) -> None:
    """Refuse an HDF5 file whose global heap collections are damaged, before HDF5 sees it.

    Variable-length strings (the ``model_config``, ``layer_names`` and ``weight_names``
    attributes) live in global heap collections: ``"GCOL"``, version 1, 3 reserved bytes,
    the collection's size L, then objects that tile it, each ``index (2) | refcount (2) |
    reserved (4) | size (L)`` followed by its data padded to 8 bytes; index 0 is the free
    space, whose size counts its own header. libhdf5 (2.0.0 in h5py 3.16 at least) walks
    the objects without checking that each one advances, so a damaged size loops forever
    inside the library, where no Python exception or timeout can reach. Walk each
    collection the same way and refuse it unless its objects tile it exactly. A collection
    that runs past the end of the buffer is left to HDF5, which refuses to read it.
    """
    # The size of a "length" field comes from the superblock (version 0/1: byte 14,
    # version 2/3: byte 10); h5py writes 8, and 8 is assumed when the superblock is not at 0.
    sig = b"\x89HDF\r\n\x1a\n"
    length = 8
    if len(buf) > 16 and buf[:8] == sig:
        length = buf[14] if buf[8] in (0, 1) else buf[10]
    if length not in (2, 4, 8):
        return  # not a layout this check knows; HDF5 validates the superblock itself
    header = 8 + length  # an object's header, and the collection's
    at = buf.find(b"GCOL")
    while at != -1:
        if buf[at + 4 : at + 8] == b"\x01\x00\x00\x00" and at + header <= len(buf):
            end = at + int.from_bytes(buf[at + 8 : at + header], "little")
            p = at + header
            while end <= len(buf) and p < end:
                if end - p < header:  # too small for an object: trailing free space
                    break
                index = int.from_bytes(buf[p : p + 2], "little")
                size = int.from_bytes(buf[p + 8 : p + header], "little")
                need = header + (size + 7) // 8 * 8 if index else size
                if not 0 < need <= end - p:
                    raise ModelFileError(
                        f"{where}: corrupted HDF5 file (the global heap collection at byte "
                        f"{at} holds an object of size {size} at byte {p} that does not fit "
                        f"it)"
                    )
                p += need
        at = buf.find(b"GCOL", at + 1)


@contextlib.contextmanager
def _h5_errors(filepath: str):
    """HDF5 structures damaged inside (h5py raises many kinds): :class:`ModelFileError`."""
    try:
        yield
    except (ModelFileError, UnsupportedModelError):
        raise
    except (OSError, RuntimeError, KeyError, UnicodeError, ValueError, TypeError) as e:
        raise ModelFileError(
            f"{filepath}: the HDF5 weights are corrupted ({type(e).__name__}: {e})"
        ) from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: the weights file's group names."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---------------------------------------------------------------------------------------
# From the config to rnncore layers
# ---------------------------------------------------------------------------------------


class _Entry:
    """One top-level Keras layer: its spec, the rnncore layer built from it."""

    def __init__(self, spec: dict, layer):
        self.spec = spec
        self.class_name = spec["class_name"]
        self.config = spec.get("config") or {}
        self.name = self.config.get("name", spec.get("name"))
        self.layer = layer


class _Plan:
    """A Keras config read into rnncore layers, and then the weights into those layers."""

    def __init__(self, filepath: str, config, keras_version: int):
        self.filepath = filepath
        self.keras_version = keras_version
        if not isinstance(config, dict) or "class_name" not in config:
            raise ModelFileError(f"{filepath}: the model config is not a Keras model description")
        self.config = config
        #: the model's layers in config order (Keras's weight numbering), InputLayer included
        self.entries: list[_Entry] = []
        self.model: Sequential | None = None

    def fail(self, msg, cls=ModelFileError):
        return cls(f"{self.filepath}: {msg}")

    # ---- model structure -----------------------------------------------------------

    def build(self) -> Sequential:
        class_name = self.config["class_name"]
        body = self.config.get("config")
        _check_module(self, self.config, "model")
        if class_name == "Sequential":
            if isinstance(body, list):  # Keras 2.0 / 2.1
                body = {"layers": body}
            specs = self._specs(body)
            chain = list(specs)
            n_outputs = None
        elif class_name in ("Functional", "Model"):
            specs = self._specs(body)
            chain, n_outputs = _functional_chain(self, body, specs)
        else:
            raise self.fail(
                f"model class {class_name!r} is not supported: only Sequential models and "
                f"functional models (a chain of layers) can be read without the model's "
                f"Python code",
                UnsupportedModelError,
            )
        # the Keras weight numbering counts every layer of the config (in order)
        for spec in specs:
            if spec["class_name"] in _MASK_OPS and _is_op(spec):
                continue
            self.entries.append(_Entry(spec, None))
        by_id = {id(e.spec): e for e in self.entries}
        model_layers = []
        for spec in chain:
            entry = by_id[id(spec)]
            entry.layer = self._layer(spec)
            model_layers.append(entry.layer)
        input_layers = [x for x in model_layers if isinstance(x, InputLayer)]
        if len(input_layers) > 1 or (input_layers and model_layers[0] is not input_layers[0]):
            raise self.fail("an InputLayer can only be the first layer of the model")
        try:
            model = Sequential(model_layers, name=(body or {}).get("name"))
        except (ValueError, MemoryError) as e:
            raise self.fail(f"cannot assemble the model ({e})") from None
        if not model.built:
            shape = (body or {}).get("build_input_shape") or (
                self.config.get("build_config") or {}
            ).get("input_shape")
            if shape is not None and model.layers:
                try:
                    model.build(tuple(shape))
                except (ValueError, TypeError, MemoryError) as e:
                    raise self.fail(
                        f"cannot build the model for input shape {shape} ({e})"
                    ) from None
        if n_outputs is not None and n_outputs > 1:
            last = model.layers[-1]
            outputs = last.compute_output_shape(model.input_shape) if model.built else None
            if outputs is not None and (
                not isinstance(outputs, tuple)
                or not outputs
                or not isinstance(outputs[0], tuple)
                or len(outputs) != n_outputs
            ):
                raise self.fail(
                    f"the model's {n_outputs} outputs are not the outputs of its "
                    f"last layer {last.name!r}",
                    UnsupportedModelError,
                )
        self.model = model
        return model

    def _specs(self, body) -> list:
        if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
            raise self.fail("the model config has no list of layers")
        specs = body["layers"]
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str):
                raise self.fail(f"malformed layer entry in the config: {str(spec)[:200]}")
        return specs

    def _layer(self, spec: dict):
        """An rnncore layer from a Keras layer spec ``{"class_name", "config"}``."""
        class_name = spec["class_name"]
        config = spec.get("config")
        name = config.get("name") if isinstance(config, dict) else None
        where = f"layer {name!r} ({class_name})" if name else f"a {class_name} layer"
        _check_module(self, spec, where)
        if class_name not in SUPPORTED_LAYERS:
            raise self.fail(
                f"{where}: the Keras layer class {class_name} is not supported by rnncore "
                f"(supported: {', '.join(SUPPORTED_LAYERS)})",
                UnsupportedModelError,
            )
        if not isinstance(config, dict):
            raise self.fail(f"{where}: malformed layer config")
        kwargs = {k: v for k, v in config.items() if k not in _DROPPED_KEYS}
        for key in ("sparse", "ragged"):  # Keras writes False, its default
            if key in kwargs and kwargs[key] in (False, None):
                del kwargs[key]
        if self.keras_version == 2:
            _keras2_defaults(self, class_name, kwargs, where)
        try:
            if class_name == "Bidirectional":
                inner = kwargs.pop("layer", None)
                back = kwargs.pop("backward_layer", None)
                if kwargs.get("num_constants"):
                    raise self.fail(
                        f"{where}: num_constants is not supported", UnsupportedModelError
                    )
                kwargs.pop("num_constants", None)
                if not isinstance(inner, dict):
                    raise self.fail(f"{where}: the config has no wrapped layer")
                kwargs["layer"] = self._layer(inner)
                if back is not None:
                    kwargs["backward_layer"] = self._layer(back)
            elif class_name == "TimeDistributed":
                inner = kwargs.pop("layer", None)
                if not isinstance(inner, dict):
                    raise self.fail(f"{where}: the config has no wrapped layer")
                kwargs["layer"] = self._layer(inner)
            return LAYER_CLASSES[class_name](**kwargs)
        except (ModelFileError, UnsupportedModelError):
            raise
        except _UnsupportedArgument as e:
            raise self.fail(f"{where}: {e}", UnsupportedModelError) from None
        except TypeError as e:
            raise self.fail(
                f"{where}: an option rnncore does not know ({e})", UnsupportedModelError
            ) from None
        except ValueError as e:
            raise self.fail(f"{where}: invalid config ({e})") from None

    # ---- weights --------------------------------------------------------------------

    def load_weights_v3(self, h5) -> None:
        """Weights of a ``.keras`` archive: layers matched by their order in the config."""
        used: dict[str, int] = {}
        root = _group(self, h5, "layers", "the weights file", optional=True)
        for entry in self.entries:
            key = _unique(_snake_case(entry.class_name), used)
            if entry.layer is None or not entry.layer.weights:
                continue
            if root is None or key not in root:
                raise self.fail(
                    f"layer {entry.name!r} ({entry.class_name}): its weights "
                    f"(layers/{key}) are missing from model.weights.h5"
                )
            group = root[key]
            recorded = _vars_name(group)
            if recorded is not None and entry.name is not None and recorded != entry.name:
                raise self.fail(
                    f"the weights at layers/{key} belong to a layer named {recorded!r}, but "
                    f"the config puts layer {entry.name!r} there: config.json and "
                    f"model.weights.h5 do not match"
                )
            datasets = self._v3_datasets(group, entry.class_name, entry.config, f"layers/{key}")
            self._assign(entry, datasets)

    def _v3_datasets(self, group, class_name: str, config: dict, path: str) -> list:
        if class_name in _RNN_CLASSES:
            cell = group.get("cell")
            return _vars(self, cell if cell is not None else group, path + "/cell")
        if class_name == "Bidirectional":
            fwd = _group(self, group, "forward_layer", path)
            bwd = _group(self, group, "backward_layer", path)
            inner = config.get("layer") or {}
            back = config.get("backward_layer") or inner
            return self._v3_datasets(
                fwd, inner.get("class_name"), inner.get("config") or {}, path + "/forward_layer"
            ) + self._v3_datasets(
                bwd, back.get("class_name"), back.get("config") or {}, path + "/backward_layer"
            )
        if class_name == "TimeDistributed":
            inner = config.get("layer") or {}
            return self._v3_datasets(
                _group(self, group, "layer", path),
                inner.get("class_name"),
                inner.get("config") or {},
                path + "/layer",
            )
        return _vars(self, group, path)

    def load_weights_h5(self, f) -> None:
        """Weights of a legacy ``.h5`` file: ``model_weights/<layer name>``."""
        weights = _group(self, f, "model_weights", "the file")
        for entry in self.entries:
            if entry.layer is None or not entry.layer.weights:
                continue
            if entry.name not in weights:
                raise self.fail(
                    f"layer {entry.name!r} ({entry.class_name}): no weights "
                    f"under model_weights/{entry.name}"
                )
            group = weights[entry.name]
            names = _h5_names(self, group, "weight_names")
            datasets = []
            for n in names:
                try:
                    ds = group[n]
                except (KeyError, OSError) as e:
                    raise self.fail(
                        f"layer {entry.name!r}: weight {n!r} is missing or unreadable ({e})"
                    ) from None
                datasets.append((f"model_weights/{entry.name}/{n}", ds))
            self._assign(entry, datasets)

    def _assign(self, entry: _Entry, datasets: list) -> None:
        """Check count and shapes against the layer, then read and set the weights."""
        layer = entry.layer
        own = layer.weights
        where = f"layer {entry.name!r} ({entry.class_name})"
        if len(datasets) != len(own):
            raise self.fail(
                f"{where}: the file has {len(datasets)} weight(s) "
                f"({', '.join(p for p, _ in datasets) or 'none'}), the layer "
                f"needs {len(own)} ({', '.join(v.name for v in own)})"
            )
        arrays = []
        for (path, ds), v in zip(datasets, own):
            shape = getattr(ds, "shape", None)
            if shape is None:
                raise self.fail(f"{where}: {path} is not a dataset")
            if tuple(shape) != tuple(v.shape):
                raise self.fail(
                    f"{where}: weight {path} has shape {tuple(shape)}, but the "
                    f"config describes {v.name!r} of shape {tuple(v.shape)}"
                )
            try:
                a = ds[()]
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise self.fail(
                    f"{where}: cannot read {path} (corrupted or truncated?): {e}"
                ) from None
            arrays.append(float_array(a, f"{self.filepath}: {where}: {path}"))
        if self.keras_version == 2:
            arrays = _keras2_hard_sigmoid(self, entry.class_name, entry.config, arrays, where)
        try:
            layer.set_weights(arrays)
        except ValueError as e:
            raise self.fail(f"{where}: the weights do not fit the layer ({e})") from None


def _unique(name: str, used: dict) -> str:
    """Keras's ``_get_unique_name``: ``name``, ``name_1``, ``name_2``, ..."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _is_op(spec: dict) -> bool:
    module = spec.get("module") or ""
    return (
        module.startswith("keras.src.ops")
        or module.startswith("keras.ops")
        or ("inbound_nodes" in spec and spec.get("class_name") in _MASK_OPS)
    )


def _check_module(plan: _Plan, spec: dict, where: str) -> None:
    """Refuse classes from outside Keras (custom layers / models)."""
    module = spec.get("module")
    registered = spec.get("registered_name")
    custom = (module is not None and module != "keras" and not module.startswith("keras.")) or (
        isinstance(registered, str) and ">" in registered
    )
    if custom:
        raise plan.fail(
            f"{where}: the custom class {spec.get('class_name')!r} (module "
            f"{module!r}, registered as {registered!r}) is not supported: rnncore "
            f"reads only Keras's own layers",
            UnsupportedModelError,
        )


def _group(plan: _Plan, parent, key: str, where: str, optional=False):
    try:
        g = parent.get(key)
    except (OSError, KeyError, RuntimeError) as e:
        raise plan.fail(f"{where}: cannot read {key!r} (corrupted or truncated?): {e}") from None
    if g is None and not optional:
        raise plan.fail(f"{where}: {key!r} is missing")
    return g


def _vars_name(group):
    try:
        v = group.get("vars")
        name = None if v is None else v.attrs.get("name")
    except (OSError, KeyError, RuntimeError):
        return None
    return None if name is None else _text(name)


def _vars(plan: _Plan, group, path: str) -> list:
    """The datasets ``vars/0``, ``vars/1``, ... of a Keras 3 weights group, in order."""
    v = _group(plan, group, "vars", path, optional=True)
    if v is None:
        return []
    try:
        keys = list(v.keys())
    except (OSError, RuntimeError) as e:
        raise plan.fail(f"{path}/vars: unreadable (corrupted or truncated?): {e}") from None
    if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != [
        str(i) for i in range(len(keys))
    ]:
        raise plan.fail(
            f"{path}/vars: expected datasets named 0..{len(keys) - 1}, got {sorted(keys)}"
        )
    return [(f"{path}/vars/{i}", v[str(i)]) for i in range(len(keys))]


def _h5_names(plan: _Plan, group, attr: str) -> list[str]:
    """A list-of-names attribute, also when h5 split it into ``attr0``, ``attr1``, ..."""
    attrs = group.attrs
    try:
        if attr in attrs:
            values = list(attrs[attr])
        else:
            values, k = [], 0
            while f"{attr}{k}" in attrs:
                values.extend(attrs[f"{attr}{k}"])
                k += 1
    except (OSError, RuntimeError, KeyError) as e:
        raise plan.fail(f"{group.name}: cannot read attribute {attr} ({e})") from None
    return [_text(x) for x in values]


# ---------------------------------------------------------------------------------------
# Functional models: a chain of layers
# ---------------------------------------------------------------------------------------


def _tensor_refs(plan: _Plan, spec: dict) -> tuple[list, dict]:
    """A layer's inputs as ``[(layer, node, tensor)]`` and its call kwargs (one call only)."""
    nodes = spec.get("inbound_nodes") or []
    name = spec.get("name") or (spec.get("config") or {}).get("name")
    if len(nodes) > 1:
        raise plan.fail(
            f"layer {name!r} is called {len(nodes)} times (a shared layer); only "
            f"models where each layer is called once are supported",
            UnsupportedModelError,
        )
    if not nodes:
        return [], {}
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs = []
        for a in node.get("args", []):
            if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__":
                refs.append(tuple(a["config"]["keras_history"]))
            elif isinstance(a, (list, tuple, dict)):
                raise plan.fail(
                    f"layer {name!r} is called on several tensors; only chains "
                    f"of single-input layers are supported",
                    UnsupportedModelError,
                )
        return refs, dict(node.get("kwargs") or {})
    refs, kwargs = [], {}  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
    for item in node:
        refs.append(tuple(item[:3]))
        if len(item) > 3 and item[3]:
            kwargs.update(item[3])
    return refs, kwargs


def _is_tensor(value) -> bool:
    return (
        isinstance(value, dict)
        and value.get("class_name") == "__keras_tensor__"
        or (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str))
    )


def _functional_chain(plan: _Plan, body: dict, specs: list) -> tuple[list, int]:
    """The layers of a functional model from input to output, if it is a chain."""
    by_name = {}
    for spec in specs:
        name = spec.get("name") or (spec.get("config") or {}).get("name")
        by_name[name] = spec

    def refs_list(value):
        if isinstance(value, list) and value and isinstance(value[0], str):
            return [value]
        return list(value or [])

    inputs = refs_list(body.get("input_layers"))
    outputs = refs_list(body.get("output_layers"))
    if len(inputs) != 1:
        raise plan.fail(
            f"the model has {len(inputs)} inputs; only single-input models are supported",
            UnsupportedModelError,
        )
    if (
        not outputs
        or len({o[0] for o in outputs}) != 1
        or [int(o[2]) for o in outputs] != list(range(len(outputs)))
    ):
        raise plan.fail(
            f"the model's outputs {outputs} are not the output(s) of one last "
            f"layer in order; only such models are supported",
            UnsupportedModelError,
        )
    chain = []
    current = outputs[0][0]
    seen = set()
    while True:
        spec = by_name.get(current)
        if spec is None:
            raise plan.fail(f"the config refers to an unknown layer {current!r}")
        if current in seen:
            raise plan.fail(f"the model graph has a cycle at layer {current!r}")
        seen.add(current)
        chain.append(spec)
        if current == inputs[0][0]:
            break
        if _is_op(spec) or spec["class_name"] not in SUPPORTED_LAYERS:
            raise plan.fail(
                f"layer {current!r}: the Keras class {spec['class_name']} is not "
                f"supported by rnncore (supported: {', '.join(SUPPORTED_LAYERS)})",
                UnsupportedModelError,
            )
        refs, kwargs = _tensor_refs(plan, spec)
        for key, value in kwargs.items():
            if key == "training" or value is None:
                continue
            if key == "mask" and _is_mask_op_tensor(value, by_name):
                continue  # Keras's implicit mask from a Masking layer: rnncore does the same
            raise plan.fail(
                f"layer {current!r} is called with {key}=..., which rnncore's "
                f"import does not support",
                UnsupportedModelError,
            )
        if len(refs) != 1:
            raise plan.fail(
                f"layer {current!r} has {len(refs)} inputs; only chains of "
                f"single-input layers are supported",
                UnsupportedModelError,
            )
        src, node_index, tensor_index = refs[0]
        if int(node_index) != 0 or int(tensor_index) != 0:
            raise plan.fail(
                f"layer {current!r} takes output {tensor_index} of layer {src!r}; "
                f"only the main output of each layer can feed the next",
                UnsupportedModelError,
            )
        current = src
    chain.reverse()
    on_chain = {id(s) for s in chain}
    for spec in specs:
        if id(spec) not in on_chain and not (_is_op(spec) and spec["class_name"] in _MASK_OPS):
            name = spec.get("name") or (spec.get("config") or {}).get("name")
            raise plan.fail(
                f"layer {name!r} ({spec['class_name']}) is not on the path from "
                f"the input to the output: only chain-shaped functional models "
                f"are supported",
                UnsupportedModelError,
            )
    if chain[0]["class_name"] != "InputLayer":
        raise plan.fail("the model's input is not an InputLayer")
    return chain, len(outputs)


def _is_mask_op_tensor(value, by_name) -> bool:
    """Whether a ``mask=`` argument is Keras's ``any(not_equal(x, v), -1)`` of a Masking."""
    if not isinstance(value, dict) or value.get("class_name") != "__keras_tensor__":
        return False
    src = by_name.get(value["config"]["keras_history"][0])
    return src is not None and src["class_name"] in _MASK_OPS and _is_op(src)


# ---------------------------------------------------------------------------------------
# Keras 2 differences
# ---------------------------------------------------------------------------------------


def _keras2_defaults(plan: _Plan, class_name: str, kwargs: dict, where: str) -> None:
    """Keras 2 configs: defaults that changed in Keras 3, activations that differ."""
    if class_name == "GRU":
        kwargs.setdefault("reset_after", False)  # Keras 2.0-2.2's default
    if class_name == "LSTM" and kwargs.get("activation") == "hard_sigmoid":
        raise plan.fail(
            f"{where}: activation='hard_sigmoid' as Keras 2 defines it "
            f"(clip(0.2 x + 0.5, 0, 1)) on the LSTM cell state has no rnncore "
            f"equivalent",
            UnsupportedModelError,
        )
    if class_name == "Activation" and kwargs.get("activation") == "hard_sigmoid":
        raise plan.fail(
            f"{where}: Keras 2's hard_sigmoid (clip(0.2 x + 0.5, 0, 1)) differs "
            f"from rnncore's (Keras 3: clip(x / 6 + 0.5, 0, 1))",
            UnsupportedModelError,
        )
    if kwargs.get("time_major"):
        raise plan.fail(f"{where}: time_major=True is not supported", UnsupportedModelError)
    kwargs.pop("time_major", None)


_KERAS2_HS_SCALE = 1.2  # clip(0.2 x + 0.5) == clip((1.2 x) / 6 + 0.5)


def _keras2_hard_sigmoid(plan, class_name, config, arrays, where):
    """Scale the weights feeding a Keras 2 ``hard_sigmoid`` so rnncore's gives its values."""
    if class_name == "Bidirectional":
        inner = config.get("layer") or {}
        back = config.get("backward_layer") or inner
        half = len(arrays) // 2
        return _keras2_hard_sigmoid(
            plan, inner.get("class_name"), inner.get("config") or {}, arrays[:half], where
        ) + _keras2_hard_sigmoid(
            plan, back.get("class_name"), back.get("config") or {}, arrays[half:], where
        )
    if class_name == "TimeDistributed":
        inner = config.get("layer") or {}
        return _keras2_hard_sigmoid(
            plan, inner.get("class_name"), inner.get("config") or {}, arrays, where
        )
    if class_name == "Dense":
        if config.get("activation") == "hard_sigmoid":
            return [a * np.asarray(_KERAS2_HS_SCALE, a.dtype) for a in arrays]
        return arrays
    if class_name not in _RNN_CLASSES:
        return arrays
    gates = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[class_name]
    recurrent_blocks = {"SimpleRNN": (), "LSTM": (0, 1, 3), "GRU": (0, 1)}[class_name]
    candidate_block = {"SimpleRNN": 0, "LSTM": 2, "GRU": 2}[class_name]
    blocks = []
    if config.get("recurrent_activation") == "hard_sigmoid" and class_name != "SimpleRNN":
        blocks += recurrent_blocks
    if config.get("activation") == "hard_sigmoid":
        blocks.append(candidate_block)
    if not blocks:
        return arrays
    units = arrays[1].shape[0]
    scale = np.ones(gates * units)
    for b in blocks:
        scale[b * units : (b + 1) * units] = _KERAS2_HS_SCALE
    return [a * scale.astype(a.dtype) for a in arrays]  # kernel, recurrent, bias: last axis
