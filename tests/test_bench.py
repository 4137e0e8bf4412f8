"""``lazypatch bench``: the slim benchmark users run on their own store.

Matrix: a tiny store of three shapes (text table with the shape range,
``--json`` keys and ratios, ``--markdown``, ``--only``, ``--workers``), ``--cold``
(each repetition in a fresh process that calls only the public API), the
synthetic default store (removed afterwards), and bad counts. One repetition
of two batches: these check the command, not the machine.
"""

import json
import re
import tempfile

import numpy as np
import pytest

from lazypatch.cli import _bench, main

WARM = ["read_batch", "DataLoader (default collate)", "per-patch loop (RAM)", "raw copy"]


@pytest.fixture
def store_path(make_store, rng):
    shapes = [(40, 64), (64, 80), (48, 48)]
    images = [rng.integers(0, 256, shape + (3,), dtype=np.uint8) for shape in shapes]
    return make_store(images, tile=16).path


def bench(capsys, *args) -> str:
    assert main(["bench", *map(str, args), "--repeats", "1", "--batches", "2", "--batch", "8",
                 "--patch", "16"]) == 0
    return capsys.readouterr().out


def test_table_and_json(store_path, tmp_path, capsys):
    report = tmp_path / "bench.json"
    out = bench(capsys, store_path, "--json", report, "--workers", "2")
    assert "3 images of 40-64 x 48-80, 3 channels uint8" in out  # the range, not image 0's shape
    assert "patch 16x16, stride 16x16: 37 patches" in out
    assert re.search(r"^read_batch +[\d,]+ +[\d,]+ +\d+\.\d\d +\d+\.\d\d", out, re.M), out
    data = json.loads(report.read_text())
    assert set(data) >= {"command", "date", "machine", "store", "patch", "stride", "patches", "batch",
                         "batches", "repeats", "preload_seconds", "rows"}
    assert data["store"]["shape_min"] == [40, 48] and data["store"]["shape_max"] == [64, 80]
    rows = {row["method"]: row for row in data["rows"]}
    assert list(rows) == WARM + ["DataLoader (default collate), 2 workers"]
    assert set(rows["read_batch"]) == {"method", "patches_per_s", "mb_per_s", "vs_loop", "vs_raw_copy",
                                       "vs_raw_pread", "runs"}
    assert rows["per-patch loop (RAM)"]["vs_loop"] == 1.0 and rows["raw copy"]["vs_raw_copy"] == 1.0
    assert all(row["patches_per_s"] > 0 and len(row["runs"]) == 1 for row in rows.values())


def test_markdown_and_only(store_path, tmp_path, capsys):
    report = tmp_path / "bench.json"
    out = bench(capsys, store_path, "--only", "read_batch", "--markdown", "--json", report)
    assert "| method | patches/s | MB/s | x loop | x raw copy | x raw pread |" in out
    assert "| read_batch |" in out and "DataLoader" not in out
    # the baselines of the ratios always run
    assert [row["method"] for row in json.loads(report.read_text())["rows"]] == [
        "read_batch", "per-patch loop (RAM)", "raw copy"]


def test_cold_rows_come_from_fresh_processes(store_path, tmp_path, capsys):
    report = tmp_path / "bench.json"
    bench(capsys, store_path, "--cold", "--only", "read_batch", "--json", report)
    rows = {row["method"]: row for row in json.loads(report.read_text())["rows"]}
    cold = ["read_batch, cold", "raw pread, cold, 1 thread", "raw pread, cold, 8 threads"]
    assert list(rows) == ["read_batch", "per-patch loop (RAM)", "raw copy"] + cold
    assert max(rows[name]["vs_raw_pread"] for name in cold[1:]) == 1.0
    assert all(rows[name]["vs_loop"] is None and rows[name]["patches_per_s"] > 0 for name in cold)


def test_cold_processes_use_only_the_public_api():
    names = set(re.findall(r"lazypatch\.\w+", _bench.COLD_READ))
    assert names == {"lazypatch.ImageStore", "lazypatch.PatchDataset"}
    assert "cold-worker" not in _bench.COLD_READ


def test_synthetic_store_is_removed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = bench(capsys, "--size-gb", "0.001", "--only", "read_batch")
    assert "a synthetic store: 2 images of 512x512 (all alike), 3 channels uint8" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value, message", [
    ("--repeats", "0", "--repeats must be a positive integer, got 0"),
    ("--batch", "-1", "--batch must be a positive integer, got -1"),
    ("--workers", "-2", "--workers must be 0 or more, got -2"),
])
def test_bad_counts(store_path, capsys, option, value, message):
    assert main(["bench", store_path, option, value]) == 1
    assert message in capsys.readouterr().err
