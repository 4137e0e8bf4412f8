"""``describe``: the facts ``lazypatch info`` prints about a store, as a dict."""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ParameterTypeError, StoreFormatError
from ..index import PatchIndex
from ..store import ImageStore
from ..store import format as fmt
from . import labels
from .channels import ChannelStats

__all__ = ["describe"]

NAMES_SHOWN = 3  # names listed at each end of the store


def describe(store, patch=None, stride=None, edge="drop") -> dict:
    """The facts ``lazypatch info STORE --json`` prints, as a dict.

    Parameters
    ----------
    store : ImageStore, str, os.PathLike or list of them
        An open store, or the path of a store (or the paths of its shards).
    patch, stride : int or sequence of int, optional
        Also count the patches of this grid (``grid`` entry).
    edge : {"drop", "shift", "pad"}

    Returns
    -------
    dict
        JSON-ready: ``images``, ``names`` (``count``, the ``first`` 3 and the
        ``last`` 3 others; None when the names table is damaged),
        ``spatial_ndim``, ``shape_min`` /
        ``shape_median`` / ``shape_max``, ``dtype``, ``channels``, ``masks``,
        ``layout``, ``tile``, ``compression``, ``checksum``, ``read_path`` (which
        read path serves the store, and why), ``bytes_on_disk``, the format
        version, ``provenance``, ``channel_stats`` (a summary, or None when
        none is stored), ``label_stats`` (whether label statistics are stored,
        in the store or its sidecar, for ClassSampler), ``mask_labels`` (pixels per
        label value, from those statistics, else None), ``geometry`` (image 0's
        spacing and unit, and whether the first 256 images share them; None
        without physical metadata), ``tissue_fraction`` (with tissue masks,
        ``lazypatch build --tissue otsu``: each image's fraction of tissue, the
        mean of its mask nearest-upsampled over the image, None for an image
        without a mask; None for a store without masks), and with
        ``patch`` a ``grid`` entry (``patches``, ``images_without_patches``,
        ``bytes_per_epoch``).

    Raises
    ------
    FileNotFoundError, IsADirectoryError, StoreFormatError
        As :class:`lazypatch.ImageStore` for a path that is not a store.
    ParameterError, ParameterTypeError
        A bad grid.

    Examples
    --------
    >>> import numpy as np, tempfile, os, lazypatch
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> lazypatch.write_store(path, [np.zeros((100, 80, 3), np.uint8)], progress=False).close()
    >>> facts = describe(path, patch=32)
    >>> facts["images"], facts["shape_max"], facts["grid"]["patches"]
    (1, [100, 80], 6)
    >>> facts["names"], facts["label_stats"], facts["mask_labels"], facts["geometry"], facts["tissue_fraction"]
    ({'count': 1, 'first': ['0'], 'last': []}, False, None, None, None)
    """
    if not isinstance(store, ImageStore):
        if not isinstance(store, (str, os.PathLike, list, tuple)):
            raise ParameterTypeError(f"store must be an ImageStore or a path, got {type(store).__name__}")
        with ImageStore(store) as opened:
            return describe(opened, patch, stride, edge)
    shapes = store.shapes
    facts = {
        "path": store.path,
        "images": len(store),
        "names": _names(store),
        "spatial_ndim": store.spatial_ndim,
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_median": np.median(shapes, axis=0).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
        "dtype": store.dtype.name,
        "channels": store.channels,
        "channel_axis": store.channel_axis,
        "masks": store.mask_dtype.name if store.has_masks else None,
        "layout": store.layout,
        "tile": list(store.tile) if store.tile else None,
        "compression": store.compression,
        "checksum": store.checksum,
        "read_path": _read_path(store),
        "pixels": int(shapes.prod(axis=1).sum()),
        "bytes_on_disk": store.nbytes,
        "format_version": store.attrs.get("lazypatch_format_version"),
        "format_minor": int(store.attrs.get("lazypatch_format_minor", 0)),
        "written_by": store.attrs.get("lazypatch_version"),
    }
    if len(store.paths) > 1:
        facts["shards"] = store.paths
    provenance = store.attrs.get("provenance")
    if provenance:
        try:
            facts["provenance"] = json.loads(provenance)
        except ValueError:
            facts["provenance"] = provenance
    try:
        facts["channel_stats"] = {k: [round(v, 4) for v in values]
                                  for k, values in ChannelStats.open(store).summary().items()}
    except FileNotFoundError:
        facts["channel_stats"] = None
    facts["label_stats"] = _has_label_stats(store)
    facts["mask_labels"] = _mask_labels(store) if facts["label_stats"] else None
    facts["geometry"] = _first_geometry(store)
    facts["tissue_fraction"] = _tissue_fractions(store)
    if patch is not None:
        index = PatchIndex(shapes, patch, stride, edge)
        per_patch = int(np.prod(index.patch_size)) * store.channels * store.dtype.itemsize
        facts["grid"] = {
            "patch_size": list(index.patch_size),
            "stride": list(index.stride),
            "edge": edge,
            "patches": len(index),
            "images_without_patches": int((index.counts == 0).sum()),
            "bytes_per_epoch": len(index) * per_patch,
        }
    return facts


def _names(store):
    """The count, the first NAMES_SHOWN names and the last NAMES_SHOWN others (None if damaged)."""
    try:
        names = store.names
    except StoreFormatError:
        return None
    first = names[:NAMES_SHOWN]
    return {"count": len(names), "first": first, "last": names[max(len(first), len(names) - NAMES_SHOWN):]}


def _mask_labels(store):
    """Pixels per mask label value (as text keys, like the JSON), from the label statistics."""
    try:
        totals = labels.LabelStats.open(store).totals()
    except (FileNotFoundError, StoreFormatError):
        return None
    return {str(int(label)): int(count) for label, count in sorted(totals.items())}


def _first_geometry(store):
    """The spacing and unit of image 0 and whether every image shares them (None: no geometry)."""
    try:
        first = store.geometry(0)
    except StoreFormatError:
        return None
    if first["spacing"] is None:
        return None
    same = all(store.geometry(k)["spacing"] == first["spacing"] for k in range(1, min(len(store), 256)))
    return {"spacing": list(first["spacing"]), "unit": first["unit"], "same_for_all": same}


def _tissue_fractions(store):
    """Each image's tissue fraction as stored at build time (None: no mask), or None."""
    if not store.has_tissue:
        return None
    return [None if np.isnan(v) else round(v, 4) for v in store.tissue_fractions.tolist()]


def _has_label_stats(store) -> bool:
    """Whether LabelStats.open finds statistics: in every shard with one block, or a sidecar."""
    groups = store.groups(fmt.G_LABEL_STATS)
    if all(group is not None for group in groups):
        block = np.asarray(groups[0].attrs["block"])
        if all(np.array_equal(group.attrs["block"], block) for group in groups):
            return True
    return os.path.exists(labels.default_path(store))


def _read_path(store) -> str:
    if store.layout == "chunked":
        why = ", ".join(filter(None, [f"{store.compression} compression" if store.compression else "",
                                     "fletcher32 checksums" if store.checksum else ""])) or "chunks"
        return f"h5py: HDF5 decodes the chunks ({why}); one call per run of consecutive chunks"
    return {
        "auto": "uncompressed tiles at computed offsets: memory map when the page cache holds "
                "a batch's pages, else pread (asked per batch with RWF_NOWAIT probes)",
        "mmap": "uncompressed tiles at computed offsets: memory map (io='mmap')",
        "pread": "uncompressed tiles at computed offsets: pread from a thread pool (io='pread')",
    }[store.io]


