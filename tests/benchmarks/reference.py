"""The reference benchmark: every read path of lazypatch side by side with baselines and peers.

``python tests/benchmarks/reference.py --size-gb 2.147 --cold --markdown`` writes the
reference store (2,730 random RGB uint8 512x512 images, 2.15 GB) and reads 64x64
grid patches in batches of 256. Every method reads the same random patches (the
same flat indices, in the same batches) in the same run; repetitions interleave
the methods, each starting one method later, so drift hits them alike; each
figure is the median over repetitions. Before anything is timed, each method's
last batch is compared with the oracle (numpy slicing of the images in RAM).

Warm methods (the store in the page cache and mapped, ``ImageStore.preload()``):

* ``lazypatch read_batch`` - ``ds.read_batch(indices)``, one dict of tensors;
* ``lazypatch DataLoader`` - ``batch_size=None`` + ``BatchSampler``, ``lazypatch.collate``,
  torch's default collate; with 2 persistent workers (default collate, ``BatchSampler``);
* ``lazypatch ds[i]`` - one sample at a time;
* ``per-patch loop (RAM)`` - ``out[k] = a[i, y:y+p, x:x+p]`` over the images in RAM;
* ``raw copy`` - one ``np.copyto`` of the same number of bytes;
* ``h5py per patch, contiguous`` / ``chunked`` - h5py slicing of (N, H, W, C) copies;
* ``seed on-the-fly dataset`` - the seed's dataset (``_seed.py``) over the h5py copy;
* ``raw pread (warm)`` - ``os.preadv`` of patch-sized extents at random store offsets;
* the peers of ``peers.py`` (patchly, MONAI, tensorstore) when installed.

``--cold`` runs each repetition of the cold methods in a fresh process
(``_cold.py``) after ``fsync`` and ``POSIX_FADV_DONTNEED`` (no process keeps the
store mapped): lazypatch with ``io="pread"``, ``io="auto"`` and ``prefetch`` of
the next batch, raw ``pread`` in 1, 4, 8 and 16 threads, tensorstore.

Last, where the time of a batch goes (``lazypatch.testing.read_stages``).
Any store can be measured the same way: ``reference.py STORE``. The synthetic
store's options (``--layout``, ``--tile``, ``--ndim``...) give the other shapes of
the history in ``README.md`` here.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import peers  # noqa: E402

channels_last, batches_of = _common.channels_last, _common.batches_of


def lazypatch_methods(bench) -> list:
    """The DataLoader paths and ``ds[i]``."""
    from torch.utils.data import BatchSampler, DataLoader

    import lazypatch

    ds, batch = bench.dataset, bench.batch

    def loader(collate_fn):
        def prepare():
            def run(flat):
                for last in DataLoader(ds, batch_size=batch, sampler=flat.tolist(), num_workers=0,
                                       collate_fn=collate_fn):
                    pass
                return last["index"].numpy(), channels_last(last["image"])
            return run
        return prepare

    def batch_loader():
        def run(flat):
            sampler = BatchSampler(flat.tolist(), batch, drop_last=False)
            for last in DataLoader(ds, batch_size=None, sampler=sampler, num_workers=0):
                pass
            return last["index"].numpy(), channels_last(last["image"])
        return run

    def getitem():
        def run(flat):
            for i in flat[: max(len(flat) // 8, 1)].tolist():
                sample = ds[i]
            return [i], channels_last(sample["image"][None])
        return run

    return [
        ("lazypatch DataLoader (batch_size=None, BatchSampler)", batch_loader, "batch"),
        ("lazypatch DataLoader (lazypatch.collate)", loader(lazypatch.collate), "batch"),
        ("lazypatch DataLoader (default collate)", loader(None), "batch"),
        ("lazypatch ds[i]", getitem, "eighth"),
    ]


def worker_methods(bench, workers: int = 2) -> list:
    """DataLoaders with persistent worker processes: default collate, and the batch API."""
    from torch.utils.data import BatchSampler, DataLoader

    class Order:
        """A sampler whose indices the benchmark swaps between repetitions."""

        flat = []

        def __iter__(self):
            return iter(self.flat)

        def __len__(self):
            return len(self.flat)

    def make(batch_api: bool):
        def prepare():
            order = Order()
            if batch_api:
                loader = DataLoader(bench.dataset, batch_size=None, num_workers=workers, persistent_workers=True,
                                    sampler=BatchSampler(order, bench.batch, drop_last=False))
            else:
                loader = DataLoader(bench.dataset, batch_size=bench.batch, sampler=order, num_workers=workers,
                                    persistent_workers=True)

            def run(flat):
                order.flat = flat.tolist()
                for last in loader:
                    pass
                return last["index"].numpy(), channels_last(last["image"])
            return run
        return prepare

    return [
        (f"lazypatch DataLoader (default collate), {workers} workers", make(False), "batch"),
        (f"lazypatch DataLoader (batch_size=None, BatchSampler), {workers} workers", make(True), "batch"),
    ]


def baseline_methods(bench) -> list:
    """h5py copies of the images, the seed's dataset, raw ``pread`` of the store file."""
    store, ds, ram = bench.case.store, bench.dataset, bench.case.ram
    patch, batch, nd = bench.patch, bench.batch, store.spatial_ndim
    workdir = bench.case.workdir

    def h5py_copy(chunked: bool):
        import h5py

        path = os.path.join(workdir, "chunked.h5" if chunked else "contiguous.h5")
        if not os.path.exists(path):
            with h5py.File(path, "w") as f:
                chunks = (1,) + patch + ram.shape[1 + nd:] if chunked else None
                f.create_dataset("images", data=ram, chunks=chunks)
            _common.fsync(path)
        return h5py.File(path, "r")

    def h5(chunked: bool):
        def prepare():
            if not isinstance(ram, np.ndarray) or store.channels == 0:
                return None
            handle = h5py_copy(chunked)
            data = handle["images"]
            out = np.empty((batch,) + patch + ram.shape[1 + nd:], store.dtype)

            def run(flat):
                image_ids, origins = ds.index.locate(flat)
                for part, ids, boxes in zip(batches_of(flat, batch), batches_of(image_ids, batch),
                                            batches_of(origins, batch)):
                    for k, (i, origin) in enumerate(zip(ids.tolist(), boxes.tolist())):
                        box = tuple(slice(o, o + p) for o, p in zip(origin, patch))
                        out[k] = data[(i,) + box].reshape(out.shape[1:])
                return part, out[: len(part)]
            run.handle = handle
            return run
        return prepare

    def seed():
        from _seed import OnTheFlyPatchDataset

        if not isinstance(ram, np.ndarray) or nd != 2 or ram.ndim != 4:
            return None
        if ds.edge != "drop" or len(set(ds.patch_size)) != 1 or len(set(ds.stride)) != 1:
            return None
        handle = h5py_copy(chunked=False)
        dataset = OnTheFlyPatchDataset(handle["images"], patch[0], ds.stride[0])
        out = np.empty((batch,) + patch + (store.channels,), store.dtype)

        def run(flat):
            for k, i in enumerate(flat[: max(len(flat) // 16, 1)].tolist()):
                out[k % batch] = dataset[i][0]
            return None
        run.handle = handle
        run.fraction = 1 / 16
        return run

    def store_per_patch():
        def run(flat):
            part = flat[: max(len(flat) // 8, 1)]
            image_ids, origins = ds.index.locate(part)
            for i, origin in zip(image_ids.tolist(), origins.tolist()):
                region = store.read_region(i, origin, patch)
            return part[-1:], region[None]
        return run

    def raw_pread():
        if store.layout == "chunked":
            return None
        fd = os.open(store.path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        length = bench.patch_bytes
        rng = np.random.default_rng(11)
        views = [memoryview(bytearray(length)) for _ in range(batch)]

        def run(flat, threads=1):
            offsets = rng.integers(0, max(size - length, 1), len(flat)) // 4096 * 4096

            def job(part, base):
                for k, offset in enumerate(part):
                    os.preadv(fd, [views[(base + k) % batch]], offset)
            if threads == 1:
                job(offsets.tolist(), 0)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    chunks = np.array_split(offsets, threads)
                    list(pool.map(job, [c.tolist() for c in chunks], range(threads)))
            return None
        run.threads = (4, 8)  # the same reads in more threads, right after
        return run

    table = [
        ("h5py per patch, contiguous", h5(False), "batch"),
        ("h5py per patch, chunked", h5(True), "batch"),
        ("seed on-the-fly dataset", seed, "sixteenth"),
        ("raw pread (warm), 1 thread", raw_pread, "batch"),
    ]
    if store.layout == "chunked":
        table.append(("h5py per patch, this store (ImageStore.read_region)", store_per_patch, "eighth"))
    return table


def cold_methods(bench) -> list:
    if bench.case.store.layout == "chunked":
        methods = [("lazypatch read_batch, cold, h5py", {"method": "lazypatch", "io": "auto"})]
    else:
        methods = [
            ("lazypatch read_batch, cold, io=pread", {"method": "lazypatch", "io": "pread", "threads": 8}),
            ("lazypatch read_batch, cold, io=auto", {"method": "lazypatch", "io": "auto", "threads": 8}),
            ("lazypatch read_batch + prefetch(next), cold, io=auto",
             {"method": "lazypatch", "io": "auto", "threads": 8, "prefetch": True}),
        ]
    methods += _common.cold_pread_methods()
    if bench.case.store.spatial_ndim == 2:
        methods += peers.cold_methods(bench)
    return methods


def print_stages(stages: dict, batch: int, markdown: bool) -> None:
    print()
    print(f"Where the time goes, per batch of {batch} (median microseconds):")
    if markdown:
        print()
    _common.print_rows(["stage", "us per batch"], [[name, f"{value:,.0f}"] for name, value in stages.items()],
                       markdown)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peers.add_arguments(parser)
    args = parser.parse_args(argv)
    from lazypatch.testing import read_stages

    with _common.Workdir(args.workdir) as workdir:
        case = _common.Case(args, workdir)
        try:
            bench = _common.Bench(case, args)
            core = _common.core_methods(bench)
            methods = ([core[0]] + lazypatch_methods(bench) + core[1:] + baseline_methods(bench)
                       + worker_methods(bench) + peers.methods(bench))
            results = bench.run(_common.select(methods, args.only))
            rng = np.random.default_rng(args.seed + 7)
            stages = read_stages(bench.dataset, [rng.integers(0, len(bench.dataset), bench.batch)
                                                 for _ in range(200)])
            if args.cold:
                results.update(_common.run_cold(bench, _common.select(cold_methods(bench), args.only)))
            data = _common.report(results, bench, args, _common.command_line("reference.py", argv))
            data["stages_us_per_batch"] = stages
            _common.print_table(data, args.markdown)
            print_stages(stages, bench.batch, args.markdown)
            _common.write_json(args.json, data)
        finally:
            case.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
