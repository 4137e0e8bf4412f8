"""Atomic publication: a file is written beside its target, then moved into place.

NOTE [atomic write]: everything is written to a temporary file in the target
folder, flushed, fsynced and moved into place with ``os.replace`` (or
``os.link`` when ``overwrite`` is false, which fails instead of replacing a
file that appeared meanwhile), then the folder is fsynced. An exception or
interrupt removes the temporary files; the target is never half-written.
Temporaries that a killed writer could not remove are named after its
process, and a later write of the same target removes them (NOTE [stale
temporaries]).

Used by the builder (``lazypatch.ingest``), sidecars and the aggregator's
output file.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
import uuid
import zlib

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


def _host_tag() -> str:
    """8 hex digits naming this machine: a pid means something only on the machine it runs on."""
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"


def temporary_path(target: str) -> str:
    """A hidden, unique file name beside ``target``, for writing it atomically.

    NOTE [stale temporaries]: the name records the writer, ``.OUT.h5.<pid>-<host>.<random>.tmp``
    (spool files add ``.pixels.spool``), so that a later write of the same
    target can tell the files of a writer that died without cleaning up
    (SIGKILL, a power cut) from those of one still writing: see
    ``remove_stale_temporaries``.
    """
    folder, base = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{base}.{os.getpid()}-{_host_tag()}.{uuid.uuid4().hex[:12]}.tmp")


_TEMPORARY = re.compile(r"(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9_]+\.spool)?")


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (True when unsure)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) is no probe on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def remove_stale_temporaries(target: str) -> list:
    """Remove the temporary files of earlier writes of ``target`` whose process is gone.

    Only files named by ``temporary_path`` on this machine are considered, and
    only those whose writer's pid no longer runs are removed (NOTE [stale
    temporaries]); a live writer's files are never touched. Says on stderr
    what it removed; returns the removed paths.
    """
    folder, base = os.path.split(os.path.abspath(target))
    prefix, host = f".{base}.", _host_tag()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMPORARY.fullmatch(name[len(prefix):]) if name.startswith(prefix) else None
        if match is None or match.group("host") != host or _alive(int(match.group("pid"))):
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except FileNotFoundError:
            continue
        removed.append(os.path.join(folder, name))
    if removed:
        pids = sorted({int(_TEMPORARY.fullmatch(os.path.basename(p)[len(prefix):]).group("pid")) for p in removed})
        print(f"lazypatch: removed {len(removed)} temporary file(s) of {base!r} left in {folder!r} by "
              f"earlier writes that stopped without cleaning up (process(es) {', '.join(map(str, pids))} "
              f"no longer run): {', '.join(os.path.basename(p) for p in removed)}", file=sys.stderr)
    return removed


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
