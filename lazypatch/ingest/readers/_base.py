"""What every reader shares: the array-like contract, region planning, the geometry dict,
and importing a library lazily with the extra that installs it.

A reader subclass sets ``path``, ``shape``, ``dtype``, ``spatial_ndim`` and
``geometry`` in ``__init__`` and implements ``_read(origin, size)`` for a
region known to lie inside the image with every size positive; slicing,
bounds checks, error wrapping and closing live here once.
"""

from __future__ import annotations

import importlib
import operator
import os

import numpy as np

from ...errors import ImageReadError, ParameterError, ParameterTypeError
from ...grid import is_int

UNITS = ("um", "mm", "m", "deg", None)

# reader -> (extra, the packages it installs)
EXTRAS = {
    "openslide": ("wsi", "openslide-python and openslide-bin"),
    "tifffile": ("tiff", "tifffile and imagecodecs"),
    "nibabel": ("medical", "nibabel"),
    "pydicom": ("medical", "pydicom"),
    "rasterio": ("geo", "rasterio"),
    "pillow": (None, "Pillow"),
    "numpy": (None, "numpy"),
}


def require(module: str, reader: str):
    """Import ``module`` for ``reader``, or an ImportError that says what to install.

    >>> require("numpy", "numpy").__name__
    'numpy'
    >>> require("no_such_library_here", "rasterio")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ImportError: the rasterio reader needs rasterio (...); install it with: pip install "lazypatch[geo]"
    """
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # openslide-python raises OSError when the C library is missing
        extra, packages = EXTRAS[reader]
        hint = f'pip install "lazypatch[{extra}]"' if extra else f"pip install {packages}"
        raise ImportError(
            f"the {reader} reader needs {packages} (import of {module!r} failed: {exc}); "
            f"install it with: {hint}"
        ) from exc


def make_geometry(path, reader: str, version: str, *, spacing=None, unit=None, affine=None,
                  crs=None, transform=None, level=None, downsample=None) -> dict:
    """The geometry dict of one image, JSON-able, keys in a fixed order.

    ``spacing``, ``unit`` and ``source`` are always there; ``affine``, ``crs``,
    ``transform``, ``level`` and ``downsample`` only where the source has them.

    >>> make_geometry("a.png", "pillow", "11.0")["spacing"] is None
    True
    >>> make_geometry("s.tif", "tifffile", "2024.1", spacing=(0.5, 0.5), unit="um", level=0,
    ...               downsample=1.0)["spacing"]
    (0.5, 0.5)
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if (spacing is None) != (unit is None):
        raise ValueError(f"spacing and unit go together, got spacing={spacing!r}, unit={unit!r}")
    if spacing is not None:
        spacing = tuple(float(v) for v in spacing)
        if not all(np.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"spacing must be positive, got {spacing}")
    geometry = {"spacing": spacing, "unit": unit}
    if affine is not None:
        geometry["affine"] = [[float(v) for v in row] for row in np.asarray(affine, dtype=np.float64)]
    if crs is not None:
        geometry["crs"] = str(crs)
    if transform is not None:
        geometry["transform"] = tuple(float(v) for v in transform)
    if level is not None:
        geometry["level"] = int(level)
        geometry["downsample"] = float(downsample)
    geometry["source"] = {"file": os.path.abspath(os.fspath(path)), "reader": reader,
                          "reader_version": str(version)}
    return geometry


def check_level(level, count: int, path, reader: str) -> int:
    """``level`` (None means 0) as an int in ``[0, count)``, or a ParameterError naming the file."""
    if level is None:
        return 0
    if not is_int(level):
        raise ParameterTypeError(f"level must be an integer, got {level!r}")
    if not 0 <= level < count:
        raise ParameterError(
            f"level must be in 0..{count - 1} for {os.fspath(path)!r} ({count} level(s) as read by "
            f"{reader}), got {level}"
        )
    return int(level)


def no_level(level, path, reader: str) -> None:
    if level not in (None, 0) or isinstance(level, bool):
        raise ParameterError(
            f"level applies to pyramids (the openslide, tifffile and rasterio readers); "
            f"{os.fspath(path)!r} is read by {reader}, which has one level, got level={level!r}"
        )


def _axis_key(item, length: int, axis: int):
    """(start, stop, residual) of one spatial axis' key: the bounding range and what to
    apply to the range read (an int drops the axis, a slice keeps its step)."""
    if isinstance(item, slice):
        start, stop, step = item.indices(length)
        if step > 0:
            stop = max(start, stop)
            return start, stop, slice(None, None, step)
        if start <= stop:
            return 0, 0, slice(None)
        low = stop + 1
        return low, start + 1, slice(start - low, None, step)
    if isinstance(item, (bool, np.bool_)) or not hasattr(item, "__index__"):
        raise ParameterTypeError(
            f"readers take integers, slices and ... as indices, got {type(item).__name__} "
            f"{item!r} on axis {axis}; read a region and index the array for anything else"
        )
    value = operator.index(item)
    if not -length <= value < length:
        raise IndexError(f"index {value} is out of bounds for axis {axis} with size {length}")
    value %= length
    return value, value + 1, 0


class ImageReader:
    """One image of a file as a read-only array-like: ``shape``, ``dtype``, ``ndim``,
    slicing, ``read_region`` and ``geometry``.

    Spatial axes come first ((z,) y, x), channels last when there are several
    (or when the format always has them). Slicing takes integers, slices and
    ``...``; it reads the bounding region of the spatial keys and nothing
    else, which is what ``write_store`` does band by band (``image[r0:r1]``).
    """

    name = ""  # the reader's name in READERS
    level_count = 1  # pyramid levels the file has (the pyramid readers set it)

    path: str
    shape: tuple
    dtype: np.dtype
    spatial_ndim: int | None
    geometry: dict
    _closed = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def _spatial(self) -> int:
        return self.spatial_ndim if self.spatial_ndim is not None else self.ndim

    # -- reading -------------------------------------------------------------------------
    def read_region(self, origin, size) -> np.ndarray:
        """The pixels of ``[origin, origin + size)`` on the spatial axes, all channels.

        Parameters
        ----------
        origin, size : sequence of int
            One entry per spatial axis ((z,) y, x). The region must lie inside
            the image.

        Returns
        -------
        numpy.ndarray
            ``(*size)`` or ``(*size, C)``, in ``self.dtype``.
        """
        spatial = self._spatial
        origin, size = self._check_region(origin, size, spatial)
        return self._region(origin, size)

    def _check_region(self, origin, size, spatial):
        values = []
        for name, value in (("origin", origin), ("size", size)):
            try:
                items = tuple(value)
            except TypeError:
                raise ParameterTypeError(f"{name} must be a sequence of {spatial} ints, got {value!r}") from None
            if len(items) != spatial or not all(is_int(v) for v in items):
                raise ParameterTypeError(
                    f"{name} must be {spatial} ints (one per spatial axis), got {value!r}"
                )
            values.append(tuple(int(v) for v in items))
        origin, size = values
        shape = self.shape[:spatial]
        if any(o < 0 or s < 0 or o + s > n for o, s, n in zip(origin, size, shape)):
            raise ParameterError(
                f"region origin {origin} size {size} reaches outside {self.path!r}, whose spatial "
                f"shape is {shape}"
            )
        return origin, size

    def _region(self, origin, size) -> np.ndarray:
        if self._closed:
            raise ImageReadError(f"{self.path!r} was closed ({self.name} reader)")
        spatial = self._spatial
        if min(size, default=1) == 0:
            return np.empty(tuple(size) + tuple(self.shape[spatial:]), self.dtype)
        try:
            data = self._read(origin, size)
        except (ImageReadError, ParameterError, ImportError):
            raise
        except Exception as exc:
            raise ImageReadError(
                f"cannot read region origin {tuple(origin)} size {tuple(size)} of {self.path!r} "
                f"with {self.name}: {type(exc).__name__}: {exc}"
            ) from exc
        expected = tuple(size) + tuple(self.shape[spatial:])
        if tuple(data.shape) != expected or data.dtype != self.dtype:
            raise ImageReadError(
                f"{self.path!r}: {self.name} decoded region {tuple(origin)} + {tuple(size)} to "
                f"{data.shape} {data.dtype}, expected {expected} {self.dtype}"
            )
        return data

    def _read(self, origin: tuple, size: tuple) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        ellipses = sum(1 for item in key if item is Ellipsis)
        if ellipses > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if ellipses:
            at = next(k for k, item in enumerate(key) if item is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices: {self.name} image {self.path!r} is {self.ndim}-D, "
                             f"got {len(key)}")
        key = key + (slice(None),) * (self.ndim - len(key))
        spatial = self._spatial
        origin, size, residual = [], [], []
        for axis in range(spatial):
            start, stop, rest = _axis_key(key[axis], self.shape[axis], axis)
            origin.append(start)
            size.append(stop - start)
            residual.append(rest)
        data = self._region(tuple(origin), tuple(size))
        return data[tuple(residual) + tuple(key[spatial:])]

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype, copy=False)

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the file; reading afterwards is an ImageReadError. Closing twice is fine."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, shape={self.shape}, "
                f"dtype={self.dtype}{', closed' if self._closed else ''})")
