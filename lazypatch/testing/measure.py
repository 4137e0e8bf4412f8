"""Measuring helpers for the tests and for ``tests/benchmarks/``.

Process memory and the page cache through the operating system, and the few
figures that need lazypatch's internals (where a batch's time goes, bytes an
index holds, DataLoader workers on torch's own path). The library never
imports this module; the benchmarks use it instead of private names, so a
change of internals breaks here, in one place, and in the benchmarks' smoke
test (``tests/benchmarks/test_scripts.py``).

>>> import os
>>> status = proc_status()
>>> "RssAnon" in status or not os.path.exists("/proc/self/status")
True
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import numpy as np

__all__ = [
    "proc_status",
    "evict",
    "cached_fraction",
    "read_stages",
    "index_nbytes",
    "store_table_nbytes",
    "torch_worker_batches",
]


def proc_status(pid="self") -> dict:
    """``RssAnon``, ``RssFile``, ``VmRSS`` (MiB) of a process and ``MemAvailable`` (MiB) of
    the machine, from ``/proc``; an empty dict where there is no ``/proc``."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "MemAvailable":
                    values[key] = int(rest.split()[0]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return values


def watch_peak_rss_anon(interval: float = 0.01) -> list:
    """Start a daemon thread sampling this process's RssAnon every ``interval`` seconds;
    returns a one-item list holding the peak so far, in MiB (0 where /proc is absent).

    >>> peak = watch_peak_rss_anon()
    >>> isinstance(peak[0], float)
    True
    """
    import threading
    import time

    peak = [0.0]

    def watch():
        while True:
            peak[0] = max(peak[0], proc_status().get("RssAnon", 0.0))
            time.sleep(interval)

    threading.Thread(target=watch, daemon=True, name="lazypatch-rss-watch").start()
    return peak


def evict(path) -> None:
    """Drop a file's pages from the page cache (``fsync``, then ``POSIX_FADV_DONTNEED``).

    Pages a live process maps stay cached: close every ``ImageStore`` on the
    file first (see :func:`cached_fraction` to check).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path, probes: int = 64) -> float:
    """Fraction of ``probes`` random pages of a file that are in the page cache.

    Each probe is a one-byte ``preadv(RWF_NOWAIT)``, which fails instead of
    reading the disk; the descriptor is ``POSIX_FADV_RANDOM`` so a probe that
    misses reads nothing ahead.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size = os.fstat(fd).st_size
        hits = 0
        buffer = bytearray(1)
        for offset in np.random.default_rng(0).integers(0, max(size, 1), probes).tolist():
            try:
                hits += os.preadv(fd, [buffer], offset, os.RWF_NOWAIT) == 1
            except BlockingIOError:
                pass
        return hits / probes
    finally:
        os.close(fd)


def _median_us(function, items) -> float:
    for item in items[:10]:  # first calls: code paths and buffers
        function(item)
    times = []
    for item in items:
        started = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def read_stages(dataset, batches) -> dict:
    """Median microseconds per batch in each stage of ``dataset.read_batch`` and of
    torch's default DataLoader path (``__getitems__`` + ``default_collate``).

    ``batches``: a list of arrays of flat patch indices. The stages are timed
    apart on the same batches, so the last one, what ``read_batch`` adds around
    the store's read (index arrays, buffer, tensors, dict), is a difference of
    medians: noise can make it negative, shown as 0.
    """
    from torch.utils.data import default_collate

    store, index = dataset.store, dataset.index
    handles = store._get_handles()
    whole_tiles = dataset._whole_tiles
    out = np.empty((len(batches[0]), store.channels) + tuple(dataset.patch_size), store.dtype)

    def image_ids_of(local):
        return local if dataset.image_ids is None else dataset.image_ids[local]

    located = []
    for flat in batches:
        local, positions, origins = index.locate_grid(index.normalize(flat))
        located.append((image_ids_of(local), positions, origins))

    def read(plan):
        image_ids, positions, origins = plan
        target = out[: len(image_ids)]
        if whole_tiles:
            store.read_tiles_unchecked(image_ids, positions, origins, target, None)
        else:
            store.read_batch_unchecked(image_ids, origins, dataset.patch_size, target, None,
                                       dataset.pad_value, 0, dataset._interior)

    stages = {
        "locate (index)": _median_us(lambda flat: index.locate_grid(index.normalize(flat)), batches),
        "page-cache probe (io=auto)": _median_us(
            lambda plan: store._batch_mode(handles, plan[0], plan[2]), located),
        "probe + plan + gather (store)": _median_us(read, located),
    }
    total = _median_us(dataset.read_batch, batches)
    rest = total - stages["locate (index)"] - stages["probe + plan + gather (store)"]
    stages["indices, buffer, tensors, dict"] = max(rest, 0.0)
    stages["read_batch, in all"] = total
    stages["__getitems__ + default_collate, in all"] = _median_us(
        lambda flat: default_collate(dataset.__getitems__(flat.tolist())), batches)
    return stages


def index_nbytes(index) -> int:
    """Bytes a ``PatchIndex`` holds for its life: its tables and the image search's
    table (not the arrays it derives and caches on demand, like ``offsets``)."""
    return int(index._bounds.nbytes + index._grid_by_axis.nbytes + index._shapes.nbytes
               + index._find_images.nbytes)


def store_table_nbytes(store) -> int:
    """Bytes an opened single-file ``ImageStore`` holds per store: its shape and offset tables."""
    info = store._info
    return int(info.shapes.nbytes + info.offsets.nbytes)


@contextlib.contextmanager
def torch_worker_batches():
    """Within: DataLoader workers started here hand batches over by torch's own path
    (lazypatch's worker slots off, NOTE [worker batches] in ``lazypatch/data/_shared.py``).

    Forked workers keep the setting they start with, so persistent workers
    started inside stay on torch's path for their life.
    """
    from ..data import _shared

    saved = _shared._enabled
    _shared._enabled = False
    try:
        yield
    finally:
        _shared._enabled = saved
