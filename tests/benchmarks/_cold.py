"""One cold repetition, in a fresh process: ``python tests/benchmarks/_cold.py < SPEC.json``.

``_common.run_cold`` starts it once per method and repetition, after closing
every handle of its own (mapped pages cannot be evicted). It warms the code
paths (imports, thread pools, first calls) on a few patches, evicts the store
(or every chunk file of a tensorstore copy) from the page cache, checks the
eviction with ``RWF_NOWAIT`` probes, times the read of every patch of the
spec, and prints one JSON line: ``patches_per_s`` and ``cached_after_evict``.

Methods (``spec["method"]``): ``lazypatch`` (``io`` = ``auto`` or ``pread``,
optionally ``prefetch`` of the next batch), ``pread`` (``threads`` threads of
patch-sized ``os.preadv`` at random page-aligned offsets), ``tensorstore``
(the zarr3 copy of ``peers.py``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    import lazypatch
    from lazypatch.testing import cached_fraction, evict

    spec = json.load(sys.stdin)
    path, method, batch = spec["path"], spec["method"], spec["batch"]
    flat = np.asarray(spec["flat"], dtype=np.int64)
    if method == "lazypatch":
        # warm the code paths, not the data (evicted below)
        with lazypatch.ImageStore(path, io="pread") as warmup:
            lazypatch.PatchDataset(warmup, spec["patch"], spec["stride"]).read_batch(flat[-batch:][::-1])
    # NOTE [one-off collection]: the first full garbage collection after importing torch
    # walks every import-time object (~50 ms); freeze them so a short run measures reads.
    gc.collect()
    gc.freeze()
    if method == "tensorstore":
        import peers

        with lazypatch.ImageStore(path) as store:  # the index only; the store is not read
            locate = lazypatch.PatchDataset(store, spec["patch"], spec["stride"]).index.locate
        run = peers.tensorstore_reader(spec["zarr"], locate, spec["patch"], batch)
        run(flat[-batch:][::-1])  # warm the code paths, then drop what that read
        chunks = peers.tree_files(spec["zarr"])
        for chunk in chunks:
            evict(chunk)
        picks = np.random.default_rng(0).choice(len(chunks), min(64, len(chunks)), replace=False)
        still_cached = float(np.mean([cached_fraction(chunks[k], probes=1) for k in picks]))
        started = time.perf_counter()
        run(flat)
        seconds = time.perf_counter() - started
    elif method == "lazypatch":
        evict(path)
        still_cached = cached_fraction(path)
        ahead = spec.get("prefetch", False)
        with lazypatch.ImageStore(path, io=spec["io"], io_threads=spec.get("threads", 8)) as store:
            ds = lazypatch.PatchDataset(store, spec["patch"], spec["stride"])
            started = time.perf_counter()
            for k in range(0, len(flat), batch):
                if ahead and k + batch < len(flat):
                    ds.prefetch(flat[k + batch:k + 2 * batch])
                ds.read_batch(flat[k:k + batch])
            seconds = time.perf_counter() - started
    elif method == "pread":
        evict(path)
        still_cached = cached_fraction(path)
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
    else:
        raise SystemExit(f"_cold.py: unknown method {method!r}")
    print(json.dumps({"patches_per_s": len(flat) / seconds, "cached_after_evict": still_cached}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
