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



def proc_status(pid="self") -> dict:
    """RssAnon, RssFile (MiB) of a process, MemAvailable (MiB) of the machine."""
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


def _median_rate(function, items, repeats: int = 7) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def index_overheads(images: int = 1_000_000, seed: int = 0) -> dict:
    from ..index import PatchIndex

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

    owned = (index._bounds.nbytes + index._grid_by_axis.nbytes + index._shapes.nbytes
             + index._find_images.nbytes)
    return {
        "images": images,
        "patches": len(index),
        "build_seconds": build,
        "locate_per_s_batch_256": _median_rate(many_small, 256 * len(small)),
        "locate_per_s_batch_100000": _median_rate(lambda: index.locate(large), large.size),
        "index_bytes_per_image": owned / images,
    }


def open_overheads(workdir: str, images: int = 1_000_000) -> dict:
    from ..ingest import write_store
    from ..store import ImageStore

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
    from ..data.dataset import PatchDataset
    from ..ingest import write_store

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
    from ..ingest import write_store

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

    from ..data.dataset import PatchDataset

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


def soak_run(path: str, patch, epochs: int = 5, patches: int = 200_000, batch: int = 256,
             workers: int = 2, seed: int = 0) -> dict:
    """RssAnon and RssFile at the end of each epoch, main process and persistent workers.

    A leak shows as a slope: the least-squares growth of RssAnon per epoch.
    """
    from torch.utils.data import DataLoader

    from ..data.dataset import PatchDataset
    from ..data.samplers.patch import PatchSampler

    dataset = PatchDataset(path, patch)
    sampler = PatchSampler(dataset, num_samples=patches, replacement=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        persistent_workers=True)
    rows, seconds = {}, []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        iterator = iter(loader)
        pids = {"main": "self", **{f"worker {k}": w.pid for k, w in enumerate(iterator._workers)}}
        count = sum(len(b["index"]) for b in iterator)
        assert count == patches, (count, patches)
        seconds.append(time.perf_counter() - started)
        for name, pid in pids.items():
            status = proc_status(pid)
            rows.setdefault(name, {"rss_anon_mib": [], "rss_file_mib": []})
            rows[name]["rss_anon_mib"].append(status.get("RssAnon", float("nan")))
            rows[name]["rss_file_mib"].append(status.get("RssFile", float("nan")))
    for row in rows.values():
        row["rss_anon_slope_mib_per_epoch"] = float(np.polyfit(np.arange(epochs), row["rss_anon_mib"], 1)[0])
    del loader
    dataset.close()
    return {"epochs": epochs, "patches_per_epoch": patches, "workers": workers,
            "seconds_per_epoch": seconds, "processes": rows,
            "max_slope_mib_per_epoch": max(r["rss_anon_slope_mib_per_epoch"] for r in rows.values())}


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
    if args.sampling:
        report["sampling"] = sampling_figures(workdir)
    return report


def sampling_figures(workdir: str) -> dict:
    """Sampler cost, class-sampler construction, aggregation speed and out-of-core memory."""
    import gc
    import tracemalloc

    import torch

    from ..inference.aggregator import PatchAggregator
    from ..data.dataset import PatchDataset
    from ..index import PatchIndex
    from ..data.samplers.classes import ClassSampler
    from ..data.samplers.patch import PatchSampler
    from ..ingest import write_store

    report = {}
    rng = np.random.default_rng(4)
    index = PatchIndex(rng.integers(256, 4096, size=(20_000, 2)), 64, stride=32)
    sampler = PatchSampler(index, seed=1)
    batches = sampler.batches(256)
    next(batches)
    started = time.perf_counter()
    for _ in range(2000):
        next(batches)
    per_batch = (time.perf_counter() - started) / 2000
    iterator = iter(sampler)
    started = time.perf_counter()
    for _ in range(256 * 400):
        next(iterator)
    per_batch_ints = (time.perf_counter() - started) / 400
    report["sampler"] = {"patches": len(index), "us_per_batch_of_256_arrays": per_batch * 1e6,
                         "us_per_batch_of_256_ints": per_batch_ints * 1e6}

    images = rng.integers(0, 255, size=(10_000, 64, 64), dtype=np.uint8)
    masks = (rng.random((10_000, 64, 64)) < 0.1).astype(np.uint8)
    masks[:, 20:40, 20:40] = 2
    path = os.path.join(workdir, "labels.h5")
    store = write_store(path, images, masks=masks, label_stats=16, overwrite=True, progress=False)
    dataset = PatchDataset(store, 16, stride=1)
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    class_sampler = ClassSampler(dataset, {0: 1, 1: 1, 2: 1}, num_samples=100_000)
    built = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    report["class_sampler"] = {"images": 10_000, "stats_rows": len(class_sampler.stats.blocks),
                               "build_seconds": built, "build_peak_mib": peak / 2**20}
    store.close()

    shape, patch, stride = (2048, 2048), 64, 32
    agg_index = PatchIndex([shape], patch, stride=stride, edge="shift")
    ids, origins = agg_index.locate(np.arange(len(agg_index)))
    predictions = torch.rand(256, 2, patch, patch)
    values = predictions.numpy()

    def numpy_slice_add():
        baseline = np.zeros((2,) + shape, np.float32)
        for k, (y, x) in enumerate(origins.tolist()):
            baseline[:, y:y + patch, x:x + patch] += values[k % 256]
        return baseline

    def aggregate():
        aggregator = PatchAggregator([shape], patch, stride=stride)
        for k in range(0, len(ids), 256):
            count = min(256, len(ids) - k)
            aggregator.add(predictions[:count], ids[k:k + count], origins[k:k + count])
        return aggregator.result(0)

    times = {"numpy": [], "ours": []}
    for _ in range(5):  # interleaved repetitions, medians
        for name, function in (("numpy", numpy_slice_add), ("ours", aggregate)):
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    base_seconds, ours = statistics.median(times["numpy"]), statistics.median(times["ours"])
    report["aggregation"] = {"patches": len(ids), "numpy_slice_add_per_s": len(ids) / base_seconds,
                             "aggregator_per_s": len(ids) / ours, "ratio": base_seconds / ours,
                             "note": "the aggregator's time includes finishing the image (the division)"}

    before = proc_status().get("RssAnon", 0.0)
    peak = before
    with PatchAggregator([(512, 512)] * 100, 64, stride=48, out=os.path.join(workdir, "preds.h5")) as agg:
        out_ids, out_origins = agg.index.locate(np.arange(len(agg.index)))
        ones = np.ones((256, 2, 64, 64), np.float32)
        for k in range(0, len(out_ids), 256):
            count = min(256, len(out_ids) - k)
            agg.add(ones[:count], out_ids[k:k + count], out_origins[k:k + count])
            peak = max(peak, proc_status().get("RssAnon", 0.0))
    report["out_of_core"] = {"images": 100, "image_mib": 2 * 512 * 512 * 4 / 2**20,
                             "rss_anon_growth_mib": peak - before}
    return report
