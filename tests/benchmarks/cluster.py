"""Sharded builds on Dask: build MB/s with 1 and 2 LocalCluster worker processes, PNG input.

A folder of ``--size-gb`` of 1024 x 1024 RGB PNGs (crops and flips of
scikit-image's photographs: real content, so PNG decoding costs what it costs
on photographs) is written to a temporary folder. For each worker count, a
LocalCluster of one-thread worker processes is started (its start is reported
apart), then ``lazypatch.build(folder, out, shards=--shards, client=client)`` is
timed: the header pass, the shard tasks and the published manifest. MB/s are
of decoded pixels. Repetitions alternate the worker counts; figures are medians.

Run::

    python tests/benchmarks/cluster.py --size-gb 1 --shards 8 --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import command_line, machine, now  # noqa: E402


def write_pngs(folder: str, size_gb: float, side: int = 1024) -> int:
    import numpy as np
    import skimage.data
    from PIL import Image

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
              skimage.data.immunohistochemistry()]
    count = max(2, int(round(size_gb * 1e9 / (side * side * 3))))
    rng = np.random.default_rng(0)
    for k in range(count):
        photo = photos[k % len(photos)]
        reps = -(-side // min(photo.shape[:2])) + 1
        big = np.tile(photo, (reps, reps, 1))
        y, x = (int(v) for v in rng.integers(0, 64, 2))
        image = big[y:y + side, x:x + side]
        image = image[::-1] if k & 1 else image
        Image.fromarray(np.ascontiguousarray(image)).save(os.path.join(folder, f"img{k:05d}.png"), compress_level=6)
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="decoded pixels of the PNG folder (default 1)")
    parser.add_argument("--shards", type=int, default=8, help="shards per build (default 8)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--dir", default=None, help="folder for the temporary files")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    import lazypatch
    from dask.distributed import Client, LocalCluster

    folder = tempfile.mkdtemp(prefix="lazypatch-cluster-", dir=args.dir)
    try:
        source = os.path.join(folder, "png")
        os.makedirs(source)
        count = write_pngs(source, args.size_gb)
        pixels = count * 1024 * 1024 * 3
        times = {n: [] for n in args.workers}
        starts = {n: [] for n in args.workers}
        for repeat in range(args.repeats):
            order = args.workers if repeat % 2 == 0 else args.workers[::-1]
            for n in order:
                started = time.perf_counter()
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
                client = Client(cluster)
                client.wait_for_workers(n)
                starts[n].append(time.perf_counter() - started)
                out = os.path.join(folder, "out.h5")
                try:
                    started = time.perf_counter()
                    lazypatch.build(source, out, shards=args.shards, client=client, progress=False).close()
                    times[n].append(time.perf_counter() - started)
                finally:
                    client.close()
                    cluster.close()
                shutil.rmtree(out + ".shards", ignore_errors=True)
                os.remove(out)
        base = statistics.median(times[args.workers[0]])
        rows = [{"workers": n, "seconds": statistics.median(times[n]), "mb_s": pixels / 1e6 / statistics.median(times[n]),
                 "x_first": base / statistics.median(times[n]), "cluster_start_s": statistics.median(starts[n])}
                for n in args.workers]
        data = {"command": command_line("cluster.py", argv), "date": now(), "machine": machine(),
                "images": count, "pixel_bytes": pixels, "shards": args.shards, "rows": rows}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(data, handle, indent=1)
    print(f"{count} PNGs of 1024 x 1024 RGB ({pixels / 1e9:.2f} GB of pixels), {args.shards} shards, "
          f"{args.repeats} repetition(s)")
    header = ["Dask workers", "median s", "MB/s of pixels", f"x {args.workers[0]} worker(s)", "cluster start s"]
    lines = [[str(r["workers"]), f"{r['seconds']:.2f}", f"{r['mb_s']:.0f}", f"{r['x_first']:.2f}",
              f"{r['cluster_start_s']:.1f}"] for r in rows]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        for line in [header] + lines:
            print("  ".join(f"{v:>16}" for v in line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
