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

from ..grid import axis_tuple, check_edge, describe_shape, grid_counts, is_int
from ..errors import ParameterError, ParameterTypeError, PatchIndexError
from ._search import ImageSearch, compact_dtype

__all__ = ["PatchIndex", "as_int_array"]


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
        What to do at the high end of an axis (the rules are in :mod:`lazypatch.grid`): drop
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
    most 4 bytes per image (see NOTE [bucket search]): at most 20 bytes per 2-D and
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
        self._shapes = np.ascontiguousarray(shapes, dtype=compact_dtype(shapes))
        grid = np.asarray(grid)
        self._grid_by_axis = np.ascontiguousarray(grid.T, dtype=compact_dtype(grid))  # (ndim, n)
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
        self._cache = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_bounds_view", "_grid_view", "_shapes_view", "_find_images", "_cache"):
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
        """Spatial shapes (n_images, ndim), int64, read-only (computed on first use, then kept)."""
        return self._derived("shapes", lambda: self._shapes.astype(np.int64))

    @property
    def grid_shape(self) -> np.ndarray:
        """Grid positions per axis and image (n_images, ndim), int64, read-only (computed once)."""
        return self._derived("grid_shape", lambda: self._grid_by_axis.T.astype(np.int64))

    @property
    def counts(self) -> np.ndarray:
        """Patches per image, int64, read-only (computed once)."""
        return self._derived("counts", lambda: np.diff(self._bounds))

    def _derived(self, name: str, compute) -> np.ndarray:
        # See NOTE [compact tables]; the int64 forms are built on first use only, so an index
        # that is only searched keeps its compact size; once built they are kept, read-only
        array = self._cache.get(name)
        if array is None:
            array = compute()
            array.flags.writeable = False
            self._cache[name] = array
        return array

    @property
    def offsets(self) -> np.ndarray:
        """Cumulative sum of ``counts`` (read-only view)."""
        return self._bounds[1:]

    @property
    def bounds(self) -> np.ndarray:
        """``[0, *offsets]``: image ``i`` owns flat numbers ``[bounds[i], bounds[i + 1])``
        (read-only)."""
        return self._bounds

    def __len__(self) -> int:
        return self._total

    def image_range(self, image_id: int) -> range:
        """Flat numbers of the patches of one image.

        >>> PatchIndex([(4, 6), (2, 2)], patch_size=2).image_range(1)
        range(6, 7)
        """
        image_id = self.check_image_id(image_id)
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
            return self.locate_scalar(int(flat))
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
        return image_ids, local, self.grid_origins(image_ids, local)

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

    def locate_scalar(self, flat: int):
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

    def grid_origins(self, image_ids: np.ndarray, local: np.ndarray) -> np.ndarray:
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
        self.check_image_ids(ids)
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
        self.check_image_ids(ids)
        counts = self._bounds[ids + 1] - self._bounds[ids]
        bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        new = object.__new__(PatchIndex)
        new.patch_size, new.stride, new.edge = self.patch_size, self.stride, self.edge
        new._set_arrays(self._shapes[ids], self._grid_by_axis[:, ids].T, bounds)
        return new

    def check_image_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_images):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise PatchIndexError(
                f"image id {bad} is out of range for {self.num_images} images"
            )

    def check_image_id(self, image_id) -> int:
        if not is_int(image_id):
            raise ParameterTypeError(
                f"image_id must be an integer, got {type(image_id).__name__} {image_id!r}"
            )
        self.check_image_ids(np.asarray([image_id]))
        return int(image_id)
