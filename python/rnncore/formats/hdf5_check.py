"""HDF5 files checked before and around h5py: what libhdf5 does not check for itself.

:func:`check_global_heaps` runs on a file's bytes before h5py opens it (a damaged global
heap hangs libhdf5); :func:`h5_errors` turns what h5py raises on damaged structures into
:class:`~rnncore.errors.ModelFileError`; :func:`h5_text` reads a string attribute in any
of the forms h5py returns.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import ModelFileError, UnsupportedModelError
from .archive import optional_import

__all__ = ["HDF5_SIGNATURE", "check_global_heaps", "h5_errors", "h5_text", "string_attr"]

#: the first 8 bytes of an HDF5 file (its superblock at offset 0)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_global_heaps(buf, where: str) -> None:
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
    length = 8
    if len(buf) > 16 and buf[:8] == HDF5_SIGNATURE:
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
def h5_errors(filepath: str):
    """HDF5 structures damaged inside (h5py raises many kinds): :class:`ModelFileError`."""
    try:
        yield
    except (ModelFileError, UnsupportedModelError):
        raise
    except (OSError, RuntimeError, KeyError, UnicodeError, ValueError, TypeError) as e:
        raise ModelFileError(
            f"{filepath}: the HDF5 weights are corrupted ({type(e).__name__}: {e})"
        ) from None


def h5_text(value) -> str:
    """A string attribute as h5py returns it (``str``, ``bytes`` or a 0-d array of either);
    ``TypeError`` for anything else, ``UnicodeDecodeError`` for bytes that are not UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return h5_text(value[()])
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def string_attr(obj, name: str):
    """The string (or array of strings) attribute ``name`` of an h5py object; ``None`` when
    it has none. The attribute's stored type is checked first and the value read only when
    it is a string type: libhdf5 can crash the whole process reading a damaged type (a
    flipped bit turning a variable-length string into an invalid variable-length kind was
    found by the fuzz tests), which no exception can catch. ``TypeError`` otherwise."""
    h5py = optional_import("h5py", "rnncore.load_keras")
    if name not in obj.attrs:
        return None
    stored = h5py.h5a.open(obj.id, name.encode()).get_type()
    if not isinstance(stored, h5py.h5t.TypeStringID):
        raise TypeError(f"attribute {name!r} is not stored as text ({type(stored).__name__})")
    return obj.attrs[name]
