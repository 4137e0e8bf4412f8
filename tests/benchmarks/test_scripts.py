"""Every script of tests/benchmarks/ runs, with tiny settings (the figures are not checked).

Each is started as a user starts it, ``python tests/benchmarks/NAME.py ...``,
in a fresh process: ``--help`` for all of them, then a tiny real run of each
(peers that are not installed are left out by the scripts themselves). The
reference run, with ``--cold``, is the long one (``slow``).
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["reference.py", "peers.py", "soak.py", "memory.py", "build.py", "sampling.py", "overheads.py",
           "workers.py", "ingest.py", "cluster.py"]
TINY_STORE = ["--size-gb", "0.005", "--image-size", "96", "--patch", "32"]


def run(script: str, *args) -> str:
    done = subprocess.run([sys.executable, os.path.join(HERE, script), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    assert "usage:" in run(script, "--help")


@pytest.mark.slow
def test_reference(tmp_path):
    report = tmp_path / "reference.json"
    out = run("reference.py", "--size-gb", "0.01", "--repeats", "1", "--batches", "2", "--batch", "64",
              "--cold", "--markdown", "--json", report)
    assert "Where the time goes" in out and "| lazypatch read_batch |" in out
    rows = {row["method"] for row in json.loads(report.read_text())["rows"]}
    assert rows >= {"lazypatch read_batch", "lazypatch DataLoader (default collate)", "per-patch loop (RAM)",
                    "raw copy", "seed on-the-fly dataset", "h5py per patch, chunked", "raw pread (warm), 8 threads",
                    "lazypatch DataLoader (default collate), 2 workers", "lazypatch read_batch, cold, io=auto",
                    "raw pread (cold), 16 threads"}


def test_peers():
    out = run("peers.py", *TINY_STORE, "--repeats", "1", "--batches", "2", "--batch", "32")
    assert "lazypatch read_batch" in out


@pytest.mark.parametrize("script, args, expected", [
    ("soak.py", TINY_STORE + ["--patches", "600", "--epochs", "2"], "slope (MiB/epoch)"),
    ("memory.py", TINY_STORE + ["--patches", "600"], "worker 1 (DataLoader)"),
    ("build.py", ["--size-gb", "0.005"], "write_store_mb_s"),
    ("overheads.py", ["--images", "2000", "--calls", "200"], "locate_per_s_batch_256"),
    ("sampling.py", ["--scale", "0.01"], "aggregator_per_s"),
    ("workers.py", ["--size-gb", "0.005", "--batches", "2", "--repeats", "1", "--no-peers"], "read_batch"),
    ("ingest.py", ["--height", "600", "--width", "500", "--repeats", "1"], "build --mpp 0.4"),
    ("cluster.py", ["--size-gb", "0.007", "--shards", "2", "--repeats", "1"], "Dask workers"),
])
def test_tiny_run(script, args, expected):
    assert expected in run(script, *args)
