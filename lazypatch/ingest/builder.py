"""Writing a store: ``write_store`` and the ``Builder`` behind it (tiling, checksums,
statistics while writing, atomic publication).

The pixel and mask datasets of the uncompressed layouts are reserved in the
HDF5 file with h5py (contiguous, allocated early, never filled) and their bytes
are then written with ``os.pwrite`` at the dataset's file offset: HDF5 sees a
plain dataset, and the writer pays no h5py call per tile.

When every image's shape is known before the first pixel is written (a list
or tuple of arrays, a stacked array, or file headers read first) the bytes go
straight to their final place. Otherwise (a generator) they are spooled to a
temporary file beside the target and copied into place at the end
(``os.copy_file_range``), because a contiguous HDF5 dataset cannot grow.

Publication is atomic (see NOTE [atomic write] in ``lazypatch.store.publish``).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import uuid
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ParameterError, ParameterTypeError, StoreExistsError
from ..grid import axis_tuple, ceil_div, describe_shape, is_int
from ..store import ImageStore
from ..store import format as fmt
from ..store.publish import (check_target, fsync_file, publish, publish_h5, remove_stale_temporaries,
                             temporary_path)
from ..stats.blocks import BlockCounter
from ..stats.channels import ChannelStats
from ._signals import termination_as_exception
from .validate import (MISSING, ImageSpec, as_arraylike, axes_warning, check_mask, check_options, check_same,
                       check_tissue, check_tissue_count, default_tile, describe_image, geometry_text, meta_text,
                       planned_shapes, prevalidate, store_dtype, warn, zip_inputs)

_SPOOL_COPY_CHUNK = 1 << 30
_BAND_BYTES = 16 << 20  # rows per write in the contiguous layout
_MAX_TILE_BYTES = 256 << 20


def lazypatch_version() -> str:
    from .._version import __version__

    return __version__


# -- options ---------------------------------------------------------------------


# -- one image -----------------------------------------------------------------------


def cut_tiles(band: np.ndarray, tile: tuple) -> np.ndarray:
    """Tiles (n, C, *tile) of a band (*spatial, C) of whole tile rows: zero padded,
    channel-planar, in C order over the band's tile grid.

    >>> band = np.arange(2 * 3 * 2).reshape(2, 3, 2)  # 2 rows, 3 columns, 2 channels
    >>> cut_tiles(band, (2, 2))[:, 0].tolist()  # channel 0 of the two tiles
    [[[0, 2], [6, 8]], [[4, 0], [10, 0]]]
    """
    spatial = band.shape[:-1]
    channels = band.shape[-1]
    grid = [ceil_div(s, t) for s, t in zip(spatial, tile)]
    full = tuple(g * t for g, t in zip(grid, tile))
    if tuple(spatial) != full:
        padded = np.zeros(full + (channels,), dtype=band.dtype)
        padded[tuple(slice(0, s) for s in spatial)] = band
        band = padded
    split = band.reshape(tuple(v for g, t in zip(grid, tile) for v in (g, t)) + (channels,))
    nd = len(tile)
    order = tuple(range(0, 2 * nd, 2)) + (2 * nd,) + tuple(range(1, 2 * nd, 2))
    return np.ascontiguousarray(split.transpose(order)).reshape((-1, channels) + tuple(tile))


class _Checksums:
    """CRC32s computed in a background thread, in submission order (zlib releases the GIL)."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lazypatch-crc")
        self._value = 0
        self._last = None

    def start(self) -> None:
        self.wait()
        self._value = 0

    def update(self, data) -> None:
        if data.nbytes < (1 << 20) and self._last is None:
            self._add(data)  # small: a thread round trip would cost more than the CRC
        else:
            self._last = self._pool.submit(self._add, data)

    def _add(self, data) -> None:
        self._value = zlib.crc32(data, self._value)

    def wait(self) -> int:
        if self._last is not None:
            self._last.result()
            self._last = None
        return self._value

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class LabelCounts:
    """Pixels per label value over many masks (bincount for 8- and 16-bit masks).

    >>> counts = LabelCounts()
    >>> counts.add(np.array([[0, 255], [255, 255]], np.uint8))
    >>> counts.as_dict()
    {0: 1, 255: 3}
    """

    def __init__(self):
        self._table = None  # bincount table of small integer masks
        self._other: dict = {}

    def add(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.dtype.kind in "bu" and mask.dtype.itemsize <= 2:
            counts = np.bincount(mask.view(np.uint8).ravel() if mask.dtype.kind == "b" else mask.ravel(),
                                 minlength=1 << (8 * mask.dtype.itemsize)) if mask.size else None
            if counts is not None:
                self._table = counts if self._table is None else self._table + counts
            return
        values, counts = np.unique(mask, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            self._other[value] = self._other.get(value, 0) + count

    def as_dict(self) -> dict:
        """{label value: pixels}, in increasing value."""
        totals = dict(self._other)
        if self._table is not None:
            for value in np.flatnonzero(self._table).tolist():
                totals[value] = totals.get(value, 0) + int(self._table[value])
        return {int(k): int(totals[k]) for k in sorted(totals)}


# -- the builder -----------------------------------------------------------------------
class _StoredArray:
    """One array (pixels or masks) being written: its records and where their bytes go.

    Tiled and chunked layouts hold one record per tile, (C, *tile) for pixels and
    (*tile) for masks; the contiguous layout holds single values, each image as
    one planar block (C, *shape).
    """

    def __init__(self, record_shape, dtype, channels):
        self.record_shape = tuple(record_shape)
        self.dtype = dtype
        self.channels = channels  # C for pixels, 0 for masks
        self.record_bytes = int(np.prod(record_shape, dtype=np.int64)) * dtype.itemsize
        self.dataset = None  # chunked: the h5py dataset
        self.fd = None  # raw: where bytes go (the store itself or a spool file)
        self.base = 0  # raw: byte offset of record 0 in self.fd
        self.spool = None  # raw: spool path when the size was unknown


class Builder:
    """Writes images one at a time into a temporary HDF5 file."""

    def __init__(self, tmp_path, *, spatial_ndim, layout, tile, compression, compression_opts,
                 checksum, planned_shapes=None, check_finite=False, label_block=None,
                 channel_stats=False, provenance=None, on_bytes=None, warn_axes=True, count_labels=False,
                 tissue=None):
        self.tmp_path = tmp_path
        self.ndim = spatial_ndim
        self.layout = layout
        self.tile = tile
        self.compression = compression
        self.compression_opts = compression_opts
        self.checksum = bool(checksum)
        self.check_finite = check_finite
        self.label_block = label_block  # count labels per block while writing masks
        self.label_rows = []  # per image: (blocks, labels, counts)
        self.want_channel_stats = channel_stats
        self.channel_stats = None  # a ChannelStats once the first image fixes dtype and channels
        self.provenance = provenance
        self.planned = planned_shapes
        self.spec = None
        self.mask_dtype = None
        self.shapes, self.crcs, self.mask_crcs, self.names, self.metas = [], [], [], [], []
        self.geometries = []
        self.records = 0  # tiles (tiled, chunked) or pixels (contiguous) written so far
        self.pixels = self.masks = None
        self.h5 = fmt.create_h5(tmp_path)
        self.fd = os.open(tmp_path, os.O_RDWR)
        self.nbytes = 0
        self.on_bytes = on_bytes  # called with the decoded bytes of each band written (progress)
        self.warn_axes = warn_axes
        self.label_totals = LabelCounts() if count_labels else None
        self.tissue = tissue  # checked tissue masks (uint8 0/1 or None), one per image, or None
        self._checksums = _Checksums()

    # records per image
    def _image_records(self, spatial) -> int:
        if self.layout == "contiguous":
            return int(np.prod(spatial, dtype=np.int64))
        return int(np.prod([ceil_div(s, t) for s, t in zip(spatial, self.tile)], dtype=np.int64))

    def _total_records(self, shapes, array: _StoredArray) -> int:
        pixels = int(sum(self._image_records(s) for s in shapes))
        return pixels * max(array.channels, 1) if self.layout == "contiguous" else pixels

    def _new_array(self, name, dtype, channels) -> _StoredArray:
        if self.layout == "contiguous":
            record_shape = ()
        else:
            record_shape = ((channels,) if channels else ()) + self.tile
        array = _StoredArray(record_shape, dtype, channels)
        if array.record_bytes > _MAX_TILE_BYTES:
            raise ParameterError(
                f"tile {self.tile} makes records of {array.record_bytes} bytes; keep tiles under "
                f"{_MAX_TILE_BYTES >> 20} MiB"
            )
        if self.layout == "chunked":
            known = self._total_records(self.planned, array) if self.planned else 0
            if self.compression in fmt.PLUGIN_COMPRESSIONS:
                codec = fmt.plugin_filter(self.compression, self.compression_opts)
            else:
                codec = dict(compression=self.compression, compression_opts=self.compression_opts)
            array.dataset = self.h5.create_dataset(
                name, shape=(known,) + array.record_shape, maxshape=(None,) + array.record_shape,
                dtype=dtype, chunks=(1,) + array.record_shape, fletcher32=self.checksum,
                track_times=False, rdcc_nbytes=0, **codec,  # whole chunks are written: no cache,
            )  # so a full disk fails the write itself (see NOTE [discarding on a full disk] in lazypatch.store.format)
        elif self.planned is not None:
            array.fd = self.fd
            array.base = self._reserve(name, array, self._total_records(self.planned, array))
        else:
            array.spool = f"{self.tmp_path}.{name}.spool"
            array.fd = os.open(array.spool, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return array

    def _reserve(self, name, array: _StoredArray, records: int) -> int:
        """A contiguous dataset allocated now and never filled by HDF5; its file offset."""
        import h5py

        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dcpl.set_obj_track_times(False)
        dataset = self.h5.create_dataset(
            name, shape=(records,) + array.record_shape, dtype=array.dtype, dcpl=dcpl
        )
        offset = dataset.id.get_offset()
        if offset is None:  # pragma: no cover - HDF5 allocates early as asked
            raise RuntimeError(f"HDF5 did not allocate {name!r}")
        return int(offset)

    def add(self, position, image, mask, name, meta, geometry=None) -> None:
        geometry = geometry if geometry is not None else getattr(image, "geometry", None)
        image = as_arraylike(image, "image", position)
        spatial, spec = describe_image(image, position, self.ndim)
        if self.spec is None:
            message = axes_warning(image.shape, self.ndim, f"image {position}") if self.warn_axes else None
            if message:
                warn(message)
            self.spec = spec
            self.pixels = self._new_array(fmt.D_PIXELS, spec.dtype, spec.channels)
            if self.want_channel_stats:

                self.channel_stats = ChannelStats(spec.channels, spec.dtype)
        else:
            check_same(spec, self.spec, position, spatial_ndim=self.ndim)
        if self.planned is not None and tuple(self.planned[position]) != tuple(spatial):
            raise ParameterError(
                f"image {position} has spatial shape {spatial}, but its shape attribute said "
                f"{tuple(self.planned[position])}"
            )
        if mask is not None:
            mask = as_arraylike(mask, "mask", position)
            dtype = check_mask(mask, spatial, position, self.mask_dtype)
            if self.masks is None:
                if position != 0:
                    raise ParameterError(f"mask {position} given, but image 0 had no mask")
                self.mask_dtype = dtype
                self.masks = self._new_array(fmt.D_MASKS, dtype, 0)
        elif self.masks is not None:
            raise ParameterError(f"image {position} has no mask; every image needs one")
        start = self.records
        self.crcs.append(self._write(self.pixels, image, spatial, start, spec.channel_axis, position,
                                     self.channel_stats))
        if mask is not None:
            counter = None
            if self.label_block is not None:

                counter = BlockCounter(spatial, self.label_block)
            self.mask_crcs.append(self._write(self.masks, mask, spatial, start, False, position, counter))
            if counter is not None:
                self.label_rows.append(counter.rows())
        self.records += self._image_records(spatial)
        self.shapes.append(spatial)
        self.names.append(str(position) if name is None else name)
        self.metas.append(meta_text(meta, position))
        self.geometries.append(geometry_text(geometry, position, image, self.ndim))

    def _bands(self, array: _StoredArray, spatial):
        """(start, stop) row ranges along the first axis, in write order: whole tile rows,
        as many as fit in about 16 MiB."""
        row = int(np.prod(spatial[1:], dtype=np.int64)) * max(array.channels, 1) * array.dtype.itemsize
        unit = 1 if self.layout == "contiguous" else self.tile[0]
        step = unit * max(1, _BAND_BYTES // max(row * unit, 1))
        return [(r, min(r + step, spatial[0])) for r in range(0, spatial[0], step)]

    def _write(self, array: _StoredArray, source, spatial, start, channel_axis, position, counter=None) -> int:
        """Copy one image (or mask) band by band; returns the CRC32 of its C-order bytes."""
        checksums = self._checksums
        checksums.start()
        pixels = int(np.prod(spatial, dtype=np.int64))
        row_pixels = pixels // spatial[0]
        if self.layout != "contiguous":
            tiles_per_row = int(np.prod([ceil_div(s, t) for s, t in zip(spatial[1:], self.tile[1:])]))
        for r0, r1 in self._bands(array, spatial):
            band = np.ascontiguousarray(source[r0:r1], dtype=array.dtype)
            if self.check_finite and band.dtype.kind == "f" and not np.isfinite(band).all():
                raise ParameterError(
                    f"image {position} holds NaN or infinite values (check_finite=True)"
                )
            checksums.update(band)
            if counter is not None:  # label counts (masks) or channel statistics (pixels)
                counter.add(r0, band) if array.channels == 0 else counter.add(band)
            if array.channels == 0 and self.label_totals is not None:
                self.label_totals.add(band)
            if self.on_bytes is not None:
                self.on_bytes(band.nbytes)
            if not channel_axis:
                band = band[..., None]
            if self.layout != "contiguous":
                first = start + (r0 // self.tile[0]) * tiles_per_row
                self._put(array, first, cut_tiles(band, self.tile))
                continue
            # contiguous: the image is one planar block (C, *shape) at value start * C
            for channel in range(band.shape[-1]):
                first = (start * band.shape[-1] + channel * pixels + r0 * row_pixels)
                self._put(array, first, np.ascontiguousarray(band[..., channel]))
        return checksums.wait()

    def _put(self, array: _StoredArray, first: int, data: np.ndarray) -> None:
        count = data.size // max(1, int(np.prod(array.record_shape, dtype=np.int64)))
        if array.dataset is not None:
            if array.dataset.shape[0] < first + count:
                array.dataset.resize(first + count, axis=0)
            array.dataset[first:first + count] = data.reshape((count,) + array.record_shape)
        else:
            _pwrite_all(array.fd, data, array.base + first * array.record_bytes)
        self.nbytes += data.nbytes

    def finish(self) -> None:
        import h5py

        if self.spec is None:
            raise ParameterError("images is empty: a store needs at least one image")
        for name, array in ((fmt.D_PIXELS, self.pixels), (fmt.D_MASKS, self.masks)):
            if array is not None and array.spool is not None:
                records = self._total_records(self.shapes, array)
                base = self._reserve(name, array, records)
                _copy_range(array.fd, self.fd, records * array.record_bytes, base)
        shapes = np.asarray(self.shapes, dtype=np.int64).reshape(-1, self.ndim)
        h5 = self.h5
        fmt.write_dataset(h5, fmt.D_SHAPES, shapes)
        offsets = fmt.extent_offsets(shapes, self.layout, self.tile or 1)
        offsets_name = fmt.D_PIXEL_OFFSETS if self.layout == "contiguous" else fmt.D_TILE_OFFSETS
        fmt.write_dataset(h5, offsets_name, offsets)
        fmt.write_dataset(h5, fmt.D_CRC, np.asarray(self.crcs, dtype=np.uint32))
        if self.masks is not None:
            fmt.write_dataset(h5, fmt.D_MASK_CRC, np.asarray(self.mask_crcs, dtype=np.uint32))
        if self.label_block is not None and self.masks is not None:

            group = h5.create_group(fmt.G_LABEL_STATS)
            group.attrs["block"] = np.asarray(self.label_block, dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum([len(rows[0]) for rows in self.label_rows])])
            fmt.write_dataset(group, "image_offsets", offsets.astype(np.int64), checksum=True)
            for k, name in enumerate(("blocks", "labels", "counts")):
                data = np.concatenate([rows[k] for rows in self.label_rows]) if self.label_rows else []
                fmt.write_dataset(group, name, np.asarray(data, dtype=np.int64), checksum=True)
        if self.channel_stats is not None:
            self.channel_stats.write_group(h5)
        for name, texts in ((fmt.D_NAMES, self.names), (fmt.D_META, self.metas)):
            blob, offsets = fmt.pack_texts(texts)
            fmt.write_dataset(h5, name, blob)
            fmt.write_dataset(h5, fmt.TEXTS[name], offsets)
        blob, offsets = fmt.pack_texts(self.geometries)  # format 1.1
        fmt.write_dataset(h5, fmt.D_GEOMETRY, blob, checksum=True)
        fmt.write_dataset(h5, fmt.D_GEOMETRY_OFFSETS, offsets, checksum=True)
        info_crcs = [fmt.info_crc(n, m) for n, m in zip(self.names, self.metas)]
        fmt.write_dataset(h5, fmt.D_INFO_CRC, np.asarray(info_crcs, dtype=np.uint32))
        has_tissue = self.tissue is not None
        if has_tissue:
            check_tissue_count(self.tissue, len(self.shapes))
            self._write_tissue(h5, shapes)
        attrs = {
            fmt.A_FORMAT: fmt.FORMAT_NAME,
            fmt.A_VERSION: fmt.FORMAT_VERSION,
            fmt.A_MINOR: fmt.format_minor(has_tissue),
            fmt.A_LIBRARY: lazypatch_version(),
            fmt.A_LAYOUT: self.layout,
            fmt.A_NDIM: self.ndim,
            fmt.A_CHANNELS: self.spec.channels,
            fmt.A_CHANNEL_AXIS: self.spec.channel_axis,
            fmt.A_DTYPE: self.spec.dtype.str,
            fmt.A_MASK_DTYPE: self.mask_dtype.str if self.mask_dtype is not None else "",
            fmt.A_COMPRESSION: self.compression or "",
            fmt.A_COMPRESSION_OPTS: -1 if self.compression_opts is None else self.compression_opts,
            fmt.A_CHECKSUM: self.checksum,
            fmt.A_NUM_IMAGES: len(self.shapes),
        }
        if self.tile is not None:
            attrs[fmt.A_TILE] = np.asarray(self.tile, dtype=np.int64)
        if self.provenance is not None:
            attrs[fmt.A_PROVENANCE] = self.provenance
        for key, value in attrs.items():
            h5.attrs[key] = fmt.attribute(value)
        fmt.flush(h5, self.tmp_path)  # a full disk fails here, on a whole file, not half-way through close()
        h5.close()
        os.fsync(self.fd)
        self.close()

    def _write_tissue(self, h5, shapes: np.ndarray) -> None:
        """The ``tissue`` group (format 1.2): masks back to back, their shapes, offsets,
        CRC32s and each image's tissue fraction, every dataset with its own CRC32."""
        from ..stats.foreground import upsampled_fractions

        count = len(self.tissue)
        mask_shapes = np.zeros((count, 2), np.int64)
        crcs = np.zeros(count, np.uint32)
        fractions = np.full(count, np.nan)
        for position, (mask, shape) in enumerate(zip(self.tissue, shapes)):
            if mask is None:
                continue
            mask_shapes[position] = mask.shape
            crcs[position] = zlib.crc32(mask)
            fractions[position] = upsampled_fractions(mask, shape, tuple(int(v) for v in shape))[0]
        offsets = np.zeros(count + 1, np.int64)
        np.cumsum(mask_shapes.prod(axis=1), out=offsets[1:])
        group = h5.create_group(fmt.G_TISSUE)
        masks = group.create_dataset("masks", shape=(int(offsets[-1]),), dtype=np.uint8, track_times=False)
        crc = 0
        for position, mask in enumerate(self.tissue):  # one at a time: no second copy of every mask
            if mask is not None:
                masks[offsets[position]:offsets[position + 1]] = mask.reshape(-1)
                crc = zlib.crc32(mask, crc)
        masks.attrs["crc32"] = np.uint32(crc)
        fmt.flush(masks, repr(fmt.D_TISSUE_MASKS))
        fmt.write_dataset(group, "shapes", mask_shapes, checksum=True)
        fmt.write_dataset(group, "offsets", offsets, checksum=True)
        fmt.write_dataset(group, "crc32", crcs, checksum=True)
        fmt.write_dataset(group, "fraction", fractions, checksum=True)

    def close(self, failed: bool = False) -> None:
        """Release every handle and remove spool files (not the temporary store).

        ``failed``: the store is being thrown away after an error (NOTE
        [discarding on a full disk] in lazypatch.store.format).
        """
        self._checksums.close()
        if failed:
            datasets = [a.dataset for a in (self.pixels, self.masks) if a is not None and a.dataset is not None]
            fmt.discard_h5(self.h5, self.tmp_path, *datasets)
        elif self.h5 is not None and self.h5.id.valid:
            self.h5.close()
        self.h5 = None
        for array in (self.pixels, self.masks):
            if array is not None and array.spool is not None:
                if array.fd is not None:
                    os.close(array.fd)
                    array.fd = None
                if os.path.exists(array.spool):
                    os.unlink(array.spool)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _copy_range(src_fd: int, dst_fd: int, count: int, dst_offset: int) -> None:
    """Copy ``count`` bytes from the start of src to dst at dst_offset, in the kernel if possible."""
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < count:
        step = min(_SPOOL_COPY_CHUNK, count - done)
        if use_kernel:
            try:
                copied = os.copy_file_range(src_fd, dst_fd, step, done, dst_offset + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_kernel = False
                continue
            if copied == 0:
                raise OSError(errno.EIO, "spool file ended early")
        else:
            data = os.pread(src_fd, step, done)
            if not data:
                raise OSError(errno.EIO, "spool file ended early")
            _pwrite_all(dst_fd, data, dst_offset + done)
            copied = len(data)
        done += copied


# -- input handling ------------------------------------------------------------------------


def write_file(path, images, *, masks=None, names=None, meta=None, geometry=None, spatial_ndim=2, layout="tiled",
               tile=None, compression=None, compression_opts=None, checksum=False, overwrite=False,
               progress=None, check_finite=False, label_stats=False, channel_stats=False,
               provenance=None, warn_axes=True, report=None, tissue=None) -> str:
    """Write a store (see ``lazypatch.write_store``); returns the final path.

    ``warn_axes``: warn when the first image looks channels-first (``build``
    warns itself, naming the file). ``report``: a dict that receives
    ``labels``, the pixels per mask label value.
    """
    given_tile = tile
    tile, compression_opts = check_options(
        spatial_ndim, layout, tile, compression, compression_opts, checksum
    )
    tissue = check_tissue(tissue, spatial_ndim)
    if not isinstance(channel_stats, bool):
        raise ParameterTypeError(f"channel_stats must be True or False, got {channel_stats!r}")
    if provenance is not None and not isinstance(provenance, Mapping):
        raise ParameterTypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    target = check_target(path, overwrite)
    if images is None or isinstance(images, (str, bytes, Mapping)):
        raise ParameterTypeError(
            f"images must be an iterable of arrays, got {type(images).__name__}"
        )
    if isinstance(images, np.ndarray) and images.ndim == spatial_ndim + 1 and images.shape[-1] <= 4:
        raise ParameterError(
            f"images is one array of shape {images.shape}, which would be read as {images.shape[0]} "
            f"images of shape {images.shape[1:]}; pass [image] for one image, or list(stack) for "
            f"a stack of images"
        )
    shapes = planned_shapes(images, spatial_ndim)
    if shapes is not None:
        if not shapes:
            raise ParameterError("images is empty: a store needs at least one image")
        prevalidate(images, masks, spatial_ndim, shapes)
        if tissue is not None:
            check_tissue_count(tissue, len(shapes))
        if given_tile is None and tile is not None:
            tile = default_tile(shapes, spatial_ndim)
    provenance_text = provenance_json(provenance, layout, tile, compression, compression_opts, checksum)
    show = progress if progress is not None else sys.stderr.isatty()
    remove_stale_temporaries(target)
    tmp = temporary_path(target)
    builder = None
    try:
        bar = _progress_bar(show, _planned_bytes(images, masks, spatial_ndim) if shapes is not None else None)
        try:
            builder = Builder(
                tmp, spatial_ndim=spatial_ndim, layout=layout, tile=tile, compression=compression,
                compression_opts=compression_opts, checksum=checksum, planned_shapes=shapes,
                check_finite=check_finite, label_block=_label_block(label_stats, spatial_ndim, masks),
                channel_stats=channel_stats, provenance=provenance_text, on_bytes=bar.update,
                warn_axes=warn_axes, count_labels=report is not None, tissue=tissue,
            )
            for position, image, mask, name, image_meta, image_geometry in zip_inputs(
                    images, masks, names, meta, geometry):
                builder.add(position, image, mask, name, image_meta, image_geometry)
        finally:
            bar.close()
        builder.finish()
        publish(tmp, target, overwrite)
    except BaseException:
        if builder is not None:
            builder.close(failed=True)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if report is not None and builder.label_totals is not None:
        report["labels"] = builder.label_totals.as_dict()
    return target


def _planned_bytes(images, masks, spatial_ndim):
    """Decoded bytes of every image and mask when their shapes and dtypes are known, else None."""
    total = 0
    for values in (images, masks):
        if values is None:
            continue
        if not isinstance(values, Sequence) and hasattr(values, "shape") and hasattr(values, "dtype"):
            total += int(np.prod(values.shape, dtype=np.int64)) * store_dtype(values.dtype).itemsize
            continue
        if not isinstance(values, Sequence) and not hasattr(values, "__len__"):
            return None
        try:
            items = [values[k] for k in range(len(values))]
            total += sum(int(np.prod(item.shape, dtype=np.int64)) * store_dtype(item.dtype).itemsize
                         for item in items)
        except (AttributeError, TypeError, IndexError, KeyError):
            return None
    return total


def provenance_json(provenance, layout, tile, compression, compression_opts, checksum) -> str:
    """The store's provenance attribute: who wrote it, how, and what the caller adds."""
    import platform
    import time

    if provenance is not None and not isinstance(provenance, Mapping):
        raise ParameterTypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    record = {
        "written_by": f"lazypatch {lazypatch_version()}",
        "python": platform.python_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {"layout": layout, "tile": list(tile) if tile else None,
                    "compression": compression, "compression_opts": compression_opts,
                    "checksum": bool(checksum)},
        **dict(provenance or {}),
    }
    try:
        text = json.dumps(record, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"provenance cannot be stored as JSON: {exc}") from None
    if len(text) > 32_000:
        raise ParameterError(f"provenance is {len(text)} characters as JSON; at most 32,000 fit")
    return text


def _label_block(label_stats, spatial_ndim, masks):
    """The block of label statistics to count while writing, or None."""
    if label_stats is False or label_stats is None:
        return None
    if masks is None:
        raise ParameterError("label_stats needs masks (there is nothing to count)")
    if label_stats is True:
        return (64,) * spatial_ndim
    return axis_tuple(label_stats, spatial_ndim, "label_stats")


def _progress_bar(show: bool, total):
    """A bar counting decoded bytes (``total`` when known), so that one large image moves it."""
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc="lazypatch write",
                disable=not show, file=sys.stderr, leave=False)


def write_store(
    path,
    images,
    *,
    masks=None,
    names=None,
    meta=None,
    geometry=None,
    spatial_ndim: int = 2,
    layout: str = "tiled",
    tile=None,
    compression: str | None = None,
    compression_opts: int | None = None,
    checksum: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    check_finite: bool = False,
    label_stats=False,
    channel_stats: bool = False,
    provenance: dict | None = None,
    tissue=None,
) -> "ImageStore":
    """Write images (and optional masks) into one HDF5 store, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file. Written through a temporary file in the same folder, then
        moved into place (see NOTE [atomic write] in ``lazypatch.store.publish``).
    images : iterable of array-like
        Consumed one at a time. With ``spatial_ndim=2`` an image is (H, W) or
        (H, W, C); with 3 it is (Z, Y, X) or (Z, Y, X, C). Sizes may differ;
        dtype, channel count and the presence of a channel axis may not. Any
        object with ``shape``, ``dtype`` and slicing (np.memmap, h5py dataset,
        zarr array) is copied band by band with bounded memory.
    masks : iterable of array-like, optional
        Integer (or bool) masks with the spatial shape of their image.
    names : iterable of str, optional
        One name per image (default: its position).
    meta : iterable of dict, optional
        Per-image metadata stored as JSON text (``ImageStore.meta``).
    geometry : iterable of dict, optional
        Per-image physical geometry (``ImageStore.geometry``): ``spacing`` (one
        positive number per spatial axis, ``(z,) y, x``), ``unit`` (``"um"``,
        ``"mm"``, ``"m"``, ``"deg"`` or None) and any of ``affine``, ``crs``,
        ``transform``, ``level``, ``downsample``, ``source``. By default an image's
        own ``geometry`` attribute (the readers of ``lazypatch.ingest.readers``
        have one), else none.
    spatial_ndim : {2, 3}
    layout : {"tiled", "contiguous", "chunked"}
        ``tiled`` (default) stores fixed tiles as records at computable file
        offsets: good when the data is far larger than RAM. ``contiguous``
        stores each image row-major (memory-mappable; good when it fits in
        RAM). ``chunked`` stores one tile per HDF5 chunk, which compression
        and checksums need.
    tile : int or sequence of int, optional
        Tile extent per axis (tiled and chunked); default 64 on every axis,
        except for thin volumes given as a sequence: when every volume has
        fewer than 64 slices, the z extent is the deepest one's depth rounded
        up to a power of two (5 slices: 8), which saves the padding of 64^3 tiles.
    compression : {None, "gzip", "lzf", "zstd", "lz4", "blosc", "bitshuffle"}
        Needs ``layout="chunked"``. The last four are codecs of the
        ``hdf5plugin`` package (``blosc`` is LZ4 with byte shuffle); the codec
        is recorded in the store, and reading such a store without hdf5plugin
        raises ImportError with the install hint. Compressed reads decode each
        chunk a batch needs once, at a fraction of the uncompressed speed.
    compression_opts : int, optional
        The codec's level: gzip 0..9, zstd 1..22, blosc 0..9 (others take none).
    checksum : bool
        HDF5 fletcher32 per chunk (needs ``layout="chunked"``): damage is
        then an IntegrityError at read time. A CRC32 of every image's pixel
        bytes (and of every mask) is stored regardless, for ``verify``.
    overwrite : bool
        Replace an existing file at ``path``; otherwise refuse (also when a
        file appears at ``path`` while writing: it is never clobbered).
    progress : bool, optional
        Show a progress bar (of decoded bytes, so a single large image moves
        it); by default when stderr is a terminal.
    check_finite : bool
        Reject float images holding NaN or infinity.
    label_stats : bool or int or sequence of int
        Also count the pixels of every mask label per block (64 per axis, or
        this block size), for :class:`lazypatch.ClassSampler`.
    channel_stats : bool
        Also compute per-channel statistics (mean, std, min, max, exact
        percentiles for integer images up to 16 bits) while writing, for
        ``PatchDataset(..., normalize=...)`` (see :class:`lazypatch.ChannelStats`).
    provenance : dict, optional
        JSON-able facts to record with the store (e.g. the source folder); the
        store's ``provenance`` attribute also records the lazypatch and Python
        versions, the time and the layout options.
    tissue : sequence of array-like or None, optional
        One low-resolution tissue mask per image (2-D stores only): a 2-D bool
        array, or uint8 of 0 and 1, of any size (at least 1 per axis), or
        None for an image without one; e.g. ``lazypatch.ingest.tissue.tissue_mask(
        slide).mask``. Stored pixel (y, x) of an (H, W) image belongs to cell
        ``(y * h // H, x * w // W)`` of its (h, w) mask, which covers the whole
        image. Read back with ``ImageStore.tissue``, used by
        ``foreground_filter(..., source="tissue")``; the store's format is then
        1.2 (see :mod:`lazypatch.store.format`). All None: no tissue masks.

    Returns
    -------
    ImageStore
        The new store, opened for reading.

    Raises
    ------
    ParameterError, ParameterTypeError
        Bad options or images (message names the parameter and the value),
        including a contradictory pair such as ``compression`` without
        ``layout="chunked"`` (the message names both).
    StoreExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError, IsADirectoryError
        The folder is missing, or ``path`` is a directory.
    ImportError
        An hdf5plugin codec without the hdf5plugin package.
    OSError
        A failed write (a full disk). On any exception or interrupt nothing is
        left at ``path``, and a store already there is untouched.
    SystemExit
        ``lazypatch.ingest._signals.Terminated`` (code 143 or 129) when SIGTERM
        or SIGHUP arrives while writing in the main thread with Python's
        default handler (NOTE [termination]): the temporary files are removed
        first. Temporary files that a killed writer left beside ``path`` are
        removed by the next write of ``path`` (NOTE [stale temporaries]).

    Warns
    -----
    LazypatchWarning
        When the first image's last axis is longer than 16 and than a spatial
        axis: it looks channels-first, or (2-D) like a volume.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> images = [np.zeros((100, 80, 3), np.uint8), np.ones((64, 64, 3), np.uint8)]
    >>> store = write_store(os.path.join(folder, "demo.h5"), images, progress=False)
    >>> len(store), store.shapes.tolist(), store.channels
    (2, [[100, 80], [64, 64]], 3)
    >>> store.read_region(1, (60, 60), (8, 8))[..., 0].sum()  # 4x4 image pixels, rest padding
    np.uint64(16)
    """
    with termination_as_exception():  # NOTE [termination] in lazypatch.ingest._signals
        target = write_file(
            path, images, masks=masks, names=names, meta=meta, geometry=geometry, spatial_ndim=spatial_ndim,
            layout=layout, tile=tile, compression=compression, compression_opts=compression_opts,
            checksum=checksum, overwrite=overwrite, progress=progress, check_finite=check_finite,
            label_stats=label_stats, channel_stats=channel_stats, provenance=provenance, tissue=tissue,
        )
    return ImageStore(target)
