"""The copy kernels of a batch read: window and element gathers, byte rows,
page-aligned buffers. They know nothing of stores or layouts."""

from __future__ import annotations

import math

import numpy as np

from .handles import torch



PAGE = 4096


def page_aligned(shape, dtype) -> np.ndarray:
    """An empty C-contiguous array starting on a page: a destination for whole records.

    NOTE [page-aligned buffers]: glibc's ``memcpy`` of a whole record runs 3-4
    times slower when the destination lies 1-31 bytes past the source modulo 4
    KiB (12 KiB records, destination 8 or 16 bytes past the source; the figures
    are in the commit that introduced page-aligned buffers), and ``malloc`` returns addresses 16 bytes into a page while stores place their
    pixels on a page (``format.create_h5``). From a page
    start that happens only for sources just before a page end, where records
    whose size is a multiple of 64 bytes never start.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + PAGE, np.uint8)
    start = -raw.ctypes.data % PAGE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def gather_windows(source, starts, width: int, out):
    """Fill ``out`` (len(starts), width) with ``source[s:s + width]`` for each byte offset ``s``.

    ``starts``: int64 byte offsets of any shape, a numpy array or a torch tensor.
    ``source`` is a 1-D uint8 tensor; windows may overlap. One multithreaded
    ``torch.index_select`` does every copy. ``out`` should be reused memory:
    writing a fresh buffer costs a page fault per 4 KiB (as much as the copy).
    """
    t = torch()
    windows = source.as_strided((source.numel() - width + 1, width), (1, 1))
    if isinstance(starts, np.ndarray):
        starts = t.from_numpy(np.ascontiguousarray(starts, dtype=np.int64))
    t.index_select(windows, 0, starts.reshape(-1), out=out)
    return out


# NOTE [element gathers]: a window of 2, 4, 8 or 16 bytes at an address that is a multiple
# of its width is one element of a 2-, 4-, 8- or 16-byte dtype (complex128 for 16),
# copied element by element, where rows of a 2-D byte view cost a ``memcpy`` call each.
# ``torch.gather`` along the rows of the source expanded to (B, n) shares the work out
# to every thread (a 1-D gather or ``index_select`` runs on one). The 196,608 16-byte
# segments of 256 boxes of 3 x 64 x 64 at stride 48 on 64-pixel tiles, 40 batches in
# turn (a cold CPU cache), us a batch: 397-405 against 558-600 as rows; 1-D gather 692-716
# ("plan + gather" of python tests/benchmarks/reference.py --size-gb 0.5 --stride 48).
_ELEMENT_DTYPES = {2: "int16", 4: "int32", 8: "int64", 16: "complex128"}


def element_unit(width: int, base: int) -> int:
    """The element size for :func:`gather_elements` of ``width``-byte windows
    whose addresses are ``base`` plus multiples of ``width``; 1 when none applies."""
    return width if width in _ELEMENT_DTYPES and base % width == 0 else 1


def gather_elements(source, indices, width: int, out):
    """Fill ``out`` (C-contiguous, ``indices.numel() * width`` bytes) with the
    ``width``-byte elements of ``source`` at these element indices (byte address /
    width; see NOTE [element gathers]). ``indices``: a torch tensor (B, ...), each row
    one thread's work at most. ``source`` must start at a multiple of ``width``."""
    t = torch()
    dtype = getattr(t, _ELEMENT_DTYPES[width])
    elements = source[: source.numel() // width * width].view(dtype)
    rows = indices.reshape(indices.shape[0] if indices.dim() > 1 else 1, -1)
    target = out.reshape(-1).view(dtype).view(rows.shape)
    # every row of the expanded source is the whole source: out[i, j] = source[rows[i, j]]
    t.gather(elements.expand(rows.shape[0], -1), 1, rows, out=target)
    return out


def broadcast_sum(handles, first, *rest):
    """The broadcast sum of int64 numpy arrays, as a torch tensor in the
    handles' "addresses" scratch (valid until the next sum).

    torch adds large broadcast operands about 4 times faster than numpy
    (whose inner loop is the short last axis here): 0.9 against 4.1 ms for
    the 786,432 segment addresses of 256 boxes of 3 x 256 x 256.
    """
    t = torch()
    total = t.from_numpy(np.ascontiguousarray(first))
    for k, term in enumerate(rest):
        term = t.from_numpy(np.ascontiguousarray(term))
        shape = np.broadcast_shapes(tuple(total.shape), tuple(term.shape))
        slot = "addresses" if k == len(rest) - 1 else f"partial{k % 2}"
        total = t.add(total, term, out=handles.int64s(shape, slot))
    return total


def in_units(addresses, unit: int):
    """Byte addresses (a torch tensor, in scratch) divided by ``unit``, a power of two, in place."""
    if unit > 1:
        addresses.bitwise_right_shift_(unit.bit_length() - 1)
    return addresses


def byte_rows(array: np.ndarray, rows: int):
    """A C-contiguous numpy array as a (rows, -1) uint8 tensor sharing its memory."""
    if not array.flags.c_contiguous:  # reshape would copy, and the gather would fill the copy
        raise ValueError("internal error: a batch is gathered into a non-contiguous array")
    return torch().from_numpy(array.reshape(-1).view(np.uint8)).view(rows, -1)


def runs(sorted_ids: np.ndarray) -> list:
    """(first id, count, position) of each run of consecutive ids."""
    if sorted_ids.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_ids.size]])
    return list(zip(sorted_ids[starts].tolist(), (stops - starts).tolist(), starts.tolist()))


# -- boxes --------------------------------------------------------------------------------
def clip_box(shape, origin, size):
    """(lo, hi) of the box inside the image, or None when they do not meet."""
    lo = tuple(max(o, 0) for o in origin)
    hi = tuple(min(o + s, n) for o, s, n in zip(origin, size, shape))
    if any(a >= b for a, b in zip(lo, hi)):
        return None
    return lo, hi
