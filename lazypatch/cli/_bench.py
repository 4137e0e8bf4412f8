"""``lazypatch bench``: random-access throughput, side by side with baselines.

Every method reads the same random grid patches (the same flat indices, in
the same batches) in the same run; repetitions interleave the methods so
drift hits them alike; each figure is the median over repetitions. Before
anything is timed, each method's first batch is compared with the oracle
(numpy slicing of the images in RAM).

Warm methods (the data is in the page cache):

* ``lazypatch read_batch`` - ``ds.read_batch(indices)``, one dict of tensors;
* ``lazypatch DataLoader (default collate)`` - ``DataLoader(ds, batch_size=B)``;
* ``lazypatch DataLoader (lazypatch.collate)``;
* ``lazypatch ds[i]`` - one sample at a time;
* ``per-patch loop (RAM)`` - ``out[k] = a[i, y:y+p, x:x+p]`` over the images in RAM;
* ``raw copy`` - one ``np.copyto`` of the same number of bytes;
* ``h5py per patch, contiguous`` / ``chunked`` - h5py slicing of (N, H, W, C) copies;
* ``seed on-the-fly dataset`` - the seed's dataset, unmodified, over the h5py copy;
* ``raw pread`` - ``os.pread`` of patch-sized extents at random store offsets.

``--cold`` runs each repetition of the cold methods in a fresh process after
``fsync`` and ``POSIX_FADV_DONTNEED`` (no process keeps the store mapped).
"""

from __future__ import annotations

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
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _bench_peers
from ._bench_system import proc_status


def add_arguments(parser) -> None:
    from ._args import int_list as _int_list

    parser.add_argument("store", nargs="?", help="a store to measure (default: a synthetic one)")
    parser.add_argument("--patch", type=_int_list, default=64, help="patch size (default 64)")
    parser.add_argument("--stride", type=_int_list, help="grid stride (default: the patch size)")
    parser.add_argument("--batch", type=int, default=256, help="patches per batch (default 256)")
    parser.add_argument("--batches", type=int, default=40, help="batches per repetition (default 40)")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions; figures are medians (default 7)")
    parser.add_argument("--size-gb", type=float, default=0.5, help="synthetic store size in GB (default 0.5)")
    parser.add_argument("--image-size", type=int, default=512, help="synthetic image extent per axis")
    parser.add_argument("--ndim", type=int, default=2, choices=(2, 3), help="synthetic spatial axes")
    parser.add_argument("--channels", type=int, default=3, help="synthetic channels (0: no channel axis)")
    parser.add_argument("--dtype", default="uint8", help="synthetic dtype")
    parser.add_argument("--tile", type=_int_list, help="synthetic store tile (default 64 / 32)")
    parser.add_argument("--layout", default="tiled", choices=("tiled", "contiguous", "chunked"))
    parser.add_argument("--compression", choices=("gzip", "lzf"))
    parser.add_argument("--masks", action="store_true", help="synthetic store with masks")
    parser.add_argument("--cold", action="store_true", help="also measure with the page cache evicted")
    parser.add_argument("--only", help="comma-separated substrings: run only matching methods")
    parser.add_argument("--workdir", help="where synthetic files go (default: a temporary folder)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overheads", action="store_true",
                        help="instead: locate at 10^6 images, open time, ds[i] latency, bytes per image")
    parser.add_argument("--build", action="store_true",
                        help="instead: write_store against plain file writes (MB/s)")
    parser.add_argument("--sampling", action="store_true",
                        help="instead: sampler cost, ClassSampler build, aggregation speed and memory")
    parser.add_argument("--memory", action="store_true",
                        help="instead: RssAnon while reading --patches random patches, main + 2 workers")
    parser.add_argument("--soak", action="store_true",
                        help="instead: --epochs epochs of --patches patches, 2 persistent workers; "
                             "RssAnon slope per epoch (a leak check)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for --soak (default 5)")
    parser.add_argument("--patches", type=int, default=100_000,
                        help="patches for --memory, per epoch for --soak (default 100000)")
    parser.add_argument("--cold-worker", help=argparse_suppress())


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


# -- memory -----------------------------------------------------------------------------


# -- data -----------------------------------------------------------------------------------
class Case:
    """The data of one benchmark: the store, the same images in RAM, h5py copies."""

    def __init__(self, args, load: bool = True):
        from ..store import ImageStore
        from ..ingest import write_store

        self.args = args
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="lazypatch-bench-")
        self.own_workdir = args.workdir is None
        os.makedirs(self.workdir, exist_ok=True)
        rng = np.random.default_rng(args.seed)
        if args.store:
            self.store = ImageStore(args.store)
            self.synthetic = False
        else:
            shape = (args.image_size,) * args.ndim + ((args.channels,) if args.channels else ())
            itemsize = np.dtype(args.dtype).itemsize
            count = max(2, int(args.size_gb * 1e9 // (np.prod(shape) * itemsize)))
            print(f"bench: writing a synthetic store of {count} random images {shape} "
                  f"{args.dtype} ({count * np.prod(shape) * itemsize / 1e9:.2f} GB) "
                  f"in {self.workdir}", file=sys.stderr)
            if count * np.prod(shape) * itemsize > _available_bytes() // 3:  # larger than RAM
                images = _RandomImages(count, shape, np.dtype(args.dtype), args.seed)
            else:
                images = _random_images(rng, count, shape, np.dtype(args.dtype))
            masks = None
            if args.masks:
                masks = (rng.integers(0, 4, size=shape[:args.ndim], dtype=np.uint8) for _ in range(count))
            path = os.path.join(self.workdir, "bench.h5")
            started = time.perf_counter()
            self.store = write_store(
                path, images, masks=masks, spatial_ndim=args.ndim, layout=args.layout,
                tile=args.tile, compression=args.compression, overwrite=True, progress=False,
            )
            self.build_seconds = time.perf_counter() - started
            self.synthetic = True
        store = self.store
        self.patch_bytes = 0
        self.ram = None
        pixels = int(store.shapes.prod(axis=1).sum()) * store.channels * store.dtype.itemsize
        self.data_bytes = pixels
        if load and pixels < _available_bytes() // 3:
            self.ram = _load(store)

    def close(self) -> None:
        self.store.close()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _RandomImages:
    """Distinct random images made one at a time (a store larger than RAM)."""

    class _Image:
        def __init__(self, shape, dtype, seed):
            self.shape, self.dtype, self.seed, self._array = shape, dtype, seed, None

        def __getitem__(self, key):
            if self._array is None:
                self._array = _random_images(np.random.default_rng(self.seed), 1, self.shape,
                                             self.dtype)[0]
            return self._array[key]

    def __init__(self, count, image_shape, dtype, seed):
        self.count, self.image_shape, self.dtype, self.seed = count, image_shape, dtype, seed

    def __len__(self):
        return self.count

    def __getitem__(self, position):
        if not 0 <= position < self.count:
            raise IndexError(position)
        return self._Image(self.image_shape, self.dtype, (self.seed, position))


def _random_images(rng, count, shape, dtype):
    if dtype.kind == "f":
        return np.asarray(rng.random((count,) + shape, dtype=np.float32), dtype=dtype)
    info = np.iinfo(dtype)
    return rng.integers(0, min(info.max, 1 << 16) + 1, size=(count,) + shape, dtype=dtype)


def _available_bytes() -> int:
    status = proc_status()
    return int(status.get("MemAvailable", 8 << 10) * (1 << 20))


def _load(store):
    """The store's images in RAM: one stacked array when all have one shape, else a list."""
    shapes = store.shapes
    images = [store.read_region(i, (0,) * store.spatial_ndim, tuple(shapes[i].tolist()))
              for i in range(len(store))]
    if (shapes == shapes[0]).all():
        return np.stack(images)
    return images


# -- methods ------------------------------------------------------------------------------------
def _channels_last(images):
    """(B, C, *patch) tensor -> (B, *patch, C) numpy."""
    return np.moveaxis(images.numpy(), 1, -1)


def seed_dataset_class():
    """The seed's OnTheFlyPatchDataset, verbatim (../shared/seed/)."""
    from torch.utils.data import Dataset

    class OnTheFlyPatchDataset(Dataset):
        def __init__(self, images, patch_size, stride):
            self.images = images
            self.patch_size = patch_size
            self.stride = stride

            # Pre-compute indices to determine the number of patches without storing them
            self.num_patches_per_img = []
            for img in images:
              h, w, _ = img.shape
              num_patches_h = (h - patch_size) // stride + 1
              num_patches_w = (w - patch_size) // stride + 1
              self.num_patches_per_img.append(num_patches_h * num_patches_w)

            self.total_patches = sum(self.num_patches_per_img)

        def __len__(self):
            return self.total_patches

        def __getitem__(self, idx):
            # Figure out which image and which patch coordinates to extract
            img_index = 0
            while idx >= self.num_patches_per_img[img_index]:
               idx -= self.num_patches_per_img[img_index]
               img_index +=1

            img = self.images[img_index]
            h, w, _ = img.shape
            num_patches_w = (w - self.patch_size) // self.stride + 1

            y = (idx // num_patches_w) * self.stride
            x = (idx % num_patches_w) * self.stride

            patch = img[y:y+self.patch_size, x:x+self.patch_size]
            return patch, img_index

    return OnTheFlyPatchDataset


class Bench:
    def __init__(self, case: Case, args):
        import torch

        from ..data.dataset import PatchDataset

        self.case = case
        self.args = args
        store = case.store
        self.dataset = PatchDataset(store, args.patch, args.stride)
        self.patch = self.dataset.patch_size
        self.batch = args.batch
        self.patch_bytes = int(np.prod(self.patch)) * store.channels * store.dtype.itemsize
        rng = np.random.default_rng(args.seed + 1)
        total = args.batch * args.batches
        self.plans = [rng.integers(0, len(self.dataset), size=total) for _ in range(args.repeats)]
        self.torch = torch
        self.results = {}
        self.checked = {}

    # each method: (name, prepare() -> run(flat) callable or None when not applicable, per-patch?)
    def methods(self):
        args, store, ds = self.args, self.case.store, self.dataset
        patch, batch = self.patch, self.batch
        nd = store.spatial_ndim
        torch = self.torch
        from torch.utils.data import DataLoader

        from ..data.dataset import collate

        def batches(flat):
            return [flat[k:k + batch] for k in range(0, len(flat), batch)]

        def m_read_batch():
            def run(flat):
                for part in batches(flat):
                    last = ds.read_batch(part)
                return part, _channels_last(last["image"])
            return run

        def m_loader(collate_fn):
            def prepare():
                def run(flat):
                    loader = DataLoader(ds, batch_size=batch, sampler=flat.tolist(),
                                        num_workers=0, collate_fn=collate_fn)
                    for last in loader:
                        pass
                    return last["index"].numpy(), _channels_last(last["image"])
                return run
            return prepare

        def m_batch_loader():
            from torch.utils.data import BatchSampler

            def run(flat):
                sampler = BatchSampler(flat.tolist(), batch, drop_last=False)
                for last in DataLoader(ds, batch_size=None, sampler=sampler, num_workers=0):
                    pass
                return last["index"].numpy(), _channels_last(last["image"])
            return run

        def m_getitem():
            def run(flat):
                for i in flat[: max(len(flat) // 8, 1)].tolist():
                    sample = ds[i]
                return [i], _channels_last(sample["image"][None])
            return run

        ram = self.case.ram

        def m_loop():
            if ram is None:
                return None
            out = np.empty((batch,) + patch + (store.channels,), store.dtype)

            def run(flat):
                # the baseline at its best: Python ints, one slice copy per patch
                image_ids, origins = ds.index.locate(flat)
                for part_ids, part_origins in zip(batches(image_ids.tolist()), batches(origins.tolist())):
                    for k, (i, origin) in enumerate(zip(part_ids, part_origins)):
                        if nd == 2:
                            y, x = origin
                            out[k] = ram[i][y:y + patch[0], x:x + patch[1]].reshape(out.shape[1:])
                        else:
                            z, y, x = origin
                            out[k] = ram[i][z:z + patch[0], y:y + patch[1], x:x + patch[2]].reshape(out.shape[1:])
                return batches(flat)[-1], out[: len(part_ids)]
            return run

        def m_raw_copy():
            if ram is None or not isinstance(ram, np.ndarray):
                return None
            flat_ram = ram.reshape(-1).view(np.uint8)
            size = batch * self.patch_bytes
            out = np.empty(size, np.uint8)
            starts = np.random.default_rng(5).integers(0, flat_ram.size - size, 64)

            def run(flat):
                for k in range(len(batches(flat))):
                    start = int(starts[k % len(starts)])
                    np.copyto(out, flat_ram[start:start + size])
                return None
            return run

        def m_h5(chunked):
            def prepare():
                if ram is None or not isinstance(ram, np.ndarray) or store.channels == 0:
                    return None
                import h5py

                path = os.path.join(self.case.workdir, "chunked.h5" if chunked else "contiguous.h5")
                if not os.path.exists(path):
                    with h5py.File(path, "w") as f:
                        chunks = (1,) + patch + ram.shape[1 + nd:] if chunked else None
                        f.create_dataset("images", data=ram, chunks=chunks)
                    _bench_peers.flush(path)
                handle = h5py.File(path, "r")
                data = handle["images"]
                out = np.empty((batch,) + patch + ram.shape[1 + nd:], store.dtype)

                def run(flat):
                    image_ids, origins = ds.index.locate(flat)
                    for part_ids, part_origins in zip(batches(image_ids), batches(origins)):
                        for k, (i, origin) in enumerate(zip(part_ids.tolist(), part_origins.tolist())):
                            box = tuple(slice(o, o + p) for o, p in zip(origin, patch))
                            out[k] = data[(i,) + box].reshape(out.shape[1:])
                    return batches(flat)[-1], out[: len(part_ids)]
                run.handle = handle
                return run
            return prepare

        def m_seed():
            if ram is None or not isinstance(ram, np.ndarray) or nd != 2 or ram.ndim != 4:
                return None
            if ds.edge != "drop" or len(set(ds.patch_size)) != 1 or len(set(ds.stride)) != 1:
                return None
            import h5py

            path = os.path.join(self.case.workdir, "contiguous.h5")
            if not os.path.exists(path):
                with h5py.File(path, "w") as f:
                    f.create_dataset("images", data=ram)
                _bench_peers.flush(path)
            handle = h5py.File(path, "r")
            seed = seed_dataset_class()(handle["images"], patch[0], ds.stride[0])
            out = np.empty((batch,) + patch + (store.channels,), store.dtype)

            def run(flat):
                part = flat[: max(len(flat) // 16, 1)]
                for k, i in enumerate(part.tolist()):
                    out[k % batch] = seed[i][0]
                return None
            run.handle = handle
            run.fraction = 1 / 16
            return run

        def m_store_per_patch():
            def run(flat):
                part = flat[: max(len(flat) // 8, 1)]
                image_ids, origins = ds.index.locate(part)
                for i, origin in zip(image_ids.tolist(), origins.tolist()):
                    region = store.read_region(i, origin, patch)
                return part[-1:], region[None]
            return run

        def m_raw_pread():
            if store.layout == "chunked":
                return None
            fd = os.open(store.path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            length = self.patch_bytes
            rng = np.random.default_rng(11)
            buffers = [bytearray(length) for _ in range(batch)]

            def run(flat, threads=1):
                offsets = rng.integers(0, size - length, len(flat)) // 4096 * 4096
                views = [memoryview(b) for b in buffers]

                def job(part, base):
                    for k, offset in enumerate(part):
                        os.preadv(fd, [views[(base + k) % batch]], int(offset))
                if threads == 1:
                    job(offsets.tolist(), 0)
                else:
                    with ThreadPoolExecutor(threads) as pool:
                        chunks = np.array_split(offsets, threads)
                        list(pool.map(job, [c.tolist() for c in chunks], range(threads)))
                return None
            run.fd = fd
            return run

        table = [
            ("lazypatch read_batch", m_read_batch, "batch"),
            ("lazypatch DataLoader (batch_size=None, BatchSampler)", m_batch_loader, "batch"),
            ("lazypatch DataLoader (lazypatch.collate)", m_loader(collate), "batch"),
            ("lazypatch DataLoader (default collate)", m_loader(None), "batch"),
            ("lazypatch ds[i]", m_getitem, "eighth"),
            ("per-patch loop (RAM)", m_loop, "batch"),
            ("raw copy", m_raw_copy, "bytes"),
            ("h5py per patch, contiguous", m_h5(False), "batch"),
            ("h5py per patch, chunked", m_h5(True), "batch"),
            ("seed on-the-fly dataset", m_seed, "sixteenth"),
            ("raw pread (warm), 1 thread", m_raw_pread, "batch"),
        ]
        from . import _bench_peers as peers

        if store.layout == "chunked":
            table.append(("h5py per patch, this store (ImageStore.read_region)", m_store_per_patch, "eighth"))
        table += peers.worker_methods(self)
        table += [
            ("patchly GridSampler (memory map)", lambda: peers.patchly_method(self), "batch"),
            ("MONAI GridPatchDataset + DataLoader (grid order)", lambda: peers.monai_method(self), "batch"),
            ("tensorstore zarr3, one future per patch", lambda: peers.tensorstore_method(self), "batch"),
        ]
        if args.only:
            keys = [k.strip() for k in args.only.split(",")]
            table = [row for row in table if any(k in row[0] for k in keys) or row[0] in
                     ("per-patch loop (RAM)", "raw copy")]
        return table

    def check(self, name, run) -> None:
        """The method's last batch equals numpy slicing of the source (the oracle)."""
        result = run(self.plans[0][: 2 * self.batch])
        if result is None:
            return
        indices, got = result
        image_ids, origins = self.dataset.index.locate(np.asarray(indices, dtype=np.int64))
        expected = self.case.store.read_regions(image_ids, origins, self.patch)
        if not np.array_equal(np.asarray(got).reshape(expected.shape), expected):
            raise AssertionError(f"bench: {name} returned wrong patches")
        self.checked[name] = True

    def run(self) -> dict:
        # NOTE [steady state]: "warm" means the store is in the page cache *and* mapped in
        # this process, as after a first epoch (or ImageStore.preload()); the one-time
        # cost of mapping it is reported apart.
        started = time.perf_counter()
        if self.case.store.nbytes < _available_bytes() // 2:
            self.case.store.preload()
            self.preload_seconds = time.perf_counter() - started
        times, rss = {}, {}
        methods = self.methods()
        # worker processes run last, on their own: idle workers still slow the others here
        alone = [m for m in methods if "workers" not in m[0]]
        with_workers = [m for m in methods if "workers" in m[0]]
        for group in (alone, with_workers):
            runners = []
            for name, prepare, unit in group:
                run = prepare()
                if run is not None:
                    self.check(name, run)
                    runners.append((name, run, unit))
            for name, _, _ in runners:
                times[name], rss[name] = [], []
            for rep, flat in enumerate(self.plans):
                # each repetition starts one method later: no method always runs first, or
                # always right after the same one (a slow stretch of the machine then hits
                # different methods in different repetitions, and medians absorb it)
                shift = rep % max(len(runners), 1)
                for name, run, unit in runners[shift:] + runners[:shift]:
                    fraction = getattr(run, "fraction", 1 / 8 if unit == "eighth" else 1.0)
                    before = proc_status().get("RssAnon", 0)
                    started = time.perf_counter()
                    run(flat)
                    seconds = time.perf_counter() - started
                    rss[name].append(proc_status().get("RssAnon", 0) - before)
                    times[name].append(len(flat) * fraction / seconds)
            if group is alone:
                self._raw_pread = dict((n, r) for n, r, _ in runners).get("raw pread (warm), 1 thread")
            runners = run = None
            gc.collect()  # the DataLoaders go, and their persistent workers with them
        if not self.args.only or "pread" in self.args.only:
            for threads in (4, 8):
                name = f"raw pread (warm), {threads} threads"
                run = getattr(self, "_raw_pread", None)
                if run is None:
                    break
                times[name] = []
                rss[name] = []
                for flat in self.plans:
                    started = time.perf_counter()
                    run(flat, threads)
                    times[name].append(len(flat) / (time.perf_counter() - started))
                    rss[name].append(0.0)
        return {name: {"patches_per_s": statistics.median(values),
                       "rss_anon_growth_mib": max(rss[name]) if rss[name] else 0.0,
                       "runs": values}
                for name, values in times.items()}


def profile_batch(bench: Bench, repeats: int = 200) -> dict:
    """Median microseconds per batch spent in each stage of ``read_batch`` and of
    torch's default DataLoader path (same random batches)."""
    from torch.utils.data import default_collate

    ds, store = bench.dataset, bench.case.store
    handles = store._get_handles()
    rng = np.random.default_rng(bench.args.seed + 7)
    batches = [rng.integers(0, len(ds), bench.batch) for _ in range(repeats)]
    located = [ds.index.locate(flat) for flat in batches]
    out = np.empty((bench.batch, store.channels) + bench.patch, store.dtype)

    def median_us(function, items):
        for item in items[:10]:
            function(item)
        times = []
        for item in items:
            started = time.perf_counter()
            function(item)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e6

    stages = {
        "locate (index)": median_us(ds.index.locate, batches),
        "page-cache probe (io=auto)": median_us(lambda p: store._batch_mode(handles, *p), located),
        "plan + gather (store)": median_us(
            lambda p: store._pixels.read_boxes(handles, p[0], p[1], bench.patch, out, 0,
                                               store._batch_mode(handles, *p), ds._interior), located),
    }
    total = median_us(ds.read_batch, batches)
    # the rest, as a difference of medians (noise can make it negative: shown as 0)
    stages["indices, buffer, tensors, dict"] = max(total - sum(stages.values()), 0)
    stages["read_batch, in all"] = total
    stages["__getitems__ + default_collate, in all"] = median_us(
        lambda flat: default_collate(ds.__getitems__(flat.tolist())), batches)
    return stages


# -- cold -------------------------------------------------------------------------------------
def evict(path: str) -> None:
    """Drop a file's pages from the page cache (it must not be mapped anywhere)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path: str, probes: int = 64) -> float:
    """Fraction of random pages of a file in the page cache (RWF_NOWAIT reads)."""
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # a miss must not read ahead
    try:
        size = os.fstat(fd).st_size
        hits = 0
        buffer = bytearray(1)
        for offset in np.random.default_rng(0).integers(0, size, probes).tolist():
            try:
                hits += os.preadv(fd, [buffer], offset, os.RWF_NOWAIT) == 1
            except BlockingIOError:
                pass
        return hits / probes
    finally:
        os.close(fd)


def cold_worker(spec: str) -> None:
    """One cold repetition in a fresh process; prints a JSON result line."""
    config = json.loads(spec)
    path, method = config["path"], config["method"]
    flat = np.asarray(config["flat"], dtype=np.int64)
    from ..data.dataset import PatchDataset
    from ..store import ImageStore

    batch = config["batch"]
    if method.startswith("lazypatch"):
        # warm the code paths (imports, thread pools, first-call setup), not the data
        with ImageStore(path, io="pread") as warmup:
            PatchDataset(warmup, config["patch"], config["stride"]).read_batch(flat[-batch:][::-1])
    # NOTE [one-off collection]: the first full garbage collection after importing torch
    # walks every import-time object (~50 ms); freeze them so a short run measures reads.
    import gc

    gc.collect()
    gc.freeze()
    if method.startswith("tensorstore"):
        from . import _bench_peers as peers

        with ImageStore(path) as store:  # the index only; the store is not read
            locate = PatchDataset(store, config["patch"], config["stride"]).index.locate
        run = peers.tensorstore_reader(config["zarr"], locate, config["patch"], batch)
        run(flat[-batch:][::-1])  # warm the code paths, then drop what that read
        chunks = _bench_peers.tree_files(config["zarr"])
        for chunk in chunks:
            evict(chunk)
        picks = np.random.default_rng(0).choice(len(chunks), min(64, len(chunks)), replace=False)
        still_cached = float(np.mean([cached_fraction(chunks[k], probes=1) for k in picks]))
        started = time.perf_counter()
        run(flat)
        seconds = time.perf_counter() - started
        print(json.dumps({"patches_per_s": len(flat) / seconds, "cached_after_evict": still_cached}))
        return
    evict(path)
    still_cached = cached_fraction(path)
    if method.startswith("lazypatch"):
        io = "pread" if "io=pread" in method else "auto"
        store = ImageStore(path, io=io, io_threads=config.get("threads", 8))
        ds = PatchDataset(store, config["patch"], config["stride"])
        ahead = "prefetch" in method
        started = time.perf_counter()
        for k in range(0, len(flat), batch):
            if ahead and k + batch < len(flat):
                ds.prefetch(flat[k + batch:k + 2 * batch])
            ds.read_batch(flat[k:k + batch])
        seconds = time.perf_counter() - started
    else:
        threads = config["threads"]
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        length = config["patch_bytes"]
        rng = np.random.default_rng(config["seed"])
        offsets = rng.integers(0, size - length, len(flat)) // 4096 * 4096
        started = time.perf_counter()

        def job(part):
            buffer = bytearray(length)
            for offset in part:
                os.preadv(fd, [buffer], int(offset))
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(job, [c.tolist() for c in np.array_split(offsets, threads)]))
        seconds = time.perf_counter() - started
    print(json.dumps({"patches_per_s": len(flat) / seconds, "cached_after_evict": still_cached}))


def run_cold(bench: Bench) -> dict:
    # NOTE [honest cold]: pages mapped by a live process cannot be evicted, so every
    # handle of this process is closed first; each repetition runs in a fresh process.
    bench.dataset.store.close()
    bench.case.store.close()
    import gc

    gc.collect()
    store = bench.case.store
    if store.layout == "chunked":
        methods = [("lazypatch read_batch, cold, h5py", {})]
    else:
        methods = [("lazypatch read_batch, cold, io=pread", {"threads": 8}),
                   ("lazypatch read_batch, cold, io=auto", {"threads": 8}),
                   ("lazypatch read_batch + prefetch(next), cold, io=auto", {"threads": 8})]
    methods += [(f"raw pread (cold), {t} thread{'s' if t > 1 else ''}", {"threads": t}) for t in (1, 4, 8, 16)]
    from . import _bench_peers as peers

    if peers.tensorstore_applies(bench) and bench.case.store.spatial_ndim == 2:
        zarr = peers.tensorstore_copy(bench.case.workdir, bench.case.ram, bench.patch)
        methods.append(("tensorstore zarr3, cold, one future per patch", {"zarr": zarr}))
    results = {name: [] for name, _ in methods}
    count = len(bench.plans[0])
    for rep, plan in enumerate(bench.plans):  # repetitions interleave the methods
        for name, extra in methods:
            spec = dict(path=store.path, method=name, flat=plan[:count].tolist(),
                        patch=list(bench.patch), stride=list(bench.dataset.stride),
                        batch=bench.batch, patch_bytes=bench.patch_bytes, seed=rep, **extra)
            output = subprocess.run(
                [sys.executable, "-m", "lazypatch", "bench", "--cold-worker", json.dumps(spec)],
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            result = json.loads(output)
            if result["cached_after_evict"] > 0.05:
                print(f"bench: warning: {result['cached_after_evict']:.0%} of the store stayed "
                      "in the page cache after eviction (is it mapped by another process?)",
                      file=sys.stderr)
            results[name].append(result["patches_per_s"])
    return {name: {"patches_per_s": statistics.median(values), "rss_anon_growth_mib": None,
                   "runs": values}
            for name, values in results.items()}


# -- report -------------------------------------------------------------------------------------
def report(results: dict, bench: Bench, args, command: str) -> dict:
    loop = results.get("per-patch loop (RAM)", {}).get("patches_per_s")
    copy = results.get("raw copy", {}).get("patches_per_s")
    # the reference: the best of 1, 4 and 8 threads (16 is shown, not used)
    best_pread = max((v["patches_per_s"] for k, v in results.items()
                      if k.startswith("raw pread (cold)") and not k.endswith("16 threads")), default=None)
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
    meta = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "store": store.path if not bench.case.synthetic else "synthetic",
        "images": len(store),
        "image_shape": store.shapes[0].tolist(),
        "channels": store.channels,
        "dtype": store.dtype.name,
        "layout": store.layout,
        "tile": store.tile,
        "compression": store.compression,
        "data_gb": bench.case.data_bytes / 1e9,
        "patch": list(bench.patch),
        "stride": list(bench.dataset.stride),
        "batch": bench.batch,
        "patches_per_repeat": bench.batch * args.batches,
        "repeats": args.repeats,
        "preload_seconds": getattr(bench, "preload_seconds", None),
        "memory": proc_status(),
    }
    return {"meta": meta, "rows": rows}


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
    summary = (f"{meta['images']} images {meta['image_shape']} x{meta['channels']} {meta['dtype']} "
               f"({meta['data_gb']:.2f} GB, layout {meta['layout']}, tile {meta['tile']}), patch "
               f"{meta['patch']} stride {meta['stride']}, batches of {meta['batch']}, "
               f"{meta['patches_per_repeat']} patches x {meta['repeats']} repeats (medians)")
    if meta.get("preload_seconds") is not None:
        summary += f"; store preloaded and mapped first ({meta['preload_seconds']:.2f} s)"
    if markdown:
        print(f"`{meta['command']}` on {meta['date']} ({meta['machine']})  ")
        print(summary)
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    print(summary)
    widths = [max(len(h), *(len(line[k]) for line in lines)) for k, h in enumerate(header)]
    print("  ".join(h.ljust(w) if k == 0 else h.rjust(w) for k, (h, w) in enumerate(zip(header, widths))))
    for line in lines:
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(line, widths))))


def run(args) -> int:
    if args.cold_worker:
        cold_worker(args.cold_worker)
        return 0
    command = "lazypatch bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "lazypatch bench"
    if args.overheads or args.build or args.sampling:
        from . import _bench_system

        data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
                **_bench_system.run(args)}
        print(json.dumps(data, indent=2))
        _write_json(args, data)
        return 0
    case = Case(args, load=not (args.memory or args.soak))
    try:
        if args.soak:
            from ._bench_system import soak_run

            data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
                    "store_gb": case.store.nbytes / 1e9,
                    **soak_run(case.store.path, args.patch, args.epochs, args.patches, args.batch)}
            print_soak(data)
        elif args.memory:
            from ._bench_system import memory_run

            data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
                    "store_gb": case.store.nbytes / 1e9, "ram_gb": _available_bytes() / 1e9,
                    **memory_run(case.store.path, args.patch, args.patches, args.batch)}
            print_memory(data)
        else:
            bench = Bench(case, args)
            results = bench.run()
            stages = profile_batch(bench)
            if args.cold:
                results.update(run_cold(bench))
            data = report(results, bench, args, command)
            data["stages_us_per_batch"] = stages
            print_table(data, args.markdown)
            print_stages(stages, bench.batch, args.markdown)
        _write_json(args, data)
    finally:
        case.close()
    return 0


def _write_json(args, data) -> None:
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(data, f, indent=2)


def print_stages(stages: dict, batch: int, markdown: bool) -> None:
    print()
    print(f"Where the time goes, per batch of {batch} (median microseconds):")
    if markdown:
        print()
        print("| stage | us per batch |")
        print("|---|---:|")
    for name, value in stages.items():
        print(f"| {name} | {value:,.0f} |" if markdown else f"  {name:<42} {value:10,.0f}")


def print_soak(data: dict) -> None:
    print(f"`{data['command']}` on {data['date']}: {data['epochs']} epochs x "
          f"{data['patches_per_epoch']} patches, {data['workers']} persistent workers, store "
          f"{data['store_gb']:.1f} GB, {np.median(data['seconds_per_epoch']):.1f} s per epoch")
    print("| process | RssAnon at each epoch's end (MiB) | slope (MiB/epoch) | RssFile at the end (MiB) |")
    print("|---|---|---:|---:|")
    for name, row in data["processes"].items():
        anon = ", ".join(f"{v:.1f}" for v in row["rss_anon_mib"])
        print(f"| {name} | {anon} | {row['rss_anon_slope_mib_per_epoch']:+.2f} | {row['rss_file_mib'][-1]:.0f} |")


def print_memory(data: dict) -> None:
    print(f"`{data['command']}` on {data['date']}: {data['patches']} random patches per process, "
          f"store {data['store_gb']:.1f} GB, MemAvailable {data['ram_gb']:.1f} GB at start")
    print("| process | RssAnon at start (MiB) | RssAnon peak (MiB) | growth (MiB) |")
    print("|---|---:|---:|---:|")
    rows = [("main (read_batch)", data["main"])] + [(f"worker {k} (DataLoader)", w)
                                                    for k, w in enumerate(data["workers"])]
    for name, row in rows:
        print(f"| {name} | {row['rss_anon_start_mib']:.1f} | {row['rss_anon_peak_mib']:.1f} | "
              f"{row['growth_mib']:.1f} |")
