"""Resampling at ingest: ``--mpp`` and ``--spacing`` as an array-like the writer copies band by band.

``Resampled(source, out_shape, order)`` is the image ``source`` (any array-like
with spatial axes first and optional channels last: a format reader, a numpy
array) on a grid of ``out_shape`` points spanning the same extent. It reads
only the source region an output region needs, plus a halo, so a whole slide
is resampled tile by tile in bounded memory, and no seam shows between tiles:

NOTE [tile-wise resampling]: the result is the one of scikit-image's
``resize(image, out_shape, order=1, anti_aliasing=True, preserve_range=True)``
(rounded to the source's integer dtype), computed piece by piece. That
function (a) smooths each downsampled axis with a Gaussian of sigma
``(f - 1) / 2``, ``f = in / out``, truncated at 4 sigma, reflecting at the
image border (ndimage's ``mirror``), then (b) interpolates linearly at the
source coordinate ``(o + 0.5) * f - 0.5`` of output index ``o`` (the pixel
areas of both grids are aligned: ``grid_mode``). A piece of the output needs
the source points its interpolation touches, widened by the Gaussian's
radius: on a side where that region stops inside the image, the smoothed
values it uses lie at least a radius from the cut, so they equal the whole
image's; on a side where it reaches the border, the reflection is the whole
image's. Both steps are separable, and the interpolation is written per axis
(two ``take`` and a weighted sum), which equals ``ndimage.zoom(order=1)``.
Arithmetic is float32: results agree with scikit-image's float64 within one
unit of an integer dtype (tested, tile borders included).

``order=0`` is nearest neighbour for label masks: output index ``o`` takes
source index ``floor((o + 0.5) * f)``, the source pixel that holds the output
pixel's centre (integer arithmetic, never a value between labels).

Output sizes come from :func:`output_shape`: ``round(L * s / X)`` per axis,
and the achieved spacing is ``s * L / out``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, ParameterTypeError
from ..grid import is_int

__all__ = ["Resampled", "output_shape", "resample", "achieved_spacing"]

_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default, as scikit-image calls it
_PIECE_BYTES = 32 << 20  # float32 bytes of the source region one piece smooths


def _ndimage():
    try:
        from scipy import ndimage
    except ImportError as exc:
        raise ImportError('resampling (--mpp, --spacing) needs scipy: pip install "lazypatch[wsi]" '
                          '(or lazypatch[tiff], lazypatch[medical], or pip install scipy)') from exc
    return ndimage


def output_shape(shape, spacing, target) -> tuple:
    """The grid size ``round(L * s / X)`` per axis (at least 1) for a target spacing.

    >>> output_shape((1000, 801), (0.25, 0.25), 0.5)
    (500, 400)
    >>> output_shape((40, 512, 512), (2.5, 0.7, 0.7), (1, 1, 1))
    (100, 358, 358)
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    target = (float(target),) * len(shape) if np.isscalar(target) else tuple(float(t) for t in target)
    if not (len(spacing) == len(target) == len(shape)):
        raise ParameterError(f"spacing {spacing} and target {target} must have one value per axis of {shape}")
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def achieved_spacing(shape, spacing, out_shape) -> tuple:
    """The spacing of the resampled grid: ``s * L / out`` per axis.

    >>> achieved_spacing((1000, 801), (0.25, 0.25), (500, 400))
    (0.5, 0.500625)
    """
    return tuple(float(s) * int(n) / int(m) for s, n, m in zip(spacing, shape, out_shape))


class _Axis:
    """The arithmetic of one spatial axis: its factor, Gaussian radius and source ranges."""

    def __init__(self, length: int, out: int, order: int):
        self.length, self.out, self.order = length, out, order
        self.factor = length / out
        self.sigma = max(0.0, (self.factor - 1) / 2) if order else 0.0
        self.radius = int(_TRUNCATE * self.sigma + 0.5) if self.sigma > 0 else 0

    def coordinates(self, start: int, stop: int) -> np.ndarray:
        return (np.arange(start, stop, dtype=np.float64) + 0.5) * self.factor - 0.5

    def nearest(self, start: int, stop: int) -> np.ndarray:
        o = np.arange(start, stop, dtype=np.int64)
        return np.minimum(((2 * o + 1) * self.length) // (2 * self.out), self.length - 1)

    def source_range(self, start: int, stop: int) -> tuple:
        """[lo, hi) of the source an output range [start, stop) needs (with the halo)."""
        if self.order == 0:
            index = self.nearest(start, stop)
            return int(index[0]), int(index[-1]) + 1
        coords = self.coordinates(start, stop)
        lo = int(np.floor(coords[0])) - self.radius - 1
        hi = int(np.floor(coords[-1])) + 2 + self.radius + 1
        return max(0, lo), min(self.length, hi)


def _mirror(index: np.ndarray, length: int) -> np.ndarray:
    """ndimage's ``mirror`` boundary for the at most one step outside [0, length) linear
    interpolation takes: -1 -> 1, length -> length - 2."""
    if length == 1:
        return np.zeros_like(index)
    index = np.where(index < 0, -index, index)
    return np.where(index >= length, 2 * (length - 1) - index, index)


class Resampled:
    """``source`` resampled to ``out_shape``, read region by region (NOTE [tile-wise resampling]).

    Parameters
    ----------
    source : array-like
        Spatial axes first, optional channel axes after them; sliced with a
        tuple of slices (format readers, numpy arrays, h5py datasets).
    out_shape : sequence of int
        The new size of each spatial axis.
    order : {1, 0}
        1: linear with anti-aliasing (images); 0: nearest (masks).

    Examples
    --------
    >>> image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    >>> small = Resampled(image, (4, 4))
    >>> small.shape, small.dtype
    ((4, 4), dtype('uint8'))
    >>> Resampled(image, (4, 4), order=0)[:2].tolist()
    [[9, 11, 13, 15], [25, 27, 29, 31]]
    """

    def __init__(self, source, out_shape, order: int = 1):
        if order not in (0, 1) or isinstance(order, bool):
            raise ParameterError(f"order must be 0 (nearest) or 1 (linear), got {order!r}")
        out_shape = tuple(out_shape)
        if not out_shape or not all(is_int(n) and n >= 1 for n in out_shape):
            raise ParameterTypeError(f"out_shape must be positive integers, got {out_shape!r}")
        shape = tuple(int(n) for n in source.shape)
        spatial = len(out_shape)
        if spatial > len(shape):
            raise ParameterError(f"out_shape {out_shape} has more axes than the image {shape}")
        self.source, self.order, self.spatial_ndim = source, order, spatial
        self.source_shape = shape[:spatial]
        self.shape = tuple(int(n) for n in out_shape) + shape[spatial:]
        self.dtype = np.dtype(source.dtype)
        if order and self.dtype.kind not in "uif":
            raise ParameterError(f"linear resampling takes integer or float images, got {self.dtype}; "
                                 "masks are resampled with order=0")
        self.ndim = len(self.shape)
        self.path = getattr(source, "path", None)
        self._axes = [_Axis(n, m, order) for n, m in zip(self.source_shape, out_shape)]
        self._channels = int(np.prod(shape[spatial:], dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(item is Ellipsis for item in key):
            at = next(k for k, item in enumerate(key) if item is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        origin, size, residual = [], [], []
        for axis in range(self.spatial_ndim):
            item = key[axis]
            if isinstance(item, slice) and item.step in (None, 1):
                start, stop, _ = item.indices(self.shape[axis])
                stop = max(start, stop)
                origin.append(start)
                size.append(stop - start)
                residual.append(slice(None))
            else:  # anything else: the whole axis, then numpy indexes it
                origin.append(0)
                size.append(self.shape[axis])
                residual.append(item)
        data = self.read_region(origin, size)
        return data[tuple(residual) + tuple(key[self.spatial_ndim:])]

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype, copy=False)

    def read_region(self, origin, size) -> np.ndarray:
        """The output pixels of ``[origin, origin + size)`` on the spatial axes, all channels."""
        origin, size = tuple(int(v) for v in origin), tuple(int(v) for v in size)
        out = np.empty(size + self.shape[self.spatial_ndim:], self.dtype)
        if min(size, default=1) == 0:
            return out
        for piece in self._pieces(origin, size):
            start = tuple(p - o for p, o in zip(piece[0], origin))
            where = tuple(slice(s, s + n) for s, n in zip(start, piece[1]))
            out[where] = self._piece(*piece)
        return out

    def _pieces(self, origin, size):
        """Split an output box so each piece's source region holds about _PIECE_BYTES."""
        counts = [1] * len(size)
        while True:
            steps = [-(-n // c) for n, c in zip(size, counts)]
            region = 4 * self._channels
            for axis, step in zip(self._axes, steps):
                region *= min(axis.length, int(step * axis.factor) + 2 * axis.radius + 4)
            if region <= _PIECE_BYTES or all(s == 1 for s in steps):
                break
            # the first axis first: sources read in bands of rows (or z slabs) read forward,
            # which a gzip-compressed NIfTI needs (NOTE [streaming .nii.gz] of its reader)
            axis = next(a for a, step in enumerate(steps) if step > 1)
            counts[axis] = min(size[axis], counts[axis] * 2)
        ranges = [[(o + k * s, min(o + n, o + (k + 1) * s)) for k in range(-(-n // s))]
                  for o, n, s in zip(origin, size, steps)]
        for combo in np.ndindex(*[len(r) for r in ranges]):
            bounds = [ranges[a][k] for a, k in enumerate(combo)]
            yield tuple(b[0] for b in bounds), tuple(b[1] - b[0] for b in bounds)

    def _piece(self, origin, size) -> np.ndarray:
        spans = [axis.source_range(o, o + n) for axis, o, n in zip(self._axes, origin, size)]
        region = np.asarray(self.source[tuple(slice(lo, hi) for lo, hi in spans)])
        if self.order == 0:
            for a, (axis, (lo, _)) in enumerate(zip(self._axes, spans)):
                region = np.take(region, axis.nearest(origin[a], origin[a] + size[a]) - lo, axis=a)
            return region
        data = region.astype(np.float32)
        sigmas = [axis.sigma for axis in self._axes] + [0.0] * (data.ndim - self.spatial_ndim)
        if any(sigmas):
            data = self._smooth(data, sigmas, spans)
        for a, (axis, (lo, hi)) in enumerate(zip(self._axes, spans)):
            coords = axis.coordinates(origin[a], origin[a] + size[a])
            below = np.floor(coords)
            weight = (coords - below).astype(np.float32)
            i0 = _mirror(below.astype(np.int64), axis.length) - lo
            i1 = _mirror(below.astype(np.int64) + 1, axis.length) - lo
            shape = [1] * data.ndim
            shape[a] = -1
            weight = weight.reshape(shape)
            data = np.take(data, i0, axis=a) * (1 - weight) + np.take(data, i1, axis=a) * weight
        return _cast(data, self.dtype)

    def _smooth(self, data, sigmas, spans) -> np.ndarray:
        """The Gaussian of scikit-image's anti-aliasing on a source region (NOTE [tile-wise
        resampling]): where the region reaches the image border, ndimage's mirror there is the
        whole image's (the region holds at least a radius past it); where it stops inside,
        the values within a radius of the cut are wrong and never used."""
        return _ndimage().gaussian_filter(data, sigmas, mode="mirror", truncate=_TRUNCATE)


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    return data.astype(dtype, copy=False)


def resample(array, out_shape, order: int = 1) -> np.ndarray:
    """A whole array resampled to ``out_shape`` (spatial axes first, channels after them).

    >>> resample(np.ones((6, 6, 3), np.float32), (3, 3)).shape
    (3, 3, 3)
    """
    return Resampled(array, out_shape, order)[...]
