"""``ImageStore``: reads a store written by :func:`lazypatch.write_store`.

An ``ImageStore`` holds a path and small per-image tables (shapes and where
each image lives: 24 bytes per 2-D image). It opens the file lazily in each
process, re-opens after a fork, pickles without handles, and reads regions at
file offsets computed from its tables (see ``lazypatch.store.reading``).
"""

from __future__ import annotations

import json
import math
import os
import threading
from bisect import bisect_right

import numpy as np

from ..errors import (ParameterError, ParameterTypeError, PatchIndexError,
                      StoreChangedError, StoreClosedError, StoreFormatError)
from ..grid import axis_tuple, is_int
from ..index import as_int_array
from . import format as fmt
from .reading.gathers import PAGE, page_aligned
from .reading.handles import Handles
from .reading.readers import make_reader

__all__ = ["IO_MODES", "ImageStore", "check_pad"]

IO_MODES = ("auto", "mmap", "pread")


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


_HANDLES_LOCK = threading.Lock()


def _new_handles_lock() -> None:
    """A fork taken while another thread held the lock must not leave the child locked out."""
    global _HANDLES_LOCK
    _HANDLES_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_handles_lock)


class _Shard:
    """One store file of an ImageStore: its tables, readers and per-process handles."""

    def __init__(self, info: fmt.StoreInfo, first: int):
        self.info = info
        self.first = first  # global id of its image 0
        self.pixels = make_reader(info, info.pixels)
        self.masks = make_reader(info, info.masks) if info.masks else None
        self.handles = None
        self.reads = 0
        info.shapes.flags.writeable = False

    def get_handles(self, locking, io_threads) -> Handles:
        handles = self.handles
        if handles is None or handles.pid != os.getpid():
            with _HANDLES_LOCK:  # threads opening at once share one set of handles
                handles = self.handles
                if handles is None or handles.pid != os.getpid():
                    # See NOTE [fork safety]: inherited handles belong to the parent; drop them unused.
                    self.handles = handles = Handles(self.info, locking, io_threads)
        return handles

    def count_read(self) -> None:
        """Every 1,024 reads, check the file is the one opened (never per patch)."""
        self.reads += 1
        if self.reads % _IDENTITY_EVERY == 0:
            self.check_identity()

    def check_identity(self) -> None:
        try:
            now = fmt.file_identity(os.stat(self.info.path))
        except FileNotFoundError:
            now = None
        if now != self.info.identity:
            raise StoreChangedError(
                f"{self.info.path!r} was {'removed' if now is None else 'modified or replaced'} "
                "while open (size, mtime or inode differ): reopen the store"
            )

    def close(self) -> None:
        if self.handles is not None and self.handles.pid == os.getpid():
            self.handles.close()
        self.handles = None


_IDENTITY_EVERY = 1024
_SAME_ACROSS_SHARDS = ("spatial_ndim", "channels", "channel_axis")


class ImageStore:
    """A read-only, lazily opened lazypatch store (one file, or several shards as one).

    Parameters
    ----------
    path : str or os.PathLike, or a sequence of them
        A file written by :func:`write_store`; or several (shards) presented
        as one store, their images numbered in order, one cumulative index
        across them. Shards must share spatial_ndim, channels, dtype and
        masks; adding images means writing a new shard, never rewriting one.
    io : {"auto", "mmap", "pread"}
        How uncompressed layouts are read. ``mmap`` gathers from a memory map
        (fastest when the data is in the page cache); ``pread`` announces a
        batch's tiles to the OS and reads them with positional reads (fastest
        when it is not, e.g. a store larger than RAM); ``auto`` asks the page
        cache about a few pages of each batch (``RWF_NOWAIT``) and picks.
    io_threads : int
        Threads issuing reads in ``pread`` mode.
    locking : bool or "best-effort", optional
        Passed to h5py's file locking; ``None`` keeps HDF5's default (see
        ``HDF5_USE_FILE_LOCKING``). ``False`` opens stores on file systems
        without locks (NFS, Lustre: "unable to lock file"); stores are only
        read, so locking protects nothing for readers.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        Missing path, or a directory.
    StoreFormatError
        Not an HDF5 file, not a lazypatch store, an inconsistent one, or
        shards that do not match.
    OSError
        The file is locked, or open for writing in another process (the
        message names ``HDF5_USE_FILE_LOCKING`` or ``h5clear -s``).
    ImportError
        A store compressed with an hdf5plugin codec, without hdf5plugin.

    Notes
    -----
    Facts: ``len(store)``, ``shapes`` ((n, spatial_ndim) int64), ``channels``,
    ``channel_axis``, ``dtype``, ``mask_dtype``, ``has_masks``, ``layout``,
    ``tile``, ``compression``, ``names``, ``meta(i)``, ``geometry(i)``,
    ``has_tissue``, ``tissue(i)`` (a low-resolution tissue mask),
    ``tissue_fractions``, ``attrs``,
    ``nbytes``, ``paths``. Reads: ``read(i)`` and ``read_mask(i)`` (whole, original shape);
    ``read_region`` / ``read_mask_region`` (one box, padded where it leaves
    the image); the batched ``read_regions`` / ``read_mask_regions``;
    ``prefetch_regions`` (start reading a later batch); ``preload()`` (for
    stores that fit in RAM); ``verify()``. Compressed (chunked) stores are
    read through h5py, one call per run of consecutive chunks a batch needs.

    The object holds only the path and two small tables (about 24 bytes per
    2-D image); it opens the file on first use in each process, opens it
    again after a fork, pickles without handles (DataLoader workers, forked
    or spawned, open their own), and may be read from several threads at
    once. ``close()`` or ``with`` releases this process's handles.

    Every 1,024 reads (and whenever a process reopens the file) the file's
    size, mtime and inode are compared with those seen at open: a store
    modified or replaced while open raises :class:`StoreChangedError`.
    Stores are immutable: to add images, write another shard.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from lazypatch import write_store
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
        paths = _as_paths(path)
        self._manifest = None
        if len(paths) == 1:
            from .manifest import check_shards, is_manifest, read_manifest

            if is_manifest(paths[0]):  # a sharded store's manifest (lazypatch.store.manifest)
                manifest = read_manifest(paths[0])
                check_shards(manifest)
                self._manifest, paths = manifest.path, manifest.shards
        self._open([fmt.read_store_info(p, locking) for p in paths])

    def _open(self, infos) -> None:
        first = infos[0]
        for info in infos[1:]:
            for key in _SAME_ACROSS_SHARDS:
                if getattr(info, key) != getattr(first, key):
                    raise StoreFormatError(
                        f"shards must share {key}: {first.path!r} has {getattr(first, key)!r}, "
                        f"{info.path!r} has {getattr(info, key)!r}"
                    )
            if info.pixels.dtype != first.pixels.dtype:
                raise StoreFormatError(
                    f"shards must share one dtype: {first.path!r} is {first.pixels.dtype}, "
                    f"{info.path!r} is {info.pixels.dtype}"
                )
            if (info.masks is None) != (first.masks is None) or (
                    info.masks is not None and info.masks.dtype != first.masks.dtype):
                raise StoreFormatError(f"shards must all have masks of one dtype, or none: {info.path!r}")
        starts = [0]
        for info in infos:
            starts.append(starts[-1] + len(info.shapes))
        self._shards = [_Shard(info, start) for info, start in zip(infos, starts)]
        self._starts = np.asarray(starts, dtype=np.int64)
        self._starts_list = starts
        # NOTE: the first shard's tables, readers and handles serve the common one-file case
        self._info = infos[0]
        self._pixels = self._shards[0].pixels
        self._masks = self._shards[0].masks
        self._shapes = infos[0].shapes if len(infos) == 1 else np.concatenate([i.shapes for i in infos])
        self._shapes.flags.writeable = False
        self._closed = False
        self._names = None

    # -- processes -----------------------------------------------------------------
    def _get_handles(self, shard: int = 0) -> Handles:
        if self._closed:
            raise StoreClosedError(f"store {self.path!r} is closed")
        return self._shards[shard].get_handles(self._locking, self._io_threads)

    def groups(self, name: str) -> list:
        """The HDF5 group ``name`` of every shard (``None`` where a shard has none),
        e.g. the statistics written with the store (``fmt.G_CHANNEL_STATS``)."""
        return [self.group(name, shard) for shard in range(len(self._shards))]

    def group(self, name: str, shard: int = 0):
        """The HDF5 group ``name`` of one shard, or ``None``."""
        return self._get_handles(shard).h5.get(name)

    def __getstate__(self):
        return {"paths": self.paths, "io": self._io, "io_threads": self._io_threads,
                "locking": self._locking, "identities": [s.info.identity for s in self._shards],
                "closed": self._closed, "manifest": self._manifest}

    def __setstate__(self, state):
        self._io, self._io_threads, self._locking = state["io"], state["io_threads"], state["locking"]
        infos = [fmt.read_store_info(p, self._locking) for p in state["paths"]]
        for info, identity in zip(infos, state["identities"]):
            if info.identity != tuple(identity):
                raise StoreChangedError(
                    f"{info.path!r} changed since the store was pickled (size, mtime or inode differ)"
                )
        self._open(infos)
        self._closed = state["closed"]
        self._manifest = state.get("manifest")

    def close(self) -> None:
        """Release this process's file handles; further reads raise StoreClosedError."""
        for shard in self._shards:
            shard.close()
        self._closed = True

    def __enter__(self) -> "ImageStore":
        if self._closed:
            raise StoreClosedError(f"store {self.path!r} is closed")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- description ------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The store's file: its manifest for a sharded store opened by one, else the first shard's."""
        return self._manifest or self._info.path

    @property
    def paths(self) -> list:
        """Every shard's file, in image order."""
        return [shard.info.path for shard in self._shards]

    def _common(self, key):
        values = {getattr(shard.info, key) for shard in self._shards}
        return values.pop() if len(values) == 1 else "mixed"

    @property
    def layout(self) -> str:
        return self._common("layout")

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
    def has_tissue(self) -> bool:
        """Whether the store holds tissue masks (format 1.2; in any of its shards)."""
        return any(shard.info.tissue is not None for shard in self._shards)

    @property
    def tile(self) -> tuple | None:
        return self._common("tile")

    @property
    def compression(self) -> str | None:
        return self._common("compression")

    @property
    def checksum(self) -> bool:
        return self._common("checksum")

    @property
    def io(self) -> str:
        return self._io

    @property
    def shapes(self) -> np.ndarray:
        """Spatial shapes (n, spatial_ndim), int64, read-only."""
        return self._shapes

    @property
    def nbytes(self) -> int:
        """Size of the store's files on disk."""
        return sum(shard.info.file_size for shard in self._shards)

    @property
    def attrs(self) -> dict:
        """The (first) file's root attributes (format, version, build options)."""
        return dict(self._info.attrs)

    def __len__(self) -> int:
        return len(self._shapes)

    def __repr__(self) -> str:
        state = "closed " if self._closed else ""
        where = repr(self.path) if len(self._shards) == 1 else f"{len(self._shards)} shards from {self.path!r}"
        return (
            f"<{state}ImageStore {where}: {len(self)} images, {self.spatial_ndim}-D, "
            f"{self.channels} channel(s) of {self.dtype.name}, layout={self.layout!r}"
            f"{', masks' if self.has_masks else ''}>"
        )

    @property
    def names(self) -> list:
        """Image names (read on first access, then cached)."""
        if self._names is None:
            self._names = [str(v) for v in self.text_table(fmt.D_NAMES)]
        return self._names

    def image_ids_of(self, keys, name: str = "image_ids") -> np.ndarray:
        """Image numbers of ``keys``: numbers (checked) or image names, mixed freely.

        >>> import numpy as np, tempfile, os
        >>> from lazypatch import write_store
        >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
        >>> store = write_store(path, [np.zeros((4, 4), np.uint8)] * 3, names=["a", "b", "c"], progress=False)
        >>> store.image_ids_of(["c", 0, "b"]).tolist()
        [2, 0, 1]
        """
        if isinstance(keys, (str, bytes)) or np.ndim(keys) == 0:
            raise ParameterTypeError(f"{name} must be a sequence of image numbers or names, got {keys!r}")
        keys = list(keys.tolist() if isinstance(keys, np.ndarray) else keys)
        if not any(isinstance(k, str) for k in keys):
            ids = as_int_array(keys, name)
        else:
            lookup = {}
            for number, image_name in enumerate(self.names):
                lookup.setdefault(image_name, []).append(number)
            ids = []
            for key in keys:
                if isinstance(key, str):
                    found = lookup.get(key, [])
                    if len(found) != 1:
                        import difflib

                        close = difflib.get_close_matches(key, lookup, n=3)
                        hint = f"; did you mean {close}?" if close else ""
                        why = "no image is named" if not found else f"{len(found)} images are named"
                        raise ParameterError(f"{name}: {why} {key!r} in {self.path!r}{hint}")
                    ids.append(found[0])
                elif is_int(key):
                    ids.append(int(key))
                else:
                    raise ParameterTypeError(f"{name} must hold image numbers or names, got {key!r}")
            ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            raise PatchIndexError(f"{name}: image id {bad} is out of range for {len(self)} images")
        return ids

    def meta(self, image_id) -> dict:
        """Metadata stored for one image (a dict, empty when none was given)."""
        shard, local = self._route(self._check_image_id(image_id))
        path = self._shards[shard].info.path
        with fmt.damage_is_format_error(path, f"the meta of image {image_id}"):
            text = fmt.read_texts(self._get_handles(shard).h5, fmt.D_META, path, local, local + 1)[0]
            value = json.loads(text)
        if not isinstance(value, dict):
            raise StoreFormatError(f"{path!r}: the meta of image {image_id} is not a JSON object")
        return value

    def geometry(self, image_id) -> dict:
        """The physical geometry of one image, as its reader found it in the source.

        Keys: ``spacing`` (a tuple of positive floats in stored axis order
        ``(z,) y, x``, or None), ``unit`` (``"um"``, ``"mm"``, ``"m"``, ``"deg"`` or
        None) and, where the source has them, ``affine`` (4 x 4, stored voxel index
        ``(z, y, x, 1)`` to world coordinates), ``crs`` (WKT), ``transform`` (the six
        terms of rasterio's ``Affine``), ``level``, ``downsample`` and ``source``
        (``file``, ``reader``, ``reader_version``). Images without physical
        metadata (PNG, arrays) give ``spacing`` and ``unit`` None.

        >>> import numpy as np, tempfile, os
        >>> from lazypatch import write_store
        >>> store = write_store(os.path.join(tempfile.mkdtemp(), "s.h5"), [np.zeros((4, 4), np.uint8)],
        ...                     progress=False)
        >>> store.geometry(0)
        {'spacing': None, 'unit': None}
        """
        shard, local = self._route(self._check_image_id(image_id))
        path = self._shards[shard].info.path
        h5 = self._get_handles(shard).h5
        geometry = {"spacing": None, "unit": None}
        if fmt.D_GEOMETRY in h5:
            with fmt.damage_is_format_error(path, f"the geometry of image {image_id}"):
                value = json.loads(fmt.read_texts(h5, fmt.D_GEOMETRY, path, local, local + 1)[0])
            if not isinstance(value, dict):
                raise StoreFormatError(f"{path!r}: the geometry of image {image_id} is not a JSON object")
            geometry.update(value)
        if geometry["spacing"] is not None:
            geometry["spacing"] = tuple(float(v) for v in geometry["spacing"])
        return geometry

    @property
    def tissue_fractions(self) -> np.ndarray:
        """Each image's tissue fraction, (n,) float64: the mean of its tissue mask
        nearest-upsampled over the image, computed when the store was written; NaN
        for an image without a mask (every image, in a store without tissue)."""
        parts = [np.full(len(shard.info.shapes), np.nan) if shard.info.tissue is None
                 else shard.info.tissue.fractions for shard in self._shards]
        fractions = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.array(fractions, dtype=np.float64)

    def tissue(self, image_id) -> np.ndarray | None:
        """The low-resolution tissue mask of one image, (h, w) bool, or None when it has none.

        Stored pixel (y, x) of an (H, W) image belongs to cell ``(y * h // H,
        x * w // W)``: the mask covers the whole image (``lazypatch build
        --tissue otsu`` makes it from a thumbnail at about 8 um per pixel; see
        :mod:`lazypatch.ingest.tissue`). Each mask is checked against its CRC32.

        Raises
        ------
        IntegrityError
            The mask's bytes differ from the CRC32 stored with them.
        StoreFormatError
            Its part of the file cannot be read (damaged HDF5 structure).

        >>> import numpy as np, tempfile, os
        >>> from lazypatch import write_store
        >>> store = write_store(os.path.join(tempfile.mkdtemp(), "s.h5"), [np.zeros((40, 60, 3), np.uint8)] * 2,
        ...                     tissue=[np.eye(2, 3, dtype=bool), None], progress=False)
        >>> store.has_tissue, store.tissue(0).astype(int).tolist(), store.tissue(1)
        (True, [[1, 0, 0], [0, 1, 0]], None)
        >>> store.tissue_fractions.round(4).tolist()  # 2 of 6 cells, each 20 x 20 pixels
        [0.3333, nan]
        """
        from ..errors import IntegrityError

        number, local = self._route(self._check_image_id(image_id))
        info = self._shards[number].info
        table = info.tissue
        if table is None or not table.shapes[local].all():
            return None
        start, stop = (int(v) for v in table.offsets[local:local + 2])
        with fmt.damage_is_format_error(info.path, f"the tissue mask of image {image_id}"):
            cells = self._get_handles(number).h5[fmt.D_TISSUE_MASKS][start:stop]
        damage = fmt.crc_damage(f"the tissue mask of image {image_id}", table.crcs[local], cells)
        if damage is not None:
            raise IntegrityError(f"{info.path!r} is damaged: {damage}")
        return (cells != 0).reshape(tuple(int(v) for v in table.shapes[local]))

    def has_table(self, name: str) -> bool:
        """Whether every shard holds the per-image table ``name`` (optional ones came later)."""
        return all(name in self._get_handles(n).h5 for n in range(len(self._shards)))

    def table(self, name: str) -> np.ndarray:
        """A per-image numeric table, concatenated across shards."""
        parts = []
        for number, shard in enumerate(self._shards):
            with fmt.damage_is_format_error(shard.info.path, f"table {name!r}"):
                parts.append(np.asarray(self._get_handles(number).h5[name][()]))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def text_table(self, name: str) -> list:
        """A per-image text table (names, meta JSON), concatenated across shards."""
        values = []
        for number, shard in enumerate(self._shards):
            with fmt.damage_is_format_error(shard.info.path, f"table {name!r}"):
                values += fmt.read_texts(self._get_handles(number).h5, name, shard.info.path)
        return values

    # -- routing ------------------------------------------------------------------------
    def _route(self, image_id: int):
        """(shard number, image id within the shard)."""
        if len(self._shards) == 1:
            return 0, image_id
        shard = bisect_right(self._starts_list, image_id) - 1
        return shard, image_id - self._starts_list[shard]

    def _shard_of(self, image_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._starts[1:], image_ids, side="right")

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
        if not out.flags.writeable:
            raise ParameterError(f"{name} must be a writable array, got a read-only one")
        return out

    def _scalar_mode(self, shard: int = 0) -> str:
        if self._shards[shard].info.layout == "chunked":
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
        planar = page_aligned((self.channels,) + size, self.dtype)
        self.read_box_unchecked(image_id, origin, size, planar, None, pad, 0)
        out[...] = np.moveaxis(planar, 0, -1)
        return out

    def read_mask_region(self, image_id, origin, size, pad_value=0, out=None) -> np.ndarray:
        """The mask of the box ``[origin, origin + size)``, shape ``size``."""
        self._require_masks()
        image_id = self._check_image_id(image_id)
        origin, size = self._check_box(origin, size)
        pad = check_pad(pad_value, self.mask_dtype)
        out = self._out(out, size, self.mask_dtype)
        self.read_box_unchecked(image_id, origin, size, None, out, 0, pad)
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
        planar = page_aligned((ids.size, self.channels) + size, self.dtype)
        self.read_batch_unchecked(ids, origins, size, planar, None, pad, 0)
        out[...] = np.moveaxis(planar, 1, -1)
        return out

    def read_mask_regions(self, image_ids, origins, size, pad_value=0, out=None) -> np.ndarray:
        """A batch of mask boxes: (B, *size)."""
        self._require_masks()
        ids, origins, size = self._check_batch(image_ids, origins, size)
        pad = check_pad(pad_value, self.mask_dtype)
        out = self._out(out, (ids.size,) + size, self.mask_dtype)
        aligned = out.flags.c_contiguous and out.ctypes.data % PAGE == 0
        target = out if aligned else page_aligned(out.shape, out.dtype)  # See NOTE [page-aligned buffers]
        self.read_batch_unchecked(ids, origins, size, None, target, 0, pad)
        if target is not out:
            out[...] = target
        return out

    # -- fast paths for the dataset (arguments already checked) ----------------------------------
    def read_batch_unchecked(self, image_ids, origins, size, out, mask_out, pad, mask_pad,
                             interior=False) -> None:
        """Fill ``out`` (B, C, *size) and/or ``mask_out`` (B, *size) for a batch.

        ``interior=True`` promises every box lies inside its image (skips a check).
        """
        if image_ids.size == 0:
            return
        if len(self._shards) == 1:
            self._read_shard(0, image_ids, origins, size, out, mask_out, pad, mask_pad, interior)
            return
        shards = self._shard_of(image_ids)
        for number in np.unique(shards).tolist():
            where = np.flatnonzero(shards == number)
            local = image_ids[where] - self._starts_list[number]
            part = None if out is None else page_aligned((where.size,) + out.shape[1:], out.dtype)
            mask_part = None if mask_out is None else page_aligned(
                (where.size,) + mask_out.shape[1:], mask_out.dtype)
            self._read_shard(number, local, origins[where], size, part, mask_part, pad, mask_pad, interior)
            if out is not None:
                out[where] = part
            if mask_out is not None:
                mask_out[where] = mask_part

    def _read_shard(self, number, image_ids, origins, size, out, mask_out, pad, mask_pad, interior):
        shard = self._shards[number]
        handles = self._get_handles(number)
        shard.count_read()
        mode = self._batch_mode(handles, image_ids, origins, number)
        if out is not None:
            shard.pixels.read_boxes(handles, image_ids, origins, size, out, pad, mode, interior)
        if mask_out is not None:
            shard.masks.read_boxes(handles, image_ids, origins, size, mask_out, mask_pad, mode, interior)

    def grid_is_tiles(self, patch_size, stride, image_ids=None) -> bool:
        """Whether every patch of this grid is exactly one tile of its image.

        NOTE [whole-tile grids]: with patch = stride = tile and images whose
        extents the tile divides, an image's patch grid is its tile grid, so a
        patch's row-major grid position is its tile's number in the image and
        a batch is read as whole records without any plan
        (:meth:`read_tiles_unchecked`; about a sixth less time a batch of 64x64 RGB
        patches, measured side by side when it was introduced). Single-file tiled
        stores only.
        """
        if self.layout != "tiled" or len(self._shards) != 1:
            return False
        tile = self.tile
        if tuple(patch_size) != tile or tuple(stride) != tile:
            return False
        shapes = self.shapes if image_ids is None else self.shapes[np.asarray(image_ids)]
        return bool((shapes % np.asarray(tile, dtype=np.int64) == 0).all())

    def read_tiles_unchecked(self, image_ids, positions, origins, out, mask_out) -> None:
        """Fill ``out`` (B, C, *tile) and/or ``mask_out`` (B, *tile) with whole tiles:
        tile ``positions`` (row-major in each image's tile grid) of ``image_ids``,
        whose ``origins`` are those tiles' (for the page-cache probe). Only for
        grids where :meth:`grid_is_tiles`."""
        if image_ids.size == 0:
            return
        shard = self._shards[0]
        handles = self._get_handles(0)
        shard.count_read()
        mode = self._batch_mode(handles, image_ids, origins)
        tiles = shard.pixels.first[image_ids] + positions
        if out is not None:
            shard.pixels.read_tiles(handles, tiles, out, mode)
        if mask_out is not None:
            shard.masks.read_tiles(handles, tiles, mask_out, mode)

    def read_box_unchecked(self, image_id: int, origin: tuple, size: tuple, out, mask_out,
                           pad, mask_pad) -> None:
        """Fill ``out`` (C, *size) and/or ``mask_out`` (*size) for one box."""
        number, local = self._route(image_id)
        shard = self._shards[number]
        handles = self._get_handles(number)
        shard.count_read()
        mode = self._scalar_mode(number)
        if out is not None:
            shard.pixels.read_box(handles, local, origin, size, out, pad, mode)
        if mask_out is not None:
            shard.masks.read_box(handles, local, origin, size, mask_out, mask_pad, mode)

    def preload(self) -> None:
        """Read the whole store into the page cache and map it, in this process.

        For a store that fits in RAM: one sequential pass instead of random
        first reads, and no page fault at first touch later (each process has
        its own mappings: call it in a DataLoader ``worker_init_fn``, or use
        ``persistent_workers=True``). Mapping a cached 2 GiB store takes
        about 0.3 s here.
        """
        for number, shard in enumerate(self._shards):
            handles = self._get_handles(number)
            if shard.info.layout == "chunked":
                handles.willneed([(0, shard.info.file_size)])
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
        if image_ids.size == 0 or self._io == "mmap":
            return
        shards = self._shard_of(image_ids) if len(self._shards) > 1 else np.zeros(image_ids.size, np.int64)
        for number in np.unique(shards).tolist():
            shard = self._shards[number]
            if shard.info.layout == "chunked":
                continue
            where = np.flatnonzero(shards == number)
            local, boxes = image_ids[where] - self._starts_list[number], origins[where]
            handles = self._get_handles(number)
            if self._batch_mode(handles, local, boxes, number) == "mmap":
                continue
            shard.pixels.prefetch(handles, local, boxes, size)
            if shard.masks is not None:
                shard.masks.prefetch(handles, local, boxes, size)

    def _batch_mode(self, handles, image_ids, origins, shard: int = 0) -> str:
        if self._shards[shard].info.layout == "chunked":
            return "h5py"
        if self._io != "auto":
            return self._io
        # See NOTE [auto mode] in reading/readers.py: eight probes, all must hit. A store that has been
        # warm for 32 batches is asked about two pages every 4th batch until one misses (the
        # probe costs 12 us, 4% of a warm batch; an eviction costs at most 3 batches' faults).
        streak = handles.warm_streak
        if streak >= 32 and streak % 4:
            handles.warm_streak += 1
            return "mmap"
        count = 2 if streak >= 32 else 8
        if handles.cached(self._shards[shard].pixels.probe_offsets(image_ids, origins, count)):
            handles.warm_streak += 1
            return "mmap"
        if count == 2:
            handles.warm_streak = 0
            return self._batch_mode(handles, image_ids, origins, shard)
        handles.warm_streak = 0
        return "pread"

    # -- integrity ----------------------------------------------------------------------------
    def verify(self, progress=None) -> list:
        """Re-read every image and mask and compare with the CRC32s stored at build time.

        Returns one dict per damage found (``image``, ``name``, ``what`` -
        ``"pixels"``, ``"mask"``, ``"tissue"`` (its tissue mask) or ``"info"``
        for the name and meta - and ``reason``); an empty list means every byte
        is as written. Unreadable data (a failing chunk checksum, a truncated
        file) counts as damage. A damaged names table names images by number
        only. Statistics written into the store (label and channel statistics),
        the geometry table and the tissue tables are checked too; their damage
        has ``image`` and ``name`` None and ``what`` ``"statistics"``,
        ``"geometry"`` or ``"tissue"``.
        See :mod:`lazypatch.store.verify`.
        """
        from .verify import verify

        return verify(self, progress)

    def read_bands(self, image_id: int, *, mask: bool = False, max_bytes: int = 16 << 20):
        """One image (or its mask) as ``(first_row, band)`` pairs of whole rows, in order,
        each band at most ``max_bytes`` (at least one row): bounded memory for any image.

        Bands are ``(rows, *rest, C)`` like :meth:`read` (``(rows, *rest)`` for masks).

        >>> import numpy as np, tempfile, os
        >>> from lazypatch import write_store
        >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
        >>> store = write_store(path, [np.arange(60, dtype=np.uint8).reshape(10, 6)], progress=False)
        >>> [(row, band.shape) for row, band in store.read_bands(0, max_bytes=24)]
        [(0, (4, 6, 1)), (4, (4, 6, 1)), (8, (2, 6, 1))]
        """
        image_id = self._check_image_id(image_id)
        if mask:
            self._require_masks()
        shape = tuple(int(v) for v in self.shapes[image_id])
        row = math.prod(shape[1:]) * (1 if mask else self.channels) * (self.mask_dtype if mask else self.dtype).itemsize
        rows = max(1, int(max_bytes) // max(row, 1))
        read = self.read_mask_region if mask else self.read_region
        for r0 in range(0, shape[0], rows):
            r1 = min(r0 + rows, shape[0])
            yield r0, read(image_id, (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:])


def _as_paths(path) -> list:
    if isinstance(path, (str, bytes, os.PathLike)):
        return [os.fspath(path)]
    try:
        paths = [os.fspath(p) for p in path]
    except TypeError:
        raise ParameterTypeError(
            f"path must be a path or a sequence of shard paths, got {type(path).__name__}"
        ) from None
    if not paths:
        raise ParameterError("path is an empty sequence: give at least one store file")
    return paths
