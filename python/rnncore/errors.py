"""The exceptions rnncore raises beyond Python's own, importable from ``rnncore``.

All three subclass a built-in exception, so ``except ValueError`` / ``except
NotImplementedError`` written for other libraries still catches them.
"""

from __future__ import annotations

__all__ = ["UnsupportedArgumentError", "UnsupportedModelError", "ModelFileError"]


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
