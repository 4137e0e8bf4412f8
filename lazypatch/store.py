"""The image store: ``write_store`` builds one HDF5 file, ``ImageStore`` reads it.

An ``ImageStore`` holds a path and small per-image tables (shapes and where
each image lives: 24 bytes per 2-D image). It opens the file lazily in each
process, re-opens after a fork, pickles without handles, and reads regions at
file offsets computed from its tables (see ``_readers``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import _format as fmt
from . import _readers, _write
from ._geometry import axis_tuple, is_int
from .errors import ParameterError, ParameterTypeError, PatchIndexError, StoreChangedError, StoreClosedError

__all__ = ["ImageStore", "write_store"]

IO_MODES = ("auto", "mmap", "pread")


def write_store(
    path,
    images,
    *,
    masks=None,
    names=None,
    meta=None,
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
) -> "ImageStore":
    """Write images (and optional masks) into one HDF5 store, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file. Written through a temporary file in the same folder, then
        moved into place (NOTE [atomic write] in ``_write``).
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
    spatial_ndim : {2, 3}
    layout : {"tiled", "contiguous", "chunked"}
        ``tiled`` (default) stores fixed tiles as records at computable file
        offsets: good when the data is far larger than RAM. ``contiguous``
        stores each image row-major (memory-mappable; good when it fits in
        RAM). ``chunked`` stores one tile per HDF5 chunk, which compression
        and checksums need.
    tile : int or sequence of int, optional
        Tile extent per axis (tiled and chunked); default 64 on every axis.
    compression : {None, "gzip", "lzf"}
        Needs ``layout="chunked"``.
    compression_opts : int, optional
        gzip level 0..9.
    checksum : bool
        HDF5 fletcher32 per chunk (needs ``layout="chunked"``). A CRC32 of
        every image's pixel bytes is stored regardless.
    overwrite : bool
        Replace an existing file at ``path``; otherwise refuse.
    progress : bool, optional
        Show a progress bar; by default when stderr is a terminal.
    check_finite : bool
        Reject float images holding NaN or infinity.
    label_stats : bool or int or sequence of int
        Also count the pixels of every mask label per block (64 per axis, or
        this block size), for :class:`lazypatch.labels.ClassSampler`.

    Returns
    -------
    ImageStore
        The new store, opened for reading.

    Raises
    ------
    ParameterError, ParameterTypeError
        Bad options or images (message names the parameter and the value).
    StoreExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError, IsADirectoryError
        The folder is missing, or ``path`` is a directory.

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
    target = _write.build(
        path, images, masks=masks, names=names, meta=meta, spatial_ndim=spatial_ndim,
        layout=layout, tile=tile, compression=compression, compression_opts=compression_opts,
        checksum=checksum, overwrite=overwrite, progress=progress, check_finite=check_finite,
        label_stats=label_stats,
    )
    return ImageStore(target)


def check_pad(value, dtype: np.dtype, name: str = "pad_value"):
    """``value`` as a scalar of ``dtype``, when it is exactly representable."""
    if isinstance(value, (str, bytes)) or np.ndim(value) != 0:
        raise ParameterTypeError(f"{name} must be a number, got {value!r}")
    if dtype.kind in "iub":
        if isinstance(value, float) and not value.is_integer() or (
            isinstance(value, np.floating) and not float(value).is_integer()
        ):
            raise ParameterError(f"{name} must be representable as {dtype.name}, got {value!r}")
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        number = int(value)
        if info is not None and not info.min <= number <= info.max or (
            dtype.kind == "b" and number not in (0, 1)
        ):
            raise ParameterError(
                f"{name} must be representable as {dtype.name}, got {value!r}"
            )
        return dtype.type(number)
    return dtype.type(value)


class ImageStore:
    """A read-only, lazily opened lazypatch store.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`write_store`.
    io : {"auto", "mmap", "pread"}
        How uncompressed layouts are read. ``mmap`` gathers from a memory map
        (fastest when the data is in the page cache); ``pread`` reads with
        positional reads from ``io_threads`` threads (fastest when it is not,
        e.g. a store larger than RAM); ``auto`` asks the page cache about a
        few pages of each batch (``RWF_NOWAIT``) and picks.
    io_threads : int
        Threads issuing reads in ``pread`` mode (the disk's queue depth).
    locking : bool or "best-effort", optional
        Passed to h5py's file locking; ``None`` keeps HDF5's default (see
        ``HDF5_USE_FILE_LOCKING``).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        Missing path, or a directory.
    StoreFormatError
        Not an HDF5 file, not a lazypatch store, or an inconsistent one.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> _ = write_store(path, [np.arange(48, dtype=np.uint16).reshape(6, 8)], progress=False)
    >>> with ImageStore(path) as store:
    ...     store.read_region(0, (1, 2), (2, 3))[..., 0]
    array([[10, 11, 12],
           [18, 19, 20]], dtype=uint16)
    """

    def __init__(self, path, *, io: str = "auto", io_threads: int = 8, locking=None):
        if io not in IO_MODES:
            raise ParameterError(f"io must be one of {IO_MODES}, got {io!r}")
        if not is_int(io_threads) or io_threads < 1:
            raise ParameterError(f"io_threads must be a positive integer, got {io_threads!r}")
        if locking not in (None, True, False, "best-effort"):
            raise ParameterError(f"locking must be None, True, False or 'best-effort', got {locking!r}")
        self._io = io
        self._io_threads = int(io_threads)
        self._locking = locking
        self._open(fmt.read_store_info(path, locking))

    def _open(self, info: fmt.StoreInfo) -> None:
        self._info = info
        self._pixels = _readers.make_reader(info, info.pixels)
        self._masks = _readers.make_reader(info, info.masks) if info.masks else None
        self._handles = None
        self._closed = False
        self._names = None
        info.shapes.flags.writeable = False

    # -- processes -----------------------------------------------------------------
    def _get_handles(self) -> _readers.Handles:
        if self._closed:
            raise StoreClosedError(f"store {self._info.path!r} is closed")
        handles = self._handles
        if handles is None or handles.pid != os.getpid():
            # NOTE [fork safety]: inherited handles belong to the parent; drop them unused.
            self._handles = handles = _readers.Handles(self._info, self._locking, self._io_threads)
        return handles

    def __getstate__(self):
        return {"path": self._info.path, "io": self._io, "io_threads": self._io_threads,
                "locking": self._locking, "identity": self._info.identity, "closed": self._closed}

    def __setstate__(self, state):
        self._io, self._io_threads, self._locking = state["io"], state["io_threads"], state["locking"]
        info = fmt.read_store_info(state["path"], self._locking)
        if info.identity != tuple(state["identity"]):
            raise StoreChangedError(
                f"{state['path']!r} changed since the store was pickled (size, mtime or inode differ)"
            )
        self._open(info)
        self._closed = state["closed"]

    def close(self) -> None:
        """Release this process's file handles; further reads raise StoreClosedError."""
        if self._handles is not None and self._handles.pid == os.getpid():
            self._handles.close()
        self._handles = None
        self._closed = True

    def __enter__(self) -> "ImageStore":
        if self._closed:
            raise StoreClosedError(f"store {self._info.path!r} is closed")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- description ------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._info.path

    @property
    def layout(self) -> str:
        return self._info.layout

    @property
    def spatial_ndim(self) -> int:
        return self._info.spatial_ndim

    @property
    def channels(self) -> int:
        """Channels per pixel (1 when images have no channel axis)."""
        return self._info.channels

    @property
    def channel_axis(self) -> bool:
        """Whether images were written with a channel axis ((H, W, C) rather than (H, W))."""
        return self._info.channel_axis

    @property
    def dtype(self) -> np.dtype:
        return self._info.pixels.dtype

    @property
    def mask_dtype(self) -> np.dtype | None:
        return self._info.masks.dtype if self._info.masks else None

    @property
    def has_masks(self) -> bool:
        return self._info.masks is not None

    @property
    def tile(self) -> tuple | None:
        return self._info.tile

    @property
    def compression(self) -> str | None:
        return self._info.compression

    @property
    def checksum(self) -> bool:
        return self._info.checksum

    @property
    def io(self) -> str:
        return self._io

    @property
    def shapes(self) -> np.ndarray:
        """Spatial shapes (n, spatial_ndim), int64, read-only."""
        return self._info.shapes

    @property
    def nbytes(self) -> int:
        """Size of the file on disk."""
        return self._info.file_size

    @property
    def attrs(self) -> dict:
        """The file's root attributes (format, version, build options)."""
        return dict(self._info.attrs)

    def __len__(self) -> int:
        return len(self._info.shapes)

    def __repr__(self) -> str:
        state = "closed " if self._closed else ""
        return (
            f"<{state}ImageStore {self.path!r}: {len(self)} images, {self.spatial_ndim}-D, "
            f"{self.channels} channel(s) of {self.dtype.name}, layout={self.layout!r}"
            f"{', masks' if self.has_masks else ''}>"
        )

    @property
    def names(self) -> list:
        """Image names (read on first access, then cached)."""
        if self._names is None:
            values = self._get_handles().h5[fmt.D_NAMES].asstr()[()]
            self._names = [str(v) for v in values]
        return self._names

    def meta(self, image_id) -> dict:
        """Metadata stored for one image (a dict, empty when none was given)."""
        image_id = self._check_image_id(image_id)
        text = self._get_handles().h5[fmt.D_META].asstr()[image_id]
        return json.loads(text)

    # -- reading ------------------------------------------------------------------------
    def _check_image_id(self, image_id) -> int:
        if not is_int(image_id):
            raise ParameterTypeError(
                f"image_id must be an integer, got {type(image_id).__name__} {image_id!r}"
            )
        image_id = int(image_id)
        if not 0 <= image_id < len(self):
            raise PatchIndexError(f"image id {image_id} is out of range for {len(self)} images")
        return image_id

    def _check_box(self, origin, size):
        nd = self.spatial_ndim
        origin = axis_tuple(origin, nd, "origin", minimum=-(1 << 62))
        size = axis_tuple(size, nd, "size")
        return origin, size

    def _out(self, out, shape, dtype, name="out"):
        if out is None:
            return np.empty(shape, dtype)
        if not isinstance(out, np.ndarray) or out.shape != tuple(shape) or out.dtype != dtype:
            raise ParameterError(
                f"{name} must be a numpy array of shape {tuple(shape)} and dtype {dtype}, got "
                f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}"
            )
        return out

    def _scalar_mode(self) -> str:
        if self.layout == "chunked":
            return "h5py"
        return "pread" if self._io == "pread" else "mmap"

    def read_region(self, image_id, origin, size, pad_value=0, out=None) -> np.ndarray:
        """The box ``[origin, origin + size)`` of one image, (*size, C) channels-last.

        ``origin`` may be any int64 (negative, or past the image); what lies
        outside the image is ``pad_value``. Returns a new array (a channels-last
        view of channel-planar memory), or fills ``out``.
        """
        image_id = self._check_image_id(image_id)
        origin, size = self._check_box(origin, size)
        pad = check_pad(pad_value, self.dtype)
        out = self._out(out, size + (self.channels,), self.dtype)
        planar = np.empty((self.channels,) + size, self.dtype)
        self._pixels.read_box(self._get_handles(), image_id, origin, size, planar, pad,
                              self._scalar_mode())
        out[...] = np.moveaxis(planar, 0, -1)
        return out

    def read_mask_region(self, image_id, origin, size, pad_value=0, out=None) -> np.ndarray:
        """The mask of the box ``[origin, origin + size)``, shape ``size``."""
        self._require_masks()
        image_id = self._check_image_id(image_id)
        origin, size = self._check_box(origin, size)
        pad = check_pad(pad_value, self.mask_dtype)
        out = self._out(out, size, self.mask_dtype)
        self._masks.read_box(self._get_handles(), image_id, origin, size, out, pad,
                             self._scalar_mode())
        return out

    def read(self, image_id) -> np.ndarray:
        """One whole image in its original shape ((H, W) or (H, W, C), ...)."""
        image_id = self._check_image_id(image_id)
        shape = tuple(int(v) for v in self.shapes[image_id])
        region = self.read_region(image_id, (0,) * self.spatial_ndim, shape)
        return region if self.channel_axis else region[..., 0]

    def read_mask(self, image_id) -> np.ndarray:
        """One whole mask, shape = the image's spatial shape."""
        image_id = self._check_image_id(image_id)
        shape = tuple(int(v) for v in self.shapes[image_id])
        return self.read_mask_region(image_id, (0,) * self.spatial_ndim, shape)

    def _require_masks(self) -> None:
        if not self.has_masks:
            raise ParameterError(f"store {self.path!r} has no masks")

    def _check_batch(self, image_ids, origins, size):
        from .index import as_int_array

        ids = as_int_array(image_ids, "image_ids").reshape(-1)
        origins = as_int_array(origins, "origins")
        if origins.shape != (ids.size, self.spatial_ndim):
            raise ParameterError(
                f"origins must have shape ({ids.size}, {self.spatial_ndim}), got {origins.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise PatchIndexError(f"image id {bad} is out of range for {len(self)} images")
        return ids, origins, axis_tuple(size, self.spatial_ndim, "size")

    def read_regions(self, image_ids, origins, size, pad_value=0, out=None) -> np.ndarray:
        """A batch of boxes of one size: (B, *size, C); padding where they leave the image."""
        ids, origins, size = self._check_batch(image_ids, origins, size)
        pad = check_pad(pad_value, self.dtype)
        out = self._out(out, (ids.size,) + size + (self.channels,), self.dtype)
        planar = np.empty((ids.size, self.channels) + size, self.dtype)
        self.read_batch_unchecked(ids, origins, size, planar, None, pad, 0)
        out[...] = np.moveaxis(planar, 1, -1)
        return out

    def read_mask_regions(self, image_ids, origins, size, pad_value=0, out=None) -> np.ndarray:
        """A batch of mask boxes: (B, *size)."""
        self._require_masks()
        ids, origins, size = self._check_batch(image_ids, origins, size)
        pad = check_pad(pad_value, self.mask_dtype)
        out = self._out(out, (ids.size,) + size, self.mask_dtype)
        self.read_batch_unchecked(ids, origins, size, None, out, 0, pad)
        return out

    # -- fast paths for the dataset (arguments already checked) ----------------------------------
    def read_batch_unchecked(self, image_ids, origins, size, out, mask_out, pad, mask_pad,
                             interior=False) -> None:
        """Fill ``out`` (B, C, *size) and/or ``mask_out`` (B, *size) for a batch.

        ``interior=True`` promises every box lies inside its image (skips a check).
        """
        if image_ids.size == 0:
            return
        handles = self._get_handles()
        mode = self._batch_mode(handles, image_ids, origins)
        if out is not None:
            self._pixels.read_boxes(handles, image_ids, origins, size, out, pad, mode, interior)
        if mask_out is not None:
            self._masks.read_boxes(handles, image_ids, origins, size, mask_out, mask_pad, mode,
                                   interior)

    def read_box_unchecked(self, image_id: int, origin: tuple, size: tuple, out, mask_out,
                           pad, mask_pad) -> None:
        """Fill ``out`` (C, *size) and/or ``mask_out`` (*size) for one box."""
        handles = self._get_handles()
        mode = self._scalar_mode()
        if out is not None:
            self._pixels.read_box(handles, image_id, origin, size, out, pad, mode)
        if mask_out is not None:
            self._masks.read_box(handles, image_id, origin, size, mask_out, mask_pad, mode)

    def preload(self) -> None:
        """Read the whole store into the page cache and map it, in this process.

        For a store that fits in RAM: one sequential pass instead of random
        first reads, and no page fault at first touch later (each process has
        its own mappings: call it in a DataLoader ``worker_init_fn``, or use
        ``persistent_workers=True``). Mapping a cached 2 GiB store takes
        about 0.3 s here.
        """
        handles = self._get_handles()
        if self.layout == "chunked":
            handles.willneed([(0, self._info.file_size)])
        else:
            handles.populate()

    def prefetch_regions(self, image_ids, origins, size) -> None:
        """Start reading what a later ``read_regions`` of these boxes needs, in the background.

        Uncompressed layouts announce the boxes' tiles to the OS
        (``posix_fadvise(WILLNEED)``) unless they are already cached; returns at
        once. Calling it for batch k + 1 before reading batch k overlaps the
        disk with everything else (see README, "Performance").
        """
        ids, origins, size = self._check_batch(image_ids, origins, size)
        self.prefetch_unchecked(ids, origins, size)

    def prefetch_unchecked(self, image_ids, origins, size) -> None:
        if image_ids.size == 0 or self.layout == "chunked":
            return
        handles = self._get_handles()
        if self._io == "mmap" or self._batch_mode(handles, image_ids, origins) == "mmap":
            return
        self._pixels.prefetch(handles, image_ids, origins, size)
        if self._masks is not None:
            self._masks.prefetch(handles, image_ids, origins, size)

    def _batch_mode(self, handles, image_ids, origins) -> str:
        if self.layout == "chunked":
            return "h5py"
        if self._io != "auto":
            return self._io
        # NOTE [auto mode] in _readers: eight probes, all must hit. A store that has been
        # warm for a while is asked about two pages a batch until one misses.
        count = 2 if handles.warm_streak >= 32 else 8
        if handles.cached(self._pixels.probe_offsets(image_ids, origins, count)):
            handles.warm_streak += 1
            return "mmap"
        if count == 2:
            handles.warm_streak = 0
            return self._batch_mode(handles, image_ids, origins)
        handles.warm_streak = 0
        return "pread"
