"""What the importers and the exporter share: errors, optional imports, weight checks.

Everything here is defined below the models (:mod:`rnncore.errors`,
:mod:`rnncore.formats.archive`); this module gathers it for the interop modules.
"""

from __future__ import annotations

from ..errors import ModelFileError, UnsupportedModelError
from ..formats.archive import (
    check_declared_size,
    float_array,
    optional_import,
    read_json,
    read_member,
)

__all__ = [
    "ModelFileError",
    "UnsupportedModelError",
    "optional_import",
    "float_array",
    "check_declared_size",
    "read_json",
    "read_member",
]
