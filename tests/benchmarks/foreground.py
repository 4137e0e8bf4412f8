"""Foreground filter speed: ``foreground_filter(source="intensity")`` against ``store.verify()``.

One ``--side`` x ``--side`` RGB uint8 image tiled from scikit-image's
immunohistochemistry sample (512 x 512), written with ``lazypatch.write_store``
into a temporary folder that is deleted afterwards; a grid of ``--patch``
pixels, Otsu's threshold. Each repetition runs verify, then the filter (and
with ``--before`` the implementation the filter replaced, kept as the oracle
of tests/stats/test_foreground_speed.py, which computes the same keep-bitmap);
the figures are medians, the ratio is over verify's median. The page cache is
warm (the store was just written).

Run::

    python tests/benchmarks/foreground.py --side 8000 --before
    python tests/benchmarks/foreground.py --side 30000 --repeats 2 --before
    python tests/benchmarks/foreground.py --side 8000 --layout gzip
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def slide(side: int) -> np.ndarray:
    import skimage.data

    sample = skimage.data.immunohistochemistry()
    reps = -(-side // sample.shape[0])
    return np.ascontiguousarray(np.tile(sample, (reps, reps, 1))[:side, :side])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=8000, help="image side in pixels (default 8000)")
    parser.add_argument("--patch", type=int, default=256, help="patch side (default 256)")
    parser.add_argument("--layout", default="tiled", choices=("tiled", "contiguous", "gzip"),
                        help="store layout; gzip is chunked with gzip compression (default tiled)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--before", action="store_true", help="also time the previous implementation")
    parser.add_argument("--dir", default=None, help="folder for the temporary store (default: the system's)")
    args = parser.parse_args(argv)

    import h5py

    import lazypatch
    from lazypatch.stats.foreground import foreground_filter

    previous_keep = None
    if args.before:
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "stats"))
        from test_foreground_speed import previous_keep

    options = {"layout": "chunked", "compression": "gzip"} if args.layout == "gzip" else {"layout": args.layout}
    folder = tempfile.mkdtemp(prefix="lazypatch-foreground-", dir=args.dir)
    try:
        started = time.perf_counter()
        store = lazypatch.write_store(os.path.join(folder, "slide.h5"), [slide(args.side)], progress=False,
                                      **options)
        print(f"{args.side}x{args.side} RGB uint8, layout {args.layout}, patch {args.patch}: "
              f"built in {time.perf_counter() - started:.2f} s, {store.nbytes / 2**20:.0f} MiB")
        runs = {"verify": lambda: store.verify(progress=False)}

        def after():
            path = foreground_filter(store, args.patch, source="intensity", progress=False)
            with h5py.File(path, "r") as f:
                keep = np.unpackbits(f["keep"][()])[:int(f.attrs["patches"])].astype(bool)
                threshold = f["intensity_threshold"][()]
            os.unlink(path)
            return keep, threshold

        runs["foreground_filter"] = after
        if previous_keep is not None:
            runs["previous implementation"] = lambda: previous_keep(store, args.patch, source="intensity")
        seconds, results = {}, {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                results[name] = run()
                seconds.setdefault(name, []).append(time.perf_counter() - started)
        verify = statistics.median(seconds["verify"])
        for name, values in seconds.items():
            median = statistics.median(values)
            print(f"  {name:24s} {median:8.3f} s median of {len(values)} (min {min(values):.3f}), "
                  f"{median / verify:5.2f}x verify")
        keep, threshold = results["foreground_filter"]
        print(f"  kept {int(keep.sum())} of {len(keep)} patches, Otsu threshold {float(threshold[0]):.4f}")
        if previous_keep is not None:
            same = all(np.array_equal(a, b) for a, b in zip(results["foreground_filter"],
                                                             results["previous implementation"]))
            print(f"  same keep-bitmap and threshold as the previous implementation: {same}")
        store.close()
    finally:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
