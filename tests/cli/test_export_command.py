"""``lazypatch export PREDS OUT_DIR --format ...``: exit codes, what it prints, the options passed through.

Matrix: each format on a store image (GeoTIFF from a scene with its CRS,
OME-TIFF and NIfTI from an array) -> exit 0, the file and one line saying
what was written; ``--argmax`` and ``--to-source`` reach the library call
(labels; the source grid); ``--no-progress`` prints nothing on stderr; an
existing file without / with ``--overwrite``; errors -> exit 1 with
``lazypatch export: error: <message>`` (geotiff without a CRS, not a
predictions file, no such file); usage errors (unknown format, no
``--format``) -> exit 2 from argparse.
"""

import re

import numpy as np
import pytest

import lazypatch
from lazypatch.cli import main

tifffile = pytest.importorskip("tifffile")
nibabel = pytest.importorskip("nibabel")


def predictions(tmp_path, geometry=None, shape=(8, 8)):
    """A predictions file of one image 'scan.png': channel 1 wins on the right half."""
    store = lazypatch.write_store(tmp_path / "s.h5", [np.zeros(shape, np.uint8)], names=["scan.png"],
                                  geometry=None if geometry is None else [geometry], progress=False)
    values = np.zeros((2,) + shape, np.float32)
    values[1, :, shape[1] // 2:] = 1.0
    with lazypatch.PatchAggregator(store, shape, out=tmp_path / "p.h5") as aggregator:
        aggregator.add(values[None], [0], [(0, 0)])
    store.close()
    return str(tmp_path / "p.h5")


def test_ome_tiff_labels_and_the_line_printed(tmp_path, capsys):
    preds = predictions(tmp_path, {"spacing": [0.5, 0.5], "unit": "um"})
    out = tmp_path / "out"
    assert main(["export", preds, str(out), "--format", "ome-tiff", "--argmax", "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert printed.out == f"wrote 1 ome-tiff file(s) of labels on the stored grid to {out}\n"
    assert printed.err == ""
    labels = tifffile.imread(out / "scan.ome.tif")
    assert labels.dtype == np.uint8 and labels[:, :4].max() == 0 and labels[:, 4:].min() == 1


def test_nifti_to_source(tmp_path, capsys):
    geometry = {"spacing": [2.0, 2.0], "unit": "mm", "source_shape": [16, 16]}
    preds = predictions(tmp_path, geometry)
    assert main(["export", preds, str(tmp_path / "out"), "--format", "nifti", "--to-source", "--no-progress"]) == 0
    assert "of float32 probabilities on the source grid" in capsys.readouterr().out
    image = nibabel.load(tmp_path / "out" / "scan.nii.gz")
    assert image.shape == (16, 16, 1, 2) and image.header.get_zooms()[:2] == (1.0, 1.0)


def test_geotiff(tmp_path, capsys):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.crs import CRS

    geometry = {"spacing": [10.0, 10.0], "unit": "m", "crs": CRS.from_epsg(32633).to_wkt(),
                "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0]}
    preds = predictions(tmp_path, geometry)
    assert main(["export", preds, str(tmp_path / "out"), "--format", "geotiff", "--no-progress"]) == 0
    with rasterio.open(tmp_path / "out" / "scan.tif") as scene:
        assert scene.crs == CRS.from_epsg(32633) and scene.transform == rasterio.Affine(*geometry["transform"])
        assert scene.count == 2 and scene.read(2)[:, 4:].min() == 1.0


def test_an_existing_file_and_overwrite(tmp_path, capsys):
    preds = predictions(tmp_path)
    out = str(tmp_path / "out")
    assert main(["export", preds, out, "--format", "ome-tiff", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", preds, out, "--format", "ome-tiff", "--no-progress"]) == 1
    assert capsys.readouterr().err == (f"lazypatch export: error: {str(tmp_path / 'out' / 'scan.ome.tif')!r} "
                                       "exists (1 of the 1 files to write); pass overwrite=True (--overwrite) "
                                       "to replace them\n")
    assert main(["export", preds, out, "--format", "ome-tiff", "--overwrite", "--no-progress"]) == 0


@pytest.mark.parametrize("which, fmt, message", [
    ("plain", "geotiff", r"^lazypatch export: error: format='geotiff' \(--format geotiff\) needs a CRS and "
                         r"transform; image 'scan.png' has none"),
    ("store", "nifti", r"^lazypatch export: error: '.*s\.h5' is not a predictions file of PatchAggregator"),
    ("missing", "nifti", r"^lazypatch export: error: no such predictions file: '.*nothing\.h5'$"),
])
def test_errors_exit_1_with_one_line(tmp_path, capsys, which, fmt, message):
    preds = predictions(tmp_path)
    path = {"plain": preds, "store": str(tmp_path / "s.h5"), "missing": str(tmp_path / "nothing.h5")}[which]
    assert main(["export", path, str(tmp_path / "out"), "--format", fmt, "--no-progress"]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    assert len(printed.err.splitlines()) == 1
    assert re.search(message, printed.err.strip())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--format", "png"], r"argument --format: invalid choice: 'png'"),
    ([], r"the following arguments are required: --format"),
])
def test_usage_errors_exit_2(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path / "p.h5"), str(tmp_path / "out")] + arguments)
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
