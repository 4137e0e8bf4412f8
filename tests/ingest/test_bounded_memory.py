"""Building from a large slide in bounded memory.

A 20,000 x 16,000 JPEG-tiled pyramidal TIFF (960 MB of pixels, real tissue
content) is built in a fresh interpreter, once as it is and once resampled
(``--mpp``, the tile-wise path); a thread samples the process's RssAnon every
10 ms. Both stay under 512 MiB (the issue's bound for a 100,000 x 80,000
slide: bands of whole tile rows and resampled pieces do not grow with the
slide's height). Random regions of the store equal tifffile's read of the
slide. The 100,000 x 80,000 figure is measured by tests/benchmarks/ingest.py.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from lazypatch import ImageStore
from lazypatch.testing.samples import write_slide

LIMIT_MIB = 512

MEASURE = r"""
import json, sys, time
import lazypatch
from lazypatch.testing.measure import watch_peak_rss_anon
peak = watch_peak_rss_anon()
options = json.loads(sys.argv[3])
lazypatch.build(sys.argv[1], sys.argv[2], progress=False, **options).close()
time.sleep(0.05)
print(json.dumps({"peak_mib": peak[0]}))
"""


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    path = write_slide(str(folder / "slide.tif"), 20000, 16000, levels=2)
    yield path
    shutil.rmtree(folder, ignore_errors=True)  # about 150 MB of slide and 1 GB of store


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="RssAnon is read from /proc")
@pytest.mark.parametrize("options", [{}, {"mpp": 0.4}], ids=["as-is", "resampled"])
def test_a_large_slide_builds_in_bounded_memory(big_slide, options, tmp_path):
    out = str(tmp_path / "store.h5")
    try:
        done = subprocess.run([sys.executable, "-c", MEASURE, big_slide, out, json.dumps(options)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
        assert peak < LIMIT_MIB, f"RssAnon peaked at {peak:.0f} MiB"
        with ImageStore(out) as store, tifffile.TiffFile(big_slide) as tif:
            if options:
                assert tuple(store.shapes[0]) == (12500, 10000)
                return
            level = tif.series[0].levels[0].asarray(out="memmap")
            rng = np.random.default_rng(0)
            for _ in range(5):
                y, x = int(rng.integers(0, 20000 - 300)), int(rng.integers(0, 16000 - 300))
                np.testing.assert_array_equal(store.read_region(0, (y, x), (300, 300)),
                                              level[y:y + 300, x:x + 300])
            del level
    finally:
        if os.path.exists(out):
            os.remove(out)
