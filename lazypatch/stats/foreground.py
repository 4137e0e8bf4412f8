"""Foreground filtering: keep the grid patches that hold enough foreground.

``foreground_filter(store, patch_size, ...)`` computes the fraction of
foreground pixels of every grid patch, exactly, and writes one bit per patch
(kept or not) to a sidecar file next to the store. ``PatchDataset(store, ...,
filter=path)`` then serves only the kept patches through a
:class:`~lazypatch.index.FilteredIndex`, whose bitmap each worker
memory-maps (it is never pickled).

Each image is read once, in bands of whole rows of about 8 MiB (whole tiles),
channels first as the store keeps them, with bounded memory: patch sums
accumulate per cell of the grid (NOTE [patch sums]); gray values come from
integer channel sums (NOTE [gray from sums]). With Otsu's threshold, the
thumbnail of an image of more than 16 Mi pixels is read first, about 1/step
of the image (NOTE [reading the thumbnail]). The keep-bitmaps are the ones
the integral-image implementation before them computed, bit for bit
(tests/stats/test_foreground_speed.py keeps it as the oracle).

With ``source="tissue"`` no pixel is read: each image's low-resolution
tissue mask (stored by ``lazypatch build --tissue otsu``) gives every
patch's fraction exactly, as if upsampled to the image (NOTE [upsampled masks]).
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from ..errors import IntegrityError, ParameterError, ParameterTypeError, StoreFormatError
from ..grid import axis_tuple, check_edge
from ..index import FilteredIndex, PatchIndex
from ..store import ImageStore, sidecar
from ..store import format as fmt
from ..store.reading.gathers import page_aligned

__all__ = ["foreground_filter", "load_filter", "otsu_threshold", "patch_fractions", "upsampled_fractions"]

_BAND_BYTES = 8 << 20  # one band of pixels and what is computed from them (see _band_rows)
_THUMBNAIL_BLOCK = 16 << 20  # pixels per block of the thumbnail's row sampling (see _thumbnail_rows)
_THUMBNAIL_ROW_READS = 4  # a thumbnail of every 4th row or sparser is read row by row (see NOTE)
_KEPT_BYTES = 64 << 20  # the most values of one image kept for a dense thumbnail (see NOTE)
_THUMBNAIL_BATCH = 64  # thumbnail rows per batch read
_THUMBNAIL_SPAN = 64 << 20  # ... and the most bytes of image rows one batch spans (chunks it decodes)
_LUT_SIZES = 1 << 20  # the most distinct channel sums of the exact integer path
SOURCES = ("mask", "intensity", "tissue")  # where foreground_filter finds the foreground


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a sample of values (the cut that best splits two classes).

    >>> 10 < otsu_threshold(np.r_[np.full(100, 10.0), np.full(100, 200.0)]) < 200
    True
    """
    return _otsu(values, None, bins)


def _otsu(values, weights, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` each counted ``weights`` times (None: once).

    The same float for distinct values with their counts as for the values
    repeated: np.histogram bins each value alike, weighted or not.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    values = values[finite]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.int64).ravel()[finite]
    if values.size == 0 or values.min() == values.max():
        return float(values.min()) if values.size else 0.0
    counts, edges = np.histogram(values, bins=bins, weights=weights)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)[:-1].astype(np.float64)
    above = counts.sum() - below
    sum_below = np.cumsum(counts * centres)[:-1]
    sum_above = (counts * centres).sum() - sum_below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = below * above * (sum_below / below - sum_above / above) ** 2
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def _axis_origins(length: int, patch: int, stride: int, edge: str) -> np.ndarray:
    one = PatchIndex([(length,)], patch, stride, edge) if length >= patch or edge != "drop" else None
    if one is None:
        return np.zeros(0, np.int64)
    return one.locate(np.arange(len(one)))[1][:, 0]


# NOTE [patch sums]: the sum of a 0/1 image over every grid patch, fed band by band.
# Per axis, the patches' clipped starts and ends cut the axis into segments; the image into
# cells (a segment per axis). A band of rows adds, for each row segment it meets, its rows
# summed (one vectorized pass, on data still in the cache) and then reduced at the column
# bounds, into the cells. At the end a prefix sum over the cells and inclusion-exclusion at
# each patch's corners give every patch's exact integer sum. Memory: the cells, at most
# 2^ndim per patch, plus one band; rows that no patch covers are never read.
class _PatchSums:
    """Exact foreground counts of every grid patch of one image (NOTE [patch sums])."""

    def __init__(self, shape, patch_size, stride, edge):
        self.shape = tuple(int(v) for v in shape)
        self.volume = float(np.prod(patch_size))
        origins = [_axis_origins(length, p, s, edge)
                   for length, p, s in zip(self.shape, patch_size, stride)]
        self.empty = any(len(o) == 0 for o in origins)
        self.bounds, self.lo, self.hi = [], [], []
        for length, p, axis_origins in zip(self.shape, patch_size, origins):
            lo = np.clip(axis_origins, 0, length)  # parts of a patch outside the image count as background
            hi = np.clip(axis_origins + p, 0, length)
            bounds = np.unique(np.concatenate([lo, hi]))
            self.bounds.append(bounds)
            self.lo.append(np.searchsorted(bounds, lo))
            self.hi.append(np.searchsorted(bounds, hi))
        self.cells = np.zeros(tuple(max(len(b) - 1, 0) for b in self.bounds), np.int64)

    def row_runs(self) -> list:
        """(first row, stop row) of the runs of rows some patch covers, in order."""
        if self.empty or self.cells.size == 0:
            return []
        bounds, segments = self.bounds[0], len(self.bounds[0]) - 1
        depth = np.zeros(segments + 1, np.int64)
        np.add.at(depth, self.lo[0], 1)
        np.add.at(depth, self.hi[0], -1)
        covered = np.cumsum(depth)[:segments] > 0
        edges = np.flatnonzero(np.diff(np.r_[0, covered.astype(np.int8), 0]))
        return [(int(bounds[a]), int(bounds[b])) for a, b in zip(edges[::2], edges[1::2])]

    def add(self, first_row: int, values: np.ndarray) -> None:
        """Add a band: rows ``[first_row, first_row + len(values))`` of 0/1 values (or counts)."""
        if self.empty or self.cells.size == 0:
            return
        if values.dtype.kind == "b":
            total = np.int32  # a band has fewer than 2**31 rows
        elif values.dtype.kind in "iu":
            total = np.int64
        else:  # counts given as floats are truncated, as they always were
            values, total = values.astype(np.int64), np.int64
        bounds = self.bounds[0]
        stop = first_row + len(values)
        first = max(int(np.searchsorted(bounds, first_row, side="right")) - 1, 0)
        last = min(int(np.searchsorted(bounds, stop, side="left")), len(bounds) - 1)
        for segment in range(first, last):
            a = max(int(bounds[segment]), first_row) - first_row
            b = min(int(bounds[segment + 1]), stop) - first_row
            if b <= a:
                continue
            part = values[a:b].sum(axis=0, dtype=total)
            for axis, axis_bounds in enumerate(self.bounds[1:]):
                inside = [slice(None)] * part.ndim
                inside[axis] = slice(int(axis_bounds[0]), int(axis_bounds[-1]))
                part = np.add.reduceat(part[tuple(inside)], axis_bounds[:-1] - axis_bounds[0], axis=axis)
            self.cells[segment] += part

    def fractions(self) -> np.ndarray:
        """The foreground fraction of every patch, in C order over the grid."""
        if self.empty:
            return np.zeros(0)
        nd = len(self.shape)
        prefix = np.zeros(tuple(n + 1 for n in self.cells.shape), np.int64)
        prefix[(slice(1, None),) * nd] = self.cells
        for axis in range(nd):
            np.cumsum(prefix, axis=axis, out=prefix)
        total = 0
        for corner in range(1 << nd):  # inclusion-exclusion over the box corners
            index, sign = [], 1
            for axis in range(nd):
                take_hi = (corner >> axis) & 1
                points = self.hi[axis] if take_hi else self.lo[axis]
                sign *= 1 if take_hi else -1
                view = [1] * nd
                view[axis] = len(points)
                index.append(points.reshape(view))
            total = total + sign * prefix[tuple(index)]
        return (total / self.volume).reshape(-1)


def _bands(runs, rows: int):
    """(first row, stop row) of bands over ``runs``, cut at the multiples of ``rows``."""
    for start, stop in runs:
        r0 = start
        while r0 < stop:
            r1 = min((r0 // rows + 1) * rows, stop)
            yield r0, r1
            r0 = r1


def _band_rows(shape, bytes_per_pixel: int, tile=None) -> int:
    """Rows of a band of about _BAND_BYTES: a multiple of the tiles' rows, so that bands
    cut no tile (a compressed chunk would be decoded twice)."""
    rows = max(1, _BAND_BYTES // max(int(np.prod(shape[1:])) * bytes_per_pixel, 1))
    if tile:
        rows = max(tile[0], rows // tile[0] * tile[0])
    return rows


def patch_fractions(shape, patch_size, stride, edge, read_band) -> np.ndarray:
    """Foreground fraction of every grid patch of one image, in C order over the grid.

    ``read_band(r0, r1)`` returns rows ``[r0, r1)`` along the first axis as an
    array of 0/1 (or counts); parts of a patch outside the image count as
    background. Rows no patch covers are not asked for.

    >>> mask = np.zeros((4, 6), bool); mask[:2, :2] = True
    >>> patch_fractions(mask.shape, (2, 2), (2, 2), "drop", lambda r0, r1: mask[r0:r1]).tolist()
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    sums = _PatchSums(shape, patch_size, stride, edge)
    for r0, r1 in _bands(sums.row_runs(), _band_rows(sums.shape, 8)):
        values = np.asarray(read_band(r0, r1))
        if values.shape != (r1 - r0,) + sums.shape[1:]:
            raise ParameterError(f"read_band({r0}, {r1}) must return shape {(r1 - r0,) + sums.shape[1:]}, "
                                 f"got {values.shape}")
        sums.add(r0, values)
    return sums.fractions()


# -- from a tissue mask -----------------------------------------------------------------------
# NOTE [upsampled masks]: a low-resolution (h, w) mask covers an (H, W) image, pixel (y, x)
# in cell (y * h // H, x * w // W). A box's sum of the upsampled mask is R @ mask @ C.T, where
# R[p, i] counts the rows of box p that fall in mask row i (C the same for columns). Neither
# the full-resolution mask nor R is made: cell i holds pixels [b_i, b_i+1), b_i = ceil(i * H / h),
# so with G(Y) = sum over pixels y < Y of mask[cell(y)] = (prefix of cell sums weighted by
# cell sizes) + (Y - b_cell(Y)) * mask[cell(Y)], row p of R @ mask is G(hi_p) - G(lo_p).
# Exact integers, O(h * w) per axis pass plus O(1) per box; masks larger than their image
# (cells without pixels) work alike.
_UPSAMPLE_BAND_CELLS = 1 << 20  # mask cells per band of the first (column) pass


def _upsampled_box_sums(values: np.ndarray, length: int, lo: np.ndarray, hi: np.ndarray, axis: int):
    """Sums of ``values`` nearest-upsampled along ``axis`` to ``length`` pixels, over the boxes
    ``[lo, hi)`` of that axis (NOTE [upsampled masks]); int64, the axis replaced by the boxes."""
    values = np.moveaxis(np.asarray(values, dtype=np.int64), axis, 0)
    cells = values.shape[0]
    bounds = -(-np.arange(cells + 1, dtype=np.int64) * length // cells)  # ceil(i * length / cells)
    rest = (1,) * (values.ndim - 1)
    prefix = np.zeros((cells + 1,) + values.shape[1:], np.int64)
    np.cumsum(values * np.diff(bounds).reshape((-1,) + rest), axis=0, out=prefix[1:])
    padded = np.concatenate([values, np.zeros((1,) + values.shape[1:], np.int64)])

    def below(points):  # G(points): the upsampled sum over pixels [0, points)
        cell = np.minimum(np.searchsorted(bounds, points, side="right") - 1, cells)
        return prefix[cell] + (points - bounds[cell]).reshape((-1,) + rest) * padded[cell]

    return np.moveaxis(below(hi) - below(lo), 0, axis)


def upsampled_fractions(mask, shape, patch_size, stride=None, edge: str = "drop") -> np.ndarray:
    """The fraction of every grid patch of an image that a low-resolution mask covers.

    The (h, w) ``mask`` is nearest-upsampled over the whole (H, W) image: pixel
    (y, x) takes cell ``(y * h // H, x * w // W)``. A patch's fraction is the mean
    of the upsampled mask over its pixels, parts outside the image counting as
    background, computed exactly without making the full-resolution mask (NOTE
    [upsampled masks]).

    Parameters
    ----------
    mask : array-like (h, w)
        0/1 or bool, any size of at least one cell per axis.
    shape : (H, W)
        The image's spatial shape.
    patch_size, stride, edge
        The grid, as :class:`lazypatch.PatchIndex` takes it.

    Returns
    -------
    numpy.ndarray
        float64, one fraction per patch in grid order (C order over the grid);
        empty when the patch fits nowhere (``edge="drop"``).

    Raises
    ------
    ParameterError, ParameterTypeError
        A mask that is not 2-D, a shape that is not two positive integers, a bad grid.

    Examples
    --------
    >>> mask = np.array([[1, 0], [0, 0]], bool)  # 2 x 2 cells over a 4 x 6 image
    >>> upsampled_fractions(mask, (4, 6), (2, 4), stride=2).tolist()
    [0.75, 0.25, 0.0, 0.0]
    >>> upsampled_fractions(mask, (4, 6), (4, 6)).tolist()  # the whole image
    [0.25]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or min(mask.shape) < 1 or mask.dtype.kind not in "biu":
        raise ParameterError(f"mask must be a 2-D 0/1 array with at least one cell per axis, got "
                             f"shape {mask.shape} {mask.dtype}")
    height, width = axis_tuple(shape, 2, "shape")
    patch_size = axis_tuple(patch_size, 2, "patch_size")
    stride = patch_size if stride is None else axis_tuple(stride, 2, "stride")
    check_edge(edge)
    bounds = []
    for length, patch, step in zip((height, width), patch_size, stride):
        origins = _axis_origins(length, patch, step, edge)
        bounds.append((np.clip(origins, 0, length), np.clip(origins + patch, 0, length)))
    (row_lo, row_hi), (col_lo, col_hi) = bounds
    if len(row_lo) == 0 or len(col_lo) == 0:  # the patch fits in no place (edge="drop")
        return np.zeros(0)
    rows = max(1, _UPSAMPLE_BAND_CELLS // mask.shape[1])
    columns = np.empty((mask.shape[0], len(col_lo)), np.int64)
    for r0 in range(0, mask.shape[0], rows):
        columns[r0:r0 + rows] = _upsampled_box_sums(mask[r0:r0 + rows], width, col_lo, col_hi, axis=1)
    sums = _upsampled_box_sums(columns, height, row_lo, row_hi, axis=0)
    return (sums / float(patch_size[0] * patch_size[1])).reshape(-1)


# -- from intensity ------------------------------------------------------------------------
# NOTE [gray from sums]: a pixel's gray value is the float32 mean of its channels, and it is
# foreground when that is below (darker=True) or above the threshold. For integer pixels of
# at most 16 bits the float32 channel sum is exact, so the gray value is a function of the
# integer channel sum s, monotone in s: the rule "gray < threshold" is "s < cut" for one
# integer cut, found once by evaluating the very same float32 expression on every possible
# sum. A band then costs an integer add per channel and one comparison instead of a float32
# copy and mean, with the same result bit for bit. Other dtypes take the float32 mean.
class _Intensity:
    """How a band of pixels becomes values (channel sums or gray) and then foreground."""

    def __init__(self, dtype, channels: int, darker: bool):
        self.darker = darker
        self.channels = channels
        dtype = np.dtype(dtype)
        self.sum_dtype = None
        if dtype.kind in "iu" and dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            low, high = self.channels * int(info.min), self.channels * int(info.max)
            if high - low < _LUT_SIZES and max(-low, high) < (1 << 24):
                self.low = low
                self.sum_dtype = np.dtype(np.uint16 if low >= 0 and high <= 0xFFFF else np.int32)
                remaining = np.arange(high - low + 1, dtype=np.int64)
                pixels = np.empty((len(remaining), self.channels), dtype)
                span = int(info.max) - int(info.min)
                for channel in range(self.channels):  # any pixel with the sum: float32 sums are exact
                    take = np.minimum(remaining, span)
                    pixels[:, channel] = int(info.min) + take
                    remaining -= take
                self.gray_of_sum = pixels.astype(np.float32).mean(axis=-1)
        self.value_dtype = np.dtype(np.float32) if self.sum_dtype is None else self.sum_dtype
        self.bytes_per_pixel = self.channels * dtype.itemsize + (4 if self.sum_dtype is None else 3)

    def values(self, planar: np.ndarray, out=None) -> np.ndarray:
        """Channel sums (the integer path) or float32 gray values of a (C, ...) band."""
        if self.sum_dtype is None:  # channels last and contiguous, as the mean was always taken
            gray = np.moveaxis(planar, 0, -1).astype(np.float32, order="C").mean(axis=-1)
            if out is None:
                return gray
            out[...] = gray
            return out
        if out is None:
            out = np.empty(planar.shape[1:], self.sum_dtype)
        np.copyto(out, planar[0])
        for channel in range(1, self.channels):
            np.add(out, planar[channel], out=out)
        return out

    def gray(self, values: np.ndarray) -> np.ndarray:
        """The gray values (float32) of values from :meth:`values`."""
        if self.sum_dtype is None:
            return values
        return self.gray_of_sum[values.astype(np.int64) - self.low]

    def histogram(self, values: np.ndarray):
        """(gray values, counts) of values from :meth:`values`: distinct ones, or all once."""
        if self.sum_dtype is None:
            return values, None
        counts = np.bincount((values.astype(np.int64) - self.low).ravel(), minlength=len(self.gray_of_sum))
        present = np.flatnonzero(counts)
        return self.gray_of_sum[present], counts[present]

    def rule(self, threshold):
        """A function of values -> foreground (bool), for one threshold (NOTE [gray from sums])."""
        darker = self.darker
        if self.sum_dtype is None:
            return (lambda values: values < threshold) if darker else (lambda values: values > threshold)
        keep = self.gray_of_sum < threshold if darker else self.gray_of_sum > threshold
        count = int(np.count_nonzero(keep))
        if count in (0, len(keep)):
            value = bool(count)
            return lambda values: np.full(values.shape, value)
        if darker and keep[:count].all():
            cut = self.low + count
            return lambda values: values < cut
        if not darker and keep[len(keep) - count:].all():
            cut = self.low + len(keep) - count
            return lambda values: values >= cut
        return lambda values: keep[values.astype(np.int64) - self.low]  # (not monotone: never seen)


def _thumbnail_rows(shape):
    """(step, rows) of the thumbnail Otsu's threshold is computed from.

    Every ``step``-th pixel along each axis (about 10^6 pixels), the rows
    counted from the start of each block of ``_THUMBNAIL_BLOCK`` pixels: the
    sample of the first implementation (which read the image in such blocks),
    kept so that the threshold, and the filter, stay the same.
    """
    step = max(1, int((np.prod(shape) / 1e6) ** (1 / len(shape))))
    block = max(1, _THUMBNAIL_BLOCK // max(int(np.prod(shape[1:])), 1))
    rows = [np.arange(r0, min(r0 + block, shape[0]), step) for r0 in range(0, shape[0], block)]
    return step, np.concatenate(rows)


# NOTE [reading the thumbnail]: Otsu's threshold needs the thumbnail (every step-th pixel per
# axis, about 10^6 pixels: see _thumbnail_rows) before any pixel is classified. A dense one
# (step < _THUMBNAIL_ROW_READS) is most of the image: the image's values (channel sums or gray)
# are kept from a single read, at most _KEPT_BYTES (an image up to 16 Mi 8-bit pixels, 32 MB of
# uint16 sums), the thumbnail is taken from them, and the patches are summed in memory; above
# that bound the thumbnail's rows are read in bands, then the image again. A sparse one is read
# first, one-row boxes in batches through the store's batch reader, then the image: a row of
# 64-pixel tiles read alone costs about 4 rows' worth of whole tiles, so the thumbnail costs
# about 4/step of a read (8000 x 8000 RGB, step 8: 0.02 s before the 0.11 s of the image).
def _read_thumbnail(store, image_id, shape, rows, step, intensity):
    """The values (channel sums or gray) of the thumbnail's pixels (NOTE [reading the thumbnail])."""
    every = (slice(None),) * 2 + (slice(None, None, step),) * (len(shape) - 1)  # of (C, rows, ...)
    samples = []
    if step < _THUMBNAIL_ROW_READS:
        band = _Buffer(store.dtype)
        per_band = _band_rows(shape, store.channels * store.dtype.itemsize, store.tile)
        for r0, r1 in _bands([(int(rows[0]), int(rows[-1]) + 1)], per_band):
            chosen = rows[(rows >= r0) & (rows < r1)] - r0
            planar = _read_band(store, image_id, shape, r0, r1, band)
            samples.append(intensity.values(planar[:, chosen][every]).ravel())
        return np.concatenate(samples)
    row_bytes = int(np.prod(shape[1:])) * store.channels * store.dtype.itemsize
    first = 0
    while first < len(rows):
        last = first + 1
        while (last < len(rows) and last - first < _THUMBNAIL_BATCH
               and (rows[last] - rows[first] + 1) * row_bytes <= _THUMBNAIL_SPAN):
            last += 1
        batch = rows[first:last]
        origins = np.zeros((len(batch), len(shape)), np.int64)
        origins[:, 0] = batch
        planar = page_aligned((len(batch), store.channels, 1) + shape[1:], store.dtype)
        store.read_batch_unchecked(np.full(len(batch), image_id, np.int64), origins, (1,) + shape[1:],
                                   planar, None, 0, 0)
        planar = np.moveaxis(planar[:, :, 0], 1, 0)  # (C, rows, ...)
        samples.append(intensity.values(planar[every]).ravel())
        first = last
    return np.concatenate(samples)


def _read_band(store, image_id, shape, r0, r1, buffer, mask=False):
    """Rows ``[r0, r1)`` of an image, channels first (C, rows, ...), or of its mask.

    Pixels come channel-planar, as the store keeps them: no channels-last copy.
    """
    origin, size = (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:]
    if mask:
        out = buffer(size)
        store.read_box_unchecked(image_id, origin, size, None, out, 0, 0)
    else:
        out = buffer((store.channels,) + size)
        store.read_box_unchecked(image_id, origin, size, out, None, 0, 0)
    return out


class _Buffer:
    """One reusable page-aligned array per shape (every band but the last has the same)."""

    def __init__(self, dtype):
        self.dtype, self.array = dtype, None

    def __call__(self, shape):
        if self.array is None or self.array.shape != shape:
            self.array = page_aligned(shape, self.dtype)
        return self.array


def _intensity_sums(store, image_id, sums, intensity, threshold, bar):
    """Fill ``sums`` from the pixels; the threshold used."""
    shape = sums.shape
    rows = _band_rows(shape, intensity.bytes_per_pixel, store.tile)
    band = _Buffer(store.dtype)
    if threshold == "otsu":
        step, sample_rows = _thumbnail_rows(shape)
        dense = step < _THUMBNAIL_ROW_READS
        if dense and int(np.prod(shape)) * intensity.value_dtype.itemsize <= _KEPT_BYTES:
            kept = np.empty(shape, intensity.value_dtype)  # See NOTE [reading the thumbnail]
            for r0, r1 in _bands([(0, shape[0])], rows):
                intensity.values(_read_band(store, image_id, shape, r0, r1, band), out=kept[r0:r1])
                bar.update(r1 - r0)
            every = (slice(None, None, step),) * (len(shape) - 1)
            threshold = _otsu(*intensity.histogram(kept[(sample_rows,) + every]))
            foreground = intensity.rule(threshold)
            for r0, r1 in _bands(sums.row_runs(), rows):
                sums.add(r0, foreground(kept[r0:r1]))
            return threshold
        threshold = _otsu(*intensity.histogram(_read_thumbnail(store, image_id, shape, sample_rows, step,
                                                                intensity)))
    foreground = intensity.rule(threshold)
    values = _Buffer(intensity.sum_dtype)
    for r0, r1 in _bands(sums.row_runs(), rows):
        pixels = _read_band(store, image_id, shape, r0, r1, band)
        out = values(pixels.shape[1:]) if intensity.sum_dtype is not None else None
        sums.add(r0, foreground(intensity.values(pixels, out=out)))
        bar.update(r1 - r0)
    return threshold


def _mask_sums(store, image_id, sums, classes, bar) -> None:
    shape = sums.shape
    band = _Buffer(store.mask_dtype)
    for r0, r1 in _bands(sums.row_runs(), _band_rows(shape, store.mask_dtype.itemsize + 1, store.tile)):
        mask = _read_band(store, image_id, shape, r0, r1, band, mask=True)
        sums.add(r0, np.isin(mask, classes) if classes is not None else mask != 0)
        bar.update(r1 - r0)


def foreground_filter(store, patch_size, stride=None, edge: str = "drop", *, threshold: float = 0.5,
                      source: str = "mask", classes=None, intensity="otsu", darker: bool = True,
                      path=None, name: str | None = None, progress: bool | None = None) -> str:
    """Compute which grid patches hold at least ``threshold`` foreground; write a sidecar.

    Parameters
    ----------
    store : ImageStore or path
    patch_size, stride, edge
        The grid, as the PatchDataset that will use the filter.
    threshold : float in [0, 1]
        Minimum fraction of foreground pixels for a patch to be kept; the
        fractions are exact (every pixel of every patch counts).
    source : {"mask", "intensity", "tissue"}
        Foreground from the masks (non-zero, or in ``classes``), or from the
        pixels' mean over channels against ``intensity``: a number, or
        ``"otsu"`` (Otsu's threshold of a thumbnail of each image, every k-th
        pixel per axis, about 10^6 pixels); ``darker=True`` (tissue on a
        bright slide) keeps pixels below it. Or from the tissue masks stored
        with the images (``lazypatch build --tissue otsu``, ``write_store(...,
        tissue=...)``): a patch's fraction is the mean of its image's mask
        nearest-upsampled over the image (:func:`upsampled_fractions`); the
        pixels are not read.
    classes : sequence of int, optional
        With ``source="mask"``: the labels that count as foreground (default:
        every non-zero label).
    intensity : "otsu" or number
        With ``source="intensity"``: the threshold, or Otsu's per image.
    darker : bool
        With ``source="intensity"``: foreground is below the threshold
        (``True``) or above it (``False``, ``lazypatch index --brighter``).
    path : str, optional
        Sidecar file; default ``<store>.filter-<name>.h5``.
    name : str, optional
        The ``<name>`` of the default path; default made of the grid, the
        source and the threshold.
    progress : bool, optional
        Show a progress bar (rows read); by default when stderr is a terminal.

    Returns
    -------
    str
        The sidecar's path, for ``PatchDataset(..., filter=path)``, which then
        serves the kept patches through a :class:`lazypatch.FilteredIndex`.

    Raises
    ------
    ParameterError, ParameterTypeError
        A bad grid, ``threshold`` outside [0, 1], an unknown ``source``,
        ``source="mask"`` on a store without masks, ``source="tissue"`` on a
        store without tissue masks or with an image (that has patches) without
        one (filtering it otherwise would keep all or none of its patches
        silently), a bad ``intensity`` or ``progress``. Nothing is written then.

    Notes
    -----
    The sidecar holds one bit per grid patch and is bound to the store's
    content (refused for another store). ``lazypatch index STORE --foreground
    --patch 64 --threshold 0.5`` does the same from the command line.

    Each image is read once, in bands of whole rows, rows no patch covers
    skipped (NOTE [patch sums], NOTE [gray from sums]): an 8000 x 8000 or
    30000 x 30000 RGB slide on 64-pixel tiles takes about 0.4x the time of
    :meth:`ImageStore.verify` (``python tests/benchmarks/foreground.py``).
    With ``intensity="otsu"`` an image of more than 16 Mi pixels first has
    its thumbnail's rows read (NOTE [reading the thumbnail]); on a
    compressed store that decodes every chunk twice (1.3-1.4x verify with
    gzip): give ``intensity`` a number, e.g. the ``intensity_threshold`` an
    earlier filter's sidecar holds, for one pass (0.7x).

    Examples
    --------
    >>> import tempfile, h5py
    >>> from lazypatch import write_store
    >>> image = np.full((64, 64, 3), 230, np.uint8); image[:32, :32] = 40  # tissue, top left
    >>> store = write_store(os.path.join(tempfile.mkdtemp(), "s.h5"), [image], progress=False)
    >>> path = foreground_filter(store, 32, source="intensity", progress=False)
    >>> with h5py.File(path) as f: np.unpackbits(f["keep"][()])[:4].tolist()
    [1, 0, 0, 0]
    """
    store = store if isinstance(store, ImageStore) else ImageStore(store)
    check_edge(edge)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise ParameterError(f"threshold must be a fraction in [0, 1], got {threshold!r}")
    if source not in SOURCES:
        raise ParameterError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "mask" and not store.has_masks:
        raise ParameterError(f"source='mask' needs a store with masks; {store.path!r} has none")
    if source == "tissue" and not store.has_tissue:
        raise ParameterError(
            f"source='tissue' needs a store with tissue masks; {store.path!r} has none: build it with "
            "`lazypatch build ... --tissue otsu` (or write_store(..., tissue=...))"
        )
    if source == "intensity" and not (intensity == "otsu" or isinstance(intensity, (int, float))):
        raise ParameterError(f"intensity must be 'otsu' or a number, got {intensity!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ParameterTypeError(f"progress must be True, False or None, got {progress!r}")
    from tqdm import tqdm

    index = PatchIndex(store.shapes, patch_size, stride, edge)
    keep = np.zeros(len(index), bool)
    thresholds = np.full(len(store), np.nan)
    rule = _Intensity(store.dtype, store.channels, darker) if source == "intensity" else None
    wanted = None if classes is None else np.asarray(classes)
    show = progress if progress is not None else sys.stderr.isatty()
    with tqdm(total=int(store.shapes[index.counts > 0, 0].sum()), unit="row", desc="lazypatch foreground",
              disable=not show, file=sys.stderr, leave=False) as bar:
        for image_id in range(len(store)):
            if index.counts[image_id] == 0:
                continue
            images = index.image_range(image_id)
            if source == "tissue":
                keep[images.start:images.stop] = _tissue_fractions(store, image_id, index, edge) >= threshold
                bar.update(int(store.shapes[image_id, 0]))
                continue
            sums = _PatchSums(store.shapes[image_id], index.patch_size, index.stride, edge)
            done = bar.n
            if source == "mask":
                _mask_sums(store, image_id, sums, wanted, bar)
            else:
                thresholds[image_id] = _intensity_sums(store, image_id, sums, rule, intensity, bar)
            bar.update(done + sums.shape[0] - bar.n)  # rows skipped count as done
            keep[images.start:images.stop] = sums.fractions() >= threshold
    if name is None:
        name = "x".join(map(str, index.patch_size)) + f"-s{'x'.join(map(str, index.stride))}-{edge}-{source}-{threshold:g}"
    path = os.fspath(path) if path is not None else f"{store.path}.filter-{name}.h5"
    sidecar.write(path, "filter", store, {"keep": np.packbits(keep), "intensity_threshold": thresholds},
                   {"patch_size": index.patch_size, "stride": index.stride, "edge": edge,
                    "threshold": float(threshold), "source": source, "patches": len(index),
                    "kept": int(keep.sum())})
    return path


def _tissue_fractions(store, image_id: int, index: PatchIndex, edge: str) -> np.ndarray:
    """The tissue fraction of every grid patch of one image, from its stored tissue mask."""
    mask = store.tissue(image_id)
    if mask is None:
        name = store.names[image_id]
        raise ParameterError(
            f"source='tissue': image {image_id} ({name!r}) of {store.path!r} has no tissue mask, so "
            "its patches can be neither kept nor dropped; build every image with --tissue otsu, "
            "or filter with source='intensity'"
        )
    return upsampled_fractions(mask, store.shapes[image_id], index.patch_size, index.stride, edge)


def load_filter(store, path, base: PatchIndex) -> FilteredIndex:
    """The FilteredIndex of a filter sidecar, checked against the store and the grid."""
    with sidecar.open_checked(os.fspath(path), "filter", store) as f, \
            fmt.damage_is_format_error(os.fspath(path), "the filter"):
        grid = (tuple(int(v) for v in f.attrs["patch_size"]), tuple(int(v) for v in f.attrs["stride"]),
                fmt.text_attribute(f.attrs["edge"]))
        count = int(f["keep"].size)
        stored = f["keep"].attrs.get("crc32")
    if grid != (base.patch_size, base.stride, base.edge):
        raise StoreFormatError(
            f"filter {os.fspath(path)!r} was computed for patch_size={grid[0]}, stride={grid[1]}, "
            f"edge={grid[2]!r}; the dataset uses {base.patch_size}, {base.stride}, {base.edge!r}"
        )
    source = functools.partial(sidecar.mapped, os.fspath(path), "keep", np.uint8, count)
    keep = source()
    damage = fmt.crc_damage("the kept-patch bitmap", stored, keep)
    if damage is not None:
        raise IntegrityError(f"{os.fspath(path)!r} is damaged: {damage}")
    return FilteredIndex(base, keep, _source=source)
