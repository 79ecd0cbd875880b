"""rnncore's own saved-model format, written by ``model.save`` (:func:`write_archive`) and
read by :func:`rnncore.load_model`.

Saved-model format (``model.save(path)``, e.g. ``model.rnncore``)
-----------------------------------------------------------------
Any file name but ``.keras``, ``.h5`` and ``.hdf5``, which ``model.save`` writes as Keras
files (:mod:`.keras_save`). A ZIP archive readable with standard tools::

    rnncore_model.json     what the model is (UTF-8 JSON, below)
    weights/0000.npy       one NumPy .npy file per weight, in get_weights() order
    weights/0001.npy       (plain dtype arrays; never pickled objects)
    ...

``rnncore_model.json``::

    {
      "format": "rnncore.model",        # identifies the file
      "format_version": 1,
      "rnncore_version": "0.1.0",        # the writer, for information
      "model": {"class_name": "Sequential",
                "config": {"name": ..., "trainable": ..., "layers": [
                    {"class_name": "LSTM", "config": {"units": 16, ...}}, ...]}},
      "build_input_shape": [null, 20, 8],   # or null when the model was never built

A functional model (:class:`rnncore.Model`) is ``{"class_name": "Functional", "config":
...}`` with Keras 3's functional config (``layers`` with their ``inbound_nodes``,
``input_layers``, ``output_layers``; see :mod:`rnncore.models.functional_config`), and
``build_input_shape`` null (its inputs give the shapes).
      "weights": [{"path": "lstm/kernel", "file": "weights/0000.npy",
                   "shape": [8, 64], "dtype": "float32"}, ...]
    }

A weight held in low precision (``model.quantize``, :mod:`rnncore.quantization`) is stored
as it is held, not as float32: its entry (``dtype`` float32, the dtype ``get_weights``
gives) adds ``"quantized": {"mode": "int8", "scale": "weights/0004.npy"}`` (``"bf16"``:
``"scale": null``), its ``file`` holding the int8 values (bf16: the uint16 bits) and
``scale`` the float32 scales, one per column. Such a file is ``format_version`` 2 (an older
rnncore refuses it as newer); a file without quantized weights stays version 1.

Layer configs are the layers' ``get_config()`` (Keras's argument names and values).
Loading reads only these files, instantiates only rnncore's own layer classes by name, and
reads weights with ``numpy.load(allow_pickle=False)``: a file can never make the loader run
code. The archive's CRC-32 checks, the manifest (shape and dtype of every weight) and the
model's own weight shapes are all checked, so a corrupted or truncated file raises
:class:`ModelFileError` (a ``ValueError``) naming the problem. Weights are stored at their
exact dtype and bits, so ``save`` then ``load_model`` reproduces predictions bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .._version import __version__
from .archive import check_overwrite, write_atomically

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "write_archive"]

FORMAT = "rnncore.model"
FORMAT_VERSION = 2  # 2: quantized weights; files without them are written as 1
MANIFEST = "rnncore_model.json"


def write_archive(model, filepath, overwrite=True) -> None:
    """Write a built or unbuilt model (its ``get_config``, ``weights`` and build shape) to
    ``filepath`` in the format above."""
    filepath = os.fspath(filepath)
    check_overwrite(filepath, overwrite)
    try:
        config = model.get_config()
        json_config = json.dumps(config)
    except TypeError as e:
        raise ValueError(f"save: the model's config cannot be written as JSON ({e})") from None
    entries, files = [], []

    def add(array) -> str:
        name = f"weights/{len(files):04d}.npy"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        files.append((name, buf.getvalue()))
        return name

    quantized = model.quantized_variables()
    for v in model.weights:  # get_weights() order, each shared weight once
        q = quantized.get(id(v))
        entry = {"path": v.path, "file": add(v.value if q is None else q.values),
                 "shape": list(v.shape), "dtype": v.dtype}  # fmt: skip
        if q is not None:
            entry["quantized"] = {
                "mode": q.mode,
                "scale": None if q.scale is None else add(q.scale),
            }
        entries.append(entry)
    build_shape = getattr(model, "_build_input_shape", None)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if quantized else 1,
        "rnncore_version": __version__,
        "model": {"class_name": model._class_name, "config": json.loads(json_config)},
        "build_input_shape": None if build_shape is None else list(build_shape),
        "weights": entries,
    }

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1))
            for name, data in files:
                zf.writestr(name, data)

    write_atomically(filepath, write)
