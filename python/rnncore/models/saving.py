"""Saving and loading whole models: rnncore's own files (format in
:mod:`rnncore.formats.saved_model`) and, through the same ``load_model``, Keras files (read by
:mod:`rnncore.formats.keras`)."""

from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np

from ..errors import ModelFileError, UnsupportedArgumentError
from ..formats.archive import load_npy, read_json, read_member
from ..formats.keras import is_keras_file, read_keras
from ..formats.keras_config import KerasModelSpec
from ..formats.keras_save import write_model
from ..formats.saved_model import FORMAT, FORMAT_VERSION, MANIFEST
from ..formats.verify import verify_loaded
from ..quantization import MODES, Quantized, check_quantized, dequantize
from . import functional_config
from .base import ModelBase
from .functional import Model, deserialize
from .sequential import Sequential

__all__ = ["save_model", "load_model", "load_keras", "model_from_json"]


#: the model classes a saved file may name
_MODEL_CLASSES = {"Sequential": Sequential, "Functional": Model}


def save_model(model: ModelBase, filepath, overwrite=True, **kwargs) -> None:
    """Write ``model`` to ``filepath``, in the format its suffix names:

    * ``.keras``: a Keras 3 ``.keras`` archive, which ``keras.saving.load_model`` opens;
    * ``.h5`` / ``.hdf5``: Keras's legacy HDF5 format (``keras.saving.load_model`` too);
    * anything else (e.g. ``model.rnncore``): rnncore's own format
      (:mod:`rnncore.formats.saved_model`), which also holds what Keras files cannot:
      quantized weights and the LSTM variants (``use_peepholes``, ``projection_units``, ...).

    A model a Keras file cannot hold raises :class:`rnncore.errors.UnsupportedModelError`
    naming the layer (see :mod:`rnncore.formats.keras_save`). :func:`load_model` reads all
    three back.
    """
    if kwargs:
        raise TypeError(f"save: unexpected keyword argument(s) {', '.join(map(repr, kwargs))}")
    if not isinstance(model, ModelBase):
        raise TypeError(f"save_model: expected an rnncore Sequential or Model, got {model!r}")
    write_model(model, filepath, overwrite=overwrite)


def model_from_json(json_string: str) -> ModelBase:
    """A model (weights freshly initialized) from ``model.to_json()``."""
    spec = json.loads(json_string)
    cls = _MODEL_CLASSES.get(spec.get("class_name")) if isinstance(spec, dict) else None
    if cls is None:
        raise ValueError(
            "model_from_json: expected the JSON of an rnncore model (Sequential or Functional)"
        )
    return cls.from_config(spec["config"])


def load_keras(filepath, *, verify=None, verify_tol=None) -> ModelBase:
    """Read a Keras model file (``.keras`` or legacy ``.h5``) as an rnncore model: a
    :class:`Sequential` for a Keras ``Sequential``, a functional :class:`Model` for a
    functional one.

    The format is recognised from the file's content, not its name. Needs ``h5py``
    (``pip install ".[keras]"``); Keras and TensorFlow are not used. See
    :mod:`rnncore.formats.keras` for what is supported and how layers are matched to their
    weights.

    ``verify=(x, expected)`` (or a path to a ``.npz`` of samples) checks that the loaded
    model's ``predict_on_batch(x)`` reproduces ``expected`` within ``verify_tol``, raising
    :class:`rnncore.errors.VerificationError` otherwise (:mod:`rnncore.formats.verify`).
    """
    return verify_loaded(
        read_keras(filepath, _assemble),
        verify,
        verify_tol,
        who="load_keras",
        run=ModelBase.predict_on_batch,
    )


def _assemble(spec: KerasModelSpec) -> ModelBase:
    """The model of a Keras file's layers (:class:`~rnncore.formats.keras_config.
    KerasModelSpec`), its layers built, before the file's weights are read into them; a
    nested model (a spec among the layers) is assembled first, as the layer it is."""
    if spec.graph is not None:
        layers = {
            layer.name: _assemble(layer) if isinstance(layer, KerasModelSpec) else layer
            for layer in spec.layers
        }
        return functional_config.from_config(Model, spec.graph, deserialize, layers=layers)
    model = Sequential(spec.layers, name=spec.name)
    if spec.plan is not None and not spec.plan.trainable:
        model.trainable = False
    if spec.input_shape is not None and not model.built:
        model.build(spec.input_shape)
    return model


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True) -> ModelBase:
    """Read a model file: rnncore's own (written by ``model.save("m.rnncore")`` /
    :func:`save_model`) or a Keras model file, a Keras 3 ``.keras`` archive or a legacy
    Keras ``.h5`` (HDF5) file, whether Keras or rnncore wrote it (as :func:`load_keras`;
    see :mod:`rnncore.formats.keras` for the Keras layers and models read).

    The format is recognised from the file's content. ONNX models are read by
    :func:`rnncore.load_onnx`, PyTorch modules converted by :func:`rnncore.from_torch`.

    Never executes code from the file: only rnncore layer classes are instantiated and
    arrays are read with ``allow_pickle=False``. Raises :class:`ModelFileError` for a file
    that is none of these, or is empty, corrupted or truncated (naming the format its
    suffix promises).
    """
    if custom_objects:
        raise UnsupportedArgumentError(
            "load_model: custom_objects are not supported (rnncore loads only its own layers)"
        )
    filepath = os.fspath(filepath)
    if is_keras_file(filepath):
        return load_keras(filepath)
    what = _promised_format(filepath)
    try:
        zf = zipfile.ZipFile(filepath)
    except (zipfile.BadZipFile, NotImplementedError) as e:
        raise _unreadable(filepath, what, e) from None
    try:
        with zf:
            return _read_archive(zf, filepath)
    except zipfile.BadZipFile as e:
        raise _unreadable(filepath, what, e) from None
    except (zlib.error, EOFError) as e:
        raise ModelFileError(
            f"{filepath}: the {what} is corrupted or truncated ({type(e).__name__}: {e})"
        ) from None


#: what a file suffix promises (any other suffix: rnncore's own format)
_SUFFIX_FORMATS = {
    ".keras": "Keras .keras file",
    ".h5": "Keras .h5 (HDF5) file",
    ".hdf5": "Keras .hdf5 (HDF5) file",
}


def _promised_format(filepath: str) -> str:
    suffix = os.path.splitext(filepath)[1].lower()
    return _SUFFIX_FORMATS.get(suffix, "rnncore model file")


def _unreadable(filepath: str, what: str, error) -> ModelFileError:
    """The error for a file no reader recognises: an ONNX model named as such, an empty
    file as empty, else the format its suffix promises, as corrupted or truncated."""
    if _looks_like_onnx(filepath):
        return ModelFileError(
            f"{filepath}: this is an ONNX model, which load_model does not read: load it "
            f"with rnncore.load_onnx({filepath!r})"
        )
    if os.path.getsize(filepath) == 0:
        return ModelFileError(
            f"{filepath}: the file is empty (0 bytes): not a readable {what} "
            f"(corrupted or truncated?)"
        )
    if "HDF5" in what:  # what zipfile says of it is beside the point
        with open(filepath, "rb") as f:
            head = f.read(8)
        error = f"it does not start with HDF5's signature (its first bytes: {head!r})"
    return ModelFileError(f"{filepath}: not a readable {what} (corrupted or truncated?): {error}")


#: ModelProto's field tags after ``ir_version`` (field 1): producer_name / version, domain,
#: model_version, doc_string, graph, opset_import, metadata_props, training_info, functions
_ONNX_TAGS = frozenset((0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A, 0x82))


def _looks_like_onnx(filepath: str) -> bool:
    """An ``.onnx`` name, or an ONNX ModelProto's first bytes: ``ir_version`` (field 1, a
    small varint), then another of ModelProto's fields."""
    if os.path.splitext(filepath)[1].lower() == ".onnx":
        return True
    with open(filepath, "rb") as f:
        head = f.read(3)
    return len(head) == 3 and head[0] == 0x08 and 1 <= head[1] < 0x40 and head[2] in _ONNX_TAGS


def _read_archive(zf: zipfile.ZipFile, filepath: str) -> Sequential:
    names = set(zf.namelist())
    if MANIFEST not in names:  # (a ZIP with config.json is a Keras file: read before)
        what = _promised_format(filepath)
        if what != "rnncore model file":
            raise ModelFileError(
                f"{filepath}: not a {what}: a ZIP archive without config.json (nor "
                f"rnncore's {MANIFEST})"
            )
        raise ModelFileError(f"{filepath}: not an rnncore model file: no {MANIFEST}")
    manifest = read_json(read_member(zf, MANIFEST, filepath), f"{filepath}: {MANIFEST}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(
            f"{filepath}: not an rnncore model file (format is "
            f"{manifest.get('format') if isinstance(manifest, dict) else None!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{filepath}: format_version {version!r} is newer than this "
            f"rnncore reads ({FORMAT_VERSION}); upgrade rnncore"
        )
    try:
        spec = manifest["model"]
        entries = manifest["weights"]
        build_shape = manifest.get("build_input_shape")
        cls = _MODEL_CLASSES.get(spec.get("class_name"))
        if cls is None:
            raise ModelFileError(f"{filepath}: unknown model class {spec.get('class_name')!r}")
        try:
            model = cls.from_config(spec["config"])
            if build_shape is not None and not model.built:
                model.build(tuple(build_shape))
        except (ValueError, TypeError, NotImplementedError, MemoryError) as e:
            raise ModelFileError(
                f"{filepath}: the model in the file cannot be rebuilt: {e}"
            ) from None
        arrays, quantized = [], []
        for entry in entries:
            q = entry.get("quantized")
            what = f"{filepath}: weight {entry['path']!r}"
            a = _read_weight(zf, names, entry["file"], what, None if q is None else LOWP_DTYPES)
            if q is not None:
                q = _quantized_weight(zf, names, entry, a, q, filepath)
                a = dequantize(q)
            if list(a.shape) != list(entry["shape"]) or str(a.dtype) != entry["dtype"]:
                raise ModelFileError(
                    f"{filepath}: weight {entry['path']!r} has shape {a.shape} and dtype "
                    f"{a.dtype}, the manifest says {tuple(entry['shape'])} {entry['dtype']}"
                )
            arrays.append(a)
            quantized.append(q)
    except ModelFileError:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(
            f"{filepath}: malformed {MANIFEST} ({type(e).__name__}: {e})"
        ) from None
    if arrays or model.weights:
        if not model.built:
            raise ModelFileError(f"{filepath}: the file has weights but no build shape")
        try:
            model.set_weights(arrays)
            model.restore_quantized(
                {id(v): q for v, q in zip(model.weights, quantized) if q is not None}
            )
        except (ValueError, TypeError) as e:
            raise ModelFileError(f"{filepath}: the weights do not fit the model ({e})") from None
    return model


#: the dtypes a quantized weight's values may have (bf16 bits, int8)
LOWP_DTYPES = (np.dtype(np.uint16), np.dtype(np.int8))


def _read_weight(zf, names, file, what: str, dtypes=None):
    filepath = what.split(": ")[0]
    if file not in names:
        raise ModelFileError(f"{filepath}: missing weight file {file!r}")
    return load_npy(read_member(zf, file, filepath), what, dtypes)


def _quantized_weight(zf, names, entry, values, spec, filepath) -> Quantized:
    """A quantized weight's entry: its values and scales checked (mode, dtypes, shapes)."""
    what = f"{filepath}: weight {entry['path']!r}"
    if not isinstance(spec, dict) or spec.get("mode") not in MODES:
        raise ModelFileError(f"{what}: 'quantized' must name a mode in {MODES}, got {spec!r}")
    scale = None
    if spec.get("scale") is not None:
        scale = _read_weight(zf, names, spec["scale"], f"{what} (scale)")
    try:
        return check_quantized(Quantized(spec["mode"], values, scale), spec["mode"],
                               tuple(entry["shape"]), what)  # fmt: skip
    except (ValueError, TypeError) as e:
        raise ModelFileError(str(e)) from None
