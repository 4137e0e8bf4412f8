"""The GeoTIFF reader against rasterio.

Rasters are written by rasterio: a 3-band uint16 tiled GeoTIFF in UTM
(EPSG:32633) with overviews 2 and 4, made from stained-tissue colours (real
content); a one-band float32 raster in geographic coordinates (EPSG:4326); a
rotated transform; a BigTIFF; a plain TIFF without georeferencing.

Matrix: levels {0, overview 1, overview 2} x regions x slicing forms, against
``DatasetReader.read(window=...)`` with bands moved last; geometry (CRS WKT,
the six transform terms, spacing and unit) against the dataset's ``crs`` and
``transform``; a store written from the reader; bad input.
"""

import math

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.crs import CRS  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.transform import Affine  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from lazypatch.errors import ImageReadError, ParameterError  # noqa: E402
from lazypatch.ingest.readers import RasterioReader, open_image  # noqa: E402


def from_origin(west, north, xsize, ysize):
    # rasterio.transform.from_origin composes with ``*``, which affine 3 deprecates (a warning)
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def write(path, bands, crs, transform, overviews=(), **options):
    count, height, width = bands.shape
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=count,
                       dtype=bands.dtype, crs=crs, transform=transform, **options) as dataset:
        dataset.write(bands)
        if overviews:
            dataset.build_overviews(list(overviews), Resampling.average)
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, tissue):
    bands = np.moveaxis(tissue[:300, :420].astype(np.uint16) * 40, -1, 0)
    path = tmp_path_factory.mktemp("geo") / "scene.tif"
    return write(path, bands, "EPSG:32633", from_origin(500000.0, 4649800.0, 10.0, 10.0), overviews=(2, 4),
                 tiled=True, blockxsize=64, blockysize=64)


def library_read(path, level=0, window=None):
    options = {"overview_level": level - 1} if level else {}
    with rasterio.open(path, **options) as dataset:
        data = dataset.read(window=window)
    return np.moveaxis(data, 0, -1) if data.shape[0] > 1 else data[0]


@pytest.mark.parametrize("level", [0, 1, 2])
def test_regions_equal_rasterios_windowed_read(scene, level, random_regions):
    expected = library_read(scene, level)
    with RasterioReader(scene, level=level) as reader:
        assert reader.shape == expected.shape == (300 // 2 ** level, 420 // 2 ** level, 3)
        assert reader.dtype == np.uint16
        for (y, x), (height, width) in random_regions(reader.shape[:2]):
            window = library_read(scene, level, Window(x, y, width, height))
            np.testing.assert_array_equal(reader.read_region((y, x), (height, width)), window)
        for key in [np.s_[7:90:3, ::-2], np.s_[-1], np.s_[10, 5:9, 1], np.s_[..., 2]]:
            np.testing.assert_array_equal(reader[key], expected[key])


@pytest.mark.parametrize("level", [0, 1, 2])
def test_geometry_is_rasterios(scene, level):
    options = {"overview_level": level - 1} if level else {}
    with rasterio.open(scene, **options) as dataset:
        crs, transform = dataset.crs, dataset.transform
    with RasterioReader(scene, level=level) as reader:
        geometry = reader.geometry
    assert CRS.from_wkt(geometry["crs"]) == crs == CRS.from_epsg(32633)
    assert geometry["transform"] == tuple(transform)[:6]
    assert Affine(*geometry["transform"]) == from_origin(500000.0, 4649800.0, 10.0, 10.0) @ Affine.scale(2 ** level)
    assert geometry["spacing"] == (10.0 * 2 ** level,) * 2 and geometry["unit"] == "m"
    assert (geometry["level"], geometry["downsample"]) == (level, 2.0 ** level)
    assert geometry["source"]["reader"] == "rasterio"
    assert geometry["source"]["reader_version"].startswith(rasterio.__version__)


def test_one_band_in_degrees_with_a_rotated_transform(tmp_path):
    band = np.linspace(-5, 40, 50 * 70, dtype=np.float32).reshape(1, 50, 70)
    rotated = Affine.translation(10.0, 50.0) @ Affine.rotation(15) @ Affine.scale(0.001, -0.002)
    path = write(tmp_path / "dem.tif", band, "EPSG:4326", rotated)
    with open_image(path, reader="rasterio") as reader:
        assert reader.shape == (50, 70) and reader.dtype == np.float32
        np.testing.assert_array_equal(reader[...], library_read(path))
        a, b, _, d, e, _ = reader.geometry["transform"]
        assert reader.geometry["spacing"] == (math.hypot(b, e), math.hypot(a, d))
        assert reader.geometry["spacing"] == pytest.approx((0.002, 0.001), rel=1e-12)
        assert reader.geometry["unit"] == "deg"


def test_store_equals_rasterios_read(scene, make_store):
    with RasterioReader(scene) as reader:
        store = make_store([reader], tile=(32, 32))
    np.testing.assert_array_equal(store.read(0), library_read(scene))
    store.close()


def test_bigtiff_geotiff_is_chosen_for_rasterio(tmp_path):
    path = write(tmp_path / "big.tif", np.ones((2, 16, 16), np.uint8), "EPSG:3857",
                 from_origin(0.0, 0.0, 30.0, 30.0), BIGTIFF="YES")
    with open_image(path) as reader:
        assert reader.name == "rasterio" and reader.shape == (16, 16, 2)


def test_a_tiff_without_georeferencing(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = str(tmp_path / "plain.tif")
    tifffile.imwrite(path, np.arange(30, dtype=np.uint8).reshape(5, 6))
    with RasterioReader(path) as reader:  # rasterio's NotGeoreferencedWarning is not raised to the user
        assert reader.geometry["spacing"] is None and "crs" not in reader.geometry
        assert "transform" not in reader.geometry
        np.testing.assert_array_equal(reader[...], tifffile.imread(path))


def test_bad_input(tmp_path, scene):
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(b"II*\x00" + bytes(range(100)))
    with pytest.raises(ImageReadError, match=r"rasterio cannot open .*damaged\.tif"):
        RasterioReader(damaged)
    with pytest.raises(ParameterError, match=r"level must be in 0\.\.2 for .*scene\.tif.*got 3"):
        RasterioReader(scene, level=3)
