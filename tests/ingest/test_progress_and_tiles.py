"""The progress bar counts bytes; thin volumes get a thinner default tile, and the plan says the overhead.

Matrix: progress of {one large image (several bands), a list of images with
masks (total known), a generator (total unknown)} and the summary's MB/s;
default tiles of {thin volumes via build and via write_store, a deep volume,
2-D images, an explicit tile}.
"""

import os

import numpy as np
import pytest

import lazypatch.ingest.builder as builder
from lazypatch import build, write_store
from lazypatch.cli import main


class Recorder:
    """Stands in for the tqdm bar: records its total and every update."""

    def __init__(self, show, total):
        self.total, self.updates, self.unit = total, [], "B"

    def update(self, n):
        self.updates.append(n)

    def close(self):
        pass


@pytest.fixture
def bars(monkeypatch):
    made = []

    def make(show, total):
        made.append(Recorder(show, total))
        return made[-1]

    monkeypatch.setattr(builder, "_progress_bar", make)
    return made


def test_one_large_image_moves_the_bar(tmp_path, bars):
    image = np.zeros((3000, 2500, 3), np.uint8)  # 22.5 MB: more than one 16 MiB band
    write_store(tmp_path / "s.h5", [image], progress=True).close()
    (bar,) = bars
    assert bar.total == image.nbytes and sum(bar.updates) == image.nbytes and len(bar.updates) > 1


def test_bytes_of_images_and_masks(tmp_path, bars):
    images = [np.zeros((100, 120, 3), np.uint16), np.zeros((50, 60, 3), np.uint16)]
    masks = [np.zeros((100, 120), np.uint8), np.zeros((50, 60), np.uint8)]
    write_store(tmp_path / "a.h5", images, masks=masks, progress=True).close()
    total = sum(a.nbytes for a in images + masks)
    assert bars[0].total == total and sum(bars[0].updates) == total
    write_store(tmp_path / "b.h5", iter(images), progress=True).close()  # a generator: no total
    assert bars[1].total is None and sum(bars[1].updates) == sum(a.nbytes for a in images)


def test_the_real_bar_counts_bytes():
    bar = builder._progress_bar(True, 10)
    assert bar.unit == "B" and bar.unit_scale
    bar.close()


def test_the_summary_keeps_mb_per_second(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "a.npy", np.zeros((64, 64, 3), np.uint8))
    assert main(["build", str(tmp_path / "src"), str(tmp_path / "s.h5"), "--no-progress"]) == 0
    assert " MB/s: " in capsys.readouterr().out


# -- default tiles -----------------------------------------------------------------------------
def test_thin_volumes_get_a_thin_z_tile(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    rng = np.random.default_rng(0)
    volumes = [rng.integers(0, 60000, (5, 320, 250), dtype=np.uint16),
               rng.integers(0, 60000, (3, 192, 190), dtype=np.uint16)]
    for k, volume in enumerate(volumes):
        np.save(tmp_path / "src" / f"{k}.npy", volume)
    pixels = sum(v.nbytes for v in volumes)
    plan = build(tmp_path / "src", tmp_path / "s.h5", spatial_ndim=3, dry_run=True)
    assert plan["tile"] == [8, 64, 64]
    stored = 2 * (8 * 320 * 256 + 8 * 192 * 192)  # z padded to 8, x to 64
    assert plan["stored_bytes"] == stored and plan["overhead"] == round(stored / pixels, 3)
    assert plan["overhead"] < 2  # 64^3 tiles would store 15x the pixels
    assert main(["build", str(tmp_path / "src"), str(tmp_path / "s.h5"), "--spatial-ndim", "3",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"in layout 'tiled' with tiles 8x64x64 ({pixels / 1e6:.3g} MB of decoded pixels: " \
           f"{stored / pixels:.2f}x stored)" in text
    assert os.path.getsize(tmp_path / "s.h5") < 1.2 * stored
    # write_store chooses the same from a list of volumes; an explicit tile is kept
    store = write_store(tmp_path / "w.h5", volumes, spatial_ndim=3, progress=False)
    assert store.tile == (8, 64, 64) and np.array_equal(store.read(1), volumes[1])
    store.close()
    store = write_store(tmp_path / "x.h5", volumes, spatial_ndim=3, tile=64, progress=False)
    assert store.tile == (64, 64, 64)
    store.close()


def test_deep_volumes_and_images_keep_64(tmp_path):
    deep = write_store(tmp_path / "d.h5", [np.zeros((70, 32, 32), np.uint8), np.zeros((3, 32, 32), np.uint8)],
                       spatial_ndim=3, progress=False)
    assert deep.tile == (64, 64, 64)
    deep.close()
    flat = write_store(tmp_path / "f.h5", [np.zeros((5, 30), np.uint8)], progress=False)
    assert flat.tile == (64, 64)
    flat.close()
