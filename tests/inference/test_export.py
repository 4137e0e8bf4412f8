"""``lazypatch export``: stitched predictions back in the sources' formats, read by their libraries.

Matrix: NIfTI volumes with an oblique affine built as they are and resampled
(``--spacing``, exported ``--to-source``): nibabel loads the export with the
scan's shape and affine, and the voxels in the right place; a GeoTIFF scene:
rasterio reads the scene's CRS and transform; a slide resampled with
``--mpp``: tifffile reads OME physical sizes of the stored grid, or the
slide's own with ``--to-source``; ``--argmax`` labels; errors (geotiff without
a CRS, an unknown format, an existing file, a file that is not predictions).
The "model" is the image itself as one channel, so an exported value can be
compared with the source's.
"""

import os

import nibabel
import numpy as np
import pytest
import tifffile

import lazypatch
from lazypatch.cli import main
from lazypatch.errors import ParameterError, StoreExistsError, StoreFormatError
from lazypatch.inference import export

OBLIQUE = np.array([[-0.8, 0.1, 0.0, 90.0], [0.05, 0.8, 0.0, -100.0], [0.0, 0.0, 2.5, -50.0], [0, 0, 0, 1]])


def stitch(store_path, out, patch, labels=False):
    """Predictions of the identity 'model' (and its negation: argmax picks channel 0 where the
    image is positive) over the whole grid."""
    dataset = lazypatch.PatchDataset(store_path, patch_size=patch, edge="shift")
    with lazypatch.PatchAggregator.from_dataset(dataset, out=out) as aggregator:
        for start in range(0, len(dataset), 16):
            batch = dataset.read_batch(range(start, min(start + 16, len(dataset))))
            image = batch["image"].float()
            image = image.mean(dim=1, keepdim=True) if image.shape[1] > 1 else image
            aggregator.add(torch_cat(image), batch["image_id"], batch["origin"])
    dataset.close()


def torch_cat(image):
    import torch

    return torch.cat([image, -image], dim=1)


@pytest.fixture
def ct(tmp_path):
    (tmp_path / "ct").mkdir()
    volume = np.random.default_rng(0).normal(0, 300, (30, 36, 12)).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(volume, OBLIQUE), str(tmp_path / "ct" / "case.nii.gz"))
    return tmp_path / "ct", volume


def test_nifti_round_trip_on_the_stored_grid(tmp_path, ct):
    folder, volume = ct
    lazypatch.build(folder, tmp_path / "s.h5", progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), (4, 8, 8))
    written = export(tmp_path / "p.h5", tmp_path / "out", format="nifti")
    assert [os.path.basename(p) for p in written] == ["case.nii.gz"]
    image = nibabel.load(written[0])
    assert image.shape == volume.shape + (2,)
    np.testing.assert_allclose(image.affine, OBLIQUE)
    np.testing.assert_allclose(np.asarray(image.dataobj)[..., 0], volume, rtol=1e-6)


def test_nifti_to_source_after_spacing(tmp_path, ct):
    folder, volume = ct
    lazypatch.build(folder, tmp_path / "s.h5", spacing="1,1,1", progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), (8, 8, 8))
    written = export(tmp_path / "p.h5", tmp_path / "out", format="nifti", argmax=True, to_source=True)
    image = nibabel.load(written[0])
    assert image.shape == volume.shape and np.asarray(image.dataobj).dtype == np.uint8
    np.testing.assert_allclose(image.affine, OBLIQUE, atol=1e-9)
    labels = np.asarray(image.dataobj)
    agree = (labels == 0) == (volume > 0)  # channel 0 wins where the (resampled) image is positive
    assert agree.mean() > 0.6


def test_geotiff_keeps_the_scenes_crs_and_transform(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from lazypatch.testing.samples import write_geotiff

    (tmp_path / "scenes").mkdir()
    transform = write_geotiff(tmp_path / "scenes" / "tile.tif", 128, 160)
    lazypatch.build(tmp_path / "scenes", tmp_path / "s.h5", progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), 32)
    written = export(tmp_path / "p.h5", tmp_path / "out", format="geotiff", argmax=True)
    with rasterio.open(written[0]) as labels, rasterio.open(tmp_path / "scenes" / "tile.tif") as scene:
        assert labels.crs == scene.crs and labels.transform == transform == scene.transform
        assert labels.shape == scene.shape and labels.count == 1
        assert (labels.read(1) == 0).all()  # the identity is positive everywhere on uint8 pixels


def test_ome_tiff_physical_size_of_the_stored_grid_and_the_source(tmp_path):
    from lazypatch.testing.samples import write_slide

    (tmp_path / "slides").mkdir()
    write_slide(tmp_path / "slides" / "a.tif", 600, 900, mpp=0.3, levels=1)
    lazypatch.build(tmp_path / "slides", tmp_path / "s.h5", mpp=0.5, progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), 64)
    stored = export(tmp_path / "p.h5", tmp_path / "out", format="ome-tiff")
    back = export(tmp_path / "p.h5", tmp_path / "back", format="ome-tiff", argmax=True, to_source=True)
    with tifffile.TiffFile(stored[0]) as tif:
        assert tif.series[0].shape == (2, 360, 540) and tif.series[0].axes == "CYX"
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata and 'PhysicalSizeXUnit="µm"' in tif.ome_metadata
    with tifffile.TiffFile(back[0]) as tif:
        assert tif.series[0].shape == (600, 900)
        assert 'PhysicalSizeX="0.3"' in tif.ome_metadata


@pytest.fixture
def plain(tmp_path):
    store = lazypatch.write_store(str(tmp_path / "s.h5"), [np.arange(64, dtype=np.uint8).reshape(8, 8)])
    store.close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), 4)
    return tmp_path / "p.h5"


def test_bad_input(tmp_path, plain):
    with pytest.raises(ParameterError, match=r"geotiff needs a CRS and transform; image '0' has none"):
        export(plain, tmp_path / "out", format="geotiff")
    with pytest.raises(ParameterError, match=r"format \(--format\) must be one of nifti, ome-tiff, geotiff"):
        export(plain, tmp_path / "out", format="png")
    export(plain, tmp_path / "out", format="nifti")
    with pytest.raises(StoreExistsError, match=r"0\.nii\.gz.* exists .*overwrite"):
        export(plain, tmp_path / "out", format="nifti")
    export(plain, tmp_path / "out", format="nifti", overwrite=True)
    with pytest.raises(StoreFormatError, match=r"not a predictions file"):
        export(tmp_path / "s.h5", tmp_path / "out2", format="nifti")
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]


def test_the_command_line(tmp_path, plain, capsys):
    assert main(["export", str(plain), str(tmp_path / "cli"), "--format", "ome-tiff", "--argmax"]) == 0
    assert "wrote 1 file(s)" in capsys.readouterr().out
    assert main(["export", str(plain), str(tmp_path / "cli"), "--format", "ome-tiff"]) == 1
    assert "exists" in capsys.readouterr().err
