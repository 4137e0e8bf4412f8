"""Reading boxes of stored arrays: one interface, three layouts, two I/O modes.

A *box* is an image-space region ``[origin, origin + size)``; reading it fills
an output array ``(*size, C)`` (pixels) or ``(*size)`` (masks), padding what
lies outside the image.

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
through h5py, then gathers them like ``pread``.

NOTE [row windows]: in the tiled layout a box row that crosses a tile border
in x lives in two (or more) tiles. Every row is first copied as one window of
the full box width starting inside its first tile (the part past the tile's
end is garbage), then the other tiles' parts are copied over it per patch.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _format as fmt
from .errors import IntegrityError, StoreChangedError

_torch = None


def torch():
    """torch, imported on first use (the store module itself does not need it)."""
    global _torch
    if _torch is None:
        import torch as module

        _torch = module
    return _torch


# -- per-process handles ------------------------------------------------------------------
class Handles:
    """File descriptor, memory map, h5py file and thread pool of one process.

    NOTE [fork safety]: handles are created lazily and belong to the process
    that created them; a store notices a new pid (after fork) and opens its
    own. Nothing here is ever pickled.
    """

    def __init__(self, info: fmt.StoreInfo, locking, io_threads: int):
        self.pid = os.getpid()
        self.info = info
        self.locking = locking
        self.io_threads = io_threads
        self.fd = os.open(info.path, os.O_RDONLY)
        stat = os.fstat(self.fd)
        if fmt.file_identity(stat) != info.identity:
            os.close(self.fd)
            raise StoreChangedError(
                f"{info.path!r} changed since it was opened (size, mtime or inode differ); "
                "open it again"
            )
        self._map = None
        self._bytes = None  # torch uint8 tensor over the whole map
        self._array = None  # numpy uint8 array over the whole map
        self._h5 = None
        self._pool = None
        self._lock = threading.Lock()
        self.nowait = hasattr(os, "RWF_NOWAIT")
        self.scratch = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            # ACCESS_COPY: writable private pages, so torch wraps it without a warning;
            # nothing ever writes, and no write could reach the file.
            self._map = mmap.mmap(self.fd, self.info.file_size, access=mmap.ACCESS_COPY)
            self._array = np.frombuffer(self._map, dtype=np.uint8)
        return self._array

    @property
    def bytes(self):
        if self._bytes is None:
            self._bytes = torch().from_numpy(self.array)
        return self._bytes

    @property
    def h5(self):
        if self._h5 is None:
            self._h5 = fmt.open_h5(self.info.path, self.locking)
        return self._h5

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="lazypatch-io")
        return self._pool

    def scratch_bytes(self, nbytes: int):
        """A reusable uint8 tensor of at least nbytes (never handed to callers)."""
        if self.scratch is None or self.scratch.numel() < nbytes:
            self.scratch = torch().empty(max(nbytes, 1 << 20), dtype=torch().uint8)
        return self.scratch

    def cached(self, offsets) -> bool:
        """Whether the pages at these byte offsets are in the page cache (RWF_NOWAIT probe)."""
        if not self.nowait:
            return self.info.file_size < _ram_bytes() // 2
        probe = bytearray(1)
        try:
            for offset in offsets:
                if os.preadv(self.fd, [probe], int(offset), os.RWF_NOWAIT) != 1:
                    return False
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self.nowait = False
                return self.cached(offsets)
            raise
        return True

    def pread_into(self, extents, buffer) -> None:
        """Read (file offset, length, buffer offset) extents into a uint8 numpy buffer."""
        view = memoryview(buffer).cast("B")
        extents = list(extents)

        def job(part):
            for offset, length, at in part:
                target = view[at:at + length]
                while len(target):
                    got = os.preadv(self.fd, [target], offset)
                    if got <= 0:
                        raise IntegrityError(
                            errno.EIO,
                            f"{self.info.path!r} ended early at byte {offset} (truncated?)",
                        )
                    target = target[got:]
                    offset += got

        if len(extents) < 4 or self.io_threads <= 1:
            job(extents)
            return
        parts = [extents[k::self.io_threads] for k in range(self.io_threads)]
        for future in [self.pool.submit(job, part) for part in parts if part]:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # pragma: no cover - closing a broken file
                pass
            self._h5 = None
        self._bytes = self._array = self.scratch = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive somewhere; GC unmaps it later
                pass
            self._map = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 1 << 34


# -- the copy kernel ----------------------------------------------------------------------
def gather_windows(source, starts: np.ndarray, width: int, out=None):
    """Rows ``source[s:s + width]`` for each byte offset ``s`` as a (len(starts), width) tensor.

    ``source`` is a 1-D uint8 tensor; the windows may overlap. One multithreaded
    ``index_select`` does all the copies.
    """
    t = torch()
    windows = source.as_strided((source.numel() - width + 1, width), (1, 1))
    index = t.from_numpy(np.ascontiguousarray(starts.reshape(-1), dtype=np.int64))
    if out is None:
        return t.index_select(windows, 0, index)
    t.index_select(windows, 0, index, out=out)
    return out


def as_byte_rows(array: np.ndarray, rows: int):
    """A C-contiguous numpy array viewed as a (rows, -1) uint8 tensor (shared memory)."""
    return torch().from_numpy(array.reshape(-1).view(np.uint8)).view(rows, -1)


# -- box geometry -------------------------------------------------------------------------
def clip_box(shape, origin, size):
    """(lo, hi) of the box inside the image, or None when they do not meet."""
    lo = tuple(max(o, 0) for o in origin)
    hi = tuple(min(o + s, n) for o, s, n in zip(origin, size, shape))
    if any(a >= b for a, b in zip(lo, hi)):
        return None
    return lo, hi


def fill_outside(out, shape, origin, size, pad_value):
    """Pad ``out`` where the box leaves the image; returns the clipped (lo, hi) or None."""
    box = clip_box(shape, origin, size)
    if box is None:
        out[...] = pad_value
    elif any(a != o for a, o in zip(box[0], origin)) or any(
        b != o + s for b, o, s in zip(box[1], origin, size)
    ):
        out[...] = pad_value
    return box


class TiledGeometry:
    """Tile arithmetic of the tiled and chunked layouts (pure numpy)."""

    def __init__(self, info: fmt.StoreInfo):
        self.tile = info.tile
        self.tile_array = np.asarray(info.tile, dtype=np.int64)
        self.tile_pixels = int(np.prod(info.tile))
        self.shapes = info.shapes
        self.first = info.offsets  # first tile of each image (n + 1,)
        self._shapes_view = memoryview(np.ascontiguousarray(info.shapes).reshape(-1))
        self._first_view = memoryview(info.offsets)
        self.ndim = len(info.tile)

    def box_tiles(self, image_id: int, lo, hi):
        """(tile id, source slices in the tile, destination slices relative to lo)."""
        nd = self.ndim
        base = image_id * nd
        shape = [self._shapes_view[base + a] for a in range(nd)]
        grid = [-(-shape[a] // self.tile[a]) for a in range(nd)]
        ranges = [range(lo[a] // self.tile[a], (hi[a] - 1) // self.tile[a] + 1) for a in range(nd)]
        first = self._first_view[image_id]
        for coords in itertools.product(*ranges):
            tile_id = 0
            for a in range(nd):
                tile_id = tile_id * grid[a] + coords[a]
            src, dst = [], []
            for a in range(nd):
                start = coords[a] * self.tile[a]
                a0 = max(lo[a], start)
                a1 = min(hi[a], start + self.tile[a])
                src.append(slice(a0 - start, a1 - start))
                dst.append(slice(a0 - lo[a], a1 - lo[a]))
            yield first + tile_id, tuple(src), tuple(dst)

    def exact_tiles(self, image_ids, origins, size):
        """Tile ids when every box is exactly one tile, else None."""
        if tuple(size) != self.tile or (origins % self.tile_array).any():
            return None
        grid = -(-self.shapes[image_ids] // self.tile_array)
        coords = origins // self.tile_array
        local = np.zeros(len(image_ids), dtype=np.int64)
        for a in range(self.ndim):
            local = local * grid[:, a] + coords[:, a]
        return self.first[image_ids] + local

    def rows(self, image_ids, origins, size):
        """Row plan of interior boxes (NOTE [row windows]).

        Returns (tiles, within, pieces): for every box row the tile holding its
        first pixel and the pixel offset of that pixel in the tile, shapes
        (B, R); and for the rows' later x-pieces a list of
        (patches, tiles, within, dst_start, length).
        """
        tile, nd = self.tile, self.ndim
        size = tuple(int(s) for s in size)
        grid = -(-self.shapes[image_ids] // self.tile_array)  # (B, nd)
        count = len(image_ids)
        tile_lead = np.zeros((count,) + (1,) * (nd - 1), dtype=np.int64)
        row_in = np.zeros_like(tile_lead)
        for a in range(nd - 1):
            shape = [count] + [1] * (nd - 1)
            shape[a + 1] = size[a]
            coord = (origins[:, a, None] + np.arange(size[a])).reshape(shape)
            tc, ic = np.divmod(coord, tile[a])
            g = grid[:, a + 1].reshape((count,) + (1,) * (nd - 1))
            tile_lead = (tile_lead + tc) * g
            row_in = row_in * tile[a] + ic
        tile_lead = np.broadcast_to(tile_lead, (count,) + size[:-1]).reshape(count, -1)
        row_in = np.broadcast_to(row_in, (count,) + size[:-1]).reshape(count, -1)
        tx0, dx = np.divmod(origins[:, -1], tile[-1])
        tiles = tile_lead + (self.first[image_ids] + tx0)[:, None]
        row_start = row_in * tile[-1]
        within = row_start + dx[:, None]
        pieces = []
        width = size[-1]
        n_pieces = (dx + width - 1) // tile[-1] + 1
        for k in range(1, int(n_pieces.max()) if count else 1):
            patches = np.flatnonzero(n_pieces > k)
            dst_start = k * tile[-1] - dx[patches]
            length = np.minimum(width - dst_start, tile[-1])
            pieces.append((patches, tiles[patches] + k, row_start[patches], dst_start, length))
        return tiles, within, pieces


def merge_pieces(out_rows, pieces_data, pixel_bytes):
    """Copy later x-pieces over the garbage tails of their rows (NOTE [row windows])."""
    for patches, data, dst_start, length in pieces_data:
        starts = (dst_start * pixel_bytes).tolist()
        stops = ((dst_start + length) * pixel_bytes).tolist()
        for j, (b, s, e) in enumerate(zip(patches.tolist(), starts, stops)):
            out_rows[b, :, s:e] = data[j, :, : e - s]


# -- readers ----------------------------------------------------------------------------
class Reader:
    """Base: interior/boundary split and the generic per-box path."""

    def __init__(self, info: fmt.StoreInfo):
        self.info = info
        self.shapes = info.shapes
        self._shapes_view = memoryview(np.ascontiguousarray(info.shapes).reshape(-1))
        self.ndim = info.spatial_ndim

    def shape(self, image_id: int) -> tuple:
        base = image_id * self.ndim
        return tuple(self._shapes_view[base + a] for a in range(self.ndim))

    def read_box(self, handles, array, image_id, origin, size, out, pad_value, mode="mmap") -> None:
        """Fill ``out`` (*size[, C]) with the box; padding where it leaves the image."""
        shape = self.shape(image_id)
        box = fill_outside(out, shape, origin, size, pad_value)
        if box is not None:
            lo, hi = box
            dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
            self._copy_clipped(handles, array, image_id, lo, hi, out[dst], mode)

    def probe_offsets(self, image_ids, origins, count=4) -> list:
        """File offsets of a few boxes' first pixels, to ask the page cache about."""
        picks = np.linspace(0, len(image_ids) - 1, min(count, len(image_ids))).astype(np.int64)
        return [self._pixel_offset(int(image_ids[k]), origins[k]) for k in picks.tolist()]

    def read_boxes(self, handles, targets, image_ids, origins, size, mode) -> None:
        """Fill each target's ``out`` (B, *size[, C]) for a batch of boxes.

        targets: list of (ArrayInfo, out array, pad value).
        """
        size_array = np.asarray(size, dtype=np.int64)
        inside = (origins >= 0).all(axis=1) & (origins + size_array <= self.shapes[image_ids]).all(axis=1)
        if inside.all():
            self._read_interior(handles, targets, image_ids, origins, size, mode)
            return
        where = np.flatnonzero(inside)
        if where.size:
            partial = [(array, np.empty((where.size,) + out.shape[1:], out.dtype), pad)
                       for array, out, pad in targets]
            self._read_interior(handles, partial, image_ids[where], origins[where], size, mode)
            for (_, out, _), (_, part, _) in zip(targets, partial):
                out[where] = part
        for k in np.flatnonzero(~inside).tolist():
            origin = tuple(origins[k].tolist())
            for array, out, pad in targets:
                self.read_box(handles, array, int(image_ids[k]), origin, size, out[k], pad, mode)

    def _read_interior(self, handles, targets, image_ids, origins, size, mode):  # pragma: no cover
        raise NotImplementedError

    def _copy_clipped(self, handles, array, image_id, lo, hi, out, mode):  # pragma: no cover
        raise NotImplementedError

    def _pixel_offset(self, image_id, origin) -> int:  # pragma: no cover
        raise NotImplementedError


class TiledReader(Reader):
    """Tiled layout: raw tile records at computed offsets (mmap or pread)."""

    def __init__(self, info: fmt.StoreInfo):
        super().__init__(info)
        self.geometry = TiledGeometry(info)

    def _records(self, handles, array: fmt.ArrayInfo) -> np.ndarray:
        count = self.info.offsets[-1]
        flat = handles.array[array.offset: array.offset + array.nbytes]
        return flat.view(array.dtype).reshape((int(count),) + array.record_shape)

    def _pixel_offset(self, image_id, origin) -> int:
        clipped = tuple(min(max(int(o), 0), n - 1) for o, n in zip(origin, self.shape(image_id)))
        tile_id = next(self.geometry.box_tiles(image_id, clipped, tuple(c + 1 for c in clipped)))[0]
        return self.info.pixels.offset + tile_id * self.info.pixels.record_bytes

    def _copy_clipped(self, handles, array, image_id, lo, hi, out, mode):
        if mode == "pread":
            scratch = np.empty(array.record_shape, array.dtype)
            for tile_id, src, dst in self.geometry.box_tiles(image_id, lo, hi):
                handles.pread_into([(array.offset + tile_id * array.record_bytes,
                                     array.record_bytes, 0)], scratch)
                out[dst] = scratch[src]
            return
        records = self._records(handles, array)
        for tile_id, src, dst in self.geometry.box_tiles(image_id, lo, hi):
            out[dst] = records[tile_id][src]

    def _read_interior(self, handles, targets, image_ids, origins, size, mode):
        geometry = self.geometry
        exact = geometry.exact_tiles(image_ids, origins, size)
        if exact is not None:
            for array, out, _ in targets:
                rows = as_byte_rows(out, len(image_ids))
                if mode == "pread":
                    buffer = out.reshape(-1).view(np.uint8)
                    handles.pread_into(
                        ((array.offset + t * array.record_bytes, array.record_bytes,
                          k * array.record_bytes) for k, t in enumerate(exact.tolist())),
                        buffer,
                    )
                else:
                    gather_windows(handles.bytes, array.offset + exact * array.record_bytes,
                                   array.record_bytes, rows)
            return
        tiles, within, pieces = geometry.rows(image_ids, origins, size)
        if mode == "pread":
            touched = np.unique(np.concatenate([tiles.reshape(-1)] + [p[1].reshape(-1) for p in pieces]))
        for array, out, _ in targets:
            record = array.record_bytes
            pixel = record // geometry.tile_pixels
            width = int(size[-1]) * pixel
            if mode == "pread":
                source = handles.scratch_bytes(touched.size * record + width)
                buffer = source.numpy()
                runs = _runs(touched)
                handles.pread_into(
                    ((array.offset + int(first) * record, int(n) * record, int(at) * record)
                     for first, n, at in runs),
                    buffer,
                )

                def address(tile_ids, offset_pixels):
                    return np.searchsorted(touched, tile_ids) * record + offset_pixels * pixel
            else:
                source = handles.bytes

                def address(tile_ids, offset_pixels):
                    return array.offset + tile_ids * record + offset_pixels * pixel

            head = address(tiles, within)
            if mode != "pread" and head.size and head.max() + width > source.numel():
                # the very end of the file: no room for a full window; go box by box
                for k in range(len(image_ids)):
                    self.read_box(handles, array, int(image_ids[k]), tuple(origins[k].tolist()),
                                  size, out[k], 0, mode)
                continue
            rows = as_byte_rows(out, head.size)
            gather_windows(source, head, width, rows)
            if pieces:
                out_rows = rows.view(len(image_ids), tiles.shape[1], width).numpy()
                piece_width = min(int(size[-1]), geometry.tile[-1]) * pixel
                data = []
                for patches, piece_tiles, piece_within, dst_start, length in pieces:
                    starts = address(piece_tiles, piece_within)
                    got = gather_windows(source, starts, piece_width)
                    data.append((patches, got.view(len(patches), tiles.shape[1], piece_width).numpy(),
                                 dst_start, length))
                merge_pieces(out_rows, data, pixel)


def _runs(sorted_ids: np.ndarray):
    """(first id, count, position) of each run of consecutive ids."""
    if sorted_ids.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_ids.size]])
    return list(zip(sorted_ids[starts].tolist(), (stops - starts).tolist(), starts.tolist()))


class ContiguousReader(Reader):
    """Contiguous layout: each image row-major at a computed offset."""

    def _image_view(self, handles, array, image_id):
        start, stop = self.info.offsets[image_id], self.info.offsets[image_id + 1]
        pixel = array.record_bytes
        flat = handles.array[array.offset + start * pixel: array.offset + stop * pixel]
        return flat.view(array.dtype).reshape(self.shape(image_id) + array.record_shape)

    def _pixel_offset(self, image_id, origin) -> int:
        shape = self.shape(image_id)
        linear = 0
        for o, n in zip(origin, shape):
            linear = linear * n + min(max(int(o), 0), n - 1)
        pixels = self.info.pixels
        return pixels.offset + (int(self.info.offsets[image_id]) + linear) * pixels.record_bytes

    def _copy_clipped(self, handles, array, image_id, lo, hi, out, mode):
        if mode == "pread":
            self._pread_box(handles, array, image_id, lo, hi, out)
            return
        view = self._image_view(handles, array, image_id)
        out[...] = view[tuple(slice(a, b) for a, b in zip(lo, hi))]

    def _pread_box(self, handles, array, image_id, lo, hi, out):
        shape = self.shape(image_id)
        pixel = array.record_bytes
        strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]  # pixel strides per axis
        base = array.offset + int(self.info.offsets[image_id]) * pixel
        width = (hi[-1] - lo[-1]) * pixel
        lead = [range(a, b) for a, b in zip(lo[:-1], hi[:-1])]
        buffer = np.empty(out.shape, array.dtype)
        flat = buffer.reshape(-1).view(np.uint8)
        extents = []
        for k, coords in enumerate(itertools.product(*lead)):
            linear = sum(c * int(s) for c, s in zip(coords, strides[:-1])) + lo[-1]
            extents.append((base + linear * pixel, width, k * width))
        handles.pread_into(extents, flat)
        out[...] = buffer

    def _read_interior(self, handles, targets, image_ids, origins, size, mode):
        if mode == "pread":
            for k in range(len(image_ids)):
                lo = tuple(origins[k].tolist())
                hi = tuple(o + s for o, s in zip(lo, size))
                for array, out, _ in targets:
                    self._pread_box(handles, array, int(image_ids[k]), lo, hi, out[k])
            return
        shapes = self.shapes[image_ids]
        count = len(image_ids)
        nd = self.ndim
        linear = np.zeros((count,) + (1,) * (nd - 1), dtype=np.int64)
        for a in range(nd - 1):
            shape = [count] + [1] * (nd - 1)
            shape[a + 1] = size[a]
            coord = (origins[:, a, None] + np.arange(size[a])).reshape(shape)
            extent = shapes[:, a + 1].reshape((count,) + (1,) * (nd - 1))
            linear = (linear + coord) * extent
        linear = np.broadcast_to(linear, (count,) + tuple(size[:-1])).reshape(count, -1)
        pixels = linear + (self.info.offsets[image_ids] + origins[:, -1])[:, None]
        for array, out, _ in targets:
            pixel = array.record_bytes
            width = int(size[-1]) * pixel
            starts = array.offset + pixels * pixel
            rows = as_byte_rows(out, starts.size)
            gather_windows(handles.bytes, starts, width, rows)


class ChunkedReader(TiledReader):
    """Chunked layout: one tile per HDF5 chunk, read (and decompressed) by h5py."""

    def _dataset(self, handles, array):
        name = fmt.D_PIXELS if array is self.info.pixels else fmt.D_MASKS
        return handles.h5[name]

    def _copy_clipped(self, handles, array, image_id, lo, hi, out, mode):
        dataset = self._dataset(handles, array)
        for tile_id, src, dst in self.geometry.box_tiles(image_id, lo, hi):
            out[dst] = _h5_read(dataset, (tile_id,) + src, self.info.path, image_id)

    def _read_interior(self, handles, targets, image_ids, origins, size, mode):
        geometry = self.geometry
        exact = geometry.exact_tiles(image_ids, origins, size)
        if exact is not None:
            tiles, within, pieces = exact[:, None], np.zeros((len(exact), 1), np.int64), []
            touched = np.unique(exact)
        else:
            tiles, within, pieces = geometry.rows(image_ids, origins, size)
            touched = np.unique(np.concatenate([tiles.reshape(-1)] + [p[1].reshape(-1) for p in pieces]))
        for array, out, _ in targets:
            record = array.record_bytes
            pixel = record // geometry.tile_pixels
            width = (record if exact is not None else int(size[-1]) * pixel)
            source = handles.scratch_bytes(touched.size * record + width)
            records = source.numpy()[: touched.size * record].view(array.dtype)
            records = records.reshape((touched.size,) + array.record_shape)
            dataset = self._dataset(handles, array)
            for first, n, at in _runs(touched):
                records[at:at + n] = _h5_read(dataset, np.s_[first:first + n], self.info.path, None)
            head = np.searchsorted(touched, tiles) * record + within * pixel
            rows = as_byte_rows(out, head.size)
            gather_windows(source, head, width, rows)
            if pieces:
                out_rows = rows.view(len(image_ids), tiles.shape[1], width).numpy()
                piece_width = min(int(size[-1]), geometry.tile[-1]) * pixel
                data = []
                for patches, piece_tiles, piece_within, dst_start, length in pieces:
                    starts = np.searchsorted(touched, piece_tiles) * record + piece_within * pixel
                    got = gather_windows(source, starts, piece_width)
                    data.append((patches, got.view(len(patches), tiles.shape[1], piece_width).numpy(),
                                 dst_start, length))
                merge_pieces(out_rows, data, pixel)


def _h5_read(dataset, selection, path, image_id):
    try:
        return dataset[selection]
    except OSError as exc:
        where = f" (image {image_id})" if image_id is not None else ""
        raise IntegrityError(
            errno.EIO, f"cannot read {dataset.name!r} of {path!r}{where}: {exc}"
        ) from exc


def make_reader(info: fmt.StoreInfo) -> Reader:
    return {"tiled": TiledReader, "contiguous": ContiguousReader, "chunked": ChunkedReader}[info.layout](info)
