"""Build speed: ``write_store`` from arrays in RAM against plain file writes of the same bytes.

Random RGB uint8 512x512 images of ``--size-gb`` in all; both writes end with
``fsync``, and the ratio is plain seconds over ``write_store`` seconds (1.0: as
fast as the disk takes plain bytes). Building from image files (decoding
included) is ``lazypatch build SRC OUT.h5``, which prints its own MB/s.

Run (the history in README.md here)::

    python tests/benchmarks/build.py --size-gb 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def build_speed(workdir: str, size_gb: float = 0.5) -> dict:
    import lazypatch

    count = max(1, int(size_gb * 1e9 // (512 * 512 * 3)))
    images = np.random.default_rng(3).integers(0, 255, size=(count, 512, 512, 3), dtype=np.uint8)
    plain = os.path.join(workdir, "plain.bin")
    started = time.perf_counter()
    with open(plain, "wb") as f:
        for image in images:
            f.write(image.data)
        f.flush()
        os.fsync(f.fileno())
    plain_seconds = time.perf_counter() - started
    os.unlink(plain)
    path = os.path.join(workdir, "build.h5")
    started = time.perf_counter()
    lazypatch.write_store(path, images, overwrite=True, progress=False).close()
    store_seconds = time.perf_counter() - started
    os.unlink(path)
    return {"images": count, "bytes": images.nbytes, "plain_write_mb_s": images.nbytes / plain_seconds / 1e6,
            "write_store_mb_s": images.nbytes / store_seconds / 1e6, "ratio": plain_seconds / store_seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.5, help="GB of images (default 0.5, at most 2)")
    parser.add_argument("--workdir", help="where files go (default: a temporary folder, removed afterwards)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    with _common.Workdir(args.workdir) as workdir:
        data = {"command": _common.command_line("build.py", argv), "date": _common.now(),
                "machine": _common.machine(), "build": build_speed(workdir, min(args.size_gb, 2.0))}
    print(json.dumps(data, indent=2))
    _common.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
