"""Overheads at scale: ``locate`` at 10^6 images, bytes per image, opening a 10^6-image store, ``ds[i]``.

* index: a ``PatchIndex`` over ``--images`` random shapes of 200-2000 pixels a
  side (64x64 patches, stride 32): build time, ``locate`` lookups per second in
  batches of 256 and of 10^5 (medians of 7), bytes per image it holds
  (``lazypatch.testing.index_nbytes``);
* open: a store of ``--images`` 8x8 uint8 images, ``ImageStore(path)`` + ``len``
  + the first ``read_region`` of the last image, and the bytes per image an
  opened store holds (``lazypatch.testing.store_table_nbytes``);
* getitem: the median and 90th percentile latency of ``ds[i]`` (8x8 uint8) over
  ``--calls`` random calls.

Run (the history in README.md here)::

    python tests/benchmarks/overheads.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def _median_rate(function, items: int, repeats: int = 7) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def index_overheads(images: int = 1_000_000, seed: int = 0) -> dict:
    import lazypatch
    from lazypatch.testing import index_nbytes

    rng = np.random.default_rng(seed)
    shapes = rng.integers(200, 2000, size=(images, 2))
    started = time.perf_counter()
    index = lazypatch.PatchIndex(shapes, patch_size=64, stride=32)
    build = time.perf_counter() - started
    small = [rng.integers(0, len(index), 256) for _ in range(400)]
    large = rng.integers(0, len(index), 100_000)
    for flat in small[:20]:
        index.locate(flat)

    def many_small():
        for flat in small:
            index.locate(flat)

    return {
        "images": images,
        "patches": len(index),
        "build_seconds": build,
        "locate_per_s_batch_256": _median_rate(many_small, 256 * len(small)),
        "locate_per_s_batch_100000": _median_rate(lambda: index.locate(large), large.size),
        "index_bytes_per_image": index_nbytes(index) / images,
    }


def open_overheads(workdir: str, images: int = 1_000_000) -> dict:
    import lazypatch
    from lazypatch.testing import store_table_nbytes

    path = os.path.join(workdir, "million.h5")
    stack = np.random.default_rng(1).integers(0, 255, size=(images, 8, 8), dtype=np.uint8)
    started = time.perf_counter()
    lazypatch.write_store(path, stack, tile=8, overwrite=True, progress=False).close()
    written = time.perf_counter() - started
    del stack
    started = time.perf_counter()
    store = lazypatch.ImageStore(path)
    count = len(store)
    store.read_region(count - 1, (0, 0), (8, 8))
    opened = time.perf_counter() - started
    held = store_table_nbytes(store)
    store.close()
    size = os.path.getsize(path)
    os.unlink(path)
    return {"images": count, "write_seconds": written, "open_len_first_read_seconds": opened,
            "store_bytes_per_image": held / count, "file_mb": size / 1e6}


def getitem_latency(workdir: str, calls: int = 20_000) -> dict:
    import lazypatch

    path = os.path.join(workdir, "small.h5")
    rng = np.random.default_rng(2)
    lazypatch.write_store(path, rng.integers(0, 255, size=(100, 64, 64), dtype=np.uint8), overwrite=True,
                          progress=False).close()
    dataset = lazypatch.PatchDataset(path, patch_size=8)
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
    dataset.close()
    os.unlink(path)
    return {"patch": "8x8 uint8", "calls": calls, "median_us": times[len(times) // 2] * 1e6,
            "p90_us": times[int(len(times) * 0.9)] * 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000, help="images of the index and store (default 10^6)")
    parser.add_argument("--calls", type=int, default=20_000, help="ds[i] calls timed (default 20000)")
    parser.add_argument("--workdir", help="where files go (default: a temporary folder, removed afterwards)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    print(f"overheads: index and open at {args.images:,} images (about a minute at 10^6)", file=sys.stderr)
    with _common.Workdir(args.workdir) as workdir:
        data = {"command": _common.command_line("overheads.py", argv), "date": _common.now(),
                "machine": _common.machine(), "index": index_overheads(args.images),
                "open": open_overheads(workdir, args.images), "getitem": getitem_latency(workdir, args.calls)}
    print(json.dumps(data, indent=2))
    _common.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
