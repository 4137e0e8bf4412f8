"""The patch index: a flat patch number <-> (image, origin), in O(images) memory.

Per image the grid yields ``counts[i]`` patches; ``offsets`` is their
cumulative sum. A flat number maps to its image by binary search
(``np.searchsorted(offsets, flat, side="right")``) and to its origin by integer
arithmetic within the image: no patch list is ever built, no loop runs over
images or patches. This module uses numpy only (no torch, no h5py).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from ._geometry import axis_tuple, check_edge, describe_shape, grid_counts, is_int
from .errors import ParameterError, ParameterTypeError, PatchIndexError

__all__ = ["PatchIndex"]

_INT32_MAX = np.iinfo(np.int32).max
_MAX_BUCKET_STEPS = 8  # NOTE [bucket search]: past this, one plain binary search is cheaper


def _compact(values: np.ndarray):
    """The smallest of uint16, int32 and int64 that holds these non-negative values."""
    largest = int(values.max()) if values.size else 0
    return np.uint16 if largest < 1 << 16 else np.int32 if largest <= _INT32_MAX else np.int64


class ImageSearch:
    """``np.searchsorted(bounds[1:], flat, side="right")``: the image owning each
    flat number, for image ``i`` owning ``[bounds[i], bounds[i + 1])``.

    NOTE [bucket search]: flat numbers are cut into buckets of 2^shift, the
    mean count rounded up to a power of two (so at most one bucket per image,
    4 bytes each); a table gives the image owning each bucket's first number,
    and a few vectorized halving steps cover the images a bucket spans (one
    step when images are as large as buckets). A plain binary search misses
    the caches on its last steps when the offsets outgrow them: at 10^6
    images, batches of 256 random numbers, 24 against 60 us (two-level search
    through every 64th offset) and 70 us (plain). With bucket spans too wide
    (many images without patches), the plain search is used.
    """

    def __init__(self, bounds: np.ndarray):
        self.offsets = bounds[1:]
        self.table = None
        images, total = len(self.offsets), int(bounds[-1])
        if images == 0 or total == 0:
            return
        shift = (-(-total // images) - 1).bit_length()
        starts = np.arange(((total - 1) >> shift) + 2, dtype=np.int64) << shift
        table = np.searchsorted(self.offsets, starts, side="right").astype(np.int32)
        steps = int(np.diff(table).max()).bit_length()
        if steps <= _MAX_BUCKET_STEPS:
            self.shift, self.steps, self.table = shift, steps, table

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        if self.table is None:
            return np.searchsorted(self.offsets, flat, side="right")
        offsets = self.offsets
        found = self.table.take(flat >> self.shift).astype(np.int64)
        step = 1 << self.steps >> 1
        while step > 1:  # count the offsets <= flat among the bucket's next ones
            # (a view from step - 1 on: clipped to the last offset, the total, which no number reaches)
            found += (offsets[step - 1:].take(found, mode="clip") <= flat) * step
            step >>= 1
        if step:
            found += offsets.take(found, mode="clip") <= flat
        return found

    @property
    def nbytes(self) -> int:
        return 0 if self.table is None else self.table.nbytes


def as_int_array(values, name: str) -> np.ndarray:
    """``values`` as an int64 array; bools, floats and objects are rejected."""
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        if array.size == 0 and array.dtype.kind == "f":
            return array.astype(np.int64)  # np.asarray([]) is float64
        raise ParameterTypeError(f"{name} must be integers, got an array of {array.dtype}")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ParameterError(f"{name} must fit in int64, got {array.max()}")
    return array.astype(np.int64, copy=False)


def _as_shapes(shapes) -> np.ndarray:
    try:
        array = np.asarray(shapes)
    except ValueError as exc:  # ragged nested sequences
        raise ParameterError(
            f"shapes must be a sequence of equal-length (spatial) shapes, got {shapes!r:.80}"
        ) from exc
    if array.ndim == 1 and array.size == 0:
        raise ParameterError("shapes must have one row per image and one column per axis, got []")
    if array.ndim != 2 or array.shape[1] < 1:
        raise ParameterError(
            f"shapes must be a 2-D array (images, spatial axes), got shape {array.shape}"
        )
    array = as_int_array(array, "shapes")
    if array.size and array.min() < 1:
        row = int(np.argwhere(array < 1)[0][0])
        raise ParameterError(
            f"shapes must be positive, got {tuple(array[row].tolist())} for image {row}"
        )
    return array


class PatchIndex:
    """Flat patch numbers over the grids of many images.

    Parameters
    ----------
    shapes : array-like of int, shape (n_images, ndim)
        Spatial shape of each image, axes in ``(z,) y, x`` order.
    patch_size : int or sequence of int
        Patch extent per axis (an int applies to every axis).
    stride : int or sequence of int, optional
        Step between origins per axis; defaults to ``patch_size``.
    edge : {"drop", "shift", "pad"}
        What to do at the high end of an axis (DESIGN.md section 3): drop
        partial patches, shift the last one back inside, or pad it.

    Raises
    ------
    ParameterError
        A non-positive or wrong-length ``patch_size``/``stride``, an unknown
        ``edge``, invalid ``shapes``, or a patch that fits in none of the images.
    ParameterTypeError
        A float, bool or other non-integer ``patch_size``/``stride``/``shapes``.

    Notes
    -----
    Memory is O(images): an int64 cumulative sum plus per-axis grid counts and
    shapes, stored as uint16 or int32 when they fit, and a search table of at
    most 4 bytes per image (NOTE [bucket search]): at most 20 bytes per 2-D and
    24 per 3-D image below 65,536 pixels an axis.

    Examples
    --------
    >>> index = PatchIndex([(4, 6), (2, 2)], patch_size=2)
    >>> index.counts.tolist(), len(index)
    ([6, 1], 7)
    >>> image_ids, origins = index.locate([0, 5, 6])
    >>> image_ids.tolist(), origins.tolist()
    ([0, 0, 1], [[0, 0], [2, 4], [0, 0]])
    >>> index.locate(-1)
    (1, (0, 0))
    >>> index.flat_index(0, (2, 4))
    5
    """

    def __init__(self, shapes, patch_size, stride=None, edge: str = "drop"):
        shapes = _as_shapes(shapes)
        ndim = shapes.shape[1]
        self.patch_size = axis_tuple(patch_size, ndim, "patch_size")
        self.stride = self.patch_size if stride is None else axis_tuple(stride, ndim, "stride")
        self.edge = check_edge(edge)
        grid = grid_counts(shapes, self.patch_size, self.stride, edge)
        if grid.size and np.log2(np.maximum(grid, 1)).sum(axis=1).max() > 62:
            raise ParameterError("patch_size/stride give more than 2**62 patches in one image")
        bounds = np.zeros(len(shapes) + 1, dtype=np.int64)
        np.cumsum(grid.prod(axis=1), out=bounds[1:])
        if len(shapes) and bounds[-1] == 0:
            largest = shapes[int(np.argmax(shapes.prod(axis=1)))]
            raise ParameterError(
                f"patch_size {self.patch_size} fits in none of the {len(shapes)} images "
                f"(largest is {describe_shape(largest)}) with edge={edge!r}; "
                "use edge='shift' or 'pad', or a smaller patch"
            )
        self._set_arrays(shapes, grid, bounds)

    # -- construction helpers -------------------------------------------------
    def _set_arrays(self, shapes: np.ndarray, grid: np.ndarray, bounds: np.ndarray) -> None:
        # NOTE [compact tables]: shapes and grid counts in the smallest of uint16, int32 and
        # int64 that holds them; every computation reads them as int64 (an int64 operand,
        # ``astype`` or Python ints through memoryviews), never uint16 arithmetic alone
        self._shapes = np.ascontiguousarray(shapes, dtype=_compact(shapes))
        grid = np.asarray(grid)
        self._grid_by_axis = np.ascontiguousarray(grid.T, dtype=_compact(grid))  # (ndim, n)
        self._bounds = bounds  # [0, cumsum...]: image i owns [bounds[i], bounds[i + 1])
        for array in (self._shapes, self._grid_by_axis, self._bounds):
            array.flags.writeable = False
        self._make_views()

    def _make_views(self) -> None:
        # NOTE [scalar fast path]: memoryviews hand out Python ints, so bisect and
        # integer arithmetic on them cost ~1 us, far below numpy's scalar overhead.
        self._bounds_view = memoryview(self._bounds)
        self._grid_view = memoryview(self._grid_by_axis.reshape(-1))
        self._find_images = ImageSearch(self._bounds)
        self._shapes_view = memoryview(self._shapes.reshape(-1))
        self._total = int(self._bounds[-1])

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_bounds_view", "_grid_view", "_shapes_view", "_find_images"):
            del state[key]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_views()

    # -- sizes ----------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.patch_size)

    @property
    def num_images(self) -> int:
        return len(self._shapes)

    @property
    def shapes(self) -> np.ndarray:
        """Spatial shapes (n_images, ndim), int64 (a new array)."""
        return self._shapes.astype(np.int64)

    @property
    def grid_shape(self) -> np.ndarray:
        """Grid positions per axis and image (n_images, ndim), int64 (a new array)."""
        return self._grid_by_axis.T.astype(np.int64)

    @property
    def counts(self) -> np.ndarray:
        """Patches per image, int64 (a new array)."""
        return np.diff(self._bounds)

    @property
    def offsets(self) -> np.ndarray:
        """Cumulative sum of ``counts`` (read-only view)."""
        return self._bounds[1:]

    def __len__(self) -> int:
        return self._total

    def image_range(self, image_id: int) -> range:
        """Flat numbers of the patches of one image.

        >>> PatchIndex([(4, 6), (2, 2)], patch_size=2).image_range(1)
        range(6, 7)
        """
        image_id = self._check_image_id(image_id)
        return range(self._bounds_view[image_id], self._bounds_view[image_id + 1])

    def __repr__(self) -> str:
        return (
            f"PatchIndex({self.num_images} images, {self._total} patches, "
            f"patch_size={self.patch_size}, stride={self.stride}, edge={self.edge!r})"
        )

    # -- flat -> (image, origin) -----------------------------------------------
    def locate(self, flat):
        """Image id and origin of flat patch numbers.

        Parameters
        ----------
        flat : int or array-like of int
            Flat patch numbers; negative numbers count from the end like a list.

        Returns
        -------
        (int, tuple of int) for a scalar, or (image_ids, origins) int64 arrays
        of shapes ``S`` and ``S + (ndim,)`` for an array of shape ``S``.

        Raises
        ------
        PatchIndexError
            A number outside ``[-len, len)``.
        ParameterTypeError
            A non-integer number (floats and bools included).
        """
        if is_int(flat):
            return self._locate_scalar(int(flat))
        return self.locate_normalized(self.normalize(flat))

    def locate_normalized(self, flat: np.ndarray):
        """:meth:`locate` of int64 numbers already in ``[0, len)`` (see :meth:`normalize`)."""
        image_ids, _, origins = self.locate_grid(flat)
        return image_ids, origins

    def locate_grid(self, flat: np.ndarray):
        """(image_ids, positions, origins) of numbers in ``[0, len)``: ``positions``
        numbers each patch row-major in its image's grid."""
        image_ids = self._find_images(flat)
        local = flat - self._bounds[image_ids]
        return image_ids, local, self._origins(image_ids, local)

    def normalize(self, flat) -> np.ndarray:
        """Flat numbers as int64 in ``[0, len)``: negatives wrapped, range checked."""
        flat = as_int_array(flat, "patch indices")
        if flat.size:
            low, high = flat.min(), flat.max()
            if low < -self._total or high >= self._total:
                bad = int(low if low < -self._total else high)
                raise PatchIndexError(
                    f"patch index {bad} is out of range for {self._total} patches"
                )
            if low < 0:
                flat = np.where(flat < 0, flat + self._total, flat)
        return flat

    def _locate_scalar(self, flat: int):
        total = self._total
        if not -total <= flat < total:
            raise PatchIndexError(f"patch index {flat} is out of range for {total} patches")
        if flat < 0:
            flat += total
        image_id = bisect_right(self._bounds_view, flat) - 1
        local = flat - self._bounds_view[image_id]
        ndim = len(self.stride)
        base = image_id * ndim
        count = len(self._bounds_view) - 1
        origin = [0] * ndim
        for axis in range(ndim - 1, 0, -1):
            local, position = divmod(local, self._grid_view[axis * count + image_id])
            origin[axis] = position * self.stride[axis]
        origin[0] = local * self.stride[0]
        if self.edge == "shift":
            for axis in range(ndim):
                last = max(self._shapes_view[base + axis] - self.patch_size[axis], 0)
                origin[axis] = min(origin[axis], last)
        return image_id, tuple(origin)

    def _origins(self, image_ids: np.ndarray, local: np.ndarray) -> np.ndarray:
        origins = np.empty(local.shape + (self.ndim,), dtype=np.int64)
        for axis in range(self.ndim - 1, 0, -1):
            local, position = np.divmod(local, self._grid_by_axis[axis][image_ids])
            np.multiply(position, self.stride[axis], out=origins[..., axis])
        np.multiply(local, self.stride[0], out=origins[..., 0])
        if self.edge == "shift":
            last = self._shapes[image_ids] - np.asarray(self.patch_size, dtype=np.int64)
            np.minimum(origins, np.maximum(last, 0), out=origins)
        return origins

    # -- (image, origin) -> flat -----------------------------------------------
    def flat_index(self, image_ids, origins):
        """Inverse of :meth:`locate`.

        Parameters
        ----------
        image_ids : int or array-like of int, shape S
        origins : array-like of int, shape S + (ndim,)

        Returns
        -------
        int for a scalar image id, else an int64 array of shape S.

        Raises
        ------
        PatchIndexError
            An image id outside ``[0, num_images)``.
        ParameterError
            An origin that is not a position of the grid.
        """
        scalar = is_int(image_ids)
        ids = as_int_array(image_ids, "image_ids")
        origins = as_int_array(origins, "origins")
        if origins.shape != ids.shape + (self.ndim,):
            raise ParameterError(
                f"origins must have shape image_ids.shape + ({self.ndim},) = "
                f"{ids.shape + (self.ndim,)}, got {origins.shape}"
            )
        self._check_image_ids(ids)
        grid = self._grid_by_axis[:, ids].T.astype(np.int64)
        stride = np.asarray(self.stride, dtype=np.int64)
        position = origins // stride
        valid = (origins >= 0) & (origins % stride == 0) & (position < grid)
        if self.edge == "shift":
            last = np.maximum(self._shapes[ids] - np.asarray(self.patch_size), 0)
            valid &= position * stride <= last  # a drop origin, not past the shifted one
            at_last = origins == last
            position = np.where(valid, position, grid - 1)
            valid |= at_last
        if not valid.all():
            bad = np.argwhere(~valid.all(axis=-1))[0]
            bad = tuple(bad) if bad.size else ()
            raise ParameterError(
                f"origin {tuple(origins[bad].tolist())} of image {int(ids[bad])} is not on "
                f"the grid (patch_size={self.patch_size}, stride={self.stride}, "
                f"edge={self.edge!r})"
            )
        local = np.zeros(ids.shape, dtype=np.int64)
        for axis in range(self.ndim):
            local = local * grid[..., axis] + position[..., axis]
        flat = self._bounds[ids] + local
        return int(flat) if scalar else flat

    # -- subsets ----------------------------------------------------------------
    def subset(self, image_ids) -> "PatchIndex":
        """The index over the given images only, numbered in the given order.

        O(images): no grid is recomputed.

        >>> index = PatchIndex([(4, 6), (2, 2), (4, 4)], patch_size=2)
        >>> sub = index.subset([2, 0])
        >>> sub.counts.tolist(), sub.locate(4)
        ([4, 6], (1, (0, 0)))
        """
        ids = as_int_array(image_ids, "image_ids")
        if ids.ndim != 1:
            raise ParameterError(f"image_ids must be one-dimensional, got shape {ids.shape}")
        self._check_image_ids(ids)
        counts = self._bounds[ids + 1] - self._bounds[ids]
        bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        new = object.__new__(PatchIndex)
        new.patch_size, new.stride, new.edge = self.patch_size, self.stride, self.edge
        new._set_arrays(self._shapes[ids], self._grid_by_axis[:, ids].T, bounds)
        return new

    def _check_image_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_images):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise PatchIndexError(
                f"image id {bad} is out of range for {self.num_images} images"
            )

    def _check_image_id(self, image_id) -> int:
        if not is_int(image_id):
            raise ParameterTypeError(
                f"image_id must be an integer, got {type(image_id).__name__} {image_id!r}"
            )
        self._check_image_ids(np.asarray([image_id]))
        return int(image_id)


_BITS_PER_BLOCK = 512  # rank directory granularity: 0.125 bit per patch in RAM


class FilteredIndex:
    """The patches of a :class:`PatchIndex` whose bit is set in a keep-bitmap.

    Answers ``len``, ``locate``, ``flat_index`` and ``subset`` exactly like a
    PatchIndex over the kept patches only (numbered in the base order). The
    bitmap holds one bit per patch of the base grid (``np.packbits`` order,
    big-endian bits) and may be a memory map; besides it the index keeps
    O(images) tables and a popcount every 512 patches.

    Parameters
    ----------
    base : PatchIndex
    bits : array of uint8, at least ``ceil(len(base) / 8)`` bytes
        The keep-bitmap, indexed by the base grid's flat patch numbers.

    Examples
    --------
    >>> base = PatchIndex([(4, 8), (4, 4)], patch_size=2)  # 8 + 4 patches
    >>> keep = np.zeros(12, bool); keep[[1, 2, 7, 9]] = True
    >>> kept = FilteredIndex(base, np.packbits(keep))
    >>> len(kept), kept.counts.tolist()
    (4, [3, 1])
    >>> kept.locate(3)
    (1, (0, 2))
    >>> kept.flat_index(0, (2, 6))
    2
    """

    def __init__(self, base: PatchIndex, bits, _bit_start=None, _source=None):
        bits = np.asarray(bits) if not isinstance(bits, np.memmap) else bits
        if bits.dtype != np.uint8 or bits.ndim != 1:
            raise ParameterTypeError(f"bits must be a 1-D uint8 array (np.packbits), got {bits.dtype} {bits.shape}")
        self.base = base
        self.patch_size, self.stride, self.edge = base.patch_size, base.stride, base.edge
        self._bits = bits
        self._source = _source  # how to reopen the bitmap after pickling (a sidecar path)
        if _bit_start is None:
            _bit_start = base._bounds[:-1]
            if len(bits) * 8 < len(base):
                raise ParameterError(f"bits holds {len(bits) * 8} bits for {len(base)} patches")
        self._bit_start = np.asarray(_bit_start, dtype=np.int64)
        self._directory = np.concatenate(
            [[0], np.cumsum(_popcount(bits).reshape(-1, _BITS_PER_BLOCK // 8).sum(axis=1)
                            if len(bits) % (_BITS_PER_BLOCK // 8) == 0 else
                            _block_popcounts(bits))]).astype(np.int64)
        counts = self._rank(self._bit_start + base.counts) - self._rank(self._bit_start)
        self._bounds = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._bounds[1:])
        self._total = int(self._bounds[-1])
        self._find_images = ImageSearch(self._bounds)

    # -- pickling: the bitmap never travels, its source is reopened -----------------------
    def __getstate__(self):
        if self._source is None:
            return self.__dict__
        state = {k: v for k, v in self.__dict__.items() if k not in ("_bits", "_directory")}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "_bits" not in state:
            self._bits = self._source()
            self._directory = np.concatenate([[0], np.cumsum(_block_popcounts(self._bits))]).astype(np.int64)

    # -- rank and select over the bitmap --------------------------------------------------
    def _rank(self, positions) -> np.ndarray:
        """Set bits strictly before each bit position."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.ndim != 1:
            return self._rank(positions.reshape(-1)).reshape(positions.shape)
        block, offset = np.divmod(positions, _BITS_PER_BLOCK)
        result = self._directory[np.minimum(block, len(self._directory) - 1)].copy()
        partial = offset > 0
        if partial.any():
            first_byte = block[partial] * (_BITS_PER_BLOCK // 8)
            rows = _gather_bits(self._bits, first_byte, _BITS_PER_BLOCK)
            mask = np.arange(_BITS_PER_BLOCK) < offset[partial, None]
            result[partial] += (rows & mask).sum(axis=1)
        return result

    def _select(self, ranks) -> np.ndarray:
        """Bit position of the rank-th set bit (0-based) for each rank."""
        ranks = np.asarray(ranks, dtype=np.int64)
        block = np.searchsorted(self._directory, ranks, side="right") - 1
        rows = _gather_bits(self._bits, block * (_BITS_PER_BLOCK // 8), _BITS_PER_BLOCK)
        running = np.cumsum(rows, axis=1)
        within = np.argmax(running > (ranks - self._directory[block])[:, None], axis=1)
        return block * _BITS_PER_BLOCK + within

    # -- the PatchIndex interface ---------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def num_images(self) -> int:
        return self.base.num_images

    @property
    def shapes(self) -> np.ndarray:
        return self.base.shapes

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self._bounds)

    @property
    def offsets(self) -> np.ndarray:
        return self._bounds[1:]

    def __len__(self) -> int:
        return self._total

    def __repr__(self) -> str:
        return f"FilteredIndex({self._total} of {len(self.base)} patches kept, {self.base!r})"

    def normalize(self, flat) -> np.ndarray:
        return PatchIndex.normalize(self, flat)

    def locate(self, flat):
        """Image id and origin of kept-patch numbers (like PatchIndex.locate)."""
        if is_int(flat):
            image_ids, origins = self.locate(np.asarray([flat]))
            return int(image_ids[0]), tuple(origins[0].tolist())
        return self.locate_normalized(self.normalize(flat))

    def locate_normalized(self, flat: np.ndarray):
        """:meth:`locate` of int64 numbers already in ``[0, len)`` (see :meth:`normalize`)."""
        shape = flat.shape
        image_ids, _, origins = self.locate_grid(flat.reshape(-1))
        return image_ids.reshape(shape), origins.reshape(shape + (self.ndim,))

    def locate_grid(self, flat: np.ndarray):
        """(image_ids, positions, origins) of 1-D numbers in ``[0, len)``, positions in
        the unfiltered grid (see :meth:`PatchIndex.locate_grid`)."""
        image_ids = self._find_images(flat)
        wanted = self._rank(self._bit_start[image_ids]) + (flat - self._bounds[image_ids])
        local = self._select(wanted) - self._bit_start[image_ids]
        return image_ids, local, self.base._origins(image_ids, local)

    def _locate_scalar(self, flat: int):
        if not -self._total <= flat < self._total:
            raise PatchIndexError(f"patch index {flat} is out of range for {self._total} patches")
        return self.locate(int(flat))

    def flat_index(self, image_ids, origins):
        """Inverse of :meth:`locate`; ValueError for a patch that is not kept."""
        scalar = is_int(image_ids)
        ids = as_int_array(image_ids, "image_ids")
        base_flat = np.asarray(self.base.flat_index(ids, origins))
        local = base_flat - self.base._bounds[ids]
        bits = self._bit_start[ids] + local
        kept = (self._bits[bits // 8] >> (7 - bits % 8)) & 1
        if not kept.all():
            bad = int(np.argwhere(~kept.astype(bool).reshape(-1))[0][0])
            raise ParameterError(
                f"the patch at origin {tuple(np.asarray(origins).reshape(-1, self.ndim)[bad].tolist())} "
                f"of image {int(ids.reshape(-1)[bad])} is not kept by the filter"
            )
        result = self._rank(bits) - self._rank(self._bit_start[ids]) + self._bounds[ids]
        return int(result) if scalar else result

    def subset(self, image_ids) -> "FilteredIndex":
        """The kept patches of these images only (O(images); the bitmap is shared)."""
        ids = as_int_array(image_ids, "image_ids").reshape(-1)
        self.base._check_image_ids(ids)
        new = object.__new__(FilteredIndex)
        new.base = self.base.subset(ids)
        new.patch_size, new.stride, new.edge = self.patch_size, self.stride, self.edge
        new._bits, new._source, new._directory = self._bits, self._source, self._directory
        new._bit_start = self._bit_start[ids]
        counts = (self._bounds[ids + 1] - self._bounds[ids])
        new._bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=new._bounds[1:])
        new._total = int(new._bounds[-1])
        new._find_images = ImageSearch(new._bounds)
        return new

    def image_range(self, image_id: int) -> range:
        image_id = self.base._check_image_id(image_id)
        return range(int(self._bounds[image_id]), int(self._bounds[image_id + 1]))


_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


def _popcount(bits: np.ndarray) -> np.ndarray:
    return _POPCOUNT[np.asarray(bits)]


def _block_popcounts(bits: np.ndarray) -> np.ndarray:
    """Set bits per 512-bit block (the last block may be short)."""
    step = _BITS_PER_BLOCK // 8
    result = []
    for start in range(0, len(bits), 1 << 24):  # bounded memory for huge bitmaps
        chunk = _popcount(np.asarray(bits[start:start + (1 << 24)]))
        pad = (-len(chunk)) % step
        result.append(np.pad(chunk, (0, pad)).reshape(-1, step).sum(axis=1))
    return np.concatenate(result) if result else np.zeros(0, np.int64)


def _gather_bits(bits: np.ndarray, first_bytes: np.ndarray, count: int) -> np.ndarray:
    """Rows of ``count`` bits starting at byte offsets (zeros past the end)."""
    width = count // 8
    index = first_bytes[:, None] + np.arange(width)
    inside = index < len(bits)
    rows = np.zeros(index.shape, np.uint8)
    rows[inside] = np.asarray(bits)[index[inside]] if isinstance(bits, np.ndarray) else bits[index[inside]]
    return np.unpackbits(rows, axis=1).astype(np.int64)
