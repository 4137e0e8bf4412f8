"""Exceptions raised by lazypatch.

Every class also inherits the built-in exception a caller would naturally
catch, so ``except ValueError`` keeps working around lazypatch calls:
``ParameterError`` (ValueError), ``ParameterTypeError`` (TypeError and
ValueError), ``PatchIndexError`` (IndexError), ``StoreFormatError``
(ValueError), ``StoreExistsError`` (FileExistsError), ``StoreClosedError``
(ValueError), ``StoreChangedError`` (RuntimeError), ``IntegrityError`` and
``ImageReadError`` (OSError). A path that does not exist or is a folder
raises the built-in FileNotFoundError or IsADirectoryError, naming the path
and what was expected of it. Messages name the parameter, the rule and the
value, e.g. ``patch_size (64, 64) fits in none of the 12 images (largest is
48x40) with edge='drop'; use edge='shift' or 'pad', or a smaller patch``.
"""

from __future__ import annotations

__all__ = [
    "LazypatchError",
    "ParameterError",
    "ParameterTypeError",
    "PatchIndexError",
    "StoreFormatError",
    "StoreExistsError",
    "StoreClosedError",
    "StoreChangedError",
    "IntegrityError",
    "ImageReadError",
    "LazypatchWarning",
]


class LazypatchError(Exception):
    """Base class of every error lazypatch raises on purpose."""


class ParameterError(LazypatchError, ValueError):
    """A parameter has a value outside its allowed range or set."""


class ParameterTypeError(LazypatchError, TypeError, ValueError):
    """A parameter has the wrong type (a float or bool where an int is due).

    It is both a ``TypeError`` and a ``ValueError``, like numpy's ``AxisError``
    is both a ``ValueError`` and an ``IndexError``: callers catching either
    see it.
    """


class PatchIndexError(LazypatchError, IndexError):
    """A flat patch number (or image id) is outside the valid range."""


class StoreFormatError(LazypatchError, ValueError):
    """A file is not a valid lazypatch store, or its content is inconsistent."""


class StoreExistsError(LazypatchError, FileExistsError):
    """The target of a write exists and ``overwrite`` is false."""


class StoreClosedError(LazypatchError, ValueError):
    """An operation was attempted on a closed store (like I/O on a closed file)."""


class StoreChangedError(LazypatchError, RuntimeError):
    """The store file was modified or replaced while it was open."""


class IntegrityError(LazypatchError, OSError):
    """Stored data does not match its checksum."""


class ImageReadError(LazypatchError, OSError):
    """An input image file could not be read or decoded."""


class LazypatchWarning(UserWarning):
    """Something lazypatch did as asked but that is probably not what was meant
    (images contributing no patch, axes that look swapped, lossy masks...)."""
