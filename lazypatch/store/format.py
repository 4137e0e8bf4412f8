"""The store file format (version 1): its specification, names, and validation of an opened file.

A store is one HDF5 file in the HDF5 1.10 file format (superblock version 3:
checksummed metadata), with nothing in HDF5's global heap, which has no
checksum: string attributes are fixed-length UTF-8 and text tables are packed
bytes (see NOTE [hardened metadata]). Nothing is pickled and no dataset has a
variable-length type. This docstring is the specification; the constants and
``read_store_info`` below are the code that checks it.

Root attributes
---------------
==============================  ==================================================================
``lazypatch_format``            ``"lazypatch-store"``
``lazypatch_format_version``    ``1``; readers refuse any other major version
``lazypatch_format_minor``      ``1`` or ``2``; additions within the major version; absent means 0,
                                and readers refuse a newer minor than they know. A writer records
                                the lowest minor that describes the store (see Changes)
``lazypatch_version``           the library version that wrote the store
``layout``                      ``"tiled"``, ``"contiguous"`` or ``"chunked"``
``spatial_ndim``                2 or 3
``channels``                    channels per pixel, 1 to 65,536 (1 when images have no channel axis)
``channel_axis``                whether images were written with a channel axis ((H, W, C) or (H, W))
``dtype``, ``mask_dtype``       numpy dtype strings (``dtype.str``); pixels are bool, integer or
                                float, masks bool or integer; ``mask_dtype`` is ``""`` without masks
``tile``                        int64 tile extent per axis (tiled and chunked layouts only)
``compression``                 ``""``, ``"gzip"``, ``"lzf"``, or an hdf5plugin codec (``"zstd"``,
                                ``"lz4"``, ``"blosc"``, ``"bitshuffle"``); chunked layout only
``compression_opts``            the codec's level, or -1 for its default
``checksum``                    HDF5 fletcher32 on every chunk (chunked layout only)
``num_images``                  n, at least 1
``provenance``                  optional JSON text: lazypatch and Python versions, UTC time, layout
                                options, and from ``lazypatch build`` the command, the source and
                                mask folders and the shard
==============================  ==================================================================

Datasets
--------
=====================================  ===============================  ==========================================
dataset                                shape, type                      content
=====================================  ===============================  ==========================================
``shapes``                             (n, spatial_ndim) int64          spatial shape of each image
``tile_offsets`` (tiled, chunked)      (n + 1,) int64                   first tile record of each image: the
                                                                        cumulative sum of prod(ceil(shape / tile))
``pixel_offsets`` (contiguous)         (n + 1,) int64                   first pixel of each image: the cumulative
                                                                        sum of prod(shape)
``pixels``                             tiled, chunked: (tiles, C,       tiled/chunked: each image cut into tiles
                                       *tile); contiguous:              in C order over its tile grid, each tile
                                       (pixels * C,); of ``dtype``      channel-planar, zero-padded at the image
                                                                        border; contiguous: each image one planar
                                                                        block (C, *shape) starting at value
                                                                        ``pixel_offsets[i] * C``
``masks`` (optional)                   as ``pixels`` without C;         the same arrangement, one value per pixel
                                       of ``mask_dtype``
``crc32``, ``mask_crc32``              (n,) uint32                      CRC32 of each image's pixel (mask) bytes
                                                                        in C order, channels last, as written
``names``, ``name_offsets``            uint8 bytes, (n + 1,) int64      name i is the UTF-8 text
                                                                        ``names[name_offsets[i]:name_offsets[i+1]]``
``meta``, ``meta_offsets``             uint8 bytes, (n + 1,) int64      the same for each image's meta JSON object
``info_crc32`` (optional)              (n,) uint32                      CRC32 of name i, a NUL byte and meta i
                                                                        (UTF-8), checked by ``verify``
``geometry``, ``geometry_offsets``     uint8 bytes, (n + 1,) int64      1.1, optional (absent: no geometry):
                                                                        each image's physical geometry as a JSON
                                                                        object (``ImageStore.geometry``:
                                                                        ``spacing`` in stored axis order, ``unit``,
                                                                        ``affine``, ``crs``, ``transform``,
                                                                        ``level``, ``downsample``, ``source``);
                                                                        both carry a ``crc32`` attribute
``label_stats/*`` (optional)           int64                            per-block label counts: ``image_offsets``
                                                                        (n + 1,); ``blocks``, ``labels``,
                                                                        ``counts`` (rows,); rows of image i are
                                                                        ``[image_offsets[i], image_offsets[i+1])``;
                                                                        group attribute ``block`` (int64 per axis)
``channel_stats/hist`` (optional)      (C, 2**bits) int64               integer images of at most 16 bits
                                                                        (bits = 8 * itemsize): a histogram of
                                                                        every value per channel (exact
                                                                        statistics); group attribute ``dtype``
``channel_stats/*`` (other dtypes)     (C,) or (C, k) float64           optional: ``count`` (int64), ``sum``,
                                                                        ``sumsq``, ``min``, ``max`` and
                                                                        ``sample``, a deterministic subsample of
                                                                        at most 2**20 values per channel
``tissue/masks``                       (sum of h * w,) uint8            1.2, optional, 2-D stores only: each
                                                                        image's low-resolution tissue mask, 0 or
                                                                        1 per cell, in C order, back to back
``tissue/shapes``                      (n, 2) int64                     (h, w) of each mask; (0, 0): none for
                                                                        that image
``tissue/offsets``                     (n + 1,) int64                   first cell of each mask: the cumulative
                                                                        sum of h * w
``tissue/crc32``                       (n,) uint32                      CRC32 of each image's mask bytes
``tissue/fraction``                    (n,) float64                     each image's tissue fraction (below);
                                                                        NaN without a mask
=====================================  ===============================  ==========================================

Every dataset of ``tissue`` carries a ``crc32`` attribute too. Stored pixel
(y, x) of an (H, W) image belongs to mask cell ``(y * h // H, x * w // W)``:
the mask, nearest-upsampled, covers the image's whole extent whatever its
resolution (``lazypatch.ingest.tissue`` makes them from thumbnails at about
8 um per pixel), and ``fraction`` is the mean of the upsampled mask over the
image's pixels (``lazypatch.stats.foreground.upsampled_fractions``).

Every dataset of ``label_stats`` and ``channel_stats`` (in a store or a
sidecar) carries a ``crc32`` attribute, checked when it is loaded
(``read_checked``) and by ``verify``.

For the ``tiled`` and ``contiguous`` layouts, ``pixels`` and ``masks`` are
uncompressed contiguous HDF5 datasets, starting on a 4,096-byte page when
they hold at least a MiB (NOTE [page-aligned data]): their file offset
(``dataset.id.get_offset()``) plus record arithmetic gives any tile's bytes,
so readers never call h5py per patch, and any HDF5 tool still sees plain
arrays. Channel planes in a tile make a batch come out as a contiguous
(B, C, *patch) array with one copy. For ``chunked`` each chunk is one tile
record, (1, C, *tile) or (1, *tile), with the codec's HDF5 filter (hdf5plugin
filter ids in ``PLUGIN_COMPRESSIONS``) and fletcher32 when ``checksum`` is set.

Changes
-------
Within version 1, each addition bumps the minor version; every earlier store keeps opening.

- 1.0: the format above without the 1.1 items (lazypatch 0.1).
- 1.1: the ``geometry`` text table and ``lazypatch_format_minor`` itself.
- 1.2: the optional ``tissue`` group (``lazypatch build --tissue otsu``).

A store is written with the lowest minor that describes it (``format_minor``):
a store without tissue masks is 1.1, so lazypatch versions that read 1.1 keep
opening every store that does not use 1.2's addition; one with masks is 1.2,
which they refuse with an "upgrade" message rather than ignoring the masks.

Validation
----------
Everything read from a file is untrusted. At open (``read_store_info``) every
table is checked against the attributes and the others (offsets recomputed
from ``shapes``, the shapes and dtypes of ``pixels`` and ``masks``, one uint32
CRC per image, n + 1 text offsets, the tissue tables' shapes and offsets)
and against the file size, so a truncated file is refused before anything is
memory-mapped; links, external storage and
virtual datasets are refused; text offsets are checked before use; whatever
HDF5 raises on damaged metadata becomes a ``StoreFormatError`` naming the path
(``damage_is_format_error``). Stores are written once, atomically
(``lazypatch.store.publish``), and never opened in ``"a"`` or ``"r+"`` mode.

Sidecars
--------
What ``lazypatch index`` computes without writing to a store goes into a
sidecar next to it (``STORE.labels.h5``, ``STORE.stats.h5``,
``STORE.filter-<name>.h5``; see :mod:`lazypatch.store.sidecar`): an HDF5 file
of the same hardened kind, with attributes ``lazypatch_sidecar`` (its kind:
``"labels"``, ``"channel_stats"`` or ``"filter"``), ``store_fingerprint`` (a
SHA-256 over the store's layout, dtypes, channels, shapes and CRC32 tables;
the sidecar is refused for other content) and ``store_name``, and datasets
that each carry a ``crc32`` attribute. A filter's ``keep`` dataset is one bit
per grid patch (``np.packbits`` order), with the grid in its attributes.

Examples
--------
>>> import os, tempfile, h5py, numpy as np
>>> from lazypatch import write_store
>>> path = os.path.join(tempfile.mkdtemp(), "spec.h5")
>>> write_store(path, [np.zeros((100, 80, 3), np.uint8)], progress=False).close()
>>> with h5py.File(path, "r") as f:
...     print(sorted(f))
...     print(f.attrs[A_FORMAT].decode(), int(f.attrs[A_VERSION]), int(f.attrs[A_MINOR]), f.attrs[A_LAYOUT].decode())
...     print(f[D_TILE_OFFSETS][()].tolist(), f[D_PIXELS].shape, f[D_PIXELS].dtype)
['crc32', 'geometry', 'geometry_offsets', 'info_crc32', 'meta', 'meta_offsets', 'name_offsets', 'names', 'pixels', 'shapes', 'tile_offsets']
lazypatch-store 1 1 tiled
[0, 4] (4, 3, 64, 64) uint8
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import LazypatchError, StoreFormatError
from ..grid import ceil_div

FORMAT_NAME = "lazypatch-store"
FORMAT_VERSION = 1  # major: a reader refuses any other
FORMAT_MINOR = 2  # additions: a reader refuses a newer minor of its major (absent: 0)
MINOR_TISSUE = 2  # the minor that added the tissue group (see format_minor)
LAYOUTS = ("tiled", "contiguous", "chunked")
COMPRESSIONS = ("gzip", "lzf")
# codecs of the hdf5plugin package: name -> (HDF5 filter id, level range or None)
PLUGIN_COMPRESSIONS = {"zstd": (32015, (1, 22)), "lz4": (32004, None), "blosc": (32001, (0, 9)),
                       "bitshuffle": (32008, None)}


def plugin_filter(name: str, level=None) -> dict:
    """create_dataset keywords of an hdf5plugin codec (importing hdf5plugin registers it)."""
    hdf5plugin = require_plugin(name)
    if name == "zstd":
        return dict(hdf5plugin.Zstd(clevel=3 if level is None else level))
    if name == "lz4":
        return dict(hdf5plugin.LZ4())
    if name == "blosc":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5 if level is None else level,
                                     shuffle=hdf5plugin.Blosc.SHUFFLE))
    return dict(hdf5plugin.Bitshuffle())


def require_plugin(name: str):
    """The hdf5plugin module (its import registers the codecs with HDF5), else ImportError."""
    try:
        import hdf5plugin
    except ImportError:
        raise ImportError(
            f"compression {name!r} is an hdf5plugin codec: install it with `pip install hdf5plugin`"
        ) from None
    return hdf5plugin
DEFAULT_TILE = {2: 64, 3: 64}  # 64 per axis: one 64-px patch is one record (measured best)
PIXEL_KINDS = "biuf"  # bool, signed, unsigned, float
MASK_KINDS = "biu"
# NOTE [hardened metadata]: files are written in the HDF5 1.10 format, whose superblock,
# object headers and dense-storage heaps carry checksums, so damaged metadata is refused
# rather than followed. Nothing lives in the global heap, which has no checksum: a damaged
# one, holding variable-length strings, made libhdf5 loop forever (found by fuzzing). So
# string attributes are fixed-length, text tables are packed bytes (see pack_texts), and
# attributes stay in the object header.
MAX_COMPACT_ATTRIBUTES = 64
# NOTE [page-aligned data]: datasets of at least a MiB (pixels, masks) start on a page, so a
# 12 KiB tile is 3 pages, not 4: a cold read moves a quarter fewer bytes (cold read_batch on
# a 0.5 GB store: 44,225 against 32,190 patches/s, io=auto, from
# python tests/benchmarks/reference.py --size-gb 0.5 --cold --only read_batch), and a warm
# gather into page-aligned batch buffers is 5-10% faster. Chunks (usually smaller) are
# packed as before.
ALIGN_THRESHOLD = 1 << 20
PAGE_ALIGNMENT = 4096
LOCK_ERRNOS = {errno.EAGAIN, errno.EACCES, errno.ENOLCK, 35, 524}  # 35: EAGAIN on macOS; 524: ENOTSUPP

# root attribute names
A_FORMAT = "lazypatch_format"
A_VERSION = "lazypatch_format_version"
A_MINOR = "lazypatch_format_minor"
A_LIBRARY = "lazypatch_version"
A_LAYOUT = "layout"
A_NDIM = "spatial_ndim"
A_CHANNELS = "channels"
A_CHANNEL_AXIS = "channel_axis"
A_DTYPE = "dtype"
A_MASK_DTYPE = "mask_dtype"
A_TILE = "tile"
A_COMPRESSION = "compression"
A_COMPRESSION_OPTS = "compression_opts"
A_CHECKSUM = "checksum"
A_NUM_IMAGES = "num_images"
A_PROVENANCE = "provenance"  # JSON: who wrote the store, how, from what (optional)

# dataset names
D_SHAPES = "shapes"
D_TILE_OFFSETS = "tile_offsets"
D_PIXEL_OFFSETS = "pixel_offsets"
D_PIXELS = "pixels"
D_MASKS = "masks"
D_CRC = "crc32"
D_MASK_CRC = "mask_crc32"
D_NAMES = "names"  # UTF-8 bytes of every name, back to back; name i is
D_NAME_OFFSETS = "name_offsets"  # names[name_offsets[i]:name_offsets[i + 1]]
D_META = "meta"  # the same for each image's meta JSON
D_META_OFFSETS = "meta_offsets"
TEXTS = {D_NAMES: D_NAME_OFFSETS, D_META: D_META_OFFSETS}
D_GEOMETRY = "geometry"  # each image's physical geometry as JSON (format 1.1; optional)
D_GEOMETRY_OFFSETS = "geometry_offsets"
OPTIONAL_TEXTS = {D_GEOMETRY: D_GEOMETRY_OFFSETS}
ALL_TEXTS = {**TEXTS, **OPTIONAL_TEXTS}
G_CHANNEL_STATS = "channel_stats"  # group of ChannelStats, in the store or a sidecar
G_LABEL_STATS = "label_stats"  # group of LabelStats rows, in the store or a sidecar
G_TISSUE = "tissue"  # per-image tissue masks (format 1.2; optional)
D_TISSUE_MASKS = "tissue/masks"
D_TISSUE_SHAPES = "tissue/shapes"
D_TISSUE_OFFSETS = "tissue/offsets"
D_TISSUE_CRC = "tissue/crc32"
D_TISSUE_FRACTION = "tissue/fraction"
TISSUE_TABLES = (D_TISSUE_MASKS, D_TISSUE_SHAPES, D_TISSUE_OFFSETS, D_TISSUE_CRC, D_TISSUE_FRACTION)
MAX_TISSUE_SIDE = 1 << 20  # cells per axis of one tissue mask
D_INFO_CRC = "info_crc32"  # CRC32 of each image's name and meta text (optional in version 1)


def format_minor(tissue: bool) -> int:
    """The minor version a writer records: the lowest that describes the store (see Changes).

    >>> format_minor(False), format_minor(True)
    (1, 2)
    """
    return MINOR_TISSUE if tissue else 1


def info_crc(name: str, meta: str) -> int:
    """CRC32 of an image's name and meta JSON, as ``verify`` recomputes it."""
    import zlib

    return zlib.crc32(name.encode("utf-8") + b"\0" + meta.encode("utf-8"))


def attribute(value):
    """An attribute value as written: strings fixed-length UTF-8 (see pack_texts' NOTE)."""
    if isinstance(value, str):
        return np.bytes_(value.encode("utf-8"))
    return value


def text_attribute(value):
    """A string attribute as read back (fixed-length ones come back as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, np.bytes_)) else value


def pack_texts(texts) -> tuple:
    """(uint8 blob, int64 offsets (n + 1,)) of strings stored back to back as UTF-8.

    See NOTE [hardened metadata]: no variable-length HDF5 strings: they live in the global
    heap, which has no checksum, and a damaged one made libhdf5 loop forever.
    """
    encoded = [text.encode("utf-8") for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def read_texts(f, name: str, path: str, start: int = 0, stop: int | None = None) -> list:
    """Strings ``start:stop`` of a packed text table, every offset checked before use."""
    blob = f[name]
    count = f[ALL_TEXTS[name]].shape[0] - 1
    stop = count if stop is None else stop
    offsets = np.asarray(f[ALL_TEXTS[name]][start:stop + 1], dtype=np.int64)
    if (len(offsets) != stop - start + 1 or (start == 0 and offsets[0] != 0) or offsets[0] < 0
            or np.any(np.diff(offsets) < 0) or offsets[-1] > blob.shape[0]
            or (stop == count and offsets[-1] != blob.shape[0])):
        raise StoreFormatError(f"{path!r}: table {ALL_TEXTS[name]!r} is damaged (offsets out of order or range)")
    data = blob[offsets[0]:offsets[-1]].tobytes() if offsets[-1] > offsets[0] else b""
    base = int(offsets[0])
    try:
        return [data[a - base:b - base].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise StoreFormatError(f"{path!r}: table {name!r} is damaged (not UTF-8: {exc})") from None


def tile_grid(shapes: np.ndarray, tile) -> np.ndarray:
    """Tiles per axis of each image: ceil(shape / tile), int64."""
    tile = np.asarray(tile, dtype=np.int64)
    return ceil_div(np.asarray(shapes, dtype=np.int64), tile)


def extent_offsets(shapes: np.ndarray, layout: str, tile) -> np.ndarray:
    """Cumulative start (n + 1,) of each image in tiles (tiled, chunked) or pixels."""
    sizes = (tile_grid(shapes, tile) if layout != "contiguous" else shapes).prod(axis=1)
    offsets = np.zeros(len(shapes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


@dataclass
class ArrayInfo:
    """Where one stored array (pixels or masks) lives.

    Records are tiles, (C, *tile) for pixels and (*tile) for masks (tiled,
    chunked), or single values (contiguous: each image is a planar block
    (C, *shape) starting at value ``offsets[i] * C``).
    """

    dtype: np.dtype
    record_shape: tuple
    offset: int | None  # byte offset in the file (uncompressed layouts)
    nbytes: int
    channels: int  # C for pixels, 0 for masks

    @property
    def record_bytes(self) -> int:
        return int(np.prod(self.record_shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class StoreInfo:
    path: str
    layout: str
    spatial_ndim: int
    channels: int
    channel_axis: bool
    tile: tuple | None
    compression: str | None
    checksum: bool
    shapes: np.ndarray
    offsets: np.ndarray  # tile_offsets or pixel_offsets
    pixels: ArrayInfo
    masks: ArrayInfo | None
    file_size: int
    identity: tuple  # (size, mtime_ns, inode)
    attrs: dict = field(default_factory=dict)
    tissue: TissueInfo | None = None  # format 1.2: the tissue tables, when the store has them


class TissueInfo(NamedTuple):
    """The small tables of a store's ``tissue`` group, read and checked at open."""

    shapes: np.ndarray  # (n, 2) int64; (0, 0) where an image has no mask
    offsets: np.ndarray  # (n + 1,) int64: first cell of each mask in ``tissue/masks``
    crcs: np.ndarray  # (n,) uint32: CRC32 of each mask's bytes
    fractions: np.ndarray  # (n,) float64: tissue fraction of each image (NaN: no mask)


def _library_version() -> str:
    from .._version import __version__

    return __version__


def file_identity(stat: os.stat_result) -> tuple:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def check_path(path, what: str = "store") -> str:
    """A readable regular file, else FileNotFoundError / IsADirectoryError naming ``what``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"no such {what} file", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"a {what} is an HDF5 file, got a directory", path)
    return path


def create_h5(path: str):
    """A new HDF5 file for writing (see NOTE [hardened metadata]); fails if ``path`` exists."""
    import h5py

    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fapl.set_alignment(ALIGN_THRESHOLD, PAGE_ALIGNMENT)  # See NOTE [page-aligned data]
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_attr_phase_change(MAX_COMPACT_ATTRIBUTES, MAX_COMPACT_ATTRIBUTES - 8)
    h5 = h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fapl=fapl, fcpl=fcpl))
    h5.lazypatch_descriptor = h5.id.get_vfd_handle()  # for discard_h5, while the file is whole
    return h5


def discard_h5(h5, path: str, *holders) -> None:
    """Close an HDF5 file being thrown away, whatever state a failed write left it in.

    NOTE [discarding on a full disk]: after a write fails (ENOSPC, EFBIG), h5py's
    close raises while HDF5 flushes its cache, and the half-closed file then
    crashes the interpreter when it is freed, or when asked for its descriptor
    (found by disk-full tests). The descriptor, noted when the file was created
    (``create_h5``), is pointed at /dev/null first (when it still is ``path``'s),
    so the last flushes succeed and the close is clean. If the file cannot be
    closed cleanly, it and ``holders`` (h5py objects of it: datasets) are kept
    alive for good rather than freed. The file itself is removed by the caller.
    """
    if h5 is None:
        return
    descriptor = getattr(h5, "lazypatch_descriptor", None)
    try:
        ours = descriptor is not None and os.path.samestat(os.fstat(descriptor), os.stat(path))
    except OSError:
        ours = False
    if ours:
        spare = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(spare, descriptor)
        finally:
            os.close(spare)
    try:
        if h5.id.valid:
            h5.close()
            return
    except Exception:  # the file is being removed: nothing left to save
        pass
    _ABANDONED.append((h5, holders))  # half-closed: freeing it would crash the interpreter


_ABANDONED = []  # h5py files whose close failed (see discard_h5)


def write_dataset(group, name: str, data, checksum: bool = False):
    """A new dataset holding ``data``, written through to the file now.

    HDF5 holds small writes in a buffer flushed when the dataset is freed,
    where h5py ignores errors: a full disk would go unnoticed and the file be
    published damaged. Flushing here raises them. ``checksum``: the CRC32 of
    the bytes as attribute ``crc32`` (statistics, sidecars; see read_checked).
    """
    import zlib

    data = np.ascontiguousarray(data)
    dataset = group.create_dataset(name, data=data, track_times=False)
    if checksum:
        dataset.attrs["crc32"] = np.uint32(zlib.crc32(data.tobytes()))
    flush(dataset, repr(name))
    return dataset


def flush(h5_object, what: str) -> None:
    """Flush an h5py file or dataset; a failed write is an OSError (h5py says RuntimeError)."""
    try:
        h5_object.flush()
    except RuntimeError as exc:  # ENOSPC, EFBIG, EIO
        code = re.search(r"errno = (\d+)", str(exc))
        raise OSError(int(code.group(1)) if code else errno.EIO, f"cannot write {what}: {exc}") from exc


def open_h5(path: str, locking=None):
    """Open an HDF5 file read-only, translating h5py's errors into clear ones."""
    import h5py

    kwargs = {} if locking is None else {"locking": locking}
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as exc:
        message = str(exc)
        if "unable to lock file" in message.lower() or getattr(exc, "errno", None) in LOCK_ERRNOS:
            raise OSError(
                getattr(exc, "errno", None) or errno.EAGAIN,
                f"cannot lock {path!r} for reading ({message}); another process holds it "
                "open for writing, or the file system does not support locks (NFS): pass "
                "locking=False or set HDF5_USE_FILE_LOCKING=FALSE",
            ) from exc
        truncated = re.search(r"stored_eof = (\d+)", message)
        if "truncated file" in message and truncated:
            raise StoreFormatError(
                f"{path!r} is truncated: it has {os.path.getsize(path)} bytes, "
                f"its HDF5 header expects {truncated.group(1)}"
            ) from exc
        if "already open for write" in message:
            raise OSError(
                errno.EBUSY,
                f"{path!r} is open for writing in another process, or its writer died without "
                "closing it (then `h5clear -s` clears the flag); lazypatch only reads finished stores",
            ) from exc
        if "signature" in message.lower() or "not an hdf5" in message.lower():
            raise StoreFormatError(f"{path!r} is not an HDF5 file, so not a lazypatch store") from exc
        raise StoreFormatError(f"cannot open {path!r} as HDF5: {message}") from exc


def _attr(f, name, path, kind=None):
    if name not in f.attrs:
        raise StoreFormatError(f"{path!r} is not a valid lazypatch store (no {name!r} attribute)")
    value = f.attrs[name]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if kind is int:
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))):
            raise StoreFormatError(f"{path!r}: attribute {name!r} must be an integer, got {value!r}")
        return int(value)
    if kind is str and not isinstance(value, str):
        raise StoreFormatError(f"{path!r}: attribute {name!r} must be a string, got {value!r}")
    return value


def _dataset(f, name, path, required=True):
    """A dataset reached by a hard link, with no external or virtual storage."""
    import h5py

    link = f.get(name, getlink=True)
    if link is None:
        if required:
            raise StoreFormatError(f"{path!r}: dataset {name!r} is missing")
        return None
    if not isinstance(link, h5py.HardLink):
        raise StoreFormatError(
            f"{path!r}: {name!r} is a {type(link).__name__}; a store only holds its own data"
        )
    dataset = f[name]
    if not isinstance(dataset, h5py.Dataset):
        raise StoreFormatError(f"{path!r}: {name!r} is not a dataset")
    dcpl = dataset.id.get_create_plist()
    if dataset.is_virtual or dcpl.get_external_count():
        raise StoreFormatError(
            f"{path!r}: dataset {name!r} uses external or virtual storage, which a store may not"
        )
    return dataset


def _array_info(f, name, path, layout, dtype, channels, records, file_size, tile, comp):
    import h5py

    if layout == "contiguous":
        record_shape, records = (), records * max(channels, 1)
    else:
        record_shape = ((channels,) if channels else ()) + tuple(tile)
    dataset = _dataset(f, name, path)
    expected = (records,) + tuple(record_shape)
    if dataset.shape != expected:
        raise StoreFormatError(f"{path!r}: {name!r} has shape {dataset.shape}, tables say {expected}")
    if dataset.dtype != dtype:
        raise StoreFormatError(f"{path!r}: {name!r} has dtype {dataset.dtype}, attributes say {dtype}")
    nbytes = records * int(np.prod(record_shape, dtype=np.int64)) * dtype.itemsize
    dcpl = dataset.id.get_create_plist()
    if layout == "chunked":
        if dataset.chunks != (1,) + tuple(record_shape):
            raise StoreFormatError(
                f"{path!r}: {name!r} has chunks {dataset.chunks}, expected one tile per chunk"
            )
        filters = {dcpl.get_filter(k)[0] for k in range(dcpl.get_nfilters())}
        if comp in PLUGIN_COMPRESSIONS and PLUGIN_COMPRESSIONS[comp][0] not in filters:
            raise StoreFormatError(f"{path!r}: {name!r} lacks the {comp!r} filter its attributes name")
        if comp not in PLUGIN_COMPRESSIONS and (dataset.compression or None) != comp:
            raise StoreFormatError(
                f"{path!r}: {name!r} uses compression {dataset.compression!r}, attributes say {comp!r}"
            )
        return ArrayInfo(dtype, tuple(record_shape), None, nbytes, channels)
    if dcpl.get_layout() != h5py.h5d.CONTIGUOUS or dcpl.get_nfilters():
        raise StoreFormatError(
            f"{path!r}: {name!r} must be an uncompressed contiguous dataset for layout {layout!r}"
        )
    offset = dataset.id.get_offset()
    if offset is None or offset < 0 or offset + nbytes > file_size:
        raise StoreFormatError(
            f"{path!r} is truncated or damaged: {name!r} needs bytes up to "
            f"{(offset or 0) + nbytes}, the file has {file_size}"
        )
    return ArrayInfo(dtype, tuple(record_shape), int(offset), nbytes, channels)


def _plain(value):
    """An HDF5 attribute as a plain Python value (JSON-ready)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind != "O" else [str(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_store_info(path, locking=None) -> StoreInfo:
    """Open, validate and describe a store; the HDF5 file is closed on return."""
    path = check_path(path)
    stat = os.stat(path)
    with open_h5(path, locking) as f, damage_is_format_error(path):
        return _describe(f, path, stat)


def crc_damage(name: str, stored, data) -> str | None:
    """Why ``data`` differs from the CRC32 ``stored`` with it (a dataset's ``crc32``
    attribute), or None. Datasets written before CRC32s were kept (None) pass."""
    import zlib

    if stored is None:
        return None
    crc = zlib.crc32(np.ascontiguousarray(data))
    return None if crc == int(stored) else f"{name}: CRC32 {crc:08x}, stored {int(stored):08x}"


def read_checked(dataset, path: str) -> np.ndarray:
    """``dataset[()]``, or an IntegrityError when it differs from its stored CRC32."""
    from ..errors import IntegrityError

    data = dataset[()]
    damage = crc_damage(dataset.name, dataset.attrs.get("crc32"), data)
    if damage is not None:
        raise IntegrityError(f"{path!r} is damaged: {damage}")
    return data


# what h5py raises on damaged metadata, depending on where the damage is met
H5_DAMAGE = (KeyError, RuntimeError, ValueError, TypeError, OSError, IndexError, OverflowError)


@contextmanager
def damage_is_format_error(path: str, what: str = "its HDF5 structure"):
    """What HDF5 raises on a damaged file becomes a StoreFormatError naming the path.

    h5py reports broken metadata as KeyError, RuntimeError, ValueError,
    TypeError or OSError, depending on where the damage is met.
    """
    try:
        yield
    except LazypatchError:
        raise
    except H5_DAMAGE as exc:
        raise StoreFormatError(f"{path!r} is damaged: {what} cannot be read ({exc})") from exc


def _describe(f, path: str, stat) -> StoreInfo:
    name = f.attrs.get(A_FORMAT)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if name is None:
        raise StoreFormatError(f"{path!r} is not a lazypatch store (no {A_FORMAT!r} attribute)")
    if name != FORMAT_NAME:
        raise StoreFormatError(f"{path!r} is not a lazypatch store ({A_FORMAT} is {name!r})")
    version = _attr(f, A_VERSION, path, int)
    minor = _attr(f, A_MINOR, path, int) if A_MINOR in f.attrs else 0
    if version != FORMAT_VERSION or minor > FORMAT_MINOR:
        newer = (version, minor) > (FORMAT_VERSION, FORMAT_MINOR)
        raise StoreFormatError(
            f"{path!r} has store format version {version}.{minor}, this lazypatch ({_library_version()}) "
            f"reads versions {FORMAT_VERSION}.0 to {FORMAT_VERSION}.{FORMAT_MINOR}"
            + (" (newer than this lazypatch: upgrade it)" if newer else " (older: rebuild the store)")
        )
    layout = _attr(f, A_LAYOUT, path, str)
    if layout not in LAYOUTS:
        raise StoreFormatError(f"{path!r}: unknown layout {layout!r}")
    ndim = _attr(f, A_NDIM, path, int)
    channels = _attr(f, A_CHANNELS, path, int)
    num_images = _attr(f, A_NUM_IMAGES, path, int)
    if ndim not in (2, 3) or not 1 <= channels <= 1 << 16 or num_images < 1:
        raise StoreFormatError(
            f"{path!r}: bad header (spatial_ndim={ndim}, channels={channels}, "
            f"num_images={num_images})"
        )
    channel_axis = bool(_attr(f, A_CHANNEL_AXIS, path))
    if not channel_axis and channels != 1:
        raise StoreFormatError(f"{path!r}: bad header (channels={channels} without a channel axis)")
    try:
        dtype = np.dtype(_attr(f, A_DTYPE, path, str))
        mask_text = _attr(f, A_MASK_DTYPE, path, str)
        mask_dtype = np.dtype(mask_text) if mask_text else None
    except TypeError as exc:
        raise StoreFormatError(f"{path!r}: unreadable dtype attribute ({exc})") from exc
    if dtype.kind not in PIXEL_KINDS or (mask_dtype is not None and mask_dtype.kind not in MASK_KINDS):
        raise StoreFormatError(f"{path!r}: unsupported dtypes {dtype}, {mask_dtype}")
    compression = _attr(f, A_COMPRESSION, path, str) or None
    if compression is not None and compression not in COMPRESSIONS + tuple(PLUGIN_COMPRESSIONS):
        raise StoreFormatError(f"{path!r}: unknown compression {compression!r}")
    if compression in PLUGIN_COMPRESSIONS:
        require_plugin(compression)
    checksum = bool(_attr(f, A_CHECKSUM, path))
    tile = None
    if layout != "contiguous":
        tile = np.asarray(_attr(f, A_TILE, path))
        if tile.shape != (ndim,) or tile.dtype.kind not in "iu" or tile.min() < 1 or tile.max() > 1 << 20:
            raise StoreFormatError(f"{path!r}: bad tile attribute {tile!r}")
        tile = tuple(int(v) for v in tile)

    shapes_ds = _dataset(f, D_SHAPES, path)
    if shapes_ds.shape != (num_images, ndim) or shapes_ds.dtype.kind not in "iu":
        raise StoreFormatError(
            f"{path!r}: {D_SHAPES!r} has shape {shapes_ds.shape} ({shapes_ds.dtype}), "
            f"expected ({num_images}, {ndim}) integers"
        )
    shapes = shapes_ds[()].astype(np.int64)
    if shapes.min() < 1 or shapes.max() > 1 << 40:
        raise StoreFormatError(f"{path!r}: {D_SHAPES!r} holds impossible image sizes")
    expected = extent_offsets(shapes, layout, tile or 1)
    offsets_name = D_PIXEL_OFFSETS if layout == "contiguous" else D_TILE_OFFSETS
    offsets_ds = _dataset(f, offsets_name, path)
    if offsets_ds.shape != expected.shape or not np.array_equal(offsets_ds[()], expected):
        raise StoreFormatError(
            f"{path!r}: {offsets_name!r} disagrees with the image shapes (damaged store)"
        )
    records = int(expected[-1])
    pixels = _array_info(f, D_PIXELS, path, layout, dtype, channels, records,
                         stat.st_size, tile, compression)
    masks = None
    if mask_dtype is not None:
        masks = _array_info(f, D_MASKS, path, layout, mask_dtype, 0, records,
                            stat.st_size, tile, compression)
    optional = (D_INFO_CRC,) if D_INFO_CRC in f else ()
    for table in (D_CRC,) + ((D_MASK_CRC,) if masks else ()) + optional:
        table_ds = _dataset(f, table, path)
        if table_ds.shape != (num_images,) or table_ds.dtype != np.uint32:
            raise StoreFormatError(f"{path!r}: {table!r} must hold one uint32 per image")
    texts = {**TEXTS, **{k: v for k, v in OPTIONAL_TEXTS.items() if k in f}}
    for blob_name, offsets_name in texts.items():
        blob, offsets_ds = _dataset(f, blob_name, path), _dataset(f, offsets_name, path)
        if (blob.ndim != 1 or blob.dtype != np.uint8 or offsets_ds.shape != (num_images + 1,)
                or offsets_ds.dtype != np.int64):
            raise StoreFormatError(
                f"{path!r}: {blob_name!r} must be UTF-8 bytes with {num_images + 1} int64 "
                f"{offsets_name!r}"
            )
    tissue = _tissue_info(f, path, ndim, num_images, stat.st_size) if G_TISSUE in f else None
    attrs = {key: _plain(value) for key, value in f.attrs.items()}
    return StoreInfo(
        path=path, layout=layout, spatial_ndim=ndim, channels=channels,
        channel_axis=channel_axis, tile=tile, compression=compression, checksum=checksum,
        shapes=shapes, offsets=expected, pixels=pixels, masks=masks,
        file_size=stat.st_size, identity=file_identity(stat), attrs=attrs, tissue=tissue,
    )


def _tissue_info(f, path: str, ndim: int, num_images: int, file_size: int) -> TissueInfo:
    """The tissue group's tables, each checked against the others and the file (format 1.2)."""
    import h5py

    link = f.get(G_TISSUE, getlink=True)
    if not isinstance(link, h5py.HardLink) or not isinstance(f[G_TISSUE], h5py.Group):
        raise StoreFormatError(f"{path!r}: {G_TISSUE!r} must be a group of the store itself")
    if ndim != 2:
        raise StoreFormatError(f"{path!r}: a {G_TISSUE!r} group in a {ndim}-D store; tissue masks are 2-D only")
    tables = {name: _dataset(f, name, path) for name in TISSUE_TABLES}
    expected = {D_TISSUE_MASKS: (None, np.uint8), D_TISSUE_SHAPES: ((num_images, 2), np.int64),
                D_TISSUE_OFFSETS: ((num_images + 1,), np.int64), D_TISSUE_CRC: ((num_images,), np.uint32),
                D_TISSUE_FRACTION: ((num_images,), np.float64)}
    for name, (shape, dtype) in expected.items():
        dataset = tables[name]
        if dataset.dtype != dtype or (dataset.ndim != 1 if shape is None else dataset.shape != shape):
            wanted = "1-D" if shape is None else str(shape)
            raise StoreFormatError(
                f"{path!r}: {name!r} has shape {dataset.shape} ({dataset.dtype}), expected {wanted} "
                f"{np.dtype(dtype).name} (damaged store)"
            )
    shapes = tables[D_TISSUE_SHAPES][()]
    offsets = tables[D_TISSUE_OFFSETS][()]
    none = (shapes == 0).all(axis=1)
    if shapes.size and ((shapes[~none] < 1).any() or shapes.max() > MAX_TISSUE_SIDE):
        raise StoreFormatError(f"{path!r}: {D_TISSUE_SHAPES!r} holds impossible mask sizes (damaged store)")
    cumulative = np.zeros(num_images + 1, np.int64)
    np.cumsum(shapes.prod(axis=1), out=cumulative[1:])
    masks = tables[D_TISSUE_MASKS]
    if not np.array_equal(offsets, cumulative) or masks.shape[0] != cumulative[-1]:
        raise StoreFormatError(
            f"{path!r}: {D_TISSUE_OFFSETS!r} disagrees with {D_TISSUE_SHAPES!r} or with the "
            f"{masks.shape[0]} cells of {D_TISSUE_MASKS!r} (damaged store)"
        )
    offset = masks.id.get_offset()
    if offset is not None and offset + masks.shape[0] > file_size:
        raise StoreFormatError(
            f"{path!r} is truncated or damaged: {D_TISSUE_MASKS!r} needs bytes up to "
            f"{offset + masks.shape[0]}, the file has {file_size}"
        )
    return TissueInfo(shapes, offsets, tables[D_TISSUE_CRC][()], tables[D_TISSUE_FRACTION][()])
