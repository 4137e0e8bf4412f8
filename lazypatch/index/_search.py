"""The image owning each flat patch number: a bucket table and a few halving steps.

See NOTE [bucket search] is defined on :class:`ImageSearch`. numpy only.
"""

from __future__ import annotations

import numpy as np

from ..grid import ceil_div

_INT32_MAX = np.iinfo(np.int32).max
_MAX_BUCKET_STEPS = 8  # See NOTE [bucket search]: past this, one plain binary search is cheaper


def compact_dtype(values: np.ndarray):
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
    images, batches of 256 random numbers, the bucket search took about a
    third of the plain search's time when it was introduced (``python
    tests/benchmarks/overheads.py`` measures locate at 10^6 images). With
    bucket spans too wide
    (many images without patches), the plain search is used.
    """

    def __init__(self, bounds: np.ndarray):
        self.offsets = bounds[1:]
        self.table = None
        images, total = len(self.offsets), int(bounds[-1])
        if images == 0 or total == 0:
            return
        shift = (ceil_div(total, images) - 1).bit_length()
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
