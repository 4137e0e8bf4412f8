"""Foreground filtering: keep the grid patches that hold enough foreground.

``foreground_filter(store, patch_size, ...)`` computes, in one pass over the
masks (or two over the pixels: a thumbnail for Otsu's threshold, then the
fractions), the fraction of foreground pixels of every grid patch, and
writes one bit per patch (kept or not) to a sidecar file next to the store.
``PatchDataset(store, ..., filter=path)`` then serves only the kept patches
through a :class:`~lazypatch.index.FilteredIndex`, whose bitmap each worker
memory-maps (it is never pickled).

Patch sums come from integral images computed band by band (a band of rows
at a time, about 64 MiB), so any image size works with bounded memory.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import IntegrityError, ParameterError, StoreFormatError
from ..grid import check_edge
from ..index import FilteredIndex, PatchIndex
from ..store import ImageStore, sidecar
from ..store import format as fmt

__all__ = ["foreground_filter", "load_filter", "otsu_threshold", "patch_fractions"]

_BAND_BYTES = 64 << 20


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a sample of values (the cut that best splits two classes).

    >>> 10 < otsu_threshold(np.r_[np.full(100, 10.0), np.full(100, 200.0)]) < 200
    True
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return float(values.min()) if values.size else 0.0
    counts, edges = np.histogram(values, bins=bins)
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


def patch_fractions(shape, patch_size, stride, edge, read_band) -> np.ndarray:
    """Foreground fraction of every grid patch of one image, in C order over the grid.

    ``read_band(r0, r1)`` returns rows ``[r0, r1)`` along the first axis as an
    array of 0/1 (or counts); parts of a patch outside the image count as
    background.
    """
    nd = len(shape)
    origins = [_axis_origins(shape[a], patch_size[a], stride[a], edge) for a in range(nd)]
    if any(len(o) == 0 for o in origins):
        return np.zeros(0)
    row = int(np.prod(shape[1:])) * 8
    rows_per_band = max(patch_size[0] * 2, _BAND_BYTES // max(row, 1))
    result = np.zeros(tuple(len(o) for o in origins))
    volume = float(np.prod(patch_size))
    first = 0
    while first < len(origins[0]):
        band_start = int(origins[0][first])
        last = first
        while last + 1 < len(origins[0]) and origins[0][last + 1] + patch_size[0] - band_start <= rows_per_band:
            last += 1
        band_stop = min(int(origins[0][last]) + patch_size[0], shape[0])
        values = np.asarray(read_band(band_start, band_stop), dtype=np.int64)
        integral = np.zeros(tuple(s + 1 for s in values.shape), np.int64)
        integral[tuple(slice(1, None) for _ in range(nd))] = values
        for axis in range(nd):
            np.cumsum(integral, axis=axis, out=integral)
        lo = [np.clip(origins[0][first:last + 1] - band_start, 0, values.shape[0])]
        hi = [np.clip(origins[0][first:last + 1] + patch_size[0] - band_start, 0, values.shape[0])]
        for axis in range(1, nd):
            lo.append(np.clip(origins[axis], 0, shape[axis]))
            hi.append(np.clip(origins[axis] + patch_size[axis], 0, shape[axis]))
        total = 0
        for corner in range(1 << nd):  # inclusion-exclusion over the box corners
            index, sign = [], 1
            for axis in range(nd):
                take_hi = (corner >> axis) & 1
                points = hi[axis] if take_hi else lo[axis]
                sign *= 1 if take_hi else -1
                view = [1] * nd
                view[axis] = len(points)
                index.append(points.reshape(view))
            total = total + sign * integral[tuple(index)]
        result[first:last + 1] = total / volume
        first = last + 1
    return result.reshape(-1)


def _mask_reader(store, image_id, classes):
    shape = tuple(int(v) for v in store.shapes[image_id])

    def read(r0, r1):
        mask = store.read_mask_region(image_id, (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:])
        return np.isin(mask, classes) if classes is not None else mask != 0
    return read


def _intensity_reader(store, image_id, threshold, darker):
    shape = tuple(int(v) for v in store.shapes[image_id])

    def gray(r0, r1):
        region = store.read_region(image_id, (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:])
        return region.astype(np.float32).mean(axis=-1)

    if threshold == "otsu":
        step = max(1, int((np.prod(shape) / 1e6) ** (1 / len(shape))))
        rows = max(1, (_BAND_BYTES // 4) // max(int(np.prod(shape[1:])), 1))
        every = (slice(None, None, step),) * len(shape)  # a thumbnail: one pixel in step per axis
        sample = [gray(r0, min(r0 + rows, shape[0]))[every].ravel() for r0 in range(0, shape[0], rows)]
        threshold = otsu_threshold(np.concatenate(sample))

    def read(r0, r1):
        values = gray(r0, r1)
        return values < threshold if darker else values > threshold
    return read, threshold


def foreground_filter(store, patch_size, stride=None, edge: str = "drop", *, threshold: float = 0.5,
                      source: str = "mask", classes=None, intensity="otsu", darker: bool = True,
                      path=None, name: str | None = None) -> str:
    """Compute which grid patches hold at least ``threshold`` foreground; write a sidecar.

    Parameters
    ----------
    store : ImageStore or path
    patch_size, stride, edge
        The grid, as the PatchDataset that will use the filter.
    threshold : float in [0, 1]
        Minimum fraction of foreground pixels for a patch to be kept.
    source : {"mask", "intensity"}
        Foreground from the masks (non-zero, or in ``classes``), or from the
        pixels' mean over channels against ``intensity``: a number, or
        ``"otsu"`` (Otsu's threshold of a thumbnail of each image);
        ``darker=True`` (tissue on a bright slide) keeps pixels below it.
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

    Returns
    -------
    str
        The sidecar's path, for ``PatchDataset(..., filter=path)``, which then
        serves the kept patches through a :class:`lazypatch.FilteredIndex`.

    Raises
    ------
    ParameterError, ParameterTypeError
        A bad grid, ``threshold`` outside [0, 1], an unknown ``source``,
        ``source="mask"`` on a store without masks, or a bad ``intensity``.

    Notes
    -----
    The sidecar holds one bit per grid patch and is bound to the store's
    content (refused for another store). ``lazypatch index STORE --foreground
    --patch 64 --threshold 0.5`` does the same from the command line.
    """
    store = store if isinstance(store, ImageStore) else ImageStore(store)
    check_edge(edge)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise ParameterError(f"threshold must be a fraction in [0, 1], got {threshold!r}")
    if source not in ("mask", "intensity"):
        raise ParameterError(f"source must be 'mask' or 'intensity', got {source!r}")
    if source == "mask" and not store.has_masks:
        raise ParameterError(f"source='mask' needs a store with masks; {store.path!r} has none")
    if source == "intensity" and not (intensity == "otsu" or isinstance(intensity, (int, float))):
        raise ParameterError(f"intensity must be 'otsu' or a number, got {intensity!r}")
    index = PatchIndex(store.shapes, patch_size, stride, edge)
    keep = np.zeros(len(index), bool)
    thresholds = []
    for image_id in range(len(store)):
        if index.counts[image_id] == 0:
            thresholds.append(np.nan)
            continue
        if source == "mask":
            read = _mask_reader(store, image_id, None if classes is None else np.asarray(classes))
            thresholds.append(np.nan)
        else:
            read, used = _intensity_reader(store, image_id, intensity, darker)
            thresholds.append(used)
        fractions = patch_fractions(tuple(int(v) for v in store.shapes[image_id]), index.patch_size,
                                    index.stride, edge, read)
        keep[index.image_range(image_id).start:index.image_range(image_id).stop] = fractions >= threshold
    if name is None:
        name = "x".join(map(str, index.patch_size)) + f"-s{'x'.join(map(str, index.stride))}-{edge}-{source}-{threshold:g}"
    path = os.fspath(path) if path is not None else f"{store.path}.filter-{name}.h5"
    sidecar.write(path, "filter", store, {"keep": np.packbits(keep), "intensity_threshold": np.asarray(thresholds)},
                   {"patch_size": index.patch_size, "stride": index.stride, "edge": edge,
                    "threshold": float(threshold), "source": source, "patches": len(index),
                    "kept": int(keep.sum())})
    return path


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
