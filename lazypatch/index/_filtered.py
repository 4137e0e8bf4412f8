"""``FilteredIndex``: the patches of a base index whose bit is set in a keep-bitmap.

numpy only. A rank directory (a popcount every 512 patches) maps kept numbers
to base numbers without a list of kept patches.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, ParameterTypeError, PatchIndexError
from ..grid import is_int
from ._patch_index import PatchIndex, as_int_array
from ._search import ImageSearch

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
            _bit_start = base.bounds[:-1]
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
        self._bounds.flags.writeable = False
        self._total = int(self._bounds[-1])
        self._find_images = ImageSearch(self._bounds)
        self._counts = None

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
        """Kept patches per image, int64, read-only (computed once)."""
        if self._counts is None:
            self._counts = np.diff(self._bounds)
            self._counts.flags.writeable = False
        return self._counts

    @property
    def offsets(self) -> np.ndarray:
        return self._bounds[1:]

    @property
    def bounds(self) -> np.ndarray:
        """``[0, *offsets]`` over the kept patches (read-only)."""
        return self._bounds

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
        return image_ids, local, self.base.grid_origins(image_ids, local)

    def locate_scalar(self, flat: int):
        if not -self._total <= flat < self._total:
            raise PatchIndexError(f"patch index {flat} is out of range for {self._total} patches")
        return self.locate(int(flat))

    def flat_index(self, image_ids, origins):
        """Inverse of :meth:`locate`; ValueError for a patch that is not kept."""
        scalar = is_int(image_ids)
        ids = as_int_array(image_ids, "image_ids")
        base_flat = np.asarray(self.base.flat_index(ids, origins))
        local = base_flat - self.base.bounds[ids]
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
        self.base.check_image_ids(ids)
        new = object.__new__(FilteredIndex)
        new.base = self.base.subset(ids)
        new.patch_size, new.stride, new.edge = self.patch_size, self.stride, self.edge
        new._bits, new._source, new._directory = self._bits, self._source, self._directory
        new._bit_start = self._bit_start[ids]
        counts = (self._bounds[ids + 1] - self._bounds[ids])
        new._bounds = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=new._bounds[1:])
        new._bounds.flags.writeable = False
        new._total = int(new._bounds[-1])
        new._find_images = ImageSearch(new._bounds)
        new._counts = None
        return new

    def check_image_ids(self, image_ids: np.ndarray) -> None:
        self.base.check_image_ids(image_ids)

    def check_image_id(self, image_id) -> int:
        return self.base.check_image_id(image_id)

    def image_range(self, image_id: int) -> range:
        image_id = self.base.check_image_id(image_id)
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
