"""Sharded builds: each shard one task, on this machine or a Dask cluster, and a manifest last.

``lazypatch build SRC OUT.h5 --shard-size 10GB [--scheduler ADDRESS | local:N]`` plans
the shards in the first pass (:mod:`lazypatch.ingest.folder`), then runs one task
per shard (:func:`write_shard`): the task opens its images again (headers, grids,
masks, exactly as the first pass did for them), decodes and writes its shard
atomically as ``OUT.shards/<build-id>-<k>.h5``, and returns what it wrote. The
driver writes ``OUT`` last, atomically, as a manifest
(:mod:`lazypatch.store.manifest`), which ``ImageStore("OUT.h5")`` opens as one
store. Dask.distributed runs the tasks when a scheduler is given (its workers
should run one thread each, and each task decodes in one thread); without
one they run here in turn.

NOTE [shard faults]: a shard is written to a temporary file and renamed into
place when whole, so a worker killed mid-task leaves a temporary, never a
torn shard, and Dask runs the task again on another worker (the scheduler
reschedules the tasks of a lost worker). The driver removes this build's
temporaries of dead processes when it ends. When the build fails, the shards
it published are removed and the manifest at ``OUT`` (if any) is untouched.
The manifest is published with a compare-and-swap on its generation, so of
two builds into one ``OUT`` one wins and the other fails naming it.
"""

from __future__ import annotations

import glob
import os
import secrets
import socket
import sys
import time

from ..errors import ParameterError

__all__ = ["SHARD_SUFFIX", "shard_folder", "new_build_id", "write_shard", "run_shards", "open_client"]

SHARD_SUFFIX = ".shards"


def shard_folder(output: str) -> str:
    """``OUT.h5.shards``: where the shards of the manifest ``OUT.h5`` live.

    >>> shard_folder("/data/train.h5")
    '/data/train.h5.shards'
    """
    return os.fspath(output) + SHARD_SUFFIX


def new_build_id() -> str:
    """Eight random hex digits naming one build's shards."""
    return secrets.token_hex(4)


def shard_name(output: str, build_id: str, number: int) -> str:
    """``OUT.shards/<build-id>-<k>.h5``.

    >>> shard_name("t.h5", "0a1b2c3d", 7)
    't.h5.shards/0a1b2c3d-00007.h5'
    """
    return os.path.join(shard_folder(output), f"{build_id}-{number:05d}.h5")


def write_shard(task: dict) -> dict:
    """Write one shard: open its images as the first pass did, decode, write atomically.

    ``task`` holds only plain values (paths, names, options), so it travels
    to a Dask worker by pickling. Returns the shard's path, its file size,
    the decoded bytes, the seconds spent, the worker (host:pid) and the mask
    label counts.
    """
    from .builder import write_file
    from .sources import label_mapper, open_sources

    started = time.perf_counter()
    images, masks, problems = open_sources(task["paths"], task["mask_paths"], spatial_ndim=task["spatial_ndim"],
                                           workers=task["workers"], pages=task["pages"], ingest=task["ingest"])
    if problems:
        raise problems[0]
    if masks is not None and task["mask_map"]:
        import numpy as np

        mapping = label_mapper(task["mask_map"], np.dtype(task["mask_dtype"]))
        for header in masks.headers:
            header.mapping = mapping
    report = {}
    path = write_file(task["output"], images, masks=masks, names=task["names"],
                      report=report if masks is not None else None, progress=False, warn_axes=False,
                      **task["write"])
    return {"path": path, "file_bytes": os.path.getsize(path), "pixel_bytes": int(images.nbytes),
            "seconds": time.perf_counter() - started, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "labels": report.get("labels", {}), "images": len(task["paths"])}


def open_client(scheduler=None, client=None):
    """(client, close) for ``--scheduler ADDRESS`` or ``local:N`` (a LocalCluster of N
    one-thread worker processes), or a client given in Python; (None, None) for neither."""
    if client is not None:
        return client, None
    if scheduler is None:
        return None, None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError('--scheduler (scheduler=) runs shards on Dask.distributed: '
                          'pip install "lazypatch[dask]"') from exc
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ParameterError(f"--scheduler (scheduler=) must be an address such as tcp://head:8786 or "
                             f"local:N, got {scheduler!r}")
    if scheduler.startswith("local:"):
        count = scheduler[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise ParameterError(f"--scheduler local:N needs N >= 1 worker processes, got {scheduler!r}")
        cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()
        return client, close
    client = Client(scheduler)
    return client, client.close


def run_shards(tasks, *, client=None, progress: bool = True) -> list:
    """Run the shard tasks (in order here, or on ``client``), a progress bar over shards.

    Returns the tasks' results in shard order; the first failure is raised
    after the other running tasks are cancelled.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="shard", desc="lazypatch build",
               disable=not (progress and sys.stderr.isatty()), file=sys.stderr)
    results = [None] * len(tasks)
    try:
        if client is None:
            for k, task in enumerate(tasks):
                results[k] = write_shard(task)
                bar.update()
            return results
        from dask.distributed import as_completed

        futures = [client.submit(write_shard, task, key=f"lazypatch-shard-{os.path.basename(task['output'])}",
                                 pure=False, retries=1) for task in tasks]
        where = {future.key: k for k, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                results[where[future.key]] = future.result()
                bar.update()
        except BaseException:
            client.cancel(futures)
            raise
        return results
    finally:
        bar.close()


def remove_build(output: str, build_id: str) -> None:
    """Remove the shards and temporaries of one build (after a failure)."""
    folder = glob.escape(shard_folder(output))
    for path in glob.glob(os.path.join(folder, f"{build_id}-*")) + glob.glob(os.path.join(folder, f".{build_id}-*")):
        try:
            os.remove(path)
        except OSError:
            pass
    try:
        os.rmdir(shard_folder(output))  # only when empty
    except OSError:
        pass


def remove_dead_temporaries(paths) -> None:
    """Temporaries of the given shard paths left by killed processes (NOTE [shard faults])."""
    from ..store.publish import remove_stale_temporaries

    for path in paths:
        remove_stale_temporaries(path)


def worker_summary(results) -> list:
    """One line per worker: shards, MB of pixels, seconds busy, MB/s."""
    workers = {}
    for result in results:
        entry = workers.setdefault(result["worker"], [0, 0, 0.0])
        entry[0] += 1
        entry[1] += result["pixel_bytes"]
        entry[2] += result["seconds"]
    return [f"  {worker}: {count} shard(s), {nbytes / 1e6:,.1f} MB in {seconds:.1f} s, "
            f"{nbytes / 1e6 / max(seconds, 1e-9):,.0f} MB/s" for worker, (count, nbytes, seconds)
            in sorted(workers.items())]
