"""One reader per layout: which tiles or rows a batch of boxes needs, fetched and
gathered (the plans of NOTE [row windows] in the package docstring)."""

from __future__ import annotations

import errno
import itertools
import math
from typing import NamedTuple

import numpy as np

from .. import format as fmt
from ...errors import IntegrityError
from ...grid import ceil_div
from .gathers import (broadcast_sum, byte_rows, clip_box, element_unit, gather_elements, gather_windows,
                      in_units, page_aligned, runs)
from .handles import torch

class RowPlan(NamedTuple):
    """Where every row of a batch of interior boxes starts (see NOTE [row windows]), (B, R)."""

    tiles: np.ndarray  # the tile holding each row's first pixel
    row_start: np.ndarray  # the row's pixel offset in a channel plane of that tile


# below this many bytes (see NOTE [segments]) a segment gather costs more than joined rows
SEGMENT_BYTES = 16
# ... and below this many when segments are copied as elements (see NOTE [element gathers]):
# 256 boxes of 3 x 64 x 64 uint8 on 64-pixel tiles, us a batch, joined rows / elements:
# stride 40 (8-byte segments) 1,415 / 974, stride 44 (4-byte) 1,460 / 1,377
ELEMENT_SEGMENT_BYTES = 4
# the most scratch the joined rows of one gather may take (see NOTE [joined rows])
JOINED_BYTES = 16 << 20
# the most memory the kept address patterns of one reader (pixels or masks of a shard) may take
PATTERN_TABLE_BYTES = 16 << 20


class ArrayReader:
    """Reads boxes of one stored array (pixels or masks) of every image.

    Subclasses give ``_copy_clipped`` (one box already clipped to its image)
    and ``_read_interior`` (a batch of boxes inside their images).
    """

    def __init__(self, info: fmt.StoreInfo, array: fmt.ArrayInfo):
        self.info = info
        self.array = array
        self.lead = (array.channels,) if array.channels else ()
        self.shapes = info.shapes
        self.ndim = info.spatial_ndim
        self.itemsize = array.dtype.itemsize
        self._shapes_view = memoryview(np.ascontiguousarray(info.shapes).reshape(-1))

    def shape(self, image_id: int) -> tuple:
        base = image_id * self.ndim
        return tuple(self._shapes_view[base + a] for a in range(self.ndim))

    def read_box(self, handles, image_id, origin, size, out, pad_value, mode) -> None:
        """Fill ``out`` (lead + size) with one box, padding where it leaves the image."""
        box = clip_box(self.shape(image_id), origin, size)
        if box is None or box != (tuple(origin), tuple(o + s for o, s in zip(origin, size))):
            out[...] = pad_value
        if box is not None:
            lo, hi = box
            dst = (slice(None),) * len(self.lead) + tuple(
                slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
            self._copy_clipped(handles, image_id, lo, hi, out[dst], mode)

    def read_boxes(self, handles, image_ids, origins, size, out, pad_value, mode,
                   interior=False) -> None:
        """Fill ``out`` (B, *lead, *size) for a batch of boxes of one size.

        ``interior=True`` promises that every box lies inside its image.
        """
        if interior:
            self._read_interior(handles, image_ids, origins, size, out, mode)
            return
        size_array = np.asarray(size, dtype=np.int64)
        inside = (origins >= 0).all(axis=1) & (origins + size_array <= self.shapes[image_ids]).all(axis=1)
        if inside.all():
            self._read_interior(handles, image_ids, origins, size, out, mode)
            return
        where = np.flatnonzero(inside)
        if where.size:
            part = page_aligned((where.size,) + out.shape[1:], out.dtype)
            self._read_interior(handles, image_ids[where], origins[where], size, part, mode)
            out[where] = part
        for k in np.flatnonzero(~inside).tolist():
            self.read_box(handles, int(image_ids[k]), tuple(origins[k].tolist()), size, out[k],
                          pad_value, mode)

    def probe_offsets(self, image_ids, origins, count: int = 8) -> list:
        """File offsets of the first bytes of ``count`` boxes spread over the batch.

        NOTE [auto mode]: mapping cold pages costs a synchronous fault each
        (hundreds of ms per batch), reading warm pages with pread costs about
        twice a gather from the map; so the map is used only when every probe
        is cached. Eight probes of a half-cached batch all hit with p = 0.4%.
        """
        total = len(image_ids)
        picks = sorted({k * (total - 1) // max(count - 1, 1) for k in range(min(count, total))})
        return [self._offset_of(int(image_ids[k]), origins[k].tolist()) for k in picks]

    def prefetch(self, handles, image_ids, origins, size) -> None:
        """Ask the OS to start reading what these boxes need (no-op where unsupported)."""

    def _offset_of(self, image_id, origin) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _copy_clipped(self, handles, image_id, lo, hi, out, mode):  # pragma: no cover
        raise NotImplementedError

    def _read_interior(self, handles, image_ids, origins, size, out, mode):  # pragma: no cover
        raise NotImplementedError


# -- tiled ------------------------------------------------------------------------------------
class TiledReader(ArrayReader):
    """Tiles stored as records (C, *tile) at computed file offsets."""

    def __init__(self, info, array):
        super().__init__(info, array)
        self.tile = info.tile
        self.tile_array = np.asarray(info.tile, dtype=np.int64)
        self.first = info.offsets  # first tile of each image, (n + 1,)
        self._first_view = memoryview(info.offsets)
        self.record_bytes = array.record_bytes
        self._patterns = {}  # (size, segment) -> kept pattern rows, see NOTE [patterns]

    # one tile at a time (the generic path) -------------------------------------------
    def box_tiles(self, image_id: int, lo, hi):
        """(tile id, source slices in the tile, destination slices relative to lo)."""
        tile, nd = self.tile, self.ndim
        shape = self.shape(image_id)
        grid = [ceil_div(shape[a], tile[a]) for a in range(nd)]
        ranges = [range(lo[a] // tile[a], (hi[a] - 1) // tile[a] + 1) for a in range(nd)]
        first = self._first_view[image_id]
        for coords in itertools.product(*ranges):
            tile_id = 0
            src, dst = [], []
            for a in range(nd):
                tile_id = tile_id * grid[a] + coords[a]
                start = coords[a] * tile[a]
                a0, a1 = max(lo[a], start), min(hi[a], start + tile[a])
                src.append(slice(a0 - start, a1 - start))
                dst.append(slice(a0 - lo[a], a1 - lo[a]))
            yield first + tile_id, tuple(src), tuple(dst)

    def _record(self, handles, tile_id: int, mode) -> np.ndarray:
        if mode == "pread":
            record = np.empty(self.array.record_shape, self.array.dtype)
            handles.pread_into([(self.array.offset + tile_id * self.record_bytes,
                                 self.record_bytes, 0)], record.reshape(-1).view(np.uint8))
            return record
        return handles.records(self.array)[tile_id]

    def read_box(self, handles, image_id, origin, size, out, pad_value, mode) -> None:
        if mode == "mmap":
            # fast path: a box inside its image and inside one tile (small patches)
            tile, nd = self.tile, self.ndim
            base = image_id * nd
            tile_id = 0
            box = [slice(None)] * len(self.lead)
            for a in range(nd):
                o, end, extent = origin[a], origin[a] + size[a], self._shapes_view[base + a]
                coord = o // tile[a]
                if o < 0 or end > extent or (end - 1) // tile[a] != coord:
                    break
                tile_id = tile_id * ceil_div(extent, tile[a]) + coord
                box.append(slice(o - coord * tile[a], end - coord * tile[a]))
            else:
                out[...] = handles.records(self.array)[self._first_view[image_id] + tile_id][tuple(box)]
                return
        super().read_box(handles, image_id, origin, size, out, pad_value, mode)

    def _copy_clipped(self, handles, image_id, lo, hi, out, mode):
        keep = (slice(None),) * len(self.lead)
        for tile_id, src, dst in self.box_tiles(image_id, lo, hi):
            out[keep + dst] = self._record(handles, tile_id, mode)[keep + src]

    def _offset_of(self, image_id, origin) -> int:
        tile, base = self.tile, image_id * self.ndim
        tile_id = 0
        for a in range(self.ndim):
            extent = self._shapes_view[base + a]
            coord = min(max(origin[a], 0), extent - 1) // tile[a]
            tile_id = tile_id * ceil_div(extent, tile[a]) + coord
        return self.array.offset + (self._first_view[image_id] + tile_id) * self.record_bytes

    def tiles_of(self, image_ids, origins, size) -> np.ndarray:
        """Sorted ids of every tile the boxes touch (boxes may leave their images)."""
        shapes = self.shapes[image_ids]
        lo = np.clip(origins, 0, shapes - 1)
        hi = np.clip(origins + np.asarray(size, dtype=np.int64), 1, shapes)
        meets = (origins < shapes).all(axis=1) & (origins + np.asarray(size) > 0).all(axis=1)
        first, last = lo // self.tile_array, (hi - 1) // self.tile_array
        grid = self.grid[image_ids]
        spans = (last - first).max(axis=0) + 1 if len(image_ids) else np.zeros(self.ndim, np.int64)
        found = []
        for step in itertools.product(*[range(int(k)) for k in spans]):
            coords = first + np.asarray(step, dtype=np.int64)
            valid = meets & (coords <= last).all(axis=1)
            local = coords[:, 0]
            for a in range(1, self.ndim):
                local = local * grid[:, a] + coords[:, a]
            found.append((self.first[image_ids] + local)[valid])
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)

    def prefetch(self, handles, image_ids, origins, size) -> None:
        record = self.record_bytes
        handles.willneed((self.array.offset + first * record, n * record)
                         for first, n, _ in runs(self.tiles_of(image_ids, origins, size)))

    # a batch of interior boxes ----------------------------------------------------------
    @property
    def grid(self) -> np.ndarray:
        """Tiles per axis of each image (n, ndim), computed on first use, shared by readers."""
        grid = getattr(self.info, "tile_grid", None)
        if grid is None:
            grid = self.info.tile_grid = fmt.tile_grid(self.shapes, self.tile)
        return grid

    @property
    def grid_columns(self) -> tuple:
        """The columns of :attr:`grid`, contiguous (indexing one is cheaper than a row gather)."""
        if not hasattr(self, "_grid_columns"):
            self._grid_columns = tuple(np.ascontiguousarray(column) for column in self.grid.T)
        return self._grid_columns

    def exact_tiles(self, image_ids, origins, size):
        """Tile ids when every box is exactly one tile, else None."""
        if tuple(size) != self.tile:
            return None
        coords, rest = np.divmod(origins, self.tile_array)
        if rest.any():
            return None
        local = coords[:, 0]
        for a in range(1, self.ndim):
            local = local * self.grid_columns[a][image_ids] + coords[:, a]
        return self.first[image_ids] + local

    def _row_terms(self, image_ids, origins, size):
        """Per spatial axis but x, innermost first: (axis shape, tiles, pixels), the steps
        every box row takes along that axis, in tiles and in pixels of a channel plane.
        The one row plan that :meth:`rows` and :meth:`mapped_row_starts` sum up."""
        tile, nd = self.tile, self.ndim
        count = len(image_ids)
        grid = self.grid[image_ids]
        tile_stride = np.ones(count, dtype=np.int64)
        pixel_stride = tile[-1]
        for a in range(nd - 2, -1, -1):
            tile_stride = tile_stride * grid[:, a + 1]
            tc, ic = np.divmod(origins[:, a, None] + np.arange(size[a]), tile[a])
            axis_shape = [count] + [1] * (nd - 1)
            axis_shape[a + 1] = size[a]
            yield axis_shape, tc * tile_stride[:, None], ic * pixel_stride
            pixel_stride *= tile[a]

    def rows(self, image_ids, origins, size) -> RowPlan:
        """The row plan of interior boxes, in tile ids (see NOTE [row windows]).

        Rows run over all spatial axes but x; the channel is added later as a
        constant offset (records are channel-planar). Returns (tiles,
        row_start), a :class:`RowPlan`: per box and row the tile holding its first
        pixel, and the row's pixel offset in a channel plane of that tile, (B, R).
        """
        count, nd = len(image_ids), self.ndim
        shape = (count,) + (1,) * (nd - 1)
        tiles = (self.first[image_ids] + origins[:, -1] // self.tile[-1]).reshape(shape)
        row_start = np.zeros(shape, dtype=np.int64)
        for axis_shape, tile_steps, pixel_steps in self._row_terms(image_ids, origins, size):
            tiles = tiles + tile_steps.reshape(axis_shape)
            row_start = row_start + pixel_steps.reshape(axis_shape)
        rows = (count, int(np.prod(size[:-1])))
        return RowPlan(np.broadcast_to(tiles, (count,) + tuple(size[:-1])).reshape(rows),
                       np.broadcast_to(row_start, (count,) + tuple(size[:-1])).reshape(rows))

    def mapped_row_starts(self, image_ids, origins, size) -> np.ndarray:
        """Byte offsets in the file of every box row's first pixel, (B, R): the plan of
        :meth:`rows` in bytes, summed per axis (no (B, R) tile table in between)."""
        record, value = self.record_bytes, self.itemsize
        count, nd = len(image_ids), self.ndim
        tx0, dx = np.divmod(origins[:, -1], self.tile[-1])
        starts = (self.array.offset + (self.first[image_ids] + tx0) * record + dx * value).reshape(
            (count,) + (1,) * (nd - 1))
        for axis_shape, tile_steps, pixel_steps in self._row_terms(image_ids, origins, size):
            starts = starts + (tile_steps * record + pixel_steps * value).reshape(axis_shape)
        return starts.reshape(count, -1)

    def read_tiles(self, handles, tile_ids, out, mode) -> None:
        """Fill ``out`` (B, *record) with whole records: one copy each."""
        record = self.record_bytes
        rows = byte_rows(out, len(tile_ids))
        if mode == "mmap":
            gather_windows(handles.bytes, self.array.offset + tile_ids * record, record, rows)
        else:
            source, tile_address = self._fetch(handles, np.unique(tile_ids), record, mode)
            gather_windows(source, tile_address(tile_ids), record, rows)

    def _read_interior(self, handles, image_ids, origins, size, out, mode):
        record, value = self.record_bytes, self.itemsize
        exact = self.exact_tiles(image_ids, origins, size)
        if exact is not None:
            self.read_tiles(handles, exact, out, mode)
            return
        size = tuple(int(v) for v in size)
        tile_x, width = self.tile[-1], size[-1] * value
        dx = origins[:, -1] % tile_x
        segment = math.gcd(tile_x, size[-1], *set(dx.tolist()))
        piece = segment * value
        # addresses start at the map's data offset, or at slots of scratch (multiples of a record)
        unit = element_unit(piece, self.array.offset if mode == "mmap" else 0)
        if piece >= SEGMENT_BYTES or unit > 1 and piece >= ELEMENT_SEGMENT_BYTES:
            # NOTE [segments]: every row cut into pieces of ``segment`` pixels, none crossing a
            # tile border, so one gather writes each in place (a 256-pixel box on 64-pixel tiles
            # is 4 segments a row; stride 48 on 64-pixel tiles gives 16-pixel segments). Every
            # address is the source's base plus a multiple of the segment's bytes (tile rows,
            # planes and records are multiples of it), so narrow segments are gathered as
            # elements (see NOTE [element gathers]), their addresses kept in elements.
            def addresses_of(ids, corners):
                source, starts = self._row_starts(handles, ids, corners, size, mode)
                return source, self._segments(handles, starts, corners, size, segment)

            out_bytes = byte_rows(out, 1)
            if mode == "mmap":  # addresses in the map repeat from batch to batch: kept
                source = handles.bytes
                addresses = self._by_pattern(handles, image_ids, origins, size, segment, unit,
                                             lambda ids, corners: addresses_of(ids, corners)[1])
            else:  # addresses in scratch depend on which tiles the batch read
                source, addresses = addresses_of(image_ids, origins)
                addresses = in_units(addresses, unit)
            if unit > 1:
                gather_elements(source, addresses, unit, out_bytes)
            else:
                gather_windows(source, addresses, piece, out_bytes.view(-1, piece))
            return
        source, starts = self._row_starts(handles, image_ids, origins, size, mode)
        # NOTE [joined rows]: x offsets without a large common divisor (random crops). Each box
        # row's tile rows are first copied side by side into scratch (whole 64-byte rows for
        # 64-pixel uint8 tiles, fast), so the row becomes contiguous there; a second gather then
        # copies the box's window out of it. Two gathers of wide rows instead of one per patch
        # and piece (faster for random crops; the figures are in the commit that made it).
        tile_row = tile_x * value
        spans = (dx + size[-1] - 1) // tile_x + 1  # tiles each row of a box spans
        span = int(spans.max())
        steps = np.minimum(np.arange(span), (spans - 1)[:, None]) * record  # past its last: the last
        channels = self._channel_offsets()
        lines_per_box = channels.size * starts.shape[1]
        group = max(1, JOINED_BYTES // (lines_per_box * span * tile_row))
        for lo in range(0, len(image_ids), group):
            hi = min(lo + group, len(image_ids))
            pieces = broadcast_sum(handles, starts[lo:hi, None, :, None], channels[None, :, None, None],
                                    steps[lo:hi, None, None, :])
            nbytes = pieces.numel() * tile_row
            joined = handles.scratch(nbytes, "joined")[:nbytes]
            gather_windows(source, pieces, tile_row, joined.view(-1, tile_row))
            lines = (hi - lo) * lines_per_box
            line_starts = np.arange(lines, dtype=np.int64).reshape(hi - lo, -1) * (span * tile_row)
            heads = broadcast_sum(handles, line_starts, (dx[lo:hi] * value)[:, None])
            gather_windows(joined, heads, width, byte_rows(out[lo:hi], lines))

    def _channel_offsets(self) -> np.ndarray:
        """Byte offset of each channel plane in a record (records are channel-planar)."""
        plane = int(np.prod(self.tile)) * self.itemsize
        return np.arange(max(self.array.channels, 1), dtype=np.int64) * plane

    def _row_starts(self, handles, image_ids, origins, size, mode):
        """(source, starts): the byte offset in ``source`` of column 0 of the first
        tile of every box row, (B, R). ``source`` is the file's map (mmap), or
        scratch holding the tiles the boxes touch, read first (pread, h5py).

        NOTE [slots]: the tiles of one box row have consecutive ids, all touched,
        so they sit in consecutive slots: the next tile is one record further, as
        in the file, and every plan made for the map holds in scratch.
        """
        flush = origins.copy()
        flush[:, -1] -= origins[:, -1] % self.tile[-1]
        if mode == "mmap":
            return handles.bytes, self.mapped_row_starts(image_ids, flush, size)
        source, tile_address = self._fetch(handles, self.tiles_of(image_ids, origins, size), 0, mode)
        tiles, row_start = self.rows(image_ids, flush, size)
        return source, tile_address(tiles) + row_start * self.itemsize

    def _segments(self, handles, starts, origins, size, segment):
        """Byte address of every segment, (B, C, R, m), from the boxes' row starts."""
        tile_x, value = self.tile[-1], self.itemsize
        columns = origins[:, -1, None] % tile_x + np.arange(0, size[-1], segment)  # from column 0
        offsets = (columns // tile_x) * self.record_bytes + (columns % tile_x) * value
        return broadcast_sum(handles, starts[:, None, :, None], self._channel_offsets()[None, :, None, None],
                              offsets[:, None, None, :])

    def _by_pattern(self, handles, image_ids, origins, size, segment, unit, addresses_of):
        """``addresses_of(image_ids, origins) // unit``, a torch tensor (B, ...) of file
        offsets in ``unit`` bytes, assembled from per-pattern rows kept across batches.

        NOTE [patterns]: two boxes whose origins agree modulo the tile, in images
        whose tile grids agree on every axis but the first, read the same bytes
        of their first tile and its neighbours: their addresses differ by the
        offset between their first tiles. On a grid (stride 48 on 64-pixel
        tiles: 16 patterns; tile-aligned boxes: 1) a batch's plan is one gather
        of kept rows plus one add, instead of arithmetic on every address
        (~1 ns each, 196,608 of them for 256 boxes of 3 x 64 x 64 at stride 48).
        Random origins have as many patterns as boxes: computed directly.
        """
        t, count = torch(), len(image_ids)
        place = self._pattern_place()
        entry = self._patterns.get((size, segment), ())
        if place is None or count < 8 or entry is None:
            return in_units(addresses_of(image_ids, origins), unit)
        grid = self.grid[image_ids]
        corner, within = np.divmod(origins, self.tile_array)
        key = np.concatenate([within, grid[:, 1:]], axis=1) @ place
        local = corner[:, 0]
        for a in range(1, self.ndim):
            local = local * grid[:, a] + corner[:, a]
        base = (self.first[image_ids] + local) * (self.record_bytes // unit)
        known, table, shape = entry or (np.zeros(0, np.int64), None, None)
        rows = np.searchsorted(known, key)
        if len(known):
            missing = known[np.minimum(rows, len(known) - 1)] != key
        else:
            missing = np.ones(count, bool)
        if missing.any():
            new_keys, first = np.unique(key[missing], return_index=True)
            if len(new_keys) * 2 > count:  # mostly new patterns (random origins): nothing to share
                return in_units(addresses_of(image_ids, origins), unit)
            picks = np.flatnonzero(missing)[first]
            fresh = in_units(addresses_of(image_ids[picks], origins[picks]), unit)
            shape = tuple(fresh.shape[1:])
            fresh = fresh.reshape(len(picks), -1) - t.from_numpy(base[picks])[:, None]
            known = np.concatenate([known, new_keys])
            order = np.argsort(known, kind="stable")
            known = known[order]
            table = (fresh if table is None else t.cat([table, fresh]))[t.from_numpy(order)]
            kept = sum(other[1].numel() * 8 for k, other in self._patterns.items()
                       if other and k != (size, segment))
            if kept + table.numel() * 8 > PATTERN_TABLE_BYTES:  # too many patterns to keep
                self._patterns[(size, segment)] = None
            else:
                self._patterns[(size, segment)] = (known, table, shape)
            rows = np.searchsorted(known, key)
        addresses = handles.int64s((count, table.shape[1]), "addresses")
        t.index_select(table, 0, t.from_numpy(rows), out=addresses)
        addresses += t.from_numpy(base)[:, None]
        return addresses.view((count,) + shape)

    def _pattern_place(self):
        """Place values of a box pattern's mixed-radix key (origin modulo the
        tile, tile grid but its first axis), or None when keys could overflow."""
        if not hasattr(self, "_place"):
            radix = np.concatenate([self.tile_array, self.grid[:, 1:].max(axis=0, initial=0) + 1])
            place = np.cumprod(np.concatenate([radix[1:], [1]])[::-1])[::-1].astype(np.int64)
            fits = float(np.prod(radix.astype(np.float64))) < 2.0 ** 62
            self._place = place if fits else None
        return self._place

    def _fetch(self, handles, touched: np.ndarray, slack: int, mode):
        """Read the sorted tiles ``touched`` into scratch; (source, address function)."""
        record = self.record_bytes
        source = handles.scratch(touched.size * record + slack)
        buffer = source.numpy()
        handles.pread_into(
            ((self.array.offset + first * record, n * record, at * record)
             for first, n, at in runs(touched)),
            buffer,
        )

        def tile_address(tile_ids):
            return np.searchsorted(touched, tile_ids) * record

        return source, tile_address


class ChunkedReader(TiledReader):
    """One tile per HDF5 chunk, read (and decompressed, checksummed) by h5py."""

    def read_box(self, handles, image_id, origin, size, out, pad_value, mode) -> None:
        ArrayReader.read_box(self, handles, image_id, origin, size, out, pad_value, "h5py")

    def read_boxes(self, handles, image_ids, origins, size, out, pad_value, mode, interior=False) -> None:
        self._batch = (image_ids, origins, size)  # to name the patches of a damaged chunk
        try:
            super().read_boxes(handles, image_ids, origins, size, out, pad_value, "h5py", interior)
        finally:
            self._batch = None

    def _boxes_on(self, tile_id: int) -> list:
        """(image id, origin) of the boxes of the current batch that touch a tile."""
        if getattr(self, "_batch", None) is None:
            return []
        image_ids, origins, size = self._batch
        found = []
        for k in range(len(image_ids)):
            if tile_id in self.tiles_of(image_ids[k:k + 1], origins[k:k + 1], size):
                found.append((int(image_ids[k]), tuple(origins[k].tolist())))
        return found

    def _dataset(self, handles):
        return handles.h5[fmt.D_PIXELS if self.array.channels else fmt.D_MASKS]

    def _record(self, handles, tile_id: int, mode) -> np.ndarray:
        try:
            return self._dataset(handles)[tile_id]
        except OSError as exc:
            raise self._damaged(tile_id, exc) from exc

    def _damaged(self, tile_id: int, exc: Exception, boxes=None) -> IntegrityError:
        image = int(np.searchsorted(self.first, tile_id, side="right") - 1)
        local = tile_id - int(self.first[image])
        grid = self.grid[image]
        coords = np.unravel_index(local, tuple(int(g) for g in grid))
        start = tuple(int(c) * t for c, t in zip(coords, self.tile))
        what = "masks" if not self.array.channels else "pixels"
        patches = ""
        if boxes is not None:
            patches = f"; the batch's patches touching it: {boxes}"
        return IntegrityError(
            errno.EIO,
            f"{self.info.path!r}: the {what} chunk of image {image} at {start} (tile {tile_id}) "
            f"cannot be read ({exc}){patches}",
        )

    def _offset_of(self, image_id, origin) -> int:  # pragma: no cover - never probed
        return 0

    def prefetch(self, handles, image_ids, origins, size) -> None:
        """Chunk addresses are HDF5's business: nothing to announce."""

    def _fetch(self, handles, touched: np.ndarray, slack: int, mode):
        record = self.record_bytes
        source = handles.scratch(touched.size * record + slack)
        records = source.numpy()[: touched.size * record].view(self.array.dtype)
        records = records.reshape((touched.size,) + self.array.record_shape)
        dataset = self._dataset(handles)
        for first, n, at in runs(touched):
            try:
                records[at:at + n] = dataset[first:first + n]
            except OSError:  # find the damaged chunk, to name its image
                for tile_id in range(first, first + n):
                    try:
                        dataset[tile_id]
                    except OSError as exc:
                        raise self._damaged(tile_id, exc, self._boxes_on(tile_id)) from exc
                raise

        def tile_address(tile_ids):
            return np.searchsorted(touched, tile_ids) * record

        return source, tile_address


# -- contiguous ---------------------------------------------------------------------------------
class ContiguousReader(ArrayReader):
    """Each image one planar block (C, *shape), row-major, at a computed offset."""

    def _block(self, image_id: int) -> tuple:
        """(first value, shape of the block) of one image."""
        channels = max(self.array.channels, 1)
        return int(self.info.offsets[image_id]) * channels, self.lead + self.shape(image_id)

    def _copy_clipped(self, handles, image_id, lo, hi, out, mode):
        first, shape = self._block(image_id)
        region = (slice(None),) * len(self.lead) + tuple(slice(a, b) for a, b in zip(lo, hi))
        if mode == "pread":
            out[...] = self._pread_region(handles, first, shape, region)
            return
        start = self.array.offset + first * self.itemsize
        flat = handles.array[start:start + int(np.prod(shape)) * self.itemsize]
        out[...] = flat.view(self.array.dtype).reshape(shape)[region]

    def _pread_region(self, handles, first, shape, region) -> np.ndarray:
        """Read the rows of a region, one extent per row."""
        value = self.itemsize
        lo = [s.start or 0 for s in region]
        hi = [s.stop if s.stop is not None else n for s, n in zip(region, shape)]
        strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]
        width = (hi[-1] - lo[-1]) * value
        result = np.empty(tuple(b - a for a, b in zip(lo, hi)), self.array.dtype)
        extents = []
        for k, coords in enumerate(itertools.product(*[range(a, b) for a, b in zip(lo[:-1], hi[:-1])])):
            linear = sum(c * int(s) for c, s in zip(coords, strides[:-1])) + lo[-1]
            extents.append((self.array.offset + (first + linear) * value, width, k * width))
        handles.pread_into(extents, result.reshape(-1).view(np.uint8))
        return result

    def _offset_of(self, image_id, origin) -> int:
        first, shape = self._block(image_id)
        linear = 0
        for o, n in zip(origin, shape[len(self.lead):]):
            linear = linear * n + min(max(int(o), 0), n - 1)
        return self.array.offset + (first + linear) * self.itemsize

    def _read_interior(self, handles, image_ids, origins, size, out, mode):
        if mode == "pread":
            for k in range(len(image_ids)):
                lo = tuple(origins[k].tolist())
                self._copy_clipped(handles, int(image_ids[k]), lo,
                                   tuple(o + s for o, s in zip(lo, size)), out[k], mode)
            return
        lead = self.lead
        size = lead + tuple(int(s) for s in size)
        count = len(image_ids)
        nd = len(size)
        shapes = self.shapes[image_ids]
        if lead:
            origins = np.concatenate([np.zeros((count, 1), np.int64), origins], axis=1)
            shapes = np.concatenate([np.full((count, 1), lead[0], np.int64), shapes], axis=1)
        shape = (count,) + (1,) * (nd - 1)
        linear = np.zeros(shape, dtype=np.int64)
        for a in range(nd - 1):
            axis_shape = [count] + [1] * (nd - 1)
            axis_shape[a + 1] = size[a]
            coord = (origins[:, a, None] + np.arange(size[a])).reshape(axis_shape)
            linear = (linear + coord) * shapes[:, a + 1].reshape(shape)
        linear = np.broadcast_to(linear, (count,) + size[:-1]).reshape(count, -1)
        channels = max(self.array.channels, 1)
        first = self.info.offsets[image_ids] * channels + origins[:, -1]
        starts = self.array.offset + (linear + first[:, None]) * self.itemsize
        gather_windows(handles.bytes, starts, size[-1] * self.itemsize, byte_rows(out, starts.size))


def make_reader(info: fmt.StoreInfo, array: fmt.ArrayInfo) -> ArrayReader:
    kind = {"tiled": TiledReader, "contiguous": ContiguousReader, "chunked": ChunkedReader}
    return kind[info.layout](info, array)
