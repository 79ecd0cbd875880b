"""The exceptions rnncore raises beyond Python's own, importable from ``rnncore``.

Each subclasses a built-in exception, so ``except ValueError`` / ``except
NotImplementedError`` written for other libraries still catches them.
"""

from __future__ import annotations

__all__ = [
    "UnsupportedArgumentError",
    "UnsupportedModelError",
    "ModelFileError",
    "VerificationError",
]


def install_hint(extra: str) -> str:
    """How to install the optional extra ``extra``, for messages about a missing package.

    rnncore is installed from its source checkout (``pip install .``), not from PyPI, so the
    hint is the README's ``pip install ".[extra]"`` there: ``pip install "rnncore[extra]"``
    would ask PyPI for a package of that name, which is not rnncore.
    """
    return f'pip install ".[{extra}]" in the rnncore source checkout'


class UnsupportedArgumentError(NotImplementedError):
    """A Keras argument (or argument value) that rnncore does not implement.

    Raised instead of silently ignoring the argument; the message names it.
    """


class UnsupportedModelError(UnsupportedArgumentError):
    """A model that uses a layer, operator or option rnncore does not implement.

    Raised instead of converting it approximately; the message names what is missing.
    (A ``NotImplementedError``, like :class:`UnsupportedArgumentError`.)
    """


class ModelFileError(ValueError):
    """A model file that cannot be read: not a model, corrupted or truncated."""


class VerificationError(ValueError):
    """A loaded model that does not reproduce the sample outputs given as ``verify=`` to
    ``load_keras`` / ``load_onnx`` / ``from_torch`` (see :mod:`rnncore.formats.verify`).

    The message names each differing output, its maximum absolute difference, where it
    occurs and the tolerance (or the expected and actual shapes or output counts).
    """
