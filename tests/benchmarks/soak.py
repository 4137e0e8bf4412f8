"""A leak check: RssAnon of the main process and of persistent DataLoader workers, epoch by epoch.

``--epochs`` epochs of ``--patches`` random patches (``PatchSampler`` with
replacement, a new epoch each time) through ``DataLoader(num_workers=2,
persistent_workers=True)``; after each epoch, RssAnon and RssFile of every
process from ``/proc``. A leak shows as a slope: the least-squares growth of
RssAnon per epoch. RssFile is the page cache the process maps (reclaimable).

Run (the history in README.md here)::

    python tests/benchmarks/soak.py --size-gb 0.5 --patches 200000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def soak(path: str, patch, epochs: int = 5, patches: int = 200_000, batch: int = 256,
         workers: int = 2, seed: int = 0) -> dict:
    """RssAnon and RssFile at the end of each epoch, main process and persistent workers."""
    from torch.utils.data import DataLoader

    import lazypatch
    from lazypatch.testing import proc_status

    dataset = lazypatch.PatchDataset(path, patch)
    sampler = lazypatch.PatchSampler(dataset, num_samples=patches, replacement=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        persistent_workers=True)
    rows, seconds = {}, []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        iterator = iter(loader)
        pids = {"main": "self", **{f"worker {k}": w.pid for k, w in enumerate(iterator._workers)}}
        count = sum(len(b["index"]) for b in iterator)
        if count != patches:
            raise AssertionError(f"soak: an epoch gave {count} patches, not {patches}")
        seconds.append(time.perf_counter() - started)
        for name, pid in pids.items():
            status = proc_status(pid)
            rows.setdefault(name, {"rss_anon_mib": [], "rss_file_mib": []})
            rows[name]["rss_anon_mib"].append(status.get("RssAnon", float("nan")))
            rows[name]["rss_file_mib"].append(status.get("RssFile", float("nan")))
    for row in rows.values():
        row["rss_anon_slope_mib_per_epoch"] = (
            float(np.polyfit(np.arange(epochs), row["rss_anon_mib"], 1)[0]) if epochs > 1 else 0.0)
    del loader, iterator
    dataset.close()
    return {"epochs": epochs, "patches_per_epoch": patches, "workers": workers,
            "seconds_per_epoch": seconds, "processes": rows,
            "max_slope_mib_per_epoch": max(r["rss_anon_slope_mib_per_epoch"] for r in rows.values())}


def print_soak(data: dict) -> None:
    print(f"`{data['command']}` on {data['date']}: {data['epochs']} epochs x "
          f"{data['patches_per_epoch']:,} patches, {data['workers']} persistent workers, store "
          f"{data['store_gb']:.1f} GB, {np.median(data['seconds_per_epoch']):.1f} s per epoch")
    _common.print_rows(
        ["process", "RssAnon at each epoch's end (MiB)", "slope (MiB/epoch)", "RssFile at the end (MiB)"],
        [[name, ", ".join(f"{v:.1f}" for v in row["rss_anon_mib"]), f"{row['rss_anon_slope_mib_per_epoch']:+.2f}",
          f"{row['rss_file_mib'][-1]:.0f}"] for name, row in data["processes"].items()],
        markdown=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_store_arguments(parser)
    parser.add_argument("--patch", type=_common.int_list, default=64, help="patch size (default 64)")
    parser.add_argument("--batch", type=int, default=256, help="patches per batch (default 256)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    parser.add_argument("--patches", type=int, default=200_000, help="patches per epoch (default 200000)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--json", help="also write the results (with RssFile) as JSON here")
    args = parser.parse_args(argv)
    with _common.Workdir(args.workdir) as workdir:
        case = _common.Case(args, workdir, load_images=False)
        path, store_gb = case.store.path, case.store.nbytes / 1e9
        case.close()
        data = {"command": _common.command_line("soak.py", argv), "date": _common.now(),
                "machine": _common.machine(), "store_gb": store_gb,
                **soak(path, args.patch, args.epochs, args.patches, args.batch, args.workers, args.seed)}
    print_soak(data)
    _common.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
