"""Ingest speed and memory: ``lazypatch build`` from a JPEG-tiled slide, beside the decode bound.

A ``--height`` x ``--width`` JPEG-tiled pyramidal TIFF of real tissue
(``lazypatch.testing.samples.write_slide``: scikit-image's IHC sample cropped
and flipped per 256-pixel tile, quality 90) is written to a temporary folder.
Each repetition, in a fresh interpreter with a thread sampling RssAnon every
10 ms, runs in turn (the order rotating between repetitions):

- ``openslide tiles``: OpenSlide ``read_region`` of every 256 x 256 tile of
  level 0, the decode bound of a build (no writing);
- ``tifffile tiles``: imagecodecs decoding every tile through tifffile's
  ``decode`` (the other decoder's bound);
- ``build``: ``lazypatch.build(slide, store)`` (tifffile reader, as chosen);
- ``build --reader openslide``;
- ``build --mpp M`` (``--mpp``, default 0.4 from the slide's 0.25: the
  resampling path, tile by tile).

MB/s are of level-0 pixels (height x width x 3 bytes) over the median time;
``x bound`` divides by the OpenSlide decode rate; ``peak RssAnon`` is the
largest over the repetitions; the store's size is compared with the
slide's. Everything is deleted at the end.

Run::

    python tests/benchmarks/ingest.py --height 20000 --width 16000 --markdown
    python tests/benchmarks/ingest.py --height 100000 --width 80000 --repeats 1 --only build
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import command_line, machine, now  # noqa: E402

CHILD = r"""
import json, sys, time
from lazypatch.testing.measure import watch_peak_rss_anon
peak = watch_peak_rss_anon()
method, slide, out, mpp = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
started = time.perf_counter()
if method == "openslide tiles":
    import openslide
    with openslide.OpenSlide(slide) as s:
        width, height = s.level_dimensions[0]
        for y in range(0, height, 256):
            for x in range(0, width, 256):
                s.read_region((x, y), 0, (min(256, width - x), min(256, height - y)))
elif method == "tifffile tiles":
    import tifffile
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        handle = tif.filehandle
        tables = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}
        for data, index in handle.read_segments(page.dataoffsets, page.databytecounts, sort=True):
            page.decode(data, index, **tables)
else:
    import lazypatch
    options = {"reader": "openslide"} if method == "build --reader openslide" else (
        {"mpp": mpp} if method.startswith("build --mpp") else {})
    lazypatch.build(slide, out, progress=False, overwrite=True, **options).close()
seconds = time.perf_counter() - started
time.sleep(0.03)
print(json.dumps({"seconds": seconds, "peak_mib": peak[0]}))
"""

METHODS = ["openslide tiles", "tifffile tiles", "build", "build --reader openslide", "build --mpp"]


def run_child(method, slide, out, mpp) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, method, slide, out, str(mpp)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=20000, help="level-0 height (default 20000)")
    parser.add_argument("--width", type=int, default=16000, help="level-0 width (default 16000)")
    parser.add_argument("--mpp", type=float, default=0.4, help="target of the resampled build (default 0.4)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--only", nargs="+", choices=METHODS, metavar="METHOD",
                        help=f"run only these ({', '.join(METHODS)})")
    parser.add_argument("--dir", default=None, help="folder for the temporary files (default: the system's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    from lazypatch.testing.samples import write_slide

    methods = [m for m in METHODS if not args.only or m in args.only]
    folder = tempfile.mkdtemp(prefix="lazypatch-ingest-", dir=args.dir)
    try:
        slide = write_slide(os.path.join(folder, "slide.tif"), args.height, args.width, mpp=0.25, levels=3)
        out = os.path.join(folder, "store.h5")
        times = {m: [] for m in methods}
        peaks = {m: 0.0 for m in methods}
        sizes = {}
        for repeat in range(args.repeats):
            for k in range(len(methods)):
                method = methods[(k + repeat) % len(methods)]
                result = run_child(method, slide, out, args.mpp)
                times[method].append(result["seconds"])
                peaks[method] = max(peaks[method], result["peak_mib"])
                if method.startswith("build") and os.path.exists(out):
                    sizes[method] = os.path.getsize(out)
                    os.remove(out)
        pixels = args.height * args.width * 3
        bound = statistics.median(times["openslide tiles"]) if "openslide tiles" in times else None
        rows = []
        for method in methods:
            median = statistics.median(times[method])
            rows.append({"method": method if method != "build --mpp" else f"build --mpp {args.mpp:g}",
                         "seconds": median, "mb_s": pixels / 1e6 / median,
                         "x_bound": (bound / median) if bound else None, "peak_rss_anon_mib": peaks[method],
                         "store_bytes": sizes.get(method)})
        data = {"command": command_line("ingest.py", argv), "date": now(), "machine": machine(),
                "slide": {"shape": [args.height, args.width, 3], "bytes": os.path.getsize(slide),
                          "pixel_bytes": pixels}, "rows": rows}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(data, handle, indent=1)
    header = ["method", "median s", "MB/s of pixels", "x openslide decode", "peak RssAnon MiB",
              "store / slide file"]
    lines = []
    for row in rows:
        ratio = f"{row['x_bound']:.2f}" if row["x_bound"] else "-"
        size = f"{row['store_bytes'] / data['slide']['bytes']:.2f}" if row["store_bytes"] else "-"
        lines.append([row["method"], f"{row['seconds']:.2f}", f"{row['mb_s']:.0f}", ratio,
                      f"{row['peak_rss_anon_mib']:.0f}", size])
    print(f"slide {args.height} x {args.width} RGB, JPEG q90 tiles of 256 ({data['slide']['bytes'] / 1e6:.0f} MB "
          f"file, {pixels / 1e6:.0f} MB of pixels); {args.repeats} repetition(s)")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        for line in [header] + lines:
            print("  ".join(f"{v:>20}" if k else f"{v:<28}" for k, v in enumerate(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
