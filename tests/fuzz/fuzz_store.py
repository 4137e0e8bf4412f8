"""Byte-mutation fuzzing: damaged stores must fail cleanly, never crash or lie.

``python tests/fuzz/fuzz_store.py --mutants 10000 --seed 0`` writes a small reference store
(three images with masks, names and meta), then checks mutants of it: random
byte flips (anywhere, or in the HDF5 structure outside the pixel data),
zeroed runs and truncations. Each mutant is opened, verified and read in full
in a worker process, so a crash is caught; a mutant that takes longer than
``timeout`` seconds counts as a hang. The outcome of a mutant is one of

- ``correct``: it opens, ``verify`` finds nothing and every pixel, mask,
  name and meta equals the original (the flip hit unused bytes);
- ``detected``: it opens and ``verify`` names the damaged images; every
  image it does not name reads back exactly as written;
- ``rejected``: a lazypatch error (``StoreFormatError``...) or an ``OSError``
  with a message, at open or while reading;

and anything else is a failure: ``silent`` (wrong data that ``verify`` did
not report), ``wrong-shape``, ``unexpected-<Type>`` (another exception),
``crash-<signal>`` or ``hang``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

GOOD = ("correct", "detected", "rejected")
SHAPES = [(19, 30), (8, 8), (25, 13)]


def reference_images():
    images = [(np.arange(np.prod(s) * 2, dtype=np.uint32).reshape(s + (2,)) * 2654435761 % 65521)
              .astype(np.uint16) for s in SHAPES]
    masks = [(img[..., 0] % 4).astype(np.uint8) for img in images]
    return images, masks, [f"image {k}" for k in range(len(SHAPES))], [{"k": k} for k in range(len(SHAPES))]


def write_reference(path: str, layout: str = "tiled") -> None:
    from lazypatch import write_store

    images, masks, names, meta = reference_images()
    options = {"tiled": dict(tile=8), "contiguous": {},
               "chunked": dict(tile=8, compression="gzip", checksum=True)}[layout]
    write_store(path, images, masks=masks, names=names, meta=meta, layout=layout, progress=False,
                **options)


def data_extents(path: str) -> list:
    """(start, end) byte ranges of the uncompressed pixel and mask data."""
    import h5py

    extents = []
    with h5py.File(path, "r") as f:
        for name in ("pixels", "masks"):
            offset = f[name].id.get_offset()
            if offset is not None:
                extents.append((offset, offset + f[name].id.get_storage_size()))
    return extents


def mutate(data: bytes, rng: np.random.Generator, extents: list) -> tuple:
    """A damaged copy of ``data`` and a description of the damage."""
    data = bytearray(data)
    kind = rng.choice(["flip", "flip-structure", "zero-run", "truncate"], p=[0.35, 0.35, 0.15, 0.15])
    if kind == "truncate":
        size = int(rng.integers(0, len(data)))
        return bytes(data[:size]), f"truncate to {size}"
    if kind == "zero-run":
        start = int(rng.integers(0, len(data)))
        length = int(rng.integers(1, 256))
        data[start:start + length] = bytes(len(data[start:start + length]))
        return bytes(data), f"zero {length} bytes at {start}"
    where = np.ones(len(data), bool)
    if kind == "flip-structure":
        for a, b in extents:
            where[a:b] = False
    candidates = np.flatnonzero(where)
    count = int(rng.integers(1, 5))
    positions = rng.choice(candidates, size=count)
    for position in positions:
        data[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(data), f"{kind} at {sorted(int(p) for p in positions)}"


def check(path: str) -> str:
    """Open, verify and read a mutant; the outcome (see the module docstring)."""
    from lazypatch.errors import LazypatchError
    from lazypatch import ImageStore

    images, masks, names, meta = reference_images()
    try:
        with ImageStore(path) as store:
            damaged = {entry["image"] for entry in store.verify(progress=False)}
            if len(store) != len(images):
                return "detected" if damaged else "silent"
            for k, image in enumerate(images):
                read = store.read(k)
                mask = store.read_mask(k) if store.has_masks else None
                if read.shape != image.shape or (mask is not None and mask.shape != masks[k].shape):
                    if k not in damaged:
                        return "wrong-shape"
                    continue
                same = (np.array_equal(read, image) and mask is not None
                        and np.array_equal(mask, masks[k]) and store.names[k] == names[k]
                        and store.meta(k) == meta[k])
                if not same and k not in damaged:
                    return "silent"
            return "detected" if damaged else "correct"
    except (LazypatchError, OSError) as exc:
        return "rejected" if str(exc).strip() else "unexpected-empty-message"
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return f"unexpected-{type(exc).__name__}: {str(exc)[:200]}"


def worker() -> None:
    """Check mutants named on stdin, one JSON outcome per line on stdout."""
    import warnings

    warnings.simplefilter("ignore")
    for line in sys.stdin:
        print(json.dumps(check(line.strip())), flush=True)


class _Worker:
    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def ask(self, path: str, timeout: float) -> str:
        try:
            self.process.stdin.write(path + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.process.kill()
            self.process.wait()
            return "hang"
        line = self.process.stdout.readline()
        return json.loads(line) if line else self._died()

    def _died(self) -> str:
        code = self.process.wait()
        return f"crash-signal-{-code}" if code < 0 else f"crash-exit-{code}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.alive:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        self.process.stdout.close()


def run(mutants: int, seed: int = 0, timeout: float = 10.0, layouts=("tiled", "contiguous", "chunked"),
        folder=None, progress: bool = False) -> dict:
    """Fuzz ``mutants`` damaged copies (spread over the layouts); outcome counts and failures."""
    rng = np.random.default_rng(seed)
    counts, failures = Counter(), []
    with tempfile.TemporaryDirectory(dir=folder) as work:
        references = {}
        for layout in layouts:
            path = os.path.join(work, f"ref-{layout}.h5")
            write_reference(path, layout)
            with open(path, "rb") as handle:
                references[layout] = (handle.read(), data_extents(path))
        mutant_path = os.path.join(work, "mutant.h5")
        started = time.perf_counter()
        checker = _Worker()
        try:
            for n in range(mutants):
                layout = layouts[n % len(layouts)]
                data, how = mutate(*references[layout][:1], rng, references[layout][1])
                with open(mutant_path, "wb") as handle:
                    handle.write(data)
                outcome = checker.ask(mutant_path, timeout)
                key = outcome.split(":")[0]
                counts[(layout, key)] += 1
                if key not in GOOD:
                    failures.append({"layout": layout, "mutation": how, "outcome": outcome})
                if not checker.alive:
                    checker.close()
                    checker = _Worker()
                if progress and (n + 1) % 500 == 0:
                    print(f"{n + 1} mutants, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        finally:
            checker.close()
    table = {}
    for (layout, key), value in sorted(counts.items()):
        table.setdefault(layout, {})[key] = value
    return {"mutants": mutants, "seed": seed, "outcomes": table, "failures": failures,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/fuzz/fuzz_store.py", description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a mutant is a hang")
    args = parser.parse_args(argv)
    result = run(args.mutants, args.seed, args.timeout, progress=True)
    print(json.dumps(result, indent=2))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        sys.exit(main())
