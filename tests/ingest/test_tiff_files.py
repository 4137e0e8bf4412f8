"""lazypatch build from TIFFs: JPEG-compressed tiles, missing codecs, and pages as channels or z.

tifffile is the oracle: a store holds exactly what ``tifffile.imread`` (or
``TiffFile.series[0].asarray()``) decodes, with the axes moved as the series
axes say.

Matrix: JPEG tiled RGB slide (with imagecodecs; without it, the error names
``pip install imagecodecs``) x page layouts {ImageJ CYX, shaped CYX tiled,
ImageJ ZCYX as 2-D and 3-D, OME ZCYX (TiffFrames) 3-D, ImageJ TZCYX 3-D,
tifffile's unknown QYX with --pages {absent, channels, z, first} in 2-D and
3-D, CYX asked for as 3-D}.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image, features

from lazypatch import ImageStore, build
from lazypatch.cli import main
from lazypatch.errors import ParameterError


def pixels(shape, dtype=np.uint16):
    """Distinct values that show a wrong offset, axis order or channel."""
    return (np.arange(int(np.prod(shape))) * 2654435761 % 60013).astype(dtype).reshape(shape)


# -- JPEG tiles ---------------------------------------------------------------------------
def test_jpeg_tiled_tiff_builds_as_tifffile_reads_it(tmp_path):
    pytest.importorskip("imagecodecs")
    (tmp_path / "src").mkdir()
    slide = np.tile(skimage.data.immunohistochemistry(), (4, 4, 1))  # 2048 x 2048 x 3
    path = tmp_path / "src" / "slide.tif"
    tifffile.imwrite(path, slide, tile=(256, 256), photometric="rgb", compression="jpeg")
    out = tmp_path / "s.h5"
    assert main(["build", str(tmp_path / "src"), str(out), "--no-progress", "--workers", "0"]) == 0
    expected = tifffile.imread(path)  # JPEG is lossy: tifffile's decoding is the oracle
    store = ImageStore(out)
    assert store.read(0).shape == slide.shape and np.array_equal(store.read(0), expected)
    store.close()


NO_IMAGECODECS = r"""
import sys
sys.modules["imagecodecs"] = None  # as if it were not installed
from lazypatch.cli import main
sys.exit(main(["build", sys.argv[1], sys.argv[2], "--no-progress"]))
"""


@pytest.mark.system
@pytest.mark.skipif(not features.check("libtiff"), reason="Pillow without libtiff writes no JPEG TIFF")
def test_a_missing_codec_names_the_file_and_the_install_line(tmp_path):
    (tmp_path / "src").mkdir()
    path = tmp_path / "src" / "slide.tif"
    Image.fromarray(skimage.data.astronaut()).save(path, compression="jpeg")  # Pillow needs no imagecodecs
    done = subprocess.run([sys.executable, "-c", NO_IMAGECODECS, str(tmp_path / "src"), str(tmp_path / "s.h5")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "slide.tif" in done.stderr and "`pip install imagecodecs`" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["src"]


# -- pages ------------------------------------------------------------------------------
def test_imagej_channel_pages_are_channels(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    cyx = pixels((3, 70, 90))
    tifffile.imwrite(tmp_path / "src" / "a.tif", cyx, imagej=True, metadata={"axes": "CYX"})
    out = tmp_path / "s.h5"
    assert main(["build", str(tmp_path / "src"), str(out), "--no-progress"]) == 0
    assert "multi-page" not in capsys.readouterr().out  # every page read
    store = ImageStore(out)
    assert store.channels == 3 and np.array_equal(store.read(0), np.moveaxis(cyx, 0, -1))
    store.close()


def test_tiled_channel_pages_are_read_tile_by_tile(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    cyx = pixels((4, 700, 500))
    tifffile.imwrite(tmp_path / "src" / "a.tif", cyx, photometric="minisblack", metadata={"axes": "CYX"},
                     tile=(128, 128), compression="zlib")
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("whole-page decode"))
    store = build(tmp_path / "src", tmp_path / "s.h5", progress=False, workers=0)
    assert np.array_equal(store.read(0), np.moveaxis(cyx, 0, -1))
    store.close()


def test_hyperstacks_as_volumes_and_as_their_first_slice(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    zcyx = pixels((5, 2, 40, 60))
    tifffile.imwrite(tmp_path / "src" / "v.tif", zcyx, imagej=True, metadata={"axes": "ZCYX"})
    volume = build(tmp_path / "src", tmp_path / "v.h5", spatial_ndim=3, tile=(4, 16, 16), progress=False)
    assert volume.spatial_ndim == 3 and volume.channels == 2
    assert np.array_equal(volume.read(0), np.moveaxis(zcyx, 1, -1))
    volume.close()
    assert main(["build", str(tmp_path / "src"), str(tmp_path / "first.h5"), "--no-progress"]) == 0
    assert "--spatial-ndim 3 reads their z slices as volumes" in capsys.readouterr().out
    first = ImageStore(tmp_path / "first.h5")
    assert np.array_equal(first.read(0), np.moveaxis(zcyx[0], 0, -1))
    first.close()


def test_ome_frames_and_time_points(tmp_path, capsys):
    (tmp_path / "ome").mkdir()
    (tmp_path / "ij").mkdir()
    zcyx = pixels((3, 2, 30, 40))
    tifffile.imwrite(tmp_path / "ome" / "a.ome.tif", zcyx, metadata={"axes": "ZCYX"})
    store = build(tmp_path / "ome", tmp_path / "ome.h5", spatial_ndim=3, progress=False)
    assert np.array_equal(store.read(0), np.moveaxis(zcyx, 1, -1))
    store.close()
    tzcyx = pixels((2, 3, 2, 30, 40))
    tifffile.imwrite(tmp_path / "ij" / "t.tif", tzcyx, imagej=True, metadata={"axes": "TZCYX"})
    assert main(["build", str(tmp_path / "ij"), str(tmp_path / "t.h5"), "--spatial-ndim", "3",
                 "--no-progress"]) == 0
    assert "pages along TIFF axis T after the first are not read" in capsys.readouterr().out
    store = ImageStore(tmp_path / "t.h5")
    assert np.array_equal(store.read(0), np.moveaxis(tzcyx[0], 1, -1))
    store.close()


def test_unknown_pages_need_pages(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    qyx = pixels((4, 40, 50))
    # tifffile's axes 'QYX': nothing says what the pages are
    tifffile.imwrite(tmp_path / "src" / "q.tif", qyx, photometric="minisblack")
    src, out = str(tmp_path / "src"), str(tmp_path / "s.h5")
    assert main(["build", src, out]) == 1
    err = capsys.readouterr().err
    assert "q.tif' has 4 pages on TIFF axis 'Q'" in err
    assert "--pages channels, --pages z (a volume, with --spatial-ndim 3) or --pages first" in err
    with pytest.raises(ParameterError, match=r"pages='channels', 'z' or 'first'"):
        build(src, out)
    with pytest.raises(ParameterError, match=r"--pages \(pages\) must be one of channels, z, first, got 'c'"):
        build(src, out, pages="c")

    channels = build(src, out, pages="channels", progress=False)
    assert np.array_equal(channels.read(0), np.moveaxis(qyx, 0, -1))
    channels.close()
    assert main(["build", src, str(tmp_path / "first.h5"), "--pages", "first", "--no-progress"]) == 0
    assert "1 multi-page TIFF(s), e.g. " in capsys.readouterr().out
    assert np.array_equal(ImageStore(tmp_path / "first.h5").read(0), qyx[0])
    for options in ({"pages": "z"}, {}):  # asked for volumes, a lone unknown axis is z
        volume = build(src, tmp_path / f"v{len(options)}.h5", spatial_ndim=3, progress=False, **options)
        assert np.array_equal(volume.read(0), qyx)
        volume.close()
    # z slices asked for a 2-D store: an error naming --spatial-ndim 3 (it read the first page
    # before, which a new user took for silently lost pages)
    assert main(["build", src, str(tmp_path / "z.h5"), "--pages", "z", "--no-progress"]) == 1
    assert "needs spatial_ndim=3 (--spatial-ndim 3)" in capsys.readouterr().err


def test_channel_pages_are_no_volume(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    tifffile.imwrite(tmp_path / "src" / "a.tif", pixels((3, 20, 30)), imagej=True, metadata={"axes": "CYX"})
    assert main(["build", str(tmp_path / "src"), str(tmp_path / "s.h5"), "--spatial-ndim", "3"]) == 1
    err = capsys.readouterr().err
    assert "a.tif': TIFF axes 'CYX' have no z axis for spatial_ndim=3 (its pages are channels: 'C')" in err
    assert "build it with --spatial-ndim 2" in err
