"""One set of open handles per store file and process: h5py, the memory map, the
file descriptor and the I/O thread pool (NOTE [fork safety] is on :class:`Handles`)."""

from __future__ import annotations

import errno
import math
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import format as fmt
from ...errors import IntegrityError, StoreChangedError, StoreFormatError


_torch = None


def torch():
    """torch, imported on first use (importing the store module does not need it)."""
    global _torch
    if _torch is None:
        import torch as module

        _torch = module
    return _torch


# -- per-process handles ------------------------------------------------------------------
def _changed(path: str) -> StoreChangedError:
    return StoreChangedError(
        f"{path!r} was modified, replaced or removed since it was opened (size, mtime or inode "
        "differ): reopen the store"
    )


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
        try:
            self.fd = os.open(info.path, os.O_RDONLY)
        except FileNotFoundError:
            raise _changed(info.path) from None
        if fmt.file_identity(os.fstat(self.fd)) != info.identity:
            os.close(self.fd)
            raise _changed(info.path)
        if hasattr(os, "posix_fadvise"):
            # patches are random reads: no readahead on this descriptor (WILLNEED still works)
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._map = None
        self._array = None  # numpy uint8 view of the whole map
        self._bytes = None  # torch uint8 tensor over the same memory
        self._h5 = None
        self._pool = None
        self._local = threading.local()  # scratch buffers, one set per calling thread
        self._records = {}
        self.nowait = hasattr(os, "RWF_NOWAIT")
        self.warm_streak = 0  # consecutive batches found in the page cache
        self.willneed_supported = hasattr(os, "posix_fadvise")

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            # NOTE [read-only map]: a shared read-only mapping; a private writable one would be
            # charged in full against the commit limit (ENOMEM for a store larger than RAM).
            self._map = mmap.mmap(self.fd, self.info.file_size, access=mmap.ACCESS_READ)
            self._array = np.frombuffer(self._map, dtype=np.uint8)
        return self._array

    @property
    def bytes(self):
        if self._bytes is None:
            import warnings

            with warnings.catch_warnings():  # torch warns about read-only memory; we never write
                warnings.simplefilter("ignore", UserWarning)
                self._bytes = torch().from_numpy(self.array)
        return self._bytes

    def populate(self) -> None:
        """Map every page of the file now (reading what is not cached yet)."""
        self.array  # noqa: B018 - creates the map
        try:
            self._map.madvise(_MADV_POPULATE_READ)
        except (OSError, ValueError, AttributeError):  # before Linux 5.14: touch one byte a page
            self._map.madvise(mmap.MADV_WILLNEED)
            int(self._array[:: mmap.PAGESIZE].sum())

    def records(self, array: fmt.ArrayInfo) -> np.ndarray:
        """The memory-mapped records of an uncompressed array, (count, *record_shape)."""
        view = self._records.get(array.offset)
        if view is None:
            flat = self.array[array.offset: array.offset + array.nbytes]
            view = flat.view(array.dtype).reshape((-1,) + array.record_shape)
            self._records[array.offset] = view
        return view

    @property
    def h5(self):
        if self._h5 is None:
            try:
                h5 = fmt.open_h5(self.info.path, self.locking)
            except StoreFormatError:
                if not os.path.exists(self.info.path):
                    raise _changed(self.info.path) from None
                raise
            if fmt.file_identity(os.fstat(h5.id.get_vfd_handle())) != self.info.identity:
                h5.close()
                raise _changed(self.info.path)
            self._h5 = h5
        return self._h5

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="lazypatch-io")
        return self._pool

    def scratch(self, nbytes: int, slot: str = "tiles"):
        """A reusable uint8 tensor of at least ``nbytes`` (never handed to callers).

        Slots: "tiles" read from disk, "joined" tile rows (see NOTE [joined rows]),
        the "addresses" of a batch's copies and their "partial" sums. Reuse matters: a
        fresh buffer of a few MB costs a page fault per 4 KiB, which here costs
        as much as the copy it serves. Each thread has its own buffers: threads
        reading one store at once must not overwrite each other's addresses.
        """
        buffers = getattr(self._local, "scratch", None)
        if buffers is None:
            buffers = self._local.scratch = {}
        buffer = buffers.get(slot)
        if buffer is None or buffer.numel() < nbytes:
            buffer = torch().empty(max(nbytes, 1 << 20), dtype=torch().uint8)
            buffers[slot] = buffer
        return buffer

    def int64s(self, shape, slot: str):
        """A reusable int64 tensor of this shape in a scratch slot."""
        count = math.prod(shape)
        return self.scratch(count * 8, slot)[: count * 8].view(torch().int64).view(shape)

    def cached(self, offsets) -> bool:
        """Whether the pages at these byte offsets are in the page cache.

        Asks with ``preadv(..., RWF_NOWAIT)``, which reads only from the cache;
        without it (another OS, a file system that refuses), guesses from the
        file's size against the RAM.
        """
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

    def willneed(self, extents) -> None:
        """Start reading (file offset, length) extents into the page cache, asynchronously."""
        if self.willneed_supported:
            for offset, length in extents:
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_WILLNEED)

    def pread_into(self, extents, buffer) -> None:
        """Read (file offset, length, buffer offset) extents into a uint8 buffer.

        NOTE [queue depth]: every extent is first announced with
        ``posix_fadvise(WILLNEED)``, which starts its read in the background, so
        the disk sees the whole batch at once; the positional reads that follow
        wait for pages already on their way (measured: 55-63k random 12 KiB
        reads/s, against 39-47k for eight threads of plain ``pread``).
        """
        view = memoryview(buffer).cast("B")
        extents = list(extents)
        if len(extents) > 1:
            self.willneed((offset, length) for offset, length, _ in extents)

        def job(part):
            for offset, length, at in part:
                target = view[at:at + length]
                while len(target):
                    got = os.preadv(self.fd, [target], offset)
                    if got <= 0:
                        raise IntegrityError(
                            errno.EIO,
                            f"{self.info.path!r} ended at byte {offset}, before its data did "
                            "(truncated while open?)",
                        )
                    target = target[got:]
                    offset += got

        threads = min(self.io_threads, len(extents) // 16)
        if threads <= 1:
            job(extents)
            return
        parts = [extents[k::threads] for k in range(threads)]
        for future in [self.pool.submit(job, part) for part in parts]:
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
        self._bytes = self._array = None
        self._local = threading.local()
        self._records = {}
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive somewhere; GC unmaps it later
                pass
            self._map = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 1 << 34


# -- the copy kernel ----------------------------------------------------------------------
