"""Batches made in DataLoader workers, handed to the main process without a copy.

NOTE [worker batches]: torch sends a worker's batch to the main process by
moving every tensor into a new shared-memory segment (``share_memory_``: a
new file, a page fault per 4 KiB, a copy), passing its descriptor over a
socket, and mapping it again in the main process, where reading it faults
every page once more. For a 3 MiB batch that costs more than reading the
patches. Here each worker keeps a few *slots*: anonymous shared files
(``memfd_create``) it maps once and reads batches straight into. A batch
travels as a few numbers (worker pid, descriptor, slot serial, the offsets,
dtypes and shapes of its tensors); the main process opens the slot once
through ``/proc/PID/fd/FD``, keeps the mapping while the worker lives, and
makes the batch's tensors as views of it.

A slot's first byte says who owns it: 1 while a batch in it is being made,
in flight or held by anyone in the main process, 0 once every tensor made
from it there is gone (a finalizer on the object all those views hold).
A worker reuses only slots at 0, so a batch a user keeps is never
overwritten; when every slot is held it maps a new one. Memory is freed
when the last mapping goes: a killed worker's slots live on only while the
main process still holds a batch from them (a thread watches each worker's
pidfd and drops the main process's mappings when it exits), and the files
have no name, so nothing can be left behind in /dev/shm.

Used only when the batch comes out of ``lazypatch.collate`` (which
``default_collate`` calls for PatchDataset samples) in a worker process, on
Linux. ``LAZYPATCH_WORKER_BATCHES=0`` turns it off (torch's own path).
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import select
import sys
import threading
import weakref

import numpy as np
import torch

_HEADER = 4096  # byte 0: the owner (see NOTE); bytes 8..16: the slot's serial; data on the next page
_ALIGN = 64
_GRAIN = 1 << 20  # slot sizes are multiples of this
_IDLE_BYTES = 256 << 20  # free slots kept per worker beyond what one batch needs

_enabled = None


def enabled() -> bool:
    """Whether this process can hand batches over as slots (Linux, /proc, not turned off)."""
    global _enabled
    if _enabled is None:
        _enabled = (hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
                    and os.environ.get("LAZYPATCH_WORKER_BATCHES", "1") != "0")
    return _enabled


def worker_arena():
    """This worker process's arena, or None outside a DataLoader worker (or when disabled)."""
    if not enabled() or torch.utils.data.get_worker_info() is None:
        return None
    global _arena
    if _arena is None or _arena.pid != os.getpid():
        _arena = Arena()
    return _arena


_arena = None


# -- the worker's side --------------------------------------------------------------------
class _Slot:
    def __init__(self, capacity: int, serial: int):
        self.capacity, self.serial = capacity, serial
        self.fd = os.memfd_create(f"lazypatch-batch-{serial}", getattr(os, "MFD_CLOEXEC", 1))
        try:
            os.ftruncate(self.fd, _HEADER + capacity)
            self.mm = mmap.mmap(self.fd, _HEADER + capacity)
        except BaseException:
            os.close(self.fd)
            raise
        self.mm[8:16] = serial.to_bytes(8, "little")
        self.data = np.frombuffer(self.mm, np.uint8, count=capacity, offset=_HEADER)
        self.address = self.data.ctypes.data
        self.lease = None  # the lease of the batch being made in it, until handed over

    @property
    def free(self) -> bool:
        return self.mm[0] == 0 and self.lease is None

    def close(self) -> None:
        self.data = None
        try:
            self.mm.close()
        except BufferError:  # a worker-side view is still alive: the GC unmaps it later
            pass
        os.close(self.fd)


class Lease:
    """One slot, taken for one batch: arrays are carved from it in order."""

    def __init__(self, arena: "Arena", slot: _Slot):
        self.arena, self.slot, self.used, self.handed = arena, slot, 0, False
        slot.lease = self
        slot.mm[0] = 1
        # when every worker-side view is gone and the batch was not handed over, free it
        self._finalizer = weakref.finalize(self, _release_unsent, arena, slot)

    def take(self, shape, dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` in the slot (None when it does not fit)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.used // _ALIGN) * _ALIGN
        if start + nbytes > self.slot.capacity:
            return None
        self.used = start + nbytes
        array = self.slot.data[start:start + nbytes].view(dtype).reshape(shape)
        return _Owned(array, self)

    def offset(self, tensor: torch.Tensor):
        """The tensor's byte offset in this slot when it lies there contiguously, else None."""
        if not tensor.is_contiguous() or tensor.device.type != "cpu":
            return None
        start = tensor.data_ptr() - self.slot.address
        nbytes = tensor.numel() * tensor.element_size()
        return start if 0 <= start and start + nbytes <= self.slot.capacity else None


def _release_unsent(arena: "Arena", slot: _Slot) -> None:
    with arena.lock:
        if slot.lease is not None and not slot.lease.handed:
            slot.mm[0] = 0
        slot.lease = None


class _Owned(np.ndarray):
    """An array in a slot that keeps its lease alive (torch.from_numpy keeps the array)."""

    def __new__(cls, array: np.ndarray, lease: Lease):
        view = array.view(cls)
        view.lease = lease
        return view

    def __array_finalize__(self, parent):
        self.lease = getattr(parent, "lease", None)


class Arena:
    """The slots of one worker process."""

    def __init__(self):
        self.pid = os.getpid()
        self.slots: list[_Slot] = []
        self.retired: list[int] = []  # serials the main process may drop from its cache
        self.serial = 0
        self.lock = threading.Lock()

    def lease(self, nbytes: int) -> Lease:
        nbytes = max(int(nbytes), 1)
        with self.lock:
            fitting = [s for s in self.slots if s.free and nbytes <= s.capacity <= 4 * nbytes + _GRAIN]
            if fitting:
                return Lease(self, min(fitting, key=lambda s: s.capacity))
            self._trim(nbytes)
            self.serial += 1
            slot = _Slot(-(-nbytes // _GRAIN) * _GRAIN, self.serial)
            self.slots.append(slot)
            return Lease(self, slot)

    def _trim(self, nbytes: int) -> None:
        """Close free slots beyond the idle budget (the smallest first)."""
        free = sorted((s for s in self.slots if s.free), key=lambda s: s.capacity)
        idle = sum(s.capacity for s in free)
        for slot in free:
            if idle + nbytes <= max(_IDLE_BYTES, 4 * nbytes):
                break
            idle -= slot.capacity
            self.slots.remove(slot)
            self.retired.append(slot.serial)
            slot.close()

    def lease_of(self, tensor) -> Lease | None:
        """The lease of the batch being made whose slot holds ``tensor``, if any."""
        if not torch.is_tensor(tensor):
            return None
        with self.lock:
            for slot in self.slots:
                if slot.lease is not None and slot.lease.offset(tensor) is not None:
                    return slot.lease
        return None

    def pack(self, batch: dict, lease: Lease | None) -> "SharedBatch":
        """``batch`` with every tensor in one slot (copied there unless read there)."""
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        plain = {k: v for k, v in batch.items() if not torch.is_tensor(v)}
        placed = {}
        if lease is not None:
            placed = {k: lease.offset(t) for k, t in tensors.items()}
            missing = [k for k, o in placed.items() if o is None]
            room = lease.slot.capacity - (-(-lease.used // _ALIGN) * _ALIGN)
            if sum(_nbytes(tensors[k]) + _ALIGN for k in missing) > room:
                lease, placed = None, {}
        if lease is None:
            lease = self.lease(sum(_nbytes(t) + _ALIGN for t in tensors.values()))
        for key, tensor in tensors.items():
            if placed.get(key) is None:
                target = lease.take(tuple(tensor.shape), _numpy_dtype(tensor.dtype))
                torch.from_numpy(target).copy_(tensor)
                placed[key] = lease.offset(torch.from_numpy(target))
        fields = [(key, str(tensor.dtype).replace("torch.", ""), tuple(tensor.shape), placed[key])
                  for key, tensor in tensors.items()]
        return SharedBatch(batch, self, lease, fields, plain)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


_NUMPY_DTYPES: dict = {}


def _numpy_dtype(dtype) -> np.dtype:
    """numpy's dtype of a torch dtype (or of its name, as fields carry it)."""
    found = _NUMPY_DTYPES.get(dtype)
    if found is None:
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        found = _NUMPY_DTYPES[dtype] = torch.empty((), dtype=torch_dtype).numpy().dtype
    return found


class SharedBatch(dict):
    """A batch in a slot; pickles as the numbers the main process needs to view it."""

    def __init__(self, batch: dict, arena: Arena, lease: Lease, fields: list, plain: dict):
        dict.__init__(self, batch)
        self._handover = (arena, lease, fields, plain)

    def __reduce__(self):
        arena, lease, fields, plain = self._handover
        with arena.lock:
            lease.handed = True
            lease.slot.lease = None  # the main process owns it now (byte 0 stays 1)
            retired, arena.retired = arena.retired, []
        slot = lease.slot
        return _rebuild, (arena.pid, slot.fd, slot.serial, slot.capacity, fields, plain, retired)


# -- the main process's side -----------------------------------------------------------------
_mappings: dict = {}  # (pid, serial) -> _Mapping
_lock = threading.Lock()
_watcher = None


class _Mapping:
    def __init__(self, pid: int, fd: int, serial: int, capacity: int):
        handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)
        try:
            self.mm = mmap.mmap(handle, _HEADER + capacity)
        finally:
            os.close(handle)
        if int.from_bytes(self.mm[8:16], "little") != serial:
            raise RuntimeError(f"lazypatch: worker {pid}'s batch slot {serial} is gone")
        self.pid, self.capacity = pid, capacity
        self._anchor = ctypes.c_char.from_buffer(self.mm)  # the mapping's address, held while alive
        self.address = ctypes.addressof(self._anchor) + _HEADER


class _Held:
    """What every tensor of one received batch holds; releases the slot when they are gone."""

    __slots__ = ("mapping", "__array_interface__", "__weakref__")

    def __init__(self, mapping: _Mapping):
        self.mapping = mapping
        self.__array_interface__ = {"shape": (mapping.capacity,), "typestr": "|u1", "version": 3,
                                    "data": (mapping.address, False)}

    def __del__(self):
        try:
            self.mapping.mm[0] = 0
        except (ValueError, TypeError):  # interpreter shutdown
            pass


def _rebuild(pid, fd, serial, capacity, fields, plain, retired) -> dict:
    with _lock:
        for old in retired:
            _mappings.pop((pid, old), None)
        mapping = _mappings.get((pid, serial))
        if mapping is None:
            mapping = _mappings[(pid, serial)] = _Mapping(pid, fd, serial, capacity)
            _watch(pid)
    base = np.asarray(_Held(mapping))
    batch = {}
    for key, dtype, shape, offset in fields:
        dtype = _numpy_dtype(dtype)
        batch[key] = torch.from_numpy(base[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype)
                                      .reshape(shape))
    batch.update(plain)
    return batch


def _watch(pid: int) -> None:
    """Drop this process's mappings of a worker's slots when the worker exits."""
    global _watcher
    if not hasattr(os, "pidfd_open"):
        return
    if _watcher is None or not _watcher.is_alive():
        _watcher = _Watcher()
        _watcher.start()
    _watcher.add(pid)


class _Watcher(threading.Thread):
    def __init__(self):
        super().__init__(name="lazypatch-worker-watch", daemon=True)
        self.poll = select.poll()
        self.pidfds = {}
        self.wake_read, self.wake_write = os.pipe()
        self.poll.register(self.wake_read, select.POLLIN)

    def add(self, pid: int) -> None:
        if pid in self.pidfds.values():
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone already
            _drop(pid)
            return
        self.pidfds[pidfd] = pid
        self.poll.register(pidfd, select.POLLIN)
        os.write(self.wake_write, b"x")

    def run(self) -> None:
        while True:
            for fd, _ in self.poll.poll():
                if fd == self.wake_read:
                    os.read(fd, 4096)
                    continue
                pid = self.pidfds.pop(fd, None)
                self.poll.unregister(fd)
                os.close(fd)
                if pid is not None:
                    _drop(pid)


def _drop(pid: int) -> None:
    with _lock:
        for key in [k for k in _mappings if k[0] == pid]:
            del _mappings[key]


def _after_fork_in_child() -> None:
    global _watcher, _arena, _lock
    _mappings.clear()
    _watcher, _arena, _lock = None, None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def main_process_mappings() -> int:
    """How many worker slots this process maps now (for tests and diagnostics)."""
    with _lock:
        return len(_mappings)


__all__ = ["Arena", "Lease", "SharedBatch", "enabled", "main_process_mappings", "worker_arena"]
if sys.platform != "linux":  # pragma: no cover
    _enabled = False
