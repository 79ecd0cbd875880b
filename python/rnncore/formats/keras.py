"""Keras model files read into rnncore layers, without Keras or TensorFlow: :func:`read_keras`.

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

What is read: ``Sequential`` models and functional models (several inputs and outputs,
shared layers, layers feeding an RNN's ``initial_state``, Keras 3's ``{"args", "kwargs"}``
calls and Keras 2's list form; :mod:`.keras_graph`), made of the layers in
:data:`SUPPORTED_LAYERS` (every layer rnncore has, under Keras's class names). A functional
model becomes an :class:`rnncore.Model`, a ``Sequential`` an :class:`rnncore.Sequential`,
with the same outputs, masks included. A functional model may use other models as layers
(nested functional models and ``Sequential`` models, called once or shared, nested in turn):
in ``.keras`` files their weights lie under ``layers/functional/layers/...`` (or
``sequential``), numbered within the nested model; in ``.h5`` files under
``model_weights/<nested model's name>``, its trainable weights first, then the others.
Anything else (another layer class, a model nested in a ``Sequential``, a nested model in
a Keras 2 file, a Keras operation other than a Masking's mask, a layer option rnncore
lacks, such as ``activation='gelu'`` or a mixed-precision dtype) raises
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
:class:`rnncore.errors.ModelFileError` (a ``ValueError``) naming the problem.
"""

from __future__ import annotations

import io
import mmap
import os
import zipfile
import zlib

from ..errors import ModelFileError, UnsupportedModelError
from .archive import ARCHIVE_ERRORS, optional_import, read_json, read_member
from .hdf5_check import HDF5_SIGNATURE, check_global_heaps, h5_errors, h5_text, string_attr
from .keras_config import SUPPORTED_LAYERS, KerasPlan
from .keras_weights import load_weights_h5, load_weights_v3
from .saved_model import MANIFEST as SAVED_MODEL_MANIFEST

__all__ = ["read_keras", "is_keras_file", "SUPPORTED_LAYERS"]

_MAX_CONFIG_BYTES = 64 << 20
_MAX_WEIGHTS_BYTES = 16 << 30


def read_keras(filepath, assemble):
    """Read a Keras model file (``.keras`` or legacy ``.h5``) into an rnncore model.

    The file's config becomes a :class:`KerasModelSpec` (rnncore layers, and the graph of a
    functional model); ``assemble(spec)`` makes the model of it (a ``Sequential`` or a
    functional ``Model``: the models live above this module), which builds the layers;
    then the file's weights are read into them and the model is returned.
    The format is recognised from the file's content, not its name. Needs
    ``h5py`` (``pip install ".[keras]"``); Keras and TensorFlow are not used. See
    the module documentation for what is supported and how layers are matched to their
    weights.
    """
    filepath = os.fspath(filepath)
    with open(filepath, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PK\x03\x04":
        return _read_keras_v3(filepath, assemble)
    h5py = optional_import("h5py", "rnncore.load_keras")
    if head == HDF5_SIGNATURE or h5py.is_hdf5(filepath):
        return _read_h5(filepath, h5py, assemble)
    raise ModelFileError(
        f"{filepath}: not a Keras model file (neither a .keras ZIP archive nor an HDF5 .h5 "
        f"file; the first bytes are {head!r})"
    )


def is_keras_file(filepath) -> bool:
    """A legacy Keras HDF5 file, or a Keras 3 ``.keras`` archive (a zip with config.json
    that is not an rnncore saved model); ``False`` for a file that cannot be read as
    either."""
    try:
        with open(filepath, "rb") as f:
            if f.read(8) == HDF5_SIGNATURE:
                return True
        with zipfile.ZipFile(filepath) as zf:
            names = set(zf.namelist())
            # a ZIP holding rnncore's own manifest is rnncore's, even with a config.json
            return "config.json" in names and SAVED_MODEL_MANIFEST not in names
    except ARCHIVE_ERRORS:
        return False  # left to the reader the caller tries next


# ---------------------------------------------------------------------------------------
# The two containers
# ---------------------------------------------------------------------------------------


def _assembled(plan: KerasPlan, assemble):
    """The model of the plan's layers, its layers built (a damaged config that cannot be
    assembled is the file's error)."""
    spec = plan.build()
    try:
        return assemble(spec)
    except (ValueError, TypeError, MemoryError) as e:
        raise plan.fail(f"cannot assemble the model ({e})") from None


def _read_keras_v3(filepath: str, assemble):
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
    plan = KerasPlan(filepath, config, keras_version=3)
    model = _assembled(plan, assemble)
    if weights_bytes is None:
        if plan.has_weights():
            raise ModelFileError(f"{filepath}: the archive has no model.weights.h5")
        return model
    check_global_heaps(weights_bytes, f"{filepath}: model.weights.h5")
    try:
        h5 = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as e:
        raise ModelFileError(
            f"{filepath}: model.weights.h5 is not a readable HDF5 file "
            f"(corrupted or truncated?): {e}"
        ) from None
    with h5, h5_errors(filepath):
        load_weights_v3(plan, h5)
    return model


def _read_member(zf: zipfile.ZipFile, name: str, filepath: str, limit: int) -> bytes:
    return read_member(zf, name, filepath, limit)  # CRC-checked by zipfile


def _read_json(zf: zipfile.ZipFile, name: str, filepath: str):
    return read_json(_read_member(zf, name, filepath, _MAX_CONFIG_BYTES), f"{filepath}: {name}")


def _read_h5(filepath: str, h5py, assemble):
    with open(filepath, "rb") as raw:
        if os.fstat(raw.fileno()).st_size:
            with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                check_global_heaps(buf, filepath)
    try:
        f = h5py.File(filepath, "r")
    except OSError as e:
        raise ModelFileError(
            f"{filepath}: not a readable Keras .h5 (HDF5) file (corrupted or truncated?): {e}"
        ) from None
    with f:
        try:
            attrs = {k: string_attr(f, k) for k in ("model_config", "keras_version")}
            has_layer_names = "layer_names" in f.attrs
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:  # h5py's kinds
            raise ModelFileError(f"{filepath}: cannot read the file's attributes ({e})") from None
        if attrs["model_config"] is None:
            what = (
                " (it holds weights only, as written by save_weights: load the model itself)"
                if has_layer_names
                else ""
            )
            raise ModelFileError(
                f"{filepath}: an HDF5 file without a model_config attribute "
                f"is not a Keras model file{what}"
            )
        try:
            text = h5_text(attrs["model_config"])
        except (UnicodeDecodeError, TypeError) as e:
            raise ModelFileError(f"{filepath}: model_config is not valid JSON ({e})") from None
        config = read_json(text, f"{filepath}: model_config")
        version = h5_text(attrs["keras_version"] or "2")
        major = version.split(".")[0]
        if major == "1":
            raise UnsupportedModelError(
                f"{filepath}: Keras 1 files (keras_version {version}) "
                f"are not supported; re-save the model with Keras 2+"
            )
        plan = KerasPlan(filepath, config, keras_version=3 if major == "3" else 2)
        model = _assembled(plan, assemble)
        with h5_errors(filepath):
            load_weights_h5(plan, f)
    return model
