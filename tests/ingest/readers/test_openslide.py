"""The OpenSlide reader against OpenSlide itself.

Slides are written by tifffile: a JPEG-tiled generic TIFF pyramid
(downsamples 1, 2, 4; OpenSlide's generic-tiff vendor), an odd-sized one
(fractional downsamples) and an Aperio SVS (OpenSlide's aperio vendor). Other
vendors' formats cannot be generated here; they go through the same
``read_region`` calls.

Matrix: levels {0, 1, 2} x regions {whole level, corner pixel, random boxes
across tile borders, strided and reversed slices} against
``OpenSlide.read_region`` composited as openslide-python's Deep Zoom does;
geometry against the slide's properties; a store written from the reader
against OpenSlide's whole-level read and tifffile's decode of the same page;
bad input (damaged slide, a level out of range).
"""

import numpy as np
import pytest

openslide = pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")
from PIL import Image  # noqa: E402

from lazypatch.errors import ImageReadError, ParameterError  # noqa: E402
from lazypatch.ingest.readers import OpenSlideReader, open_image  # noqa: E402


def library_read(path, level, location, size):
    """OpenSlide's read of (width, height) at level-0 (x, y), on the Deep Zoom generator's background."""
    with openslide.OpenSlide(path) as slide:
        region = slide.read_region(location, level, size)
        background = "#" + slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
    return np.asarray(Image.composite(region, Image.new("RGB", region.size, background), region))


@pytest.mark.parametrize("level", [0, 1, 2])
def test_regions_equal_openslides_read_region(slide_pyramid, level, random_regions):
    with OpenSlideReader(slide_pyramid, level=level) as reader:
        downsample = 2 ** level
        assert reader.shape == (600 // downsample, 900 // downsample, 3) and reader.dtype == np.uint8
        for (y, x), (height, width) in random_regions(reader.shape[:2]):
            expected = library_read(slide_pyramid, level, (x * downsample, y * downsample), (width, height))
            np.testing.assert_array_equal(reader.read_region((y, x), (height, width)), expected)
            np.testing.assert_array_equal(reader[y:y + height, x:x + width], expected)


def test_slicing_equals_numpy_on_the_whole_level(slide_pyramid):
    with openslide.OpenSlide(slide_pyramid) as slide:
        whole = np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]))[..., :3]
    with OpenSlideReader(slide_pyramid, level=1) as reader:
        for key in [np.s_[7:290:3, ::-2], np.s_[-1], np.s_[100, 5:9, 1], np.s_[..., 0], np.s_[299:0:-7, 449]]:
            np.testing.assert_array_equal(reader[key], whole[key])


def test_geometry_is_the_slides_properties(slide_pyramid):
    with openslide.OpenSlide(slide_pyramid) as slide:
        properties = dict(slide.properties)
        downsamples = slide.level_downsamples
    assert properties["openslide.vendor"] == "generic-tiff"
    for level in range(3):
        with OpenSlideReader(slide_pyramid, level=level) as reader:
            geometry = reader.geometry
            mpp = (float(properties["openslide.mpp-y"]), float(properties["openslide.mpp-x"]))
            assert geometry["spacing"] == tuple(v * downsamples[level] for v in mpp) == (0.25 * 2 ** level,) * 2
            assert geometry["unit"] == "um"
            assert (geometry["level"], geometry["downsample"]) == (level, downsamples[level])
            assert geometry["source"]["reader"] == "openslide"
            assert geometry["source"]["reader_version"].startswith(openslide.__version__)
            assert geometry["source"]["file"].endswith("slide.tif")
            assert set(geometry) == {"spacing", "unit", "level", "downsample", "source"}


@pytest.mark.parametrize("level", [0, 1])
def test_store_equals_openslides_whole_level_and_tifffiles_decode(slide_pyramid, level, make_store):
    with OpenSlideReader(slide_pyramid, level=level) as reader:
        store = make_store([reader], tile=(64, 64))
    height, width = store.shapes[0].tolist()
    expected = library_read(slide_pyramid, level, (0, 0), (width, height))
    np.testing.assert_array_equal(store.read(0), expected)
    with tifffile.TiffFile(slide_pyramid) as tif:  # the same JPEG tiles decoded by imagecodecs
        np.testing.assert_array_equal(store.read(0), tif.series[0].levels[level].asarray())
    store.close()


def test_a_slide_without_mpp_has_no_spacing(tmp_path, tissue, write_pyramid):
    path = write_pyramid(str(tmp_path / "plain.tif"), tissue[:256, :256], levels=1)
    with OpenSlideReader(path) as reader:
        assert reader.geometry["spacing"] is None and reader.geometry["unit"] is None


def test_fractional_downsample_reads_at_the_rounded_level0_location(tmp_path, tissue, write_pyramid):
    # NOTE [OpenSlide levels with a fractional downsample]: OpenSlide resamples such reads
    path = write_pyramid(str(tmp_path / "odd.tif"), tissue[:599, :899], levels=2)
    with OpenSlideReader(path, level=1) as reader:
        downsample = reader.downsample
        assert downsample != int(downsample)
        for origin, size in [((0, 0), (300, 450)), ((37, 101), (50, 60)), ((299, 449), (1, 1))]:
            location = (round(origin[1] * downsample), round(origin[0] * downsample))
            expected = library_read(path, 1, location, size[::-1])
            np.testing.assert_array_equal(reader.read_region(origin, size), expected)


def test_transparent_pixels_are_composited_on_the_background():
    from lazypatch.ingest.readers._openslide import composite

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[0, :, 3] = (255, 0, 128)
    region = Image.fromarray(rgba, "RGBA")
    expected = np.asarray(Image.composite(region, Image.new("RGB", (3, 2), "#f0e0d0"), region))
    np.testing.assert_array_equal(composite(region, "#f0e0d0"), expected)
    assert composite(region, "#f0e0d0")[0, 1].tolist() == [240, 224, 208]  # alpha 0: the background
    assert composite(region, "#f0e0d0")[0, 0].tolist() == [200, 100, 50]


def test_aperio_svs(aperio_svs):
    path = aperio_svs
    with open_image(path, level=1) as reader:
        assert reader.name == "openslide" and reader.vendor == "aperio"
        assert reader.geometry["spacing"] == (0.499 * 4, 0.499 * 4)
        np.testing.assert_array_equal(reader[...], library_read(path, 1, (0, 0), (225, 150)))
        with open_image(path, reader="tifffile", level=1) as other:  # SVS without OpenSlide agrees
            np.testing.assert_array_equal(other[...], reader[...])
            assert other.geometry["spacing"] == reader.geometry["spacing"]


def test_bad_input(tmp_path, slide_pyramid):
    damaged = tmp_path / "damaged.svs"
    damaged.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    with pytest.raises(ImageReadError, match=r"damaged\.svs.*(OpenSlide|slide)"):
        OpenSlideReader(damaged)
    text = tmp_path / "notes.tif"
    text.write_text("not a slide")
    with pytest.raises(ImageReadError, match=r"notes\.tif.*not a slide OpenSlide can open"):
        OpenSlideReader(text)
    with pytest.raises(ParameterError, match=r"level must be in 0\.\.2 for .*slide\.tif.*got 3"):
        OpenSlideReader(slide_pyramid, level=3)
    with pytest.raises(FileNotFoundError, match="missing.svs"):
        OpenSlideReader(tmp_path / "missing.svs")
    reader = OpenSlideReader(slide_pyramid)
    reader.close()
    with pytest.raises(ImageReadError, match="was closed"):
        reader[0:2]
