"""The tifffile reader against tifffile's own decode.

Files are written by tifffile: a JPEG-tiled generic TIFF pyramid (the
commonest whole-slide container), OME-TIFF pyramids with channels and Z
(zlib and JPEG tiles, physical sizes in um and nm), striped and planar TIFFs,
an Aperio SVS read without OpenSlide.

Matrix: levels x regions {whole level, corner pixel, random boxes across
tile borders} x slicing forms, against ``tifffile``'s ``asarray`` of the same
level (moved to (Z, Y, X, C)); geometry against the OME-XML, the SVS MPP and
the resolution tags; only the tiles a band touches are read; a store written
from the reader against tifffile's decode; bad input (damaged file, an
unknown compression, JPEG tiles without imagecodecs in a fresh interpreter).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from lazypatch.errors import ImageReadError, ParameterError, ParameterTypeError  # noqa: E402
from lazypatch.ingest.readers import TiffReader, open_image  # noqa: E402


def level_array(path, level=0):
    """tifffile's decode of a level of the first series, axes moved to (Z, Y, X, C), singletons dropped."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0].levels[level]
        data, axes = series.asarray(), series.axes
    order = [axes.index(a) for a in "ZYX" if a in axes] + [k for k, a in enumerate(axes) if a in "CS"]
    return np.transpose(data, order)


def box(origin, size):
    return tuple(slice(o, o + s) for o, s in zip(origin, size))


@pytest.fixture(scope="module")
def ome_pyramid(tmp_path_factory, tissue):
    """OME-TIFF, axes CZYX: 2 channels x 3 planes x 600 x 900 uint16, zlib tiles, three levels."""
    path = str(tmp_path_factory.mktemp("ome") / "stack.ome.tif")
    planes = tissue[..., :2].astype(np.uint16) * 257
    volume = np.stack([np.stack([np.roll(planes[..., c], 40 * z, axis=1) for z in range(3)]) for c in range(2)])
    metadata = {"axes": "CZYX", "PhysicalSizeX": 0.325, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.35,
                "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 1500, "PhysicalSizeZUnit": "nm"}
    options = dict(photometric="minisblack", tile=(128, 128), compression="zlib")
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(volume, subifds=2, metadata=metadata, **options)
        for k in (1, 2):
            tif.write(np.ascontiguousarray(volume[..., ::2 ** k, ::2 ** k]), subfiletype=1, **options)
    return path


@pytest.mark.parametrize("level", [0, 1, 2])
def test_jpeg_tiled_pyramid_equals_tifffiles_decode(slide_pyramid, level, random_regions):
    expected = level_array(slide_pyramid, level)
    with TiffReader(slide_pyramid, level=level) as reader:
        assert reader.shape == expected.shape == (600 // 2 ** level, 900 // 2 ** level, 3)
        assert reader.dtype == np.uint8 and reader.spatial_ndim == 2
        for origin, size in random_regions(reader.shape[:2]):
            np.testing.assert_array_equal(reader.read_region(origin, size), expected[box(origin, size)])
        for key in [np.s_[7:290:3, ::-2], np.s_[-1], np.s_[100, 5:9, 1], np.s_[..., 0], np.s_[5:5]]:
            np.testing.assert_array_equal(reader[key], expected[key])


def test_jpeg_pyramid_geometry(slide_pyramid):
    for level in range(3):
        with TiffReader(slide_pyramid, level=level) as reader:
            geometry = reader.geometry
            assert geometry["spacing"] == (0.25 * 2 ** level,) * 2 and geometry["unit"] == "um"
            assert (geometry["level"], geometry["downsample"]) == (level, 2.0 ** level)
            assert geometry["source"]["reader"] == "tifffile"
            assert geometry["source"]["reader_version"].startswith(tifffile.__version__)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_ome_pyramid_with_channels_and_z(ome_pyramid, level, random_regions):
    expected = level_array(ome_pyramid, level)
    with TiffReader(ome_pyramid, level=level) as reader:
        assert reader.shape == expected.shape == (3, 600 // 2 ** level, 900 // 2 ** level, 2)
        assert reader.spatial_ndim == 3 and reader.dtype == np.uint16
        for origin, size in random_regions(reader.shape[:3], 8):
            np.testing.assert_array_equal(reader.read_region(origin, size), expected[box(origin, size)])
        np.testing.assert_array_equal(reader[1:3, ::5, -7], expected[1:3, ::5, -7])
        # PhysicalSizeZ 1500 nm is 1.5 um; levels downsample Y and X only
        assert reader.geometry["spacing"] == pytest.approx((1.5, 0.35 * 2 ** level, 0.325 * 2 ** level), rel=1e-12)
        assert reader.geometry["unit"] == "um" and reader.geometry["downsample"] == 2.0 ** level


def test_ome_jpeg_rgb_single_plane(tmp_path, tissue):
    path = str(tmp_path / "rgb.ome.tif")
    tifffile.imwrite(path, tissue, tile=(64, 64), photometric="rgb", compression="jpeg",
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    with open_image(path) as reader:
        assert reader.name == "tifffile" and reader.shape == (600, 900, 3)
        np.testing.assert_array_equal(reader[...], tifffile.imread(path))
        assert reader.geometry["spacing"] == (0.5, 0.5)


@pytest.mark.parametrize("options", [
    dict(rowsperstrip=7, photometric="rgb"),
    dict(rowsperstrip=16, photometric="rgb", planarconfig="separate", compression="lzw"),
    dict(tile=(32, 48), photometric="rgb", planarconfig="separate", compression="zstd"),
    dict(tile=(32, 32), photometric="minisblack", compression="deflate", predictor=True),
], ids=["strips", "planar-strips-lzw", "planar-tiles-zstd", "gray-tiles-deflate-predictor"])
def test_strips_tiles_planar_and_codecs(tmp_path, tissue, options, random_regions):
    path = str(tmp_path / "a.tif")
    image = tissue[:203, :301] if options["photometric"] == "rgb" else tissue[:203, :301, 0].astype(np.uint16) * 99
    if options.get("planarconfig") == "separate":
        image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    tifffile.imwrite(path, image, **options)
    expected = tifffile.imread(path)
    if options.get("planarconfig") == "separate":
        expected = np.moveaxis(expected, 0, -1)
    with TiffReader(path) as reader:
        assert reader.shape == expected.shape
        for origin, size in random_regions(reader.shape[:2]):
            np.testing.assert_array_equal(reader.read_region(origin, size), expected[box(origin, size)])


def test_a_band_reads_only_the_tiles_it_touches(slide_pyramid, monkeypatch):
    requested = []
    original = tifffile.FileHandle.read_segments

    def spy(self, offsets, bytecounts, *args, **kwargs):
        requested.append(len(offsets))
        return original(self, offsets, bytecounts, *args, **kwargs)

    monkeypatch.setattr(tifffile.FileHandle, "read_segments", spy)
    with TiffReader(slide_pyramid) as reader:  # 600 x 900 in 128 x 128 tiles: 5 x 8
        reader[130:140]
        reader[200:210, 300:400]
    assert requested == [8, 2]


def test_store_equals_tifffiles_decode(ome_pyramid, slide_pyramid, make_store):
    with TiffReader(ome_pyramid, level=1) as reader:
        store = make_store([reader], spatial_ndim=3, tile=(2, 32, 32))
    np.testing.assert_array_equal(store.read(0), level_array(ome_pyramid, 1))
    store.close()
    with TiffReader(slide_pyramid) as reader:
        store = make_store([reader])
    np.testing.assert_array_equal(store.read(0), tifffile.imread(slide_pyramid))
    store.close()


def test_svs_without_openslide(aperio_svs):
    path = aperio_svs
    for level in (0, 1):
        with TiffReader(path, level=level) as reader:
            np.testing.assert_array_equal(reader[...], level_array(path, level))
            assert reader.geometry["spacing"] == (0.499 * 4 ** level,) * 2


@pytest.mark.parametrize("unit, spacing", [("CENTIMETER", (0.5, 0.25)), ("INCH", None), ("NONE", None)])
def test_resolution_tags(tmp_path, unit, spacing):
    # NOTE [TIFF resolution in inches]: only length units give a spacing
    path = str(tmp_path / "a.tif")
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(4e4, 2e4), resolutionunit=unit)
    with TiffReader(path) as reader:
        assert reader.geometry["spacing"] == spacing
        assert reader.geometry["unit"] == ("um" if spacing else None)


def test_unknown_compression_is_refused_on_open(tmp_path):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), tile=(16, 16))
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags[259].valueoffset  # Compression
    data = bytearray(path.read_bytes())
    data[offset:offset + 2] = (50123).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"tifffile cannot decode .*odd\.tif.*compression 50123"):
        TiffReader(path)


@pytest.mark.system
def test_jpeg_tiles_without_imagecodecs_name_the_extra(slide_pyramid):
    code = ("import sys; sys.modules['imagecodecs'] = None\n"
            "from lazypatch.ingest.readers import TiffReader\n"
            f"try:\n    TiffReader({slide_pyramid!r})\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ImageReadError") and "slide.tif" in out and "JPEG" in out
    assert 'pip install "lazypatch[tiff]"' in out


def test_bad_input(tmp_path, slide_pyramid, ome_pyramid):
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(b"II*\x00\xff\xff\xff\x7f" + bytes(64))
    with pytest.raises(ImageReadError, match=r"damaged\.tif"):
        TiffReader(damaged)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(Path(slide_pyramid).read_bytes()[:40000])
    with pytest.raises(ImageReadError, match=r"truncated\.tif"):
        with TiffReader(truncated) as reader:
            reader[...]
    with pytest.raises(ParameterError, match=r"level must be in 0\.\.2 .*stack\.ome\.tif.*got 5"):
        TiffReader(ome_pyramid, level=5)
    with pytest.raises(ParameterTypeError, match=r"level must be an integer, got True"):
        TiffReader(ome_pyramid, level=True)
    series = tmp_path / "time.tif"
    tifffile.imwrite(series, np.zeros((4, 2, 8, 8), np.uint8), metadata={"axes": "TCYX"}, ome=True)
    with pytest.raises(ImageReadError, match=r"time\.tif.*axis T has 4 entries"):
        TiffReader(series)
