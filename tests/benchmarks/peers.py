"""lazypatch side by side with patchly, MONAI and tensorstore on the same store.

Each peer runs only when installed (``pip install -e ".[bench]"``) and when
it applies (images of one shape in RAM, 2-D):

* patchly: ``patchly.GridSampler`` over a memory map of the images, one
  sampler per image, patches drawn at the same random grid positions;
* MONAI: ``GridPatchDataset`` through a DataLoader, in grid order (it only
  iterates; grid stride = patch, edge drop);
* tensorstore: a zarr3 copy (uncompressed, one chunk per patch-sized tile),
  one future per patch issued for the whole batch; warm, and with ``--cold``
  in a fresh process after evicting every chunk file.

They are rows of ``reference.py``; run alone, this script times them with
lazypatch's ``read_batch``, the per-patch loop and the raw copy (the
harness of ``_common.py``: same patches, interleaved repetitions, medians)::

    python tests/benchmarks/peers.py --size-gb 2.147 --cold --markdown
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def patchly_method(bench):
    try:
        import patchly
    except ImportError:
        return None
    ram, store = bench.case.ram, bench.case.store
    if not isinstance(ram, np.ndarray) or store.spatial_ndim != 2 or ram.ndim != 4:
        return None
    path = os.path.join(bench.case.workdir, "images.npy")
    if not os.path.exists(path):
        np.save(path, ram)
        _common.fsync(path)
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
        for part, ids, boxes in zip(_common.batches_of(flat, bench.batch), _common.batches_of(image_ids, bench.batch),
                                    _common.batches_of(origins, bench.batch)):
            for k, (i, (y, x)) in enumerate(zip(ids.tolist(), boxes.tolist())):
                found, _ = sampler(i)[(y // stride[0]) * grid_x + x // stride[1]]
                out[k] = found
        return part, out[: len(part)]
    return run


def monai_method(bench):
    try:
        from monai.data import GridPatchDataset, PatchIter
    except ImportError:
        return None
    from torch.utils.data import DataLoader

    ram = bench.case.ram
    if not isinstance(ram, np.ndarray) or ram.ndim != 4:
        return None
    patch = bench.patch
    if bench.dataset.stride != patch or bench.dataset.edge != "drop":
        return None
    # MONAI works channel-first; its iterator yields patches in grid order
    images = [np.ascontiguousarray(np.moveaxis(image, -1, 0)) for image in ram]

    def run(flat):
        dataset = GridPatchDataset(images, PatchIter(patch_size=patch), with_coordinates=True)
        seen = 0
        for batch, _coordinates in DataLoader(dataset, batch_size=bench.batch, num_workers=0):
            seen += len(batch)
            if seen >= len(flat):
                break
        return None
    return run


def _zarr_spec(path: str) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}


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
        _common.fsync(*tree_files(path))
    return path


def tree_files(path: str) -> list:
    """Every file under a folder (a zarr copy: one file per chunk)."""
    return [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names]


def tensorstore_reader(path: str, locate, patch, batch: int):
    """``run(flat)``: one future per patch, issued for a whole batch, then awaited."""
    import tensorstore as ts

    array = ts.open(_zarr_spec(path)).result()
    out = np.empty((batch,) + tuple(patch) + (array.shape[-1],), array.dtype.numpy_dtype)

    def run(flat):
        image_ids, origins = locate(flat)
        for part, ids, boxes in zip(_common.batches_of(flat, batch), _common.batches_of(image_ids, batch),
                                    _common.batches_of(origins, batch)):
            futures = [array[i, y:y + patch[0], x:x + patch[1], :].read()
                       for i, (y, x) in zip(ids.tolist(), boxes.tolist())]
            for k, future in enumerate(futures):
                out[k] = future.result()
        return part, out[: len(part)]
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


def methods(bench) -> list:
    """The peers' warm rows (each ``None`` when the peer is missing or does not apply)."""
    return [
        ("patchly GridSampler (memory map)", lambda: patchly_method(bench), "batch"),
        ("MONAI GridPatchDataset + DataLoader (grid order)", lambda: monai_method(bench), "batch"),
        ("tensorstore zarr3, one future per patch", lambda: tensorstore_method(bench), "batch"),
    ]


def cold_methods(bench) -> list:
    """The peers' cold rows, as (name, spec for ``_cold.py``)."""
    if not tensorstore_applies(bench):
        return []
    zarr = tensorstore_copy(bench.case.workdir, bench.case.ram, bench.patch)
    return [("tensorstore zarr3, cold, one future per patch", {"method": "tensorstore", "zarr": zarr})]


def add_arguments(parser) -> None:
    """The options of a side-by-side table (reference.py has the same, and more)."""
    _common.add_store_arguments(parser)
    parser.add_argument("--patch", type=_common.int_list, default=64, help="patch size (default 64)")
    parser.add_argument("--stride", type=_common.int_list, help="grid stride (default: the patch size)")
    parser.add_argument("--batch", type=int, default=256, help="patches per batch (default 256)")
    parser.add_argument("--batches", type=int, default=40, help="batches per repetition (default 40)")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions; figures are medians (default 7)")
    parser.add_argument("--cold", action="store_true", help="also measure with the page cache evicted")
    parser.add_argument("--only", help="comma-separated substrings: run only matching methods")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    with _common.Workdir(args.workdir) as workdir:
        case = _common.Case(args, workdir)
        try:
            bench = _common.Bench(case, args)
            results = bench.run(_common.select(_common.core_methods(bench) + methods(bench), args.only))
            if args.cold:
                cold = [("lazypatch read_batch, cold, io=auto", {"method": "lazypatch", "io": "auto"})]
                cold += cold_methods(bench) + _common.cold_pread_methods((1, 8))
                results.update(_common.run_cold(bench, _common.select(cold, args.only)))
            data = _common.report(results, bench, args, _common.command_line("peers.py", argv))
            _common.print_table(data, args.markdown)
            _common.write_json(args.json, data)
        finally:
            case.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
