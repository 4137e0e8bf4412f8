"""``export`` and ``read_predictions``: stitched predictions back in the sources' formats, read by their libraries.

Matrix, with the source's library as the oracle:

- stored grid: an oblique NIfTI volume (``open_image`` -> ``write_store`` ->
  ``PatchDataset`` -> ``PatchAggregator(out=)``): nibabel loads the export with
  the scan's shape and affine and the values in nibabel's own voxels; a
  GeoTIFF scene: rasterio reads the scene's CRS, transform and values; a slide
  built with ``--mpp``: tifffile reads the OME physical sizes of the stored grid;
- ``to_source``: a NIfTI built with ``--spacing`` comes back on the scan's grid
  and affine; hand-made ``source_shape`` geometries (NIfTI and GeoTIFF): a
  source voxel's world point is the stored grid's at ``(j + 0.5) / r - 0.5``,
  and so is its value (linear) or label (nearest); no ``source_shape``: a no-op;
  the OME physical size of the slide's own grid;
- ``argmax``: labels in the smallest unsigned dtype (uint8, uint16 past 256 channels);
- the ``geometry`` attribute: a store's dict, ``{"spacing": None, "unit": None}``
  for shapes, fixed-length UTF-8;
- bad input, one table (message regexes), all checked before any file is
  written; a writer failing leaves no file; a missing library names its extra;
  the progress bar.

The "model" is the image itself (and its negation), so an exported value can
be compared with the source's.
"""

import os
import sys

import h5py
import numpy as np
import pytest

import lazypatch
from lazypatch.errors import ParameterError, ParameterTypeError, StoreExistsError, StoreFormatError
from lazypatch.inference import export, read_predictions
from lazypatch.inference.export import Prediction
from lazypatch.ingest.readers import open_image

nibabel = pytest.importorskip("nibabel")
tifffile = pytest.importorskip("tifffile")
module = sys.modules["lazypatch.inference.export"]  # the module (the package's `export` is the function)

# nibabel's (x, y, z) voxel -> RAS+ mm, oblique
OBLIQUE = np.array([[-0.8, 0.1, 0.0, 90.0], [0.05, 0.8, 0.0, -100.0], [0.0, 0.0, 2.5, -50.0], [0, 0, 0, 1]])


def stitch(store_path, out, patch):
    """Predictions of the identity 'model' and its negation (argmax: channel 0 where the image is
    positive) over a dataset's whole grid."""
    import torch

    dataset = lazypatch.PatchDataset(store_path, patch_size=patch, edge="shift")
    with lazypatch.PatchAggregator.from_dataset(dataset, out=out) as aggregator:
        for start in range(0, len(dataset), 16):
            batch = dataset.read_batch(range(start, min(start + 16, len(dataset))))
            image = batch["image"].float()
            image = image.mean(dim=1, keepdim=True) if image.shape[1] > 1 else image
            aggregator.add(torch.cat([image, -image], dim=1), batch["image_id"], batch["origin"])
    dataset.close()


def aggregate(store, out, predictions):
    """``predictions[k]`` (C, *spatial), one patch per image, through ``PatchAggregator(store, out=)``."""
    with lazypatch.PatchAggregator(store, tuple(int(n) for n in store.shapes[0]), out=out) as aggregator:
        for image_id, values in enumerate(predictions):
            aggregator.add(values[None].astype(np.float32), [image_id], [(0,) * (values.ndim - 1)])


def centres(source_index, ratios):
    """The stored index of a source index: ``(j + 0.5) / r - 0.5`` (NOTE [stored geometry])."""
    return (np.asarray(source_index, float) + 0.5) / np.asarray(ratios, float) - 0.5


def world(transform, col, row):
    """Rasterio's (x, y) of a (col, row) position (affine's ``*`` is deprecated, ``@`` is recent)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * col + b * row + c, d * col + e * row + f


# -- stored grid -------------------------------------------------------------------------------

@pytest.fixture
def ct(tmp_path):
    (tmp_path / "ct").mkdir()
    volume = np.random.default_rng(0).normal(0, 300, (30, 36, 12)).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(volume, OBLIQUE), str(tmp_path / "ct" / "case.nii.gz"))
    return tmp_path / "ct", volume


def test_nifti_round_trip_on_the_stored_grid(tmp_path, ct):
    folder, volume = ct
    with open_image(folder / "case.nii.gz") as reader:
        lazypatch.write_store(tmp_path / "s.h5", [reader], names=["case.nii.gz"], geometry=[reader.geometry],
                              spatial_ndim=3, progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), (4, 8, 8))
    written = export(tmp_path / "p.h5", tmp_path / "out", format="nifti", progress=False)
    assert written == [str(tmp_path / "out" / "case.nii.gz")]
    image, scan = nibabel.load(written[0]), nibabel.load(folder / "case.nii.gz")
    assert image.shape == scan.shape + (2,) and image.get_data_dtype() == np.float32
    np.testing.assert_allclose(image.affine, scan.affine)
    assert image.header.get_xyzt_units()[0] == "mm"
    values = np.asarray(image.dataobj)
    np.testing.assert_array_equal(values[..., 0], np.asarray(scan.dataobj))  # nibabel's own voxels
    np.testing.assert_array_equal(values[..., 1], -np.asarray(scan.dataobj))


def test_nifti_to_source_after_spacing(tmp_path, ct):
    folder, volume = ct
    lazypatch.build(folder, tmp_path / "s.h5", spacing="1,1,1", progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), (8, 8, 8))
    stored = export(tmp_path / "p.h5", tmp_path / "stored", format="nifti", progress=False)
    assert np.allclose(np.abs(nibabel.load(stored[0]).header.get_zooms()[:3]), 1.0, atol=0.02)
    written = export(tmp_path / "p.h5", tmp_path / "out", format="nifti", argmax=True, to_source=True,
                     progress=False)
    image = nibabel.load(written[0])
    assert image.shape == volume.shape and image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, OBLIQUE, atol=1e-9)
    labels = np.asarray(image.dataobj)
    agree = (labels == 0) == (volume > 0)  # channel 0 wins where the (resampled) image is positive
    assert agree.mean() > 0.6


def test_geotiff_keeps_the_scenes_crs_transform_and_values(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from lazypatch.testing.samples import write_geotiff

    (tmp_path / "scenes").mkdir()
    transform = write_geotiff(tmp_path / "scenes" / "tile.tif", 128, 160)
    lazypatch.build(tmp_path / "scenes", tmp_path / "s.h5", progress=False).close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), 32)
    written = export(tmp_path / "p.h5", tmp_path / "out", format="geotiff", progress=False)
    labels = export(tmp_path / "p.h5", tmp_path / "labels", format="geotiff", argmax=True, progress=False)
    with rasterio.open(written[0]) as out, rasterio.open(tmp_path / "scenes" / "tile.tif") as scene:
        assert out.crs == scene.crs and out.transform == transform == scene.transform
        assert out.shape == scene.shape and out.count == 2 and out.dtypes == ("float32", "float32")
        np.testing.assert_allclose(out.read(1), scene.read().astype(np.float32).mean(axis=0), rtol=1e-6)
    with rasterio.open(labels[0]) as out:
        assert out.count == 1 and out.dtypes == ("uint8",) and out.transform == transform
        assert (out.read(1) == 0).all()  # the identity is positive on the scene's pixels


def test_ome_tiff_physical_size_of_the_stored_grid_and_the_source(tmp_path):
    from lazypatch.testing.samples import write_slide

    (tmp_path / "slides").mkdir()
    write_slide(tmp_path / "slides" / "a.tif", 600, 900, mpp=0.3, levels=1)
    with lazypatch.build(tmp_path / "slides", tmp_path / "s.h5", mpp=0.5, progress=False) as store:
        stored_image = store.read(0).astype(np.float32)
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), 64)
    stored = export(tmp_path / "p.h5", tmp_path / "out", format="ome-tiff", progress=False)
    back = export(tmp_path / "p.h5", tmp_path / "back", format="ome-tiff", argmax=True, to_source=True,
                  progress=False)
    with tifffile.TiffFile(stored[0]) as tif:
        assert tif.series[0].shape == (2, 360, 540) and tif.series[0].axes == "CYX"
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata and 'PhysicalSizeXUnit="µm"' in tif.ome_metadata
        np.testing.assert_allclose(tif.asarray()[0], stored_image.mean(axis=-1), rtol=1e-6)
    with tifffile.TiffFile(back[0]) as tif:
        assert tif.series[0].shape == (600, 900) and tif.series[0].axes == "YX"
        assert 'PhysicalSizeX="0.3"' in tif.ome_metadata and 'PhysicalSizeY="0.3"' in tif.ome_metadata


# -- to_source with hand-made geometry -----------------------------------------------------------

def test_nifti_to_source_maps_each_source_voxel_to_its_world_point(tmp_path):
    stored_shape, source_shape, ratios = (6, 8, 10), (12, 16, 30), (2.0, 2.0, 3.0)
    source_affine = OBLIQUE.copy()
    source_affine[:, :3] = OBLIQUE[:, 2::-1]  # stored (z, y, x) columns
    scale = np.eye(4)
    for axis, r in enumerate(ratios):
        scale[axis, axis], scale[axis, 3] = r, (r - 1) / 2
    geometry = {"spacing": [5.0, 1.6, 2.4], "unit": "mm", "affine": (source_affine @ scale).tolist(),
                "source_shape": list(source_shape)}
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in stored_shape], indexing="ij")
    store = lazypatch.write_store(tmp_path / "s.h5", [np.zeros(stored_shape, np.uint8)], names=["vol.nii.gz"],
                                  geometry=[geometry], spatial_ndim=3, progress=False)
    aggregate(store, tmp_path / "p.h5", [np.stack([x, z - 2.5])])
    store.close()
    [path] = export(tmp_path / "p.h5", tmp_path / "out", format="nifti", to_source=True, progress=False)
    image = nibabel.load(path)
    assert image.shape == source_shape[::-1] + (2,)
    values = np.asarray(image.dataobj)
    for source in [(0, 0, 0), (5, 9, 13), (11, 15, 29), (7, 3, 22)]:
        stored = centres(source, ratios)
        world = image.affine @ np.array(source[::-1] + (1,), float)
        np.testing.assert_allclose(world, np.asarray(geometry["affine"]) @ np.append(stored, 1), atol=1e-9)
    interior = (slice(1, -1),) * 3  # the interpolation mirrors at the border
    jz, jy, jx = np.meshgrid(*[np.arange(n) for n in source_shape], indexing="ij")
    np.testing.assert_allclose(values[..., 0].T[interior], centres(jx, 3.0)[interior], atol=1e-5)
    np.testing.assert_allclose(values[..., 1].T[interior], centres(jz, 2.0)[interior] - 2.5, atol=1e-5)
    np.testing.assert_allclose(image.header.get_zooms()[:3], np.sqrt((OBLIQUE[:3, :3] ** 2).sum(axis=0)), rtol=1e-6)


def test_geotiff_to_source_transform_and_nearest_labels(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.crs import CRS

    stored_shape, source_shape, (ry, rx) = (20, 30), (50, 60), (2.5, 2.0)
    source = rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)
    stored_transform = rasterio.Affine(10.0 * rx, 0.0, 500000.0, 0.0, -10.0 * ry, 4200000.0)  # source @ scale(r)
    geometry = {"spacing": [25.0, 20.0], "unit": "m", "crs": CRS.from_epsg(32633).to_wkt(),
                "transform": list(stored_transform)[:6], "source_shape": list(source_shape)}
    y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in stored_shape], indexing="ij")
    prediction = np.stack([x - 14.5, 14.5 - x, y - 9.5])  # labels 1 | 0 split at x = 14.5, 2 at the bottom
    prediction[2] -= 8  # the bottom rows (y > 17.5) pick channel 2
    store = lazypatch.write_store(tmp_path / "s.h5", [np.zeros(stored_shape, np.uint8)], names=["scene.tif"],
                                  geometry=[geometry], progress=False)
    aggregate(store, tmp_path / "p.h5", [prediction])
    store.close()
    stored_labels = np.argmax(prediction, axis=0)
    [values] = export(tmp_path / "p.h5", tmp_path / "values", format="geotiff", to_source=True, progress=False)
    [labels] = export(tmp_path / "p.h5", tmp_path / "labels", format="geotiff", to_source=True, argmax=True,
                      progress=False)
    with rasterio.open(values) as out:
        assert out.shape == source_shape and out.crs == CRS.from_epsg(32633)
        assert out.transform.almost_equals(source)
        for row, col in [(0, 0), (49, 59), (17, 33)]:  # pixel centres on both grids
            stored = centres((row, col), (ry, rx))
            np.testing.assert_allclose(world(out.transform, col + 0.5, row + 0.5),
                                       world(stored_transform, stored[1] + 0.5, stored[0] + 0.5))
        rows, cols = np.meshgrid(np.arange(50), np.arange(60), indexing="ij")
        np.testing.assert_allclose(out.read(1)[:, 1:-1], centres(cols, rx)[:, 1:-1] - 14.5, atol=1e-5)
    with rasterio.open(labels) as out:
        assert out.dtypes == ("uint8",) and out.transform.almost_equals(source)
        # nearest: the stored pixel that holds the source pixel's centre
        nearest = stored_labels[((rows + 0.5) // ry).astype(int), ((cols + 0.5) // rx).astype(int)]
        np.testing.assert_array_equal(out.read(1), nearest.astype(int))
        assert set(np.unique(nearest)) == {0, 1, 2}


def test_to_source_without_source_shape_is_the_stored_grid(tmp_path, plain):
    stored = export(plain, tmp_path / "a", format="nifti", progress=False)
    back = export(plain, tmp_path / "b", format="nifti", to_source=True, progress=False)
    first, second = nibabel.load(stored[0]), nibabel.load(back[0])
    assert first.shape == second.shape == (8, 8, 1, 2)
    np.testing.assert_array_equal(first.affine, second.affine)
    np.testing.assert_array_equal(np.asarray(first.dataobj), np.asarray(second.dataobj))


# -- argmax, the geometry attribute --------------------------------------------------------------

@pytest.mark.parametrize("channels, dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16)])
def test_argmax_labels_in_the_smallest_unsigned_dtype(tmp_path, channels, dtype):
    prediction = np.zeros((channels, 4, 4), np.float32)
    prediction[channels - 1, :2] = 1.0
    prediction[channels // 2, 2:] = 1.0
    with lazypatch.PatchAggregator([(4, 4)], 4, out=tmp_path / "p.h5") as aggregator:
        aggregator.add(prediction[None], [0], [(0, 0)])
    [path] = export(tmp_path / "p.h5", tmp_path, format="ome-tiff", argmax=True, progress=False)
    labels = tifffile.imread(path)
    assert labels.dtype == dtype
    assert labels[:2].tolist() == [[channels - 1] * 4] * 2 and labels[2:].tolist() == [[channels // 2] * 4] * 2


def test_the_geometry_attribute(tmp_path, ct):
    folder, _ = ct
    with open_image(folder / "case.nii.gz") as reader:
        store = lazypatch.write_store(tmp_path / "s.h5", [reader], geometry=[reader.geometry], spatial_ndim=3,
                                      progress=False)
    shape = tuple(int(n) for n in store.shapes[0])
    aggregate(store, tmp_path / "p.h5", [np.ones((1,) + shape, np.float32)])
    with lazypatch.PatchAggregator(store.shapes, shape, out=tmp_path / "shapes.h5") as aggregator:
        aggregator.add(np.ones((1, 1) + shape, np.float32), [0], [(0, 0, 0)])
    [(name, array, geometry)] = read_predictions(tmp_path / "p.h5")
    assert geometry == store.geometry(0) and geometry["unit"] == "mm" and "affine" in geometry
    assert name == store.names[0] and array.shape == (1,) + shape
    [prediction] = read_predictions(tmp_path / "shapes.h5")
    assert isinstance(prediction, Prediction) and prediction.geometry == {"spacing": None, "unit": None}
    with pytest.raises(StoreFormatError, match="not a predictions file"):
        read_predictions(tmp_path / "s.h5")  # at the call, not at the first next()
    with h5py.File(tmp_path / "p.h5", "r") as f:  # fixed-length UTF-8 (NOTE [hardened metadata])
        assert isinstance(f["predictions/0"].attrs["geometry"], np.bytes_)
    store.close()


# -- bad input -----------------------------------------------------------------------------------

@pytest.fixture
def plain(tmp_path):
    """Predictions of one 8 x 8 image 'scan.png' without geometry."""
    store = lazypatch.write_store(tmp_path / "s.h5", [np.arange(64, dtype=np.uint8).reshape(8, 8)],
                                  names=["scan.png"], progress=False)
    store.close()
    stitch(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), 4)
    return tmp_path / "p.h5"


def predictions_of(tmp_path, names, shape=(4, 4), geometry=None):
    store = lazypatch.write_store(tmp_path / "named.h5", [np.zeros(shape, np.uint8)] * len(names), names=names,
                                  geometry=geometry, spatial_ndim=len(shape), progress=False)
    aggregate(store, tmp_path / "named-p.h5", [np.ones((2,) + shape, np.float32)] * len(names))
    store.close()
    return tmp_path / "named-p.h5"


GEO = {"spacing": [1.0, 1.0, 1.0], "unit": "m", "crs": 'LOCAL_CS["x"]', "transform": [1, 0, 0, 0, -1, 0]}
BAD = [
    ("plain", {"format": "geotiff"}, ParameterError,
     r"format='geotiff' \(--format geotiff\) needs a CRS and transform; image 'scan.png' has none .*ome-tiff"),
    ("plain", {"format": "png"}, ParameterError,
     r"^format \(--format\) must be one of nifti, ome-tiff, geotiff, got 'png'$"),
    ("plain", {"format": None}, ParameterTypeError, r"format must be a string.*got None"),
    ("store", {"format": "nifti"}, StoreFormatError, r"s\.h5' is not a predictions file .*lazypatch_predictions"),
    ("text", {"format": "nifti"}, StoreFormatError, r"notes\.txt' is not a predictions file .*not an HDF5 file"),
    ("missing", {"format": "nifti"}, FileNotFoundError, r"no such predictions file"),
    ("twins", {"format": "nifti"}, ParameterError,
     r"images 'a\.png' and 'a\.tif' would both be written to .*a\.nii\.gz'; export them to separate folders"),
    ("escape", {"format": "nifti"}, ParameterError, r"image '\.\./up\.png' would be written outside out_dir"),
    ("volume", {"format": "geotiff"}, ParameterError, r"takes 2-D images; image 'v\.npy' is 3-D"),
    ("bad source", {"format": "nifti", "to_source": True}, StoreFormatError,
     r"the source_shape \[8, 8\] of image 'v\.npy' is not 3 positive integers"),
]


@pytest.mark.parametrize("what, options, error, message", BAD, ids=[row[0] for row in BAD])
def test_bad_input_is_refused_before_any_file_is_written(tmp_path, plain, what, options, error, message):
    (tmp_path / "notes.txt").write_text("not predictions")
    predictions = {
        "plain": plain, "store": tmp_path / "s.h5", "text": tmp_path / "notes.txt", "missing": tmp_path / "no.h5",
        "twins": (lambda: predictions_of(tmp_path, ["a.png", "b.png", "a.tif"])),
        "escape": (lambda: predictions_of(tmp_path, ["ok.png", "../up.png"])),
        "volume": (lambda: predictions_of(tmp_path, ["v.npy"], (2, 4, 4), [GEO])),
        "bad source": (lambda: predictions_of(tmp_path, ["v.npy"], (2, 4, 4),
                                              [{"spacing": None, "unit": None, "source_shape": [8, 8]}])),
    }[what]
    predictions = predictions() if callable(predictions) else predictions
    with pytest.raises(error, match=message):
        export(predictions, tmp_path / "out" / "x", progress=False, **options)
    assert not os.path.exists(tmp_path / "out")


def test_existing_files_are_refused_without_overwrite(tmp_path, plain):
    [path] = export(plain, tmp_path / "out", format="nifti", argmax=True, progress=False)
    with pytest.raises(StoreExistsError, match=r"scan\.nii\.gz' exists \(1 of the 1 files to write\); pass "
                                               r"overwrite=True \(--overwrite\)"):
        export(plain, tmp_path / "out", format="nifti", progress=False)
    assert nibabel.load(path).get_data_dtype() == np.uint8  # untouched
    export(plain, tmp_path / "out", format="nifti", overwrite=True, progress=False)
    assert nibabel.load(path).get_data_dtype() == np.float32
    assert os.listdir(tmp_path / "out") == ["scan.nii.gz"]  # no temporary left


def test_a_failing_writer_leaves_no_file(tmp_path, plain, monkeypatch):
    def half(library, path, data, geometry, labels):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(module._WRITERS, "nifti", half)
    with pytest.raises(OSError, match="No space left"):
        export(plain, tmp_path / "out", format="nifti", progress=False)
    assert os.listdir(tmp_path / "out") == []


def test_a_missing_library_names_its_extra(tmp_path, plain, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio now fails
    with pytest.raises(ImportError, match=r"format='geotiff' \(--format geotiff\) needs rasterio; install it "
                                          r"with: pip install \"lazypatch\[geo\]\""):
        export(plain, tmp_path / "out", format="geotiff", progress=False)


def test_the_progress_bar(tmp_path, plain, capsys):
    export(plain, tmp_path / "quiet", format="ome-tiff", progress=False)
    assert capsys.readouterr().err == ""
    export(plain, tmp_path / "bar", format="ome-tiff", progress=True)
    assert "lazypatch export" in capsys.readouterr().err
