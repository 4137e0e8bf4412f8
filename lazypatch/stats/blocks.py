"""Counting mask labels per block while a store is written (numpy only: no torch).

:class:`BlockCounter` turns bands of mask rows into sparse (block, label, count)
rows; :mod:`lazypatch.labels` keeps them as ``LabelStats`` for ``ClassSampler``.
"""

from __future__ import annotations

import numpy as np

from ..grid import ceil_div

__all__ = ["BlockCounter"]


_PIECE_PIXELS = 1 << 21


class BlockCounter:
    """Accumulates (block, label, count) rows of one image from bands of rows."""

    def __init__(self, shape, block):
        self.shape = tuple(shape)
        self.block = tuple(block)
        self.grid = [ceil_div(s, b) for s, b in zip(self.shape, self.block)]
        self.parts = []

    def add(self, r0: int, band: np.ndarray) -> None:
        """Count a band of mask rows starting at row ``r0``."""
        # pieces of about 2^21 pixels (whole blocks where possible): the int64 keys of a
        # 16 MiB band of uint8 labels would take 128 MiB each
        rows = max(1, _PIECE_PIXELS // max(1, band[0].size))
        if rows >= self.block[0]:
            rows -= rows % self.block[0]
        for lo in range(0, band.shape[0], rows):
            self._add(r0 + lo, band[lo:lo + rows])

    def _add(self, r0: int, band: np.ndarray) -> None:
        nd = len(self.shape)
        coords = [(np.arange(band.shape[0]) + r0) // self.block[0]]
        coords += [np.arange(band.shape[a]) // self.block[a] for a in range(1, nd)]
        linear = np.zeros(band.shape, np.int64)
        for a in range(nd):
            view = [1] * nd
            view[a] = -1
            linear = linear * self.grid[a] + coords[a].reshape(view)
        base = int(linear.flat[0])  # the band's first block: the smallest
        values, codes = _dense_codes(band.reshape(-1))
        # one bincount over (block, label) keys: O(pixels), no sort
        linear -= base
        linear *= len(values)
        linear += codes.reshape(band.shape)
        counts = np.bincount(linear.reshape(-1))
        present = np.flatnonzero(counts)
        self.parts.append((present // len(values) + base, values[present % len(values)], counts[present]))

    def rows(self):
        """(blocks, labels, counts), merged across bands, sorted by block then label."""
        if not self.parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        blocks = np.concatenate([p[0] for p in self.parts])
        labels = np.concatenate([p[1] for p in self.parts])
        counts = np.concatenate([p[2] for p in self.parts])
        values, codes = np.unique(labels, return_inverse=True)
        keys, inverse = np.unique(blocks * len(values) + codes.reshape(-1), return_inverse=True)
        merged = np.bincount(inverse.reshape(-1), weights=counts).astype(np.int64)
        return keys // len(values), values[keys % len(values)], merged


def _dense_codes(flat: np.ndarray):
    """(values, codes): the distinct values (sorted, int64) and each element's rank among them."""
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    if flat.dtype.kind in "iu" and flat.dtype.itemsize <= 2:  # a histogram instead of a sort
        shift = -int(np.iinfo(flat.dtype).min)
        shifted = flat.astype(np.int32) + shift if shift else flat
        present = np.flatnonzero(np.bincount(shifted))
        lookup = np.zeros(int(present[-1]) + 1, np.int64)
        lookup[present] = np.arange(len(present))
        return present.astype(np.int64) - shift, lookup[shifted]
    values, codes = np.unique(flat, return_inverse=True)
    return values.astype(np.int64), codes.reshape(-1)
