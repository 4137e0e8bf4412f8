"""Training speed where training runs: DataLoader workers, augmentation, the first batch and epoch.

Every row reads the same store (random RGB uint8 512x512 images, 64x64 grid
patches, batches of 256), warm, side by side in one run: the repetitions
interleave the rows and each figure is the median. The main process runs
``torch.set_num_threads(1)`` and touches every byte of every batch
(``batch["image"].sum()``); the peers read the same images from RAM.

Rows (patches/s, and x read_batch):

* ``read_batch``: one process, ``ds.read_batch(indices)``;
* ``DataLoader, 2 workers``: ``DataLoader(ds, batch_size=256, shuffle=True,
  num_workers=2, persistent_workers=True)`` as users write it (lazypatch's
  worker slots, NOTE [worker batches]);
* ``DataLoader, 2 workers, torch's path``: the same with the slots turned off;
* ``MONAI PatchDataset, 2 workers``, ``MONAI ThreadDataLoader`` and
  ``torchio Queue(num_workers=2)`` when installed (``pip install monai torchio``);
* with ``--augment``: the same flips + 56-pixel random crop + brightness and
  contrast jitter per patch (pure torch, the same function for every row),
  lazypatch with 1 and 2 workers and the peers with 2.

``--soak`` reports RssAnon of the main process and each worker over five
epochs. ``--first`` measures, each in a fresh process, the first ``read_batch``
against a steady one, ``ImageStore`` + ``PatchDataset`` + first batch, and
the first epoch against the next ones.

Run::

    python tests/benchmarks/workers.py --size-gb 2.147 --augment --first --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

import lazypatch
from lazypatch.testing import proc_status, torch_worker_batches

IMAGE = 512
PATCH = 64
BATCH = 256


def write_reference(folder: str, size_gb: float) -> str:
    path = os.path.join(folder, "workers.h5")
    count = max(2, int(size_gb * 1e9 // (IMAGE * IMAGE * 3)))
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for _ in range(count))
    lazypatch.write_store(path, images, progress=False, overwrite=True).close()
    return path


def augment(sample: dict) -> dict:
    """Flips, a 56-pixel random crop and a colour jitter of one (C, 64, 64) uint8 patch."""
    image = sample["image"]
    if torch.rand(()) < 0.5:
        image = image.flip(-1)
    if torch.rand(()) < 0.5:
        image = image.flip(-2)
    y, x = torch.randint(0, PATCH - 56 + 1, (2,)).tolist()
    image = image[:, y:y + 56, x:x + 56].float()
    brightness, contrast = 1 + 0.4 * (torch.rand(2) - 0.5)
    mean = image.mean()
    image = ((image - mean) * contrast + mean * brightness).clamp_(0, 255)
    return {"image": image, "index": sample["index"]}


def _consume(loader, batches: int) -> float:
    started, seen = time.perf_counter(), 0
    for number, batch in enumerate(loader):
        image = batch["image"] if isinstance(batch, dict) else batch[0]
        image.sum()
        seen += len(image)
        if number + 1 == batches:
            break
    return seen / (time.perf_counter() - started)


def lazypatch_rows(path: str, batches: int, augmented: bool) -> dict:
    transform = augment if augmented else None
    dataset = lazypatch.PatchDataset(path, patch_size=PATCH, transform=transform)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=batches * BATCH)
    rows = {}
    if not augmented:
        rng = np.random.default_rng(1)

        def read_batch():
            started = time.perf_counter()
            for _ in range(batches):
                dataset.read_batch(rng.integers(0, len(dataset), BATCH))["image"].sum()
            return batches * BATCH / (time.perf_counter() - started)

        rows["read_batch"] = read_batch
    for workers in ((1, 2) if augmented else (2,)):
        loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers,
                            persistent_workers=True, multiprocessing_context="fork")
        rows[f"lazypatch DataLoader, {workers} worker(s)"] = (lambda loader=loader: _consume(loader, batches))
    if not augmented:
        def torch_path(loader=DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=2,
                                           persistent_workers=True, multiprocessing_context="fork")):
            with torch_worker_batches():  # workers forked now keep torch's path
                return _consume(loader, batches)
        rows["lazypatch DataLoader, 2 workers, torch's path"] = torch_path
    return rows


def peer_rows(path: str, batches: int, augmented: bool) -> dict:
    with lazypatch.ImageStore(path) as store:
        images = [np.ascontiguousarray(np.moveaxis(store.read(k), -1, 0)) for k in range(min(len(store), 800))]
    rows = {}
    try:
        from monai.data import DataLoader as MonaiLoader, PatchDataset, ThreadDataLoader
        from monai.transforms import RandSpatialCropSamples
    except ImportError:
        MonaiLoader = None
    if MonaiLoader is not None:
        per_image = 16
        crop = RandSpatialCropSamples((PATCH, PATCH), num_samples=per_image, random_size=False)

        def to_sample(patch):
            sample = {"image": torch.as_tensor(np.asarray(patch)), "index": 0}
            return augment(sample) if augmented else sample

        dataset = PatchDataset(data=images, patch_func=crop, samples_per_image=per_image, transform=to_sample)
        loader = MonaiLoader(dataset, batch_size=BATCH, num_workers=2, persistent_workers=True)
        rows["MONAI PatchDataset, 2 workers"] = lambda: _consume(loader, batches)
        threads = ThreadDataLoader(dataset, batch_size=BATCH, num_workers=0, use_thread_workers=True,
                                   buffer_size=2)
        rows["MONAI ThreadDataLoader"] = lambda: _consume(threads, batches)
    try:
        import torchio as tio
    except ImportError:
        tio = None
    if tio is not None:
        subjects = [tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(image)[..., None])) for image in images]
        sampler = tio.data.UniformSampler((PATCH, PATCH, 1))
        queue = tio.Queue(tio.SubjectsDataset(subjects), max_length=4 * BATCH, samples_per_volume=16,
                          sampler=sampler, num_workers=2, shuffle_subjects=True, shuffle_patches=True)

        def collate(patches):
            samples = [{"image": p["image"]["data"][..., 0], "index": 0} for p in patches]
            if augmented:
                samples = [augment(s) for s in samples]
            return {"image": torch.stack([s["image"] for s in samples])}

        loader = DataLoader(queue, batch_size=BATCH, num_workers=0, collate_fn=collate)
        rows["torchio Queue(num_workers=2)"] = lambda: _consume(loader, batches)
    return rows


def run_rows(rows: dict, repeats: int) -> dict:
    for row in rows.values():  # warm up: workers started, pages mapped
        row()
    figures = {name: [] for name in rows}
    names = list(rows)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            figures[name].append(rows[name]())
    return {name: statistics.median(values) for name, values in figures.items()}


FIRST = r"""
import sys, time
import numpy as np, torch, h5py, lazypatch, lazypatch.data
path, which = sys.argv[1], sys.argv[2]
indices = np.random.default_rng(0).integers(0, 10**9, 256)
started = time.perf_counter()
store = lazypatch.ImageStore(path)
dataset = lazypatch.PatchDataset(store, patch_size=64)
indices %= len(dataset)
opened = time.perf_counter()
if which == "batch":
    dataset.read_batch(indices)
    first = time.perf_counter()
    steady = []
    for k in range(1, 21):
        t = time.perf_counter(); dataset.read_batch((indices + k) % len(dataset)); steady.append(time.perf_counter() - t)
    print((opened - started) * 1e3, (first - opened) * 1e3, sorted(steady)[10] * 1e3)
else:
    order = np.random.default_rng(1).permutation(len(dataset))
    def epoch():
        t = time.perf_counter()
        for k in range(0, len(order) - 255, 256):
            dataset.read_batch(order[k:k + 256])
        return len(order) // 256 * 256 / (time.perf_counter() - t)
    print(epoch(), max(epoch(), epoch()))
"""


def first_figures(path: str, repeats: int) -> dict:
    def fresh(which):
        out = subprocess.run([sys.executable, "-c", FIRST, path, which], capture_output=True, text=True, check=True)
        return [float(v) for v in out.stdout.split()]

    batch = [fresh("batch") for _ in range(repeats)]
    epoch = [fresh("epoch") for _ in range(max(1, repeats // 2))]
    return {
        "open + PatchDataset, ms": statistics.median(b[0] for b in batch),
        "first read_batch, ms": statistics.median(b[1] for b in batch),
        "steady read_batch, ms": statistics.median(b[2] for b in batch),
        "first / steady batch": statistics.median(b[1] / b[2] for b in batch),
        "first epoch / steady epoch": statistics.median(e[0] / e[1] for e in epoch),
    }


def soak(path: str, epochs: int = 5) -> dict:
    """RssAnon of the main process and of each worker after every epoch (persistent workers)."""
    dataset = lazypatch.PatchDataset(path, patch_size=PATCH)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True)
    rows = {"main": []}
    for _ in range(epochs):
        for batch in loader:
            batch["image"].sum()
        del batch
        rows["main"].append(proc_status()["RssAnon"])
        for number, worker in enumerate(loader._iterator._workers):
            rows.setdefault(f"worker {number}", []).append(proc_status(worker.pid)["RssAnon"])
    return {name: {"first_MiB": values[0], "last_MiB": values[-1], "growth_MiB": values[-1] - values[0]}
            for name, values in rows.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=40, help="batches per row and repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--augment", action="store_true", help="also the augmented rows")
    parser.add_argument("--first", action="store_true", help="also the first batch and first epoch")
    parser.add_argument("--soak", action="store_true", help="also RssAnon over 5 epochs with 2 workers")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--workdir", help="where the store is written (default: a temporary folder)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = write_reference(folder, args.size_gb)
        results = {"command": " ".join(["python", "tests/benchmarks/workers.py"] + (argv or sys.argv[1:]))}
        for augmented in ((False, True) if args.augment else (False,)):
            rows = lazypatch_rows(path, args.batches, augmented)
            if not args.no_peers:
                rows.update(peer_rows(path, args.batches, augmented))
            results["augmented" if augmented else "plain"] = run_rows(rows, args.repeats)
        if args.first:
            results["first"] = first_figures(path, args.repeats)
        if args.soak:
            results["soak"] = soak(path)
    _print(results, args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _print(results: dict, markdown: bool) -> None:
    print(results["command"])
    for part in ("plain", "augmented"):
        if part not in results:
            continue
        figures = results[part]
        base = figures.get("read_batch") or figures.get("lazypatch DataLoader, 1 worker(s)")
        print(f"\n{part}: patches/s (x {'read_batch' if part == 'plain' else 'lazypatch, 1 worker'})")
        if markdown:
            print("| row | patches/s | ratio |\n|---|---:|---:|")
        for name, value in figures.items():
            line = (f"| {name} | {value:,.0f} | {value / base:.2f} |" if markdown
                    else f"  {name:<48} {value:>12,.0f}  {value / base:5.2f}x")
            print(line)
    if "soak" in results:
        print("\nRssAnon over 5 epochs, persistent workers (MiB):")
        for name, row in results["soak"].items():
            print(f"  {name:<10} first {row['first_MiB']:8.1f}  last {row['last_MiB']:8.1f}  "
                  f"growth {row['growth_MiB']:+6.1f}")
    if "first" in results:
        print("\nfirst batch and epoch (fresh processes):")
        for name, value in results["first"].items():
            print(f"  {name:<32} {value:.2f}")


if __name__ == "__main__":
    sys.exit(main())
