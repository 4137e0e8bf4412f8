"""Accessors for lazypatch's internals, for the tests that must look inside.

Most tests check behaviour through the public API. A few pin *how* a result
is reached: which read plan a batch took and what it kept, the search table
that finds an image, the buffers a dataset reuses, the slots worker batches
travel in. Those tests call the functions here instead of reading private
attributes, so that a change of internals breaks here, in one place, and the
tests say what they look at by name. Each function names the NOTE of the
library it exposes.

The library never imports this module (``tests/test_layering.py`` checks),
and nothing here is a public API: it changes with the internals.

>>> from lazypatch import PatchIndex
>>> index = PatchIndex([(8, 8), (2, 2), (8, 4)], patch_size=4)
>>> image_search(index)(np.array([0, 3, 4, 5])).tolist()
[0, 0, 2, 2]
>>> {name: array.dtype.name for name, array in index_tables(index).items()}
{'shapes': 'uint16', 'grid_by_axis': 'uint16', 'bounds': 'int64'}
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..index import _search

__all__ = [
    # index
    "index_tables",
    "image_search",
    "max_bucket_steps",
    "image_search_with_max_steps",
    # store
    "store_handles",
    "pixel_reader",
    "mask_reader",
    "kept_patterns",
    # data
    "buffer_pool",
    "pool_buffers",
    "reads_whole_tiles",
    "general_reads",
    "sample_list_batch",
    "worker_batches_enabled",
    "worker_batch_mappings",
    "shuffle_permute",
]


# -- index --------------------------------------------------------------------------------
def index_tables(index) -> dict:
    """The arrays a :class:`~lazypatch.PatchIndex` owns, in their stored (compact) dtypes.

    ``shapes`` (images, ndim) and ``grid_by_axis`` (ndim, images) in the smallest of
    uint16, int32 and int64 that holds them (NOTE [compact tables]), ``bounds``
    (images + 1,) int64. The public ``index.shapes`` is the int64 form, built on use.
    """
    return {"shapes": index._shapes, "grid_by_axis": index._grid_by_axis, "bounds": index._bounds}


def image_search(index) -> _search.ImageSearch:
    """The :class:`~lazypatch.index.ImageSearch` an index finds images with
    (NOTE [bucket search]): call it on an int64 array of flat numbers; its
    ``table`` is None when it falls back to a plain binary search."""
    return index._find_images


def max_bucket_steps() -> int:
    """The most halving steps a bucket table may need before the plain search is used."""
    return _search._MAX_BUCKET_STEPS


def image_search_with_max_steps(bounds, steps: int) -> _search.ImageSearch:
    """An :class:`~lazypatch.index.ImageSearch` of ``bounds`` built as if the step
    limit were ``steps``: -1 forces the plain search, a large value the bucket table."""
    saved = _search._MAX_BUCKET_STEPS
    _search._MAX_BUCKET_STEPS = steps
    try:
        return _search.ImageSearch(bounds)
    finally:
        _search._MAX_BUCKET_STEPS = saved


# -- store -------------------------------------------------------------------------------------
def store_handles(store, shard: int = 0):
    """This process's open handles of a store's shard (NOTE [fork safety]): opened on
    first use and again in a new process; ``pid`` says whose they are. Raises
    StoreClosedError on a closed store."""
    return store._get_handles(shard)


def pixel_reader(store):
    """The reader of the first shard's pixels (``lazypatch.store.reading.readers``);
    its ``array.offset`` is the pixels' position in the file."""
    return store._pixels


def mask_reader(store):
    """The reader of the first shard's masks, or None when the store has none."""
    return store._masks


def kept_patterns(reader) -> dict:
    """A tiled reader's kept address patterns (NOTE [patterns]), the live table:
    ``{(size, segment bytes): (keys, table, shape) or None}``, None once there were
    too many to keep. Clearing it makes the next batches compute them anew."""
    return reader._patterns


# -- data -------------------------------------------------------------------------------
def buffer_pool(limit: int):
    """A new pool of batch buffers as each PatchDataset has (NOTE [buffer reuse]),
    keeping ``limit`` bytes (or three buffers of the size asked, when more);
    ``pool.take(shape, dtype)`` hands out a page-aligned array."""
    from ..data.dataset import _BufferPool

    return _BufferPool(limit=limit)


def pool_buffers(pool) -> list:
    """The buffers a pool keeps now (held or idle), as flat uint8 arrays."""
    return list(pool._buffers)


def reads_whole_tiles(dataset) -> bool:
    """Whether a PatchDataset reads batches as whole tile records (NOTE [whole-tile grids])."""
    return dataset._whole_tiles


@contextlib.contextmanager
def general_reads(dataset):
    """Within the block, ``dataset`` reads through the general batch plan even where
    its grid is the tile grid, to compare the two paths."""
    saved = dataset._whole_tiles
    dataset._whole_tiles = False
    try:
        yield dataset
    finally:
        dataset._whole_tiles = saved


def sample_list_batch(samples) -> dict:
    """The batch a list from ``PatchDataset.__getitems__`` makes its samples from
    (NOTE [lazy samples])."""
    return samples._batch


def worker_batches_enabled() -> bool:
    """Whether DataLoader workers hand batches over in shared slots here
    (NOTE [worker batches]: Linux with memfd, not turned off by
    ``LAZYPATCH_WORKER_BATCHES=0``)."""
    from ..data import _shared

    return _shared.enabled()


def worker_batch_mappings() -> int:
    """How many worker slots this (main) process maps now (NOTE [worker batches])."""
    from ..data import _shared

    return _shared.main_process_mappings()


def shuffle_permute(positions, n: int, salt: int, tweak: int = 0) -> np.ndarray:
    """The keyed permutation of ``range(n)`` PatchSampler shuffles with, at ``positions``."""
    from ..data._shuffle import permute

    return permute(positions, n, salt, tweak=tweak)
