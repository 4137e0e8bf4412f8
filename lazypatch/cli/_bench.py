"""The measurements of ``lazypatch bench`` (what they are: :mod:`lazypatch.cli.bench`)."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

LOOP, COPY, PREAD = "per-patch loop (RAM)", "raw copy", "raw pread, cold"
PREAD_THREADS = (1, 8)

# One cold repetition, run as ``python -c COLD_READ`` with a JSON spec on stdin; prints one
# JSON line. Public API only: a fresh interpreter, nothing of the parent's state.
COLD_READ = r"""
import gc, json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np

spec = json.load(sys.stdin)
path, batch = spec["path"], spec["batch"]
flat = np.asarray(spec["flat"], dtype=np.int64)


def evict():
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(probes=64):
    # one-byte reads that fail instead of waiting for the disk
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size, hits, buffer = os.fstat(fd).st_size, 0, bytearray(1)
        for offset in np.random.default_rng(0).integers(0, max(size, 1), probes).tolist():
            try:
                hits += os.preadv(fd, [buffer], offset, os.RWF_NOWAIT) == 1
            except BlockingIOError:
                pass
        return hits / probes
    finally:
        os.close(fd)


if spec["method"] == "read_batch":
    import lazypatch

    # warm the code paths (imports, thread pools, first calls), not the data: evicted below
    with lazypatch.ImageStore(path, io="pread") as store:
        lazypatch.PatchDataset(store, spec["patch"], spec["stride"]).read_batch(flat[:batch])
    gc.collect()
    gc.freeze()  # import-time objects: a first full collection would walk them all (~50 ms)
    evict()
    cached = cached_fraction()
    with lazypatch.ImageStore(path) as store:
        dataset = lazypatch.PatchDataset(store, spec["patch"], spec["stride"])
        started = time.perf_counter()
        for k in range(0, len(flat), batch):
            dataset.read_batch(flat[k:k + batch])
        seconds = time.perf_counter() - started
else:
    evict()
    cached = cached_fraction()
    threads, length = spec["threads"], spec["patch_bytes"]
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    offsets = np.random.default_rng(spec["seed"]).integers(0, max(size - length, 1), len(flat))
    offsets = offsets // 4096 * 4096

    def job(part):
        buffer = bytearray(length)
        for offset in part:
            os.preadv(fd, [buffer], offset)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(job, [c.tolist() for c in np.array_split(offsets, threads)]))
    seconds = time.perf_counter() - started
    os.close(fd)
print(json.dumps({"patches_per_s": len(flat) / seconds, "cached_after_evict": cached}))
"""


def bench(args) -> int:
    for name in ("batch", "batches", "repeats"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    folder = None
    try:
        path = args.store
        if path is None:
            folder = tempfile.mkdtemp(prefix="lazypatch-bench-")
            path = synthetic_store(folder, args.size_gb, args.seed)
        data = measure(path, args)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    print_report(data, args.markdown)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(data, f, indent=2)
    return 0


def synthetic_store(folder: str, size_gb: float, seed: int) -> str:
    """A store of random RGB uint8 512x512 images, made one at a time."""
    from ..ingest import write_store

    count = max(2, int(size_gb * 1e9 // (512 * 512 * 3)))
    print(f"bench: writing {count} random RGB uint8 512x512 images "
          f"({count * 512 * 512 * 3 / 1e9:.2f} GB) to {folder}", file=sys.stderr)
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(count))
    path = os.path.join(folder, "bench.h5")
    write_store(path, images, progress=False).close()
    return path


def measure(path: str, args) -> dict:
    from ..data import PatchDataset
    from ..store import ImageStore

    with ImageStore(path) as store:
        dataset = PatchDataset(store, args.patch, args.stride)
        patch_bytes = math.prod(dataset.patch_size) * store.channels * store.dtype.itemsize
        rng = np.random.default_rng(args.seed + 1)
        plans = [rng.integers(0, len(dataset), args.batch * args.batches) for _ in range(args.repeats)]
        data = describe(store, dataset, args, synthetic=args.store is None)
        available = _available_bytes()
        buffer = images = None
        if data["store"]["pixel_gb"] * 1e9 < available / 3:
            buffer, images = load_images(store)
        else:
            data["notes"].append(f"the loop and raw copy need the images in RAM: "
                                 f"{data['store']['pixel_gb']:.2f} GB is more than a third of the "
                                 f"{available / 1e9:.1f} GB available; they are left out")
        if store.nbytes < available / 2:
            started = time.perf_counter()
            store.preload()
            data["preload_seconds"] = time.perf_counter() - started
        methods = select(warm_methods(dataset, buffer, images, args.batch, patch_bytes, args.workers),
                         args.only)
        figures = {}
        # worker processes are timed after the others, on their own (idle workers slow them)
        for group in ([m for m in methods if "workers" not in m[0]], [m for m in methods if "workers" in m[0]]):
            runners = []
            for name, prepare in group:
                run = prepare()
                check(name, run(plans[0][: 2 * args.batch]), dataset)
                runners.append((name, run))
            figures.update(interleave(runners, plans))
            runners = run = None
            gc.collect()  # the DataLoaders go, and their persistent workers with them
    if args.cold:
        # NOTE [honest cold]: pages a live process maps cannot be evicted, so the store is
        # closed above (its workers gone too) and each repetition runs in a fresh process.
        figures.update(measure_cold(path, dataset, plans, args.batch, patch_bytes, args.only))
    data["rows"] = rows(figures, patch_bytes)
    return data


def describe(store, dataset, args, synthetic: bool) -> dict:
    import torch

    shapes = store.shapes
    command = "lazypatch bench"
    if sys.argv[1:2] == ["bench"]:
        command = " ".join(["lazypatch"] + sys.argv[1:])
    pixels = int(shapes.prod(axis=1).sum()) * store.channels * store.dtype.itemsize
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "store": {
            "path": store.path,
            "synthetic": synthetic,
            "images": len(store),
            "shape_min": shapes.min(axis=0).tolist(),
            "shape_max": shapes.max(axis=0).tolist(),
            "channels": store.channels,
            "dtype": store.dtype.name,
            "layout": store.layout,
            "tile": list(store.tile) if store.tile else None,
            "compression": store.compression,
            "pixel_gb": pixels / 1e9,
        },
        "patch": list(dataset.patch_size),
        "stride": list(dataset.stride),
        "patches": len(dataset),
        "batch": args.batch,
        "batches": args.batches,
        "repeats": args.repeats,
        "preload_seconds": None,
        "notes": [],
    }


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def load_images(store) -> tuple:
    """Every image in RAM, as views of one buffer of bytes (which the raw copy reads)."""
    sizes = store.shapes.prod(axis=1) * store.channels * store.dtype.itemsize
    buffer = np.empty(int(sizes.sum()), np.uint8)
    images, start = [], 0
    for image_id, size in enumerate(sizes.tolist()):
        image = store.read(image_id)
        view = buffer[start:start + size].view(store.dtype).reshape(image.shape)
        view[...] = image
        images.append(view)
        start += size
    return buffer, images


def _channels_last(images) -> np.ndarray:
    """(B, C, *patch) tensor -> (B, *patch, C) array."""
    return np.moveaxis(images.numpy(), 1, -1)


def warm_methods(dataset, buffer, images, batch: int, patch_bytes: int, workers: int) -> list:
    """(name, prepare) pairs; ``prepare()`` returns ``run(flat)``, which reads the patches
    ``flat`` in batches and returns the last batch's (indices, channels-last patches) or None."""
    from torch.utils.data import DataLoader

    def parts(values):
        return [values[k:k + batch] for k in range(0, len(values), batch)]

    def read_batch():
        def run(flat):
            for part in parts(flat):
                last = dataset.read_batch(part)
            return part, _channels_last(last["image"])
        return run

    def loader():
        def run(flat):
            for last in DataLoader(dataset, batch_size=batch, sampler=flat.tolist(), num_workers=0):
                pass
            return last["index"].numpy(), _channels_last(last["image"])
        return run

    def worker_loader():
        class Order:
            """The sampler of persistent workers, whose indices change between repetitions."""

            flat = []

            def __iter__(self):
                return iter(self.flat)

            def __len__(self):
                return len(self.flat)

        order = Order()
        persistent = DataLoader(dataset, batch_size=batch, sampler=order, num_workers=workers,
                                persistent_workers=True)

        def run(flat):
            order.flat = flat.tolist()
            for last in persistent:
                pass
            return last["index"].numpy(), _channels_last(last["image"])
        return run

    def loop():
        patch = dataset.patch_size
        out = np.empty((batch,) + patch + images[0].shape[len(patch):], images[0].dtype)

        def run(flat):
            # the baseline at its best: Python ints, one slice copy per patch
            image_ids, origins = dataset.index.locate(flat)
            for part, ids, boxes in zip(parts(flat), parts(image_ids.tolist()), parts(origins.tolist())):
                if len(patch) == 2:
                    h, w = patch
                    for k, (i, (y, x)) in enumerate(zip(ids, boxes)):
                        out[k] = images[i][y:y + h, x:x + w]
                else:
                    for k, (i, origin) in enumerate(zip(ids, boxes)):
                        out[k] = images[i][tuple(slice(o, o + p) for o, p in zip(origin, patch))]
            return part, out[: len(part)]
        return run

    def raw_copy():
        size = batch * patch_bytes
        # a store smaller than two batches is repeated: the copy then runs in the CPU's
        # caches, like the loop over such a store
        source = buffer if buffer.size >= 2 * size else np.resize(buffer, 2 * size)
        out = np.empty(size, np.uint8)
        starts = np.random.default_rng(5).integers(0, source.size - size + 1, 64).tolist()

        def run(flat):
            for k in range(len(parts(flat))):
                np.copyto(out, source[starts[k % 64]:starts[k % 64] + size])
            return None
        return run

    methods = [("read_batch", read_batch), ("DataLoader (default collate)", loader)]
    if images is not None:
        methods += [(LOOP, loop), (COPY, raw_copy)]
    if workers:
        methods.append((f"DataLoader (default collate), {workers} workers", worker_loader))
    return methods


def select(methods: list, only) -> list:
    """``--only``: the methods whose name contains one of the comma-separated keys, and the
    baselines of the ratios (the loop, the raw copy, cold raw pread)."""
    if not only:
        return methods
    keys = [key.strip() for key in only.split(",") if key.strip()]
    return [m for m in methods if m[0] in (LOOP, COPY) or m[0].startswith(PREAD)
            or any(key in m[0] for key in keys)]


def check(name: str, result, dataset) -> None:
    """A method's last batch equals ``ImageStore.read_regions`` of the same patches."""
    if result is None:
        return
    indices, got = result
    image_ids, origins = dataset.index.locate(np.asarray(indices, dtype=np.int64))
    expected = dataset.store.read_regions(image_ids, origins, dataset.patch_size)
    if not np.array_equal(np.asarray(got).reshape(expected.shape), expected):
        raise AssertionError(f"bench: {name} read patches that differ from ImageStore.read_regions")


def interleave(runners: list, plans: list) -> dict:
    """Patches per second of each runner in each repetition. Each repetition starts one
    method later, so no method always runs first or right after the same one: a slow
    stretch of the machine hits different methods in different repetitions."""
    rates = {name: [] for name, _ in runners}
    for repeat, flat in enumerate(plans):
        shift = repeat % max(len(runners), 1)
        for name, run in runners[shift:] + runners[:shift]:
            started = time.perf_counter()
            run(flat)
            rates[name].append(len(flat) / (time.perf_counter() - started))
    return rates


def measure_cold(path: str, dataset, plans: list, batch: int, patch_bytes: int, only) -> dict:
    methods = [("read_batch, cold", {"method": "read_batch"})]
    methods += [(f"{PREAD}, {t} thread{'s' if t > 1 else ''}", {"method": "pread", "threads": t})
                for t in PREAD_THREADS]
    methods = select(methods, only)
    rates = {name: [] for name, _ in methods}
    for repeat, flat in enumerate(plans):
        shift = repeat % len(methods)
        for name, extra in methods[shift:] + methods[:shift]:
            spec = dict(path=path, flat=flat.tolist(), patch=list(dataset.patch_size),
                        stride=list(dataset.stride), batch=batch, patch_bytes=patch_bytes,
                        seed=repeat, **extra)
            done = subprocess.run([sys.executable, "-c", COLD_READ], input=json.dumps(spec),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"bench: the cold repetition of {name!r} failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result["cached_after_evict"] > 0.05:
                print(f"bench: warning: {result['cached_after_evict']:.0%} of {path} stayed in the page "
                      "cache after eviction (mapped by another process? a tmpfs?)", file=sys.stderr)
            rates[name].append(result["patches_per_s"])
    return rates


def rows(figures: dict, patch_bytes: int) -> list:
    medians = {name: statistics.median(values) for name, values in figures.items()}
    loop, copy = medians.get(LOOP), medians.get(COPY)
    pread = max((v for k, v in medians.items() if k.startswith(PREAD)), default=None)
    table = []
    for name, rate in medians.items():
        cold = name.endswith("cold") or ", cold," in name
        table.append({
            "method": name,
            "patches_per_s": rate,
            "mb_per_s": rate * patch_bytes / 1e6,
            "vs_loop": rate / loop if loop and not cold else None,
            "vs_raw_copy": rate / copy if copy and not cold else None,
            "vs_raw_pread": rate / pread if pread and cold else None,
            "runs": figures[name],
        })
    return table


def _extent(low: list, high: list) -> str:
    """'512x512', or per axis 'min-max' where the images differ: '300-512 x 400-600'."""
    if low == high:
        return "x".join(str(v) for v in low)
    return " x ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(low, high))


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def _rate(value) -> str:
    return "" if value is None else f"{value:,.0f}"


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}"


def print_report(data: dict, markdown: bool) -> None:
    store = data["store"]
    same = store["shape_min"] == store["shape_max"]
    layout = store["layout"] + (f", tile {_extent(store['tile'], store['tile'])}" if store["tile"] else "")
    layout += f", {store['compression']}" if store["compression"] else ""
    name = "a synthetic store" if store["synthetic"] else store["path"]
    lines = [
        f"{name}: {store['images']:,} images of {_extent(store['shape_min'], store['shape_max'])}"
        f"{' (all alike)' if same else ''}, {store['channels']} channel{'s' if store['channels'] > 1 else ''}"
        f" {store['dtype']}, {_size(store['pixel_gb'] * 1e9)} of pixels, {layout}",
        f"patch {_extent(data['patch'], data['patch'])}, stride {_extent(data['stride'], data['stride'])}: "
        f"{data['patches']:,} patches; {data['batches']} batches of {data['batch']} per repetition, "
        f"{data['repeats']} repetition{'s' if data['repeats'] > 1 else ''} (medians)",
    ]
    if data["preload_seconds"] is not None:
        lines.append(f"warm rows: the store preloaded and mapped first ({data['preload_seconds']:.2f} s)")
    lines += [f"note: {note}" for note in data["notes"]]
    header = ["method", "patches/s", "MB/s", "x loop", "x raw copy", "x raw pread"]
    table = [[r["method"], _rate(r["patches_per_s"]), _rate(r["mb_per_s"]), _ratio(r["vs_loop"]),
              _ratio(r["vs_raw_copy"]), _ratio(r["vs_raw_pread"])] for r in data["rows"]]
    if markdown:
        print(f"`{data['command']}` on {data['date']} ({data['machine']})  ")
        print("  \n".join(lines))
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")
        return
    print("\n".join([f"{data['date']}, {data['machine']}"] + lines))
    print()
    widths = [max(len(h), *(len(line[k]) for line in table)) for k, h in enumerate(header)]
    for line in [header] + table:
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(line, widths))))
