"""Label statistics: per-block pixel counts of every mask label.

:class:`LabelStats` counts, per image and per block (64 pixels per axis by
default), the pixels of every label present, stored sparsely as
(block, label, count) rows: a many-class label map costs rows only for the
labels each block actually holds. They are computed in one pass over the
masks, by ``write_store(..., label_stats=True)`` (kept in the store) or by
``lazypatch index STORE --labels`` (a sidecar bound to the store's content).

:class:`ClassSampler` draws patch centres with given class ratios (like
MONAI's RandCropByPosNegLabel or torchio's LabelSampler), or in proportion to
a per-pixel weight given per label value. Building it reads only the
statistics; each draw then reads one small mask block to pick the exact
pixel.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ParameterError, ParameterTypeError, StoreFormatError
from ..grid import axis_tuple, is_int
from ..store import ImageStore, sidecar
from ..store import format as fmt
from .blocks import BlockCounter

__all__ = ["LabelStats"]


class LabelStats:
    """Per image and block, the pixel count of every label present.

    Attributes
    ----------
    block : tuple of int
        Block extent per axis.
    image_offsets : int64 (n_images + 1,)
        Rows of image i are ``[image_offsets[i], image_offsets[i + 1])``.
    blocks, labels, counts : int64 (rows,)
        Block number within its image (C order over the block grid), label
        value, pixel count.

    Notes
    -----
    Counted while writing (``write_store(..., label_stats=True)``, ``lazypatch
    build --label-stats``) or for an existing store (``lazypatch index STORE
    --labels [--block 64]``, a sidecar); :meth:`open` finds either, and raises
    FileNotFoundError saying how to make them when there are none. Used by
    :class:`lazypatch.ClassSampler`.
    """

    def __init__(self, block, image_offsets, blocks, labels, counts, shapes):
        self.block = tuple(int(v) for v in block)
        self.image_offsets = np.asarray(image_offsets, np.int64)
        self.blocks = np.asarray(blocks, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.counts = np.asarray(counts, np.int64)
        self.shapes = np.asarray(shapes, np.int64)
        rows = len(self.blocks)
        if (len(self.image_offsets) != len(self.shapes) + 1 or self.image_offsets[0] != 0
                or self.image_offsets[-1] != rows or np.any(np.diff(self.image_offsets) < 0)
                or len(self.labels) != rows or len(self.counts) != rows or (self.counts < 0).any()):
            raise StoreFormatError("label statistics are inconsistent (damaged or foreign tables)")

    def __repr__(self) -> str:
        return (f"LabelStats({len(self.shapes)} images, block {self.block}, {len(self.blocks)} rows, "
                f"labels {sorted(set(self.labels.tolist()))[:10]})")

    @property
    def image_ids(self) -> np.ndarray:
        """The image of every row."""
        return np.repeat(np.arange(len(self.shapes)), np.diff(self.image_offsets))

    def totals(self) -> dict:
        """{label: total pixel count over all images}."""
        values, inverse = np.unique(self.labels, return_inverse=True)
        sums = np.bincount(inverse, weights=self.counts).astype(np.int64)
        return dict(zip(values.tolist(), sums.tolist()))

    # -- computing -----------------------------------------------------------------------------
    @classmethod
    def compute(cls, store, block=64, progress=None) -> "LabelStats":
        """Count every mask of a store (one pass, band by band)."""
        store = store if isinstance(store, ImageStore) else ImageStore(store)
        if not store.has_masks:
            raise ParameterError(f"label statistics need masks; {store.path!r} has none")
        block = axis_tuple(block, store.spatial_ndim, "block")
        offsets, blocks, labels, counts = [0], [], [], []
        for image_id in range(len(store)):
            shape = tuple(int(v) for v in store.shapes[image_id])
            counter = BlockCounter(shape, block)
            rows = block[0] * max(1, (32 << 20) // max(block[0] * int(np.prod(shape[1:])) * 8, 1))
            for r0 in range(0, shape[0], rows):
                r1 = min(r0 + rows, shape[0])
                band = store.read_mask_region(image_id, (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:])
                counter.add(r0, band)
            b, lab, c = counter.rows()
            blocks.append(b)
            labels.append(lab)
            counts.append(c)
            offsets.append(offsets[-1] + len(b))
        return cls(block, offsets, np.concatenate(blocks), np.concatenate(labels),
                   np.concatenate(counts), store.shapes)

    # -- storing ---------------------------------------------------------------------------------
    def arrays(self) -> dict:
        return {"image_offsets": self.image_offsets, "blocks": self.blocks, "labels": self.labels,
                "counts": self.counts}

    def write_sidecar(self, store, path=None) -> str:
        path = os.fspath(path) if path is not None else default_path(store)
        return sidecar.write(path, "labels", store, self.arrays(), {"block": np.asarray(self.block)})

    @classmethod
    def open(cls, store, path=None) -> "LabelStats":
        """The statistics kept in the store, else in its sidecar (``lazypatch index --labels``)."""
        store = store if isinstance(store, ImageStore) else ImageStore(store)
        if path is None:
            embedded = _embedded(store)
            if embedded is not None:
                return cls(*embedded, store.shapes)
        path = os.fspath(path) if path is not None else default_path(store)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no label statistics for {store.path!r}: write the store with label_stats=True, "
                f"or run `lazypatch index {store.path} --labels` (looked for {path!r})"
            )
        with sidecar.open_checked(path, "labels", store) as f, fmt.damage_is_format_error(path, "label statistics"):
            arrays = [fmt.read_checked(f[k], path) for k in ("image_offsets", "blocks", "labels", "counts")]
            block = f.attrs["block"]
        return cls(block, *arrays, store.shapes)


def _embedded(store):
    """(block, image_offsets, blocks, labels, counts) written into every shard, else None."""
    groups = [group for group in store.groups(fmt.G_LABEL_STATS)]
    if any(group is None for group in groups):
        return None
    block = np.asarray(groups[0].attrs["block"])
    if any(not np.array_equal(group.attrs["block"], block) for group in groups):
        return None  # shards counted with different blocks: use a sidecar
    with fmt.damage_is_format_error(store.path, "label statistics"):
        parts = {k: [fmt.read_checked(group[k], path) for group, path in zip(groups, store.paths)]
                 for k in ("image_offsets", "blocks", "labels", "counts")}
    offsets, base = [np.zeros(1, np.int64)], 0
    for part in parts["image_offsets"]:
        offsets.append(part[1:] + base)
        base += int(part[-1])
    return (block, np.concatenate(offsets),
            *(np.concatenate(parts[k]) for k in ("blocks", "labels", "counts")))


def default_path(store) -> str:
    return f"{store.path}.labels.h5"


