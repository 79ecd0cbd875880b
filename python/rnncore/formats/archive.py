"""Reading model files safely: every loader (rnncore's own, Keras, ONNX) goes through these.

Sizes a file declares are checked before anything is allocated for them, archive members
are CRC-checked, JSON and ``.npy`` are parsed without ever unpickling or running code, and
every failure is a :class:`~rnncore.errors.ModelFileError` naming the file's problem.
"""

from __future__ import annotations

import importlib
import io
import json
import lzma
import os
import zipfile
import zlib

import numpy as np

from .._memory import check_allocation
from ..errors import ModelFileError, install_hint

__all__ = [
    "check_overwrite",
    "write_atomically",
    "ARCHIVE_ERRORS",
    "WEIGHT_DTYPES",
    "check_declared_size",
    "read_json",
    "read_member",
    "load_npy",
    "optional_import",
    "float_array",
]

#: what reading an archive member can raise on a damaged file (CRC, deflate / bz2 / lzma
#: streams, an unsupported compression method or an encrypted member)
ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)

#: dtypes a weight may be stored with (cast to the layer's dtype when set)
WEIGHT_DTYPES = tuple(np.dtype(d) for d in (np.float16, np.float32, np.float64))


def check_declared_size(what: str, shapes, dtype) -> None:
    """Sizes a file declares, checked before anything is allocated for them.

    The layers' own budget (:func:`rnncore._memory.check_allocation`), failing with
    :class:`ModelFileError`: a file declaring 2**40 floats is a bad file.
    """
    check_allocation(what, shapes, dtype, error=ModelFileError)


def read_json(data, what: str):
    """Parse JSON from a file (bytes or str); :class:`ModelFileError` if it is not JSON,
    or nested deeper than the parser can follow."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{what} is not valid JSON ({e})") from None
    except RecursionError:
        raise ModelFileError(f"{what}: the JSON is nested too deeply to be read") from None


def read_member(zf: zipfile.ZipFile, name: str, what: str, limit: int | None = None) -> bytes:
    """An archive member's bytes (CRC-checked), its declared size checked first."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{what}: the archive has no {name!r}") from None
    size = info.file_size
    if limit is not None and size > limit:
        raise ModelFileError(
            f"{what}: {name} declares {size} bytes, more than the {limit} this reader accepts"
        )
    # zipfile may read the declared compressed size in one piece: it cannot exceed the
    # archive's data (which ends where the central directory starts)
    data_end = getattr(zf, "start_dir", None)
    if data_end is not None and info.compress_size > data_end:
        raise ModelFileError(
            f"{what}: {name} declares {info.compress_size} compressed bytes, more than the "
            f"archive holds (corrupted?)"
        )
    check_declared_size(f"{what}: {name}", [(max(size, info.compress_size),)], np.uint8)
    try:
        return zf.read(name)
    except ARCHIVE_ERRORS as e:
        raise ModelFileError(
            f"{what}: cannot read {name} (corrupted or truncated?): {type(e).__name__}: {e}"
        ) from None


def load_npy(data: bytes, what: str, dtypes=None) -> np.ndarray:
    """A weight stored as ``.npy`` bytes: header checked (a float dtype, or one of
    ``dtypes``; a size that fits) before the array is allocated; never unpickles."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, OSError, TypeError, SyntaxError) as e:
        raise ModelFileError(f"{what} is not a valid .npy array ({e})") from None
    if dtype not in (WEIGHT_DTYPES if dtypes is None else dtypes):
        expected = "floating-point" if dtypes is None else " or ".join(map(str, dtypes))
        raise ModelFileError(
            f"{what} is not a valid .npy weight: expected {expected} values, got dtype {dtype}"
        )
    check_declared_size(what, [shape], dtype)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ModelFileError(f"{what} is not a valid .npy array ({e})") from None


#: the extra of ``pip install ".[...]"`` that provides each optional module
_EXTRAS = {"h5py": "keras", "onnx": "onnx"}


def optional_import(name: str, what: str):
    """Import an optional dependency, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        extra = _EXTRAS.get(name)
        hint = f"{install_hint(extra)}, or pip install {name}" if extra else f"pip install {name}"
        raise ImportError(f"{what} needs the {name!r} package ({hint}): {e}") from None


def float_array(value, what: str) -> np.ndarray:
    """``value`` as a NumPy array of a weight dtype (:data:`WEIGHT_DTYPES`), else
    :class:`ModelFileError`."""
    a = np.asarray(value)
    if a.dtype not in WEIGHT_DTYPES:
        raise ModelFileError(f"{what}: expected floating-point weights, got dtype {a.dtype}")
    return a


def check_overwrite(filepath: str, overwrite: bool) -> None:
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False")


def write_atomically(filepath: str, write) -> None:
    """``write(tmp)`` into ``filepath + ".tmp"``, then renamed to ``filepath``: a failed
    write never leaves a half-written file under the final name, nor the temporary one."""
    tmp = filepath + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
