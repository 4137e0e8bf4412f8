"""Memory while reading: RssAnon of the main process (``read_batch``) and of two DataLoader workers.

``--patches`` random patches through ``read_batch`` in the main process, then
as many through ``DataLoader(batch_size=256, num_workers=2)`` with torch's
default collate; RssAnon, RssFile and MemAvailable from ``/proc`` every 20
batches. Private memory (RssAnon) must stay flat; RssFile grows with the pages
a process maps (page cache, reclaimable). The JSON (``--json``) has the time
series per process.

Run (the history in README.md here)::

    python tests/benchmarks/memory.py --size-gb 2.147 --patches 100000
    python tests/benchmarks/memory.py BIG_STORE.h5 --patches 100000   # a store larger than RAM
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def memory(path: str, patch, patches: int = 100_000, batch: int = 256, workers: int = 2,
           seed: int = 0) -> dict:
    """RssAnon growth while reading ``patches`` random patches, main process and workers."""
    from torch.utils.data import DataLoader

    import lazypatch
    from lazypatch.testing import proc_status

    dataset = lazypatch.PatchDataset(path, patch)
    rng = np.random.default_rng(seed)
    timeline = []
    result = {}
    # main process, batch API
    order = rng.integers(0, len(dataset), patches)
    before = proc_status()
    peak = before.get("RssAnon", 0.0)
    started = time.perf_counter()
    for k in range(0, patches, batch):
        dataset.read_batch(order[k:k + batch])
        if k // batch % 20 == 0:
            status = proc_status()
            peak = max(peak, status.get("RssAnon", 0.0))
            timeline.append({"process": "main", "seconds": time.perf_counter() - started, **status})
    result["main"] = {"rss_anon_start_mib": before.get("RssAnon"), "rss_anon_peak_mib": peak,
                      "growth_mib": peak - before.get("RssAnon", 0.0)}
    # workers, torch's default collate
    order = rng.integers(0, len(dataset), patches).tolist()
    iterator = iter(DataLoader(dataset, batch_size=batch, sampler=order, num_workers=workers))
    pids = [w.pid for w in iterator._workers]
    first, peaks = {}, {}
    started = time.perf_counter()
    for step, _ in enumerate(iterator):
        if step % 20 == 0:
            for pid in pids:
                status = proc_status(pid)
                if not status:
                    continue
                first.setdefault(pid, status.get("RssAnon", 0.0))
                peaks[pid] = max(peaks.get(pid, 0.0), status.get("RssAnon", 0.0))
                timeline.append({"process": f"worker {pids.index(pid)}",
                                 "seconds": time.perf_counter() - started, **status})
    result["workers"] = [{"rss_anon_start_mib": first[pid], "rss_anon_peak_mib": peaks[pid],
                          "growth_mib": peaks[pid] - first[pid]} for pid in pids if pid in first]
    result["timeline"] = timeline
    result["patches"] = patches
    dataset.close()
    return result


def print_memory(data: dict) -> None:
    print(f"`{data['command']}` on {data['date']}: {data['patches']:,} random patches per process, "
          f"store {data['store_gb']:.1f} GB, MemAvailable {data['ram_gb']:.1f} GB at start")
    rows = [("main (read_batch)", data["main"])] + [(f"worker {k} (DataLoader)", w)
                                                    for k, w in enumerate(data["workers"])]
    _common.print_rows(
        ["process", "RssAnon at start (MiB)", "RssAnon peak (MiB)", "growth (MiB)"],
        [[name, f"{row['rss_anon_start_mib']:.1f}", f"{row['rss_anon_peak_mib']:.1f}", f"{row['growth_mib']:.1f}"]
         for name, row in rows],
        markdown=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_store_arguments(parser)
    parser.add_argument("--patch", type=_common.int_list, default=64, help="patch size (default 64)")
    parser.add_argument("--batch", type=int, default=256, help="patches per batch (default 256)")
    parser.add_argument("--patches", type=int, default=100_000, help="patches per process (default 100000)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--json", help="also write the results and the time series as JSON here")
    args = parser.parse_args(argv)
    with _common.Workdir(args.workdir) as workdir:
        case = _common.Case(args, workdir, load_images=False)
        path, store_gb = case.store.path, case.store.nbytes / 1e9
        case.close()
        data = {"command": _common.command_line("memory.py", argv), "date": _common.now(),
                "machine": _common.machine(), "store_gb": store_gb, "ram_gb": _common.available_bytes() / 1e9,
                **memory(path, args.patch, args.patches, args.batch, args.workers, args.seed)}
    print_memory(data)
    _common.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
