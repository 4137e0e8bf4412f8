"""Atomic publication: a file is written beside its target, then moved into place.

NOTE [atomic write]: everything is written to a temporary file in the target
folder, flushed, fsynced and moved into place with ``os.replace`` (or
``os.link`` when ``overwrite`` is false, which fails instead of replacing a
file that appeared meanwhile), then the folder is fsynced. An exception or
interrupt removes the temporary files; the target is never half-written.

Used by the builder (``lazypatch.ingest``), sidecars and the aggregator's
output file.
"""

from __future__ import annotations

import errno
import os
import uuid

import numpy as np

from ..errors import ParameterTypeError, StoreExistsError
from . import format as fmt


def check_target(path, overwrite) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ParameterTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ParameterTypeError(f"overwrite must be True or False, got {overwrite!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "the folder of the store does not exist", folder)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a store is a file, the path is a directory", path)
    if os.path.lexists(path) and not overwrite:
        raise StoreExistsError(
            errno.EEXIST, "a file exists at the store path; pass overwrite=True to replace it", path
        )
    return path


def fsync_folder(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(target: str) -> str:
    """A hidden, unique file name beside ``target``, for writing it atomically."""
    folder, base = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{base}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_file(path: str) -> None:
    """Write a file's dirty pages to disk now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_h5(h5, tmp: str, target: str, overwrite: bool) -> None:
    """Flush, close and fsync a finished temporary HDF5 file, then publish it at ``target``.

    The flush comes first so that a full disk fails on a whole file, not
    half-way through close() (see NOTE [discarding on a full disk] in ``format``).
    """
    fmt.flush(h5, tmp)
    h5.close()
    fsync_file(tmp)
    publish(tmp, target, overwrite)


def publish(tmp: str, target: str, overwrite: bool) -> None:
    """Move a finished temporary file to ``target`` (see NOTE [atomic write])."""
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise StoreExistsError(
                errno.EEXIST, "a file appeared at the store path while writing", target
            ) from None
        except OSError:  # no hard links here (some network or FAT file systems)
            if os.path.lexists(target):
                raise StoreExistsError(errno.EEXIST, "a file exists at the store path", target)
            os.replace(tmp, target)
        else:
            os.unlink(tmp)
    fsync_folder(target)
