"""The store: one HDF5 file (or shards of one) holding every image, and reading it.

Who uses it: ``lazypatch.ingest`` writes stores through :mod:`.format` and
:mod:`.publish`; ``lazypatch.stats`` and ``lazypatch.data`` read them through
:class:`ImageStore`. h5py and numpy only; torch is imported by the readers'
gathers on the first batch read, never at import.

- :mod:`.format`: the store format specification (its docstring) and the
  low-level HDF5 helpers that read and check it.
- :mod:`.publish`: atomic publication of a written file (see NOTE [atomic write]).
- :mod:`.image_store`: :class:`ImageStore`, the reading front (shards, regions,
  batches, verify).
- :mod:`.reading`: handles, read plans and copy kernels per layout.
- :mod:`.sidecar`: small HDF5 files bound to a store's content (statistics,
  filters).
"""

from .. import _compat
from .image_store import IO_MODES, ImageStore, check_pad

__all__ = ["IO_MODES", "ImageStore", "check_pad"]


def __getattr__(name):  # names of lazypatch 0.1's store module (write_store: lazypatch.ingest)
    return _compat.moved(__name__, name)
