"""Reading boxes of stored arrays: one interface, three layouts, two I/O modes.

A *box* is an image-space region ``[origin, origin + size)``; reading it fills
an output array ``(C, *size)`` (pixels, channel-planar) or ``(*size)`` (masks),
padding what lies outside the image. Pixels are handled as arrays with one
more leading axis (the channel) whose tile extent is C, so one N-D code path
serves pixels and masks, 2-D and 3-D.

Uncompressed layouts (``tiled``, ``contiguous``) are read at file offsets
computed from the store's tables, never through h5py:

``mmap``
    The whole file is memory-mapped once per process; a batch is gathered by
    one ``torch.index_select`` over an overlapping "window" view of the bytes
    (one row of a box per window), which copies with all cores and no Python
    work per patch. Best when the data sits in the page cache.
``pread``
    The tiles a batch touches are read with ``os.preadv`` from a small thread
    pool (the disk sees a queue of requests) into a scratch buffer, then
    gathered from there. Best when the data is not cached (larger than RAM).

The ``chunked`` layout (compression, fletcher32) reads the touched tiles
through h5py (one call per run of consecutive tiles), then gathers them like
``pread``.

NOTE [row windows]: in the tiled layout a box row that crosses a tile border
in x lives in two (or more) tiles. Three plans, the first that applies:

1. whole tiles: boxes equal to tiles, on the tile grid: one copy per record;
2. segments: rows cut in pieces of gcd(tile, box, x offsets) pixels, none
   crossing a border, when a piece is at least ``SEGMENT_BYTES``, or
   ``ELEMENT_SEGMENT_BYTES`` when pieces are copied as elements: one copy per
   piece, each in place (see NOTE [segments]; addresses by pattern, see NOTE [patterns];
   see NOTE [element gathers]);
3. joined rows: the tile rows each box row spans copied side by side into
   scratch, then the box's window copied out of them (see NOTE [joined rows]).
"""
