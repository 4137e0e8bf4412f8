"""Sampling and stitching: sampler cost, ClassSampler construction, aggregation speed and memory.

* ``PatchSampler`` over a ``PatchIndex`` of 20,000 images of 256-4096 pixels a
  side (64x64 patches, stride 32): microseconds per batch of 256 as index
  arrays (``sampler.batches(256)``) and as Python ints (``iter(sampler)``);
* ``ClassSampler`` over 10^4 64x64 images with masks and label statistics in
  blocks of 16: construction time and its peak traced memory;
* ``PatchAggregator`` adding every 2x64x64 prediction of a 2048x2048 image
  (stride 32, edge shift) against a numpy slice-add loop (interleaved, medians
  of 5; the aggregator's time includes the final division);
* out of core: 100 images of 512x512 (2 channels of float32) stitched into a
  file, and the growth of RssAnon meanwhile.

``--scale`` shrinks every count (the smoke test runs ``--scale 0.01``).

Run (the history in README.md here)::

    python tests/benchmarks/sampling.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def sampler_cost(scale: float = 1.0) -> dict:
    import lazypatch

    rng = np.random.default_rng(4)
    index = lazypatch.PatchIndex(rng.integers(256, 4096, size=(max(2, int(20_000 * scale)), 2)), 64, stride=32)
    sampler = lazypatch.PatchSampler(index, seed=1)
    rounds = max(10, int(2000 * scale))
    batches = sampler.batches(256)
    next(batches)
    started = time.perf_counter()
    for _ in range(rounds):
        next(batches)
    per_batch = (time.perf_counter() - started) / rounds
    iterator = iter(sampler)
    rounds = max(4, int(400 * scale))
    started = time.perf_counter()
    for _ in range(256 * rounds):
        next(iterator)
    per_batch_ints = (time.perf_counter() - started) / rounds
    return {"patches": len(index), "us_per_batch_of_256_arrays": per_batch * 1e6,
            "us_per_batch_of_256_ints": per_batch_ints * 1e6}


def class_sampler_build(workdir: str, scale: float = 1.0) -> dict:
    import lazypatch

    rng = np.random.default_rng(4)
    count = max(4, int(10_000 * scale))
    images = rng.integers(0, 255, size=(count, 64, 64), dtype=np.uint8)
    masks = (rng.random((count, 64, 64)) < 0.1).astype(np.uint8)
    masks[:, 20:40, 20:40] = 2
    path = os.path.join(workdir, "labels.h5")
    store = lazypatch.write_store(path, images, masks=masks, label_stats=16, overwrite=True, progress=False)
    dataset = lazypatch.PatchDataset(store, 16, stride=1)
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    sampler = lazypatch.ClassSampler(dataset, {0: 1, 1: 1, 2: 1}, num_samples=100_000)
    built = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows = len(sampler.stats.blocks)
    store.close()
    return {"images": count, "stats_rows": rows, "build_seconds": built, "build_peak_mib": peak / 2**20}


def aggregation(scale: float = 1.0) -> dict:
    import torch

    import lazypatch

    side = max(256, int(2048 * scale ** 0.5) // 64 * 64)
    shape, patch, stride = (side, side), 64, 32
    index = lazypatch.PatchIndex([shape], patch, stride=stride, edge="shift")
    ids, origins = index.locate(np.arange(len(index)))
    predictions = torch.rand(256, 2, patch, patch)
    values = predictions.numpy()

    def numpy_slice_add():
        baseline = np.zeros((2,) + shape, np.float32)
        for k, (y, x) in enumerate(origins.tolist()):
            baseline[:, y:y + patch, x:x + patch] += values[k % 256]
        return baseline

    def aggregate():
        aggregator = lazypatch.PatchAggregator([shape], patch, stride=stride)
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
    return {"image": list(shape), "patches": len(ids), "numpy_slice_add_per_s": len(ids) / base_seconds,
            "aggregator_per_s": len(ids) / ours, "ratio": base_seconds / ours,
            "note": "the aggregator's time includes finishing the image (the division)"}


def out_of_core(workdir: str, scale: float = 1.0) -> dict:
    import lazypatch
    from lazypatch.testing import proc_status

    images = max(2, int(100 * scale))
    before = proc_status().get("RssAnon", 0.0)
    peak = before
    out = os.path.join(workdir, "preds.h5")
    with lazypatch.PatchAggregator([(512, 512)] * images, 64, stride=48, out=out) as agg:
        ids, origins = agg.index.locate(np.arange(len(agg.index)))
        ones = np.ones((256, 2, 64, 64), np.float32)
        for k in range(0, len(ids), 256):
            count = min(256, len(ids) - k)
            agg.add(ones[:count], ids[k:k + count], origins[k:k + count])
            peak = max(peak, proc_status().get("RssAnon", 0.0))
    os.unlink(out)
    return {"images": images, "image_mib": 2 * 512 * 512 * 4 / 2**20, "rss_anon_growth_mib": peak - before}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="scale of every count (default 1)")
    parser.add_argument("--workdir", help="where files go (default: a temporary folder, removed afterwards)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    with _common.Workdir(args.workdir) as workdir:
        data = {"command": _common.command_line("sampling.py", argv), "date": _common.now(),
                "machine": _common.machine(), "sampler": sampler_cost(args.scale),
                "class_sampler": class_sampler_build(workdir, args.scale),
                "aggregation": aggregation(args.scale), "out_of_core": out_of_core(workdir, args.scale)}
    print(json.dumps(data, indent=2))
    _common.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
