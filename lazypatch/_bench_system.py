"""``lazypatch bench --overheads / --memory / --build``: the figures that are not a
throughput table.

* overheads: ``PatchIndex.locate`` at 10^6 images (batches of 256 and 10^5),
  bytes per image of a ``PatchIndex`` and an opened ``ImageStore``, the time to
  open a 10^6-image store and read a first region, the latency of ``ds[i]``.
* memory: RssAnon, RssFile and MemAvailable while reading random patches in
  the main process and in two DataLoader workers (sampled from /proc).
* build: ``write_store`` from arrays in RAM against plain file writes of the
  same bytes, both ending with fsync.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

from ._bench import proc_status


def _median_rate(function, items, repeats: int = 7) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def index_overheads(images: int = 1_000_000, seed: int = 0) -> dict:
    from .index import PatchIndex

    rng = np.random.default_rng(seed)
    shapes = rng.integers(200, 2000, size=(images, 2))
    started = time.perf_counter()
    index = PatchIndex(shapes, patch_size=64, stride=32)
    build = time.perf_counter() - started
    small = [rng.integers(0, len(index), 256) for _ in range(400)]
    large = rng.integers(0, len(index), 100_000)
    for flat in small[:20]:
        index.locate(flat)

    def many_small():
        for flat in small:
            index.locate(flat)

    owned = index._bounds.nbytes + index._grid_by_axis.nbytes + index._shapes.nbytes
    return {
        "images": images,
        "patches": len(index),
        "build_seconds": build,
        "locate_per_s_batch_256": _median_rate(many_small, 256 * len(small)),
        "locate_per_s_batch_100000": _median_rate(lambda: index.locate(large), large.size),
        "index_bytes_per_image": owned / images,
    }


def open_overheads(workdir: str, images: int = 1_000_000) -> dict:
    from .store import ImageStore, write_store

    path = os.path.join(workdir, "million.h5")
    stack = np.random.default_rng(1).integers(0, 255, size=(images, 8, 8), dtype=np.uint8)
    started = time.perf_counter()
    write_store(path, stack, tile=8, overwrite=True, progress=False)
    written = time.perf_counter() - started
    del stack
    started = time.perf_counter()
    store = ImageStore(path)
    count = len(store)
    store.read_region(count - 1, (0, 0), (8, 8))
    opened = time.perf_counter() - started
    info = store._info
    held = info.shapes.nbytes + info.offsets.nbytes
    store.close()
    return {"images": count, "write_seconds": written, "open_len_first_read_seconds": opened,
            "store_bytes_per_image": held / count, "file_mb": os.path.getsize(path) / 1e6}


def getitem_latency(workdir: str, calls: int = 20_000) -> dict:
    from .dataset import PatchDataset
    from .store import write_store

    path = os.path.join(workdir, "small.h5")
    rng = np.random.default_rng(2)
    write_store(path, rng.integers(0, 255, size=(100, 64, 64), dtype=np.uint8), overwrite=True,
                progress=False)
    dataset = PatchDataset(path, patch_size=8)
    order = rng.integers(0, len(dataset), calls).tolist()
    for i in order[:2000]:
        dataset[i]
    times = []
    clock = time.perf_counter
    for i in order:
        started = clock()
        dataset[i]
        times.append(clock() - started)
    times.sort()
    dataset.store.close()
    return {"patch": "8x8 uint8", "median_us": times[len(times) // 2] * 1e6,
            "p90_us": times[int(len(times) * 0.9)] * 1e6}


def build_speed(workdir: str, size_gb: float = 0.5) -> dict:
    from .store import write_store

    count = max(1, int(size_gb * 1e9 // (512 * 512 * 3)))
    images = np.random.default_rng(3).integers(0, 255, size=(count, 512, 512, 3), dtype=np.uint8)
    plain = os.path.join(workdir, "plain.bin")
    started = time.perf_counter()
    with open(plain, "wb") as f:
        for image in images:
            f.write(image.data)
        f.flush()
        os.fsync(f.fileno())
    plain_seconds = time.perf_counter() - started
    os.unlink(plain)
    path = os.path.join(workdir, "build.h5")
    started = time.perf_counter()
    write_store(path, images, overwrite=True, progress=False)
    store_seconds = time.perf_counter() - started
    os.unlink(path)
    return {"bytes": images.nbytes, "plain_write_mb_s": images.nbytes / plain_seconds / 1e6,
            "write_store_mb_s": images.nbytes / store_seconds / 1e6,
            "ratio": plain_seconds / store_seconds}


def memory_run(path: str, patch, patches: int = 100_000, batch: int = 256, workers: int = 2,
               seed: int = 0) -> dict:
    """RssAnon growth while reading ``patches`` random patches, main process and workers."""
    import torch
    from torch.utils.data import DataLoader

    from .dataset import PatchDataset

    dataset = PatchDataset(path, patch)
    rng = np.random.default_rng(seed)
    timeline = []
    result = {}
    # main process, batch API
    order = rng.integers(0, len(dataset), patches)
    before = proc_status()
    peak = before.get("RssAnon", 0.0)
    started = time.perf_counter()
    for k in range(0, patches, batch):
        dataset.read_batch(order[k:k + batch])
        if k // batch % 20 == 0:
            status = proc_status()
            peak = max(peak, status.get("RssAnon", 0.0))
            timeline.append({"process": "main", "seconds": time.perf_counter() - started, **status})
    result["main"] = {"rss_anon_start_mib": before.get("RssAnon"), "rss_anon_peak_mib": peak,
                      "growth_mib": peak - before.get("RssAnon", 0.0)}
    # two workers, torch's default collate
    order = rng.integers(0, len(dataset), patches).tolist()
    loader = DataLoader(dataset, batch_size=batch, sampler=order, num_workers=workers)
    iterator = iter(loader)
    pids = [w.pid for w in iterator._workers]
    first, peaks = {}, {}
    started = time.perf_counter()
    for step, _ in enumerate(iterator):
        if step % 20 == 0:
            for pid in pids:
                status = proc_status(pid)
                if not status:
                    continue
                first.setdefault(pid, status.get("RssAnon", 0.0))
                peaks[pid] = max(peaks.get(pid, 0.0), status.get("RssAnon", 0.0))
                timeline.append({"process": f"worker {pids.index(pid)}",
                                 "seconds": time.perf_counter() - started, **status})
    result["workers"] = [{"rss_anon_start_mib": first[pid], "rss_anon_peak_mib": peaks[pid],
                          "growth_mib": peaks[pid] - first[pid]} for pid in pids if pid in first]
    result["timeline"] = timeline
    result["patches"] = patches
    dataset.store.close()
    del torch
    return result


def run(args) -> dict:
    workdir = args.workdir or tempfile.mkdtemp(prefix="lazypatch-bench-")
    os.makedirs(workdir, exist_ok=True)
    report = {}
    if args.overheads:
        print("bench: index and open overheads at 10^6 images (about a minute)", file=sys.stderr)
        report["index"] = index_overheads()
        report["open"] = open_overheads(workdir)
        report["getitem"] = getitem_latency(workdir)
    if args.build:
        report["build"] = build_speed(workdir, min(args.size_gb, 2.0))
    return report
