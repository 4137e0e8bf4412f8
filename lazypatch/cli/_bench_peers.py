"""Rows of ``lazypatch bench`` for peers and for DataLoader workers.

Peers run only when installed (``pip install 'lazypatch[bench]'``):

* patchly - ``patchly.GridSampler`` over a memory map of the images, one
  sampler per image, patches drawn at the same random grid positions;
* MONAI - ``GridPatchDataset`` through a DataLoader, in grid order (it only
  iterates);
* tensorstore - a zarr3 copy (uncompressed, one chunk per patch-sized tile),
  one future per patch issued for the whole batch; warm, and with ``--cold``
  in a fresh process after evicting every chunk file.

Each factory returns ``run(flat) -> (last indices, last patches)`` or ``None``
when it does not apply, like the methods of ``_bench.Bench``.
"""

from __future__ import annotations

import os

import numpy as np


def _split(values, size):
    return [values[k:k + size] for k in range(0, len(values), size)]


def patchly_method(bench):
    try:
        import patchly
    except ImportError:
        return None
    ram, store = bench.case.ram, bench.case.store
    if ram is None or not isinstance(ram, np.ndarray) or store.spatial_ndim != 2 or ram.ndim != 4:
        return None
    path = os.path.join(bench.case.workdir, "images.npy")
    if not os.path.exists(path):
        np.save(path, ram)
    images = np.load(path, mmap_mode="r")
    patch, stride = bench.patch, bench.dataset.stride
    samplers = {}

    def sampler(i):
        if i not in samplers:
            samplers[i] = patchly.GridSampler(images[i], spatial_size=images.shape[1:3],
                                              patch_size=patch, step_size=stride)
        return samplers[i]

    grid_x = (images.shape[2] - patch[1]) // stride[1] + 1
    out = np.empty((bench.batch,) + patch + (images.shape[3],), images.dtype)

    def run(flat):
        image_ids, origins = bench.dataset.index.locate(flat)
        for part_flat, part_ids, part_origins in zip(_split(flat, bench.batch), _split(image_ids, bench.batch),
                                                     _split(origins, bench.batch)):
            for k, (i, (y, x)) in enumerate(zip(part_ids.tolist(), part_origins.tolist())):
                found, _ = sampler(i)[(y // stride[0]) * grid_x + x // stride[1]]
                out[k] = found
        return part_flat, out[: len(part_flat)]
    return run


def monai_method(bench):
    try:
        from monai.data import GridPatchDataset, PatchIter
    except ImportError:
        return None
    from torch.utils.data import DataLoader

    ram = bench.case.ram
    if ram is None or not isinstance(ram, np.ndarray) or ram.ndim != 4:
        return None
    patch = bench.patch
    if bench.dataset.stride != patch or bench.dataset.edge != "drop":
        return None
    # MONAI works channel-first; its iterator yields patches in grid order
    images = [np.ascontiguousarray(np.moveaxis(image, -1, 0)) for image in ram]

    def run(flat):
        wanted = len(flat)
        dataset = GridPatchDataset(images, PatchIter(patch_size=patch), with_coordinates=True)
        seen = 0
        for batch, _coordinates in DataLoader(dataset, batch_size=bench.batch, num_workers=0):
            seen += len(batch)
            if seen >= wanted:
                break
        return None
    run.unordered = True
    return run


def tensorstore_copy(workdir: str, ram: np.ndarray, patch) -> str:
    """Path of a zarr3 copy of the images (one chunk per patch-sized tile), written once."""
    import tensorstore as ts

    path = os.path.join(workdir, "zarr3")
    if not os.path.exists(path):
        chunk = (1,) + tuple(patch) + (ram.shape[-1],)
        array = ts.open({**_zarr_spec(path), "metadata": {
            "shape": list(ram.shape), "data_type": str(ram.dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}}}},
            create=True).result()
        for k in range(0, len(ram), 64):
            stop = min(k + 64, len(ram))
            array[k:stop].write(ram[k:stop]).result()
        flush(*tree_files(path))
    return path


def tree_files(path: str) -> list:
    """Every file under a folder (a zarr copy: one file per chunk)."""
    return [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names]


def flush(*paths) -> None:
    """Write a new copy's dirty pages to disk now: gigabytes of writeback running under the
    next measurements slowed read_batch by a third in a fresh workdir (measured)."""
    from ..store.publish import fsync_file

    for path in paths:
        fsync_file(path)


def _zarr_spec(path: str) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}


def tensorstore_reader(path: str, locate, patch, batch: int):
    """``run(flat)``: one future per patch, issued for a whole batch, then awaited."""
    import tensorstore as ts

    array = ts.open(_zarr_spec(path)).result()
    out = np.empty((batch,) + tuple(patch) + (array.shape[-1],), array.dtype.numpy_dtype)

    def run(flat):
        image_ids, origins = locate(flat)
        for part_flat, part_ids, part_origins in zip(_split(flat, batch), _split(image_ids, batch),
                                                     _split(origins, batch)):
            futures = [array[i, y:y + patch[0], x:x + patch[1], :].read()
                       for i, (y, x) in zip(part_ids.tolist(), part_origins.tolist())]
            for k, future in enumerate(futures):
                out[k] = future.result()
        return part_flat, out[: len(part_flat)]
    return run


def tensorstore_applies(bench) -> bool:
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        return False
    ram = bench.case.ram
    return isinstance(ram, np.ndarray) and ram.ndim == 4


def tensorstore_method(bench):
    if not tensorstore_applies(bench):
        return None
    path = tensorstore_copy(bench.case.workdir, bench.case.ram, bench.patch)
    return tensorstore_reader(path, bench.dataset.index.locate, bench.patch, bench.batch)


def worker_methods(bench, workers: int = 2):
    """DataLoaders with persistent worker processes: default collate, and the batch API."""
    from torch.utils.data import BatchSampler, DataLoader

    class Order:
        """A sampler whose indices the benchmark swaps between repetitions."""

        flat = []

        def __iter__(self):
            return iter(self.flat)

        def __len__(self):
            return len(self.flat)

    def by_default_collate():
        order = Order()
        loader = DataLoader(bench.dataset, batch_size=bench.batch, sampler=order, num_workers=workers,
                            persistent_workers=True)

        def run(flat):
            order.flat = flat.tolist()
            for last in loader:
                pass
            return last["index"].numpy(), np.moveaxis(last["image"].numpy(), 1, -1)
        return run

    def by_batches():
        order = Order()
        loader = DataLoader(bench.dataset, batch_size=None, num_workers=workers, persistent_workers=True,
                            sampler=BatchSampler(order, bench.batch, drop_last=False))

        def run(flat):
            order.flat = flat.tolist()
            for last in loader:
                pass
            return last["index"].numpy(), np.moveaxis(last["image"].numpy(), 1, -1)
        return run

    return [
        (f"lazypatch DataLoader (default collate), {workers} workers", by_default_collate, "batch"),
        (f"lazypatch DataLoader (batch_size=None, BatchSampler), {workers} workers", by_batches, "batch"),
    ]
