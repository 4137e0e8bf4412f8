""".npy arrays, memory-mapped: never loaded whole; no physical geometry.

A .npy file does not say which of its axes are spatial: ``spatial_ndim`` is
None and the caller (``write_store``'s ``spatial_ndim``) decides.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ImageReadError
from ._base import ImageReader, make_geometry, no_level


class NumpyReader(ImageReader):
    """A .npy file opened with ``numpy.load(mmap_mode="r")``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    >>> reader = NumpyReader(path)
    >>> reader.shape, reader.dtype.name, reader[1, 2].tolist()
    ((2, 3, 4), 'int16', [20, 21, 22, 23])
    >>> reader.read_region((0, 1), (2, 1)).tolist()  # leading axes: len(origin) of them
    [[[4, 5, 6, 7]], [[16, 17, 18, 19]]]
    """

    name = "numpy"
    spatial_ndim = None

    def __init__(self, path, level=None):
        self.path = os.fspath(path)
        no_level(level, self.path, self.name)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such .npy file: {self.path!r}")
        try:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise ImageReadError(f"numpy cannot read {self.path!r} (not a .npy array, or damaged): {exc}") from exc
        if not isinstance(self._array, np.ndarray) or self._array.dtype.kind not in "biuf":
            raise ImageReadError(f"{self.path!r}: a .npy image holds bool, integer or float values, "
                                 f"got {getattr(self._array, 'dtype', type(self._array).__name__)}")
        self.shape = tuple(int(n) for n in self._array.shape)
        self.dtype = self._array.dtype
        self.geometry = make_geometry(self.path, self.name, np.__version__)

    def read_region(self, origin, size) -> np.ndarray:
        """Like ``ImageReader.read_region`` on the first ``len(origin)`` axes."""
        count = len(tuple(origin))
        origin, size = self._check_region(origin, size, count)
        return self[tuple(slice(o, o + s) for o, s in zip(origin, size))]

    def __getitem__(self, key):
        if self._closed:
            raise ImageReadError(f"{self.path!r} was closed ({self.name} reader)")
        return np.asarray(self._array[key])

    def _close(self) -> None:
        self._array = None
