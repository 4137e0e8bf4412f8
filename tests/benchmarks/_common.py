"""What the benchmark scripts share: synthetic stores, the images in RAM, the harness
that times methods side by side, cold repetitions in fresh processes, and the table.

The harness: every method reads the same random grid patches (the same flat
indices, in the same batches); before timing, each method's last batch is
compared with numpy slicing of the images in RAM (``ImageStore.read_regions``
when they do not fit); repetitions interleave the methods, each starting one
method later; each figure is the median over repetitions.

A method is ``(name, prepare, unit)``: ``prepare()`` returns ``run(flat)`` or
None when the method does not apply; ``run(flat)`` reads the patches ``flat``
and returns the last batch's (indices, channels-last patches) to check, or
None. ``unit`` is ``"batch"``, or ``"eighth"``/``"sixteenth"`` for methods so
slow that they read only that part of ``flat`` (a ``run.fraction`` attribute
says the same).

Only the public API of lazypatch and ``lazypatch.testing`` are used here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import lazypatch
from lazypatch.testing import proc_status

HERE = os.path.dirname(os.path.abspath(__file__))
LOOP, COPY = "per-patch loop (RAM)", "raw copy"


def int_list(text: str):
    """``'64'`` -> 64, ``'64,32'`` or ``'64x32'`` -> (64, 32)."""
    values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected an int or comma-separated ints, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def command_line(script: str, argv) -> str:
    return " ".join(["python", f"tests/benchmarks/{script}"] + list(sys.argv[1:] if argv is None else argv))


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def available_bytes() -> int:
    return int(proc_status().get("MemAvailable", 8 << 10) * (1 << 20))


def fsync(*paths) -> None:
    """Write a new copy's dirty pages to disk now: gigabytes of writeback running under the
    next measurements slowed read_batch by a third in a fresh workdir (measured)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path, data) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


# -- synthetic stores -----------------------------------------------------------------------
def add_store_arguments(parser, size_gb: float = 0.5) -> None:
    """STORE, or the options of a synthetic store, and --workdir."""
    parser.add_argument("store", nargs="?", help="a store to measure (default: a synthetic one)")
    parser.add_argument("--size-gb", type=float, default=size_gb,
                        help=f"synthetic store size in GB (default {size_gb})")
    parser.add_argument("--image-size", type=int, default=512, help="synthetic image extent per axis")
    parser.add_argument("--ndim", type=int, default=2, choices=(2, 3), help="synthetic spatial axes")
    parser.add_argument("--channels", type=int, default=3, help="synthetic channels (0: no channel axis)")
    parser.add_argument("--dtype", default="uint8", help="synthetic dtype")
    parser.add_argument("--tile", type=int_list, help="synthetic store tile (default 64 / 32)")
    parser.add_argument("--layout", default="tiled", choices=("tiled", "contiguous", "chunked"))
    parser.add_argument("--compression", choices=("gzip", "lzf"))
    parser.add_argument("--masks", action="store_true", help="synthetic store with masks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where files go (default: a temporary folder, removed afterwards)")


class RandomImages:
    """Distinct random images made one at a time (a store larger than RAM)."""

    class _Image:
        def __init__(self, shape, dtype, seed):
            self.shape, self.dtype, self.seed, self._array = shape, dtype, seed, None

        def __getitem__(self, key):
            if self._array is None:
                self._array = random_images(np.random.default_rng(self.seed), 1, self.shape, self.dtype)[0]
            return self._array[key]

    def __init__(self, count, image_shape, dtype, seed):
        self.count, self.image_shape, self.dtype, self.seed = count, image_shape, dtype, seed

    def __len__(self):
        return self.count

    def __getitem__(self, position):
        if not 0 <= position < self.count:
            raise IndexError(position)
        return self._Image(self.image_shape, self.dtype, (self.seed, position))


def random_images(rng, count, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.asarray(rng.random((count,) + tuple(shape), dtype=np.float32), dtype=dtype)
    info = np.iinfo(dtype)
    return rng.integers(0, min(info.max, 1 << 16) + 1, size=(count,) + tuple(shape), dtype=dtype)


def write_synthetic(path: str, args) -> lazypatch.ImageStore:
    """The synthetic store the options of :func:`add_store_arguments` describe."""
    shape = (args.image_size,) * args.ndim + ((args.channels,) if args.channels else ())
    dtype = np.dtype(args.dtype)
    count = max(2, int(args.size_gb * 1e9 // (np.prod(shape) * dtype.itemsize)))
    size = count * int(np.prod(shape)) * dtype.itemsize
    print(f"bench: writing a synthetic store of {count} random images {shape} {dtype} "
          f"({size / 1e9:.2f} GB) to {path}", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    if size > available_bytes() // 3:  # larger than RAM
        images = RandomImages(count, shape, dtype, args.seed)
    else:
        images = random_images(rng, count, shape, dtype)
    masks = None
    if args.masks:
        masks = (rng.integers(0, 4, size=shape[:args.ndim], dtype=np.uint8) for _ in range(count))
    return lazypatch.write_store(path, images, masks=masks, spatial_ndim=args.ndim, layout=args.layout,
                                 tile=args.tile, compression=args.compression, overwrite=True,
                                 progress=False)


class Workdir:
    """``--workdir``, or a temporary folder removed on exit (the disk filled once)."""

    def __init__(self, path=None):
        self.own = path is None
        self.path = tempfile.mkdtemp(prefix="lazypatch-bench-") if self.own else path
        os.makedirs(self.path, exist_ok=True)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        if self.own:
            shutil.rmtree(self.path, ignore_errors=True)


def load(store):
    """The store's images in RAM: one stacked array when all have one shape, else a list."""
    images = [store.read(i) for i in range(len(store))]
    shapes = store.shapes
    return np.stack(images) if (shapes == shapes[0]).all() else images


class Case:
    """The data of one run: the store, and the same images in RAM when they fit."""

    def __init__(self, args, workdir: str, load_images: bool = True):
        self.workdir = workdir
        self.synthetic = args.store is None
        if self.synthetic:
            started = time.perf_counter()
            self.store = write_synthetic(os.path.join(workdir, "bench.h5"), args)
            self.build_seconds = time.perf_counter() - started
        else:
            self.store = lazypatch.ImageStore(args.store)
        store = self.store
        self.data_bytes = int(store.shapes.prod(axis=1).sum()) * store.channels * store.dtype.itemsize
        self.ram = load(store) if load_images and self.data_bytes < available_bytes() // 3 else None

    def close(self) -> None:
        self.store.close()


# -- the harness -----------------------------------------------------------------------------
def channels_last(images) -> np.ndarray:
    """(B, C, *patch) tensor -> (B, *patch, C) numpy."""
    return np.moveaxis(images.numpy(), 1, -1)


def batches_of(values, size: int) -> list:
    return [values[k:k + size] for k in range(0, len(values), size)]


FRACTIONS = {"batch": 1.0, "eighth": 1 / 8, "sixteenth": 1 / 16}


class Bench:
    """Plans (random flat indices per repetition) and the timing of methods over them."""

    def __init__(self, case: Case, args):
        self.case = case
        self.args = args
        store = case.store
        self.dataset = lazypatch.PatchDataset(store, args.patch, args.stride)
        self.patch = self.dataset.patch_size
        self.batch = args.batch
        self.patch_bytes = int(np.prod(self.patch)) * store.channels * store.dtype.itemsize
        rng = np.random.default_rng(args.seed + 1)
        self.plans = [rng.integers(0, len(self.dataset), size=args.batch * args.batches)
                      for _ in range(args.repeats)]
        self.preload_seconds = None

    def check(self, name: str, run) -> None:
        """The method's last batch equals numpy slicing of the source (the oracle)."""
        result = run(self.plans[0][: 2 * self.batch])
        if result is None:
            return
        indices, got = result
        image_ids, origins = self.dataset.index.locate(np.asarray(indices, dtype=np.int64))
        ram = self.case.ram
        if ram is not None:
            expected = np.stack([ram[i][tuple(slice(o, o + p) for o, p in zip(origin, self.patch))]
                                 for i, origin in zip(image_ids.tolist(), origins.tolist())])
        else:
            expected = self.case.store.read_regions(image_ids, origins, self.patch)
        if not np.array_equal(np.asarray(got).reshape(expected.shape), expected):
            raise AssertionError(f"bench: {name} returned wrong patches")

    def run(self, methods: list) -> dict:
        """{name: {"patches_per_s": median, "rss_anon_growth_mib": max, "runs": [...]}}."""
        # NOTE [steady state]: "warm" means the store is in the page cache *and* mapped in
        # this process, as after a first epoch (or ImageStore.preload()); the one-time
        # cost of mapping it is reported apart.
        if self.case.store.nbytes < available_bytes() // 2:
            started = time.perf_counter()
            self.case.store.preload()
            self.preload_seconds = time.perf_counter() - started
        times, rss = {}, {}
        # worker processes run last, on their own: idle workers still slow the others here
        alone = [m for m in methods if "workers" not in m[0]]
        with_workers = [m for m in methods if "workers" in m[0]]
        for group in (alone, with_workers):
            runners = []
            for name, prepare, unit in group:
                run = prepare()
                if run is not None:
                    self.check(name, run)
                    runners.append((name, run, getattr(run, "fraction", FRACTIONS[unit])))
            for name, run, _ in runners:
                for label in [name] + [_threads_label(name, t) for t in getattr(run, "threads", ())]:
                    times[label], rss[label] = [], []
            for repeat, flat in enumerate(self.plans):
                # each repetition starts one method later: no method always runs first, or
                # always right after the same one (a slow stretch of the machine then hits
                # different methods in different repetitions, and medians absorb it)
                shift = repeat % max(len(runners), 1)
                for name, run, fraction in runners[shift:] + runners[:shift]:
                    before = proc_status().get("RssAnon", 0)
                    started = time.perf_counter()
                    run(flat)
                    seconds = time.perf_counter() - started
                    rss[name].append(proc_status().get("RssAnon", 0) - before)
                    times[name].append(len(flat) * fraction / seconds)
                    for threads in getattr(run, "threads", ()):  # the same reads, more threads
                        started = time.perf_counter()
                        run(flat, threads)
                        times[_threads_label(name, threads)].append(len(flat) / (time.perf_counter() - started))
                        rss[_threads_label(name, threads)].append(0.0)
            runners = run = None
            gc.collect()  # the DataLoaders go, and their persistent workers with them
        return {name: {"patches_per_s": statistics.median(values),
                       "rss_anon_growth_mib": max(rss[name]) if rss[name] else 0.0, "runs": values}
                for name, values in times.items()}

    def close(self) -> None:
        self.dataset.close()


def _threads_label(name: str, threads: int) -> str:
    """'raw pread (warm), 1 thread' -> 'raw pread (warm), 4 threads'."""
    return f"{name.rsplit(', ', 1)[0]}, {threads} threads"


def core_methods(bench: Bench) -> list:
    """lazypatch's read_batch and the two baselines: the per-patch loop in RAM, the raw copy."""
    ds, batch, patch = bench.dataset, bench.batch, bench.patch
    ram, store = bench.case.ram, bench.case.store

    def read_batch():
        def run(flat):
            for part in batches_of(flat, batch):
                last = ds.read_batch(part)
            return part, channels_last(last["image"])
        return run

    def loop():
        if ram is None:
            return None
        out = np.empty((batch,) + patch + ((store.channels,) if ram[0].ndim > len(patch) else ()), store.dtype)

        def run(flat):
            # the baseline at its best: Python ints, one slice copy per patch
            image_ids, origins = ds.index.locate(flat)
            for part, ids, boxes in zip(batches_of(flat, batch), batches_of(image_ids.tolist(), batch),
                                        batches_of(origins.tolist(), batch)):
                if len(patch) == 2:
                    h, w = patch
                    for k, (i, (y, x)) in enumerate(zip(ids, boxes)):
                        out[k] = ram[i][y:y + h, x:x + w]
                else:
                    d, h, w = patch
                    for k, (i, (z, y, x)) in enumerate(zip(ids, boxes)):
                        out[k] = ram[i][z:z + d, y:y + h, x:x + w]
            return part, out[: len(part)]
        return run

    def raw_copy():
        if not isinstance(ram, np.ndarray):
            return None
        flat_ram = ram.reshape(-1).view(np.uint8)
        size = batch * bench.patch_bytes
        if flat_ram.size < 2 * size:  # a tiny store: repeated, and copied in the CPU's caches
            flat_ram = np.resize(flat_ram, 2 * size)
        out = np.empty(size, np.uint8)
        starts = np.random.default_rng(5).integers(0, flat_ram.size - size + 1, 64).tolist()

        def run(flat):
            for k in range(len(batches_of(flat, batch))):
                np.copyto(out, flat_ram[starts[k % 64]:starts[k % 64] + size])
            return None
        return run

    return [("lazypatch read_batch", read_batch, "batch"), (LOOP, loop, "batch"), (COPY, raw_copy, "batch")]


def select(methods: list, only) -> list:
    """``--only``: methods whose name contains one of the comma-separated keys, and the
    baselines (the loop, the raw copy, cold raw pread)."""
    if not only:
        return methods
    keys = [k.strip() for k in only.split(",") if k.strip()]
    return [m for m in methods if m[0] in (LOOP, COPY) or m[0].startswith(COLD_PREAD)
            or any(k in m[0] for k in keys)]


# -- cold -----------------------------------------------------------------------------------
COLD_PREAD = "raw pread (cold)"


def cold_pread_methods(threads=(1, 4, 8, 16)) -> list:
    """``os.preadv`` of patch-sized extents at random page-aligned offsets of the store, in
    1 to 16 threads: what the disk delivers (the reference is the best of 1, 4 and 8)."""
    return [(f"{COLD_PREAD}, {t} thread{'s' if t > 1 else ''}", {"method": "pread", "threads": t})
            for t in threads]


def run_cold(bench: Bench, methods: list) -> dict:
    """Each repetition of each cold method in a fresh process (``_cold.py``), interleaved.

    ``methods``: (name, spec) pairs; the spec says what ``_cold.py`` reads.
    """
    # See NOTE [honest cold] in lazypatch/cli/_bench.py: every handle of this process is
    # closed first.
    bench.close()
    bench.case.store.close()
    gc.collect()
    store = bench.case.store
    results = {name: [] for name, _ in methods}
    for repeat, plan in enumerate(bench.plans):
        shift = repeat % max(len(methods), 1)
        for name, extra in methods[shift:] + methods[:shift]:
            spec = dict(path=store.path, flat=plan.tolist(), patch=list(bench.patch),
                        stride=list(bench.dataset.stride), batch=bench.batch,
                        patch_bytes=bench.patch_bytes, seed=repeat, **extra)
            done = subprocess.run([sys.executable, os.path.join(HERE, "_cold.py")], input=json.dumps(spec),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"bench: the cold repetition of {name!r} failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result["cached_after_evict"] > 0.05:
                print(f"bench: warning: {result['cached_after_evict']:.0%} of the store stayed "
                      "in the page cache after eviction (is it mapped by another process?)",
                      file=sys.stderr)
            results[name].append(result["patches_per_s"])
    return {name: {"patches_per_s": statistics.median(values), "rss_anon_growth_mib": None, "runs": values}
            for name, values in results.items()}


# -- report ----------------------------------------------------------------------------------
def report(results: dict, bench: Bench, args, command: str) -> dict:
    loop = results.get(LOOP, {}).get("patches_per_s")
    copy = results.get(COPY, {}).get("patches_per_s")
    # the reference: the best of 1, 4 and 8 threads (16 is shown, not used)
    best_pread = max((v["patches_per_s"] for k, v in results.items()
                      if k.startswith(COLD_PREAD) and not k.endswith("16 threads")), default=None)
    rows = []
    for name, value in results.items():
        rate = value["patches_per_s"]
        rows.append({
            "method": name,
            "patches_per_s": rate,
            "mb_per_s": rate * bench.patch_bytes / 1e6,
            "vs_loop": rate / loop if loop else None,
            "vs_raw_copy": rate / copy if copy else None,
            "vs_best_cold_pread": rate / best_pread if best_pread and "cold" in name else None,
            "rss_anon_growth_mib": value["rss_anon_growth_mib"],
        })
    store = bench.case.store
    shapes = store.shapes
    meta = {
        "command": command,
        "date": now(),
        "machine": machine(),
        "store": store.path if not bench.case.synthetic else "synthetic",
        "images": len(store),
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
        "channels": store.channels,
        "dtype": store.dtype.name,
        "layout": store.layout,
        "tile": list(store.tile) if store.tile else None,
        "compression": store.compression,
        "data_gb": bench.case.data_bytes / 1e9,
        "patch": list(bench.patch),
        "stride": list(bench.dataset.stride),
        "batch": bench.batch,
        "patches_per_repeat": bench.batch * args.batches,
        "repeats": args.repeats,
        "preload_seconds": bench.preload_seconds,
        "memory": proc_status(),
    }
    return {"meta": meta, "rows": rows}


def extent(low, high) -> str:
    """'512x512', or per axis 'min-max' where the images differ: '300-512 x 400-600'."""
    if list(low) == list(high):
        return "x".join(str(v) for v in low)
    return " x ".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(low, high))


def print_rows(header: list, lines: list, markdown: bool) -> None:
    """A table: markdown, or columns aligned (the first left, the others right)."""
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(h), *(len(line[k]) for line in lines)) for k, h in enumerate(header)]
    for line in [header] + lines:
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(line, widths))))


def print_table(data: dict, markdown: bool) -> None:
    meta, rows = data["meta"], data["rows"]

    def fmt(value, spec):
        return "" if value is None else format(value, spec)

    header = ["method", "patches/s", "MB/s", "x loop", "x raw copy", "x best cold pread (1/4/8 thr.)",
              "RssAnon +MiB"]
    lines = [[r["method"], fmt(r["patches_per_s"], ",.0f"), fmt(r["mb_per_s"], ",.0f"),
              fmt(r["vs_loop"], ".2f"), fmt(r["vs_raw_copy"], ".2f"),
              fmt(r["vs_best_cold_pread"], ".2f"), fmt(r["rss_anon_growth_mib"], ".1f")]
             for r in rows]
    tile = f", tile {extent(meta['tile'], meta['tile'])}" if meta["tile"] else ""
    summary = (f"{meta['images']:,} images of {extent(meta['shape_min'], meta['shape_max'])} "
               f"x{meta['channels']} {meta['dtype']} ({meta['data_gb']:.2f} GB, layout {meta['layout']}"
               f"{tile}{', ' + meta['compression'] if meta['compression'] else ''}), patch "
               f"{extent(meta['patch'], meta['patch'])} stride {extent(meta['stride'], meta['stride'])}, "
               f"batches of {meta['batch']}, {meta['patches_per_repeat']:,} patches x {meta['repeats']} "
               "repeats (medians)")
    if meta.get("preload_seconds") is not None:
        summary += f"; store preloaded and mapped first ({meta['preload_seconds']:.2f} s)"
    if markdown:
        print(f"`{meta['command']}` on {meta['date']} ({meta['machine']})  ")
        print(summary)
        print()
    else:
        print(summary)
    print_rows(header, lines, markdown)
