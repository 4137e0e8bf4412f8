"""Test data for the format readers, made by the libraries themselves.

The pictures are scikit-image's immunohistochemistry sample tiled up (real
stained tissue, so JPEG compression behaves as on slides), kept small so each
test file runs in a few seconds.
"""

import numpy as np
import pytest
import skimage.data


@pytest.fixture(scope="session")
def tissue():
    """A 600 x 900 RGB uint8 picture of stained tissue (the IHC sample, tiled 2 x 2)."""
    return np.ascontiguousarray(np.tile(skimage.data.immunohistochemistry(), (2, 2, 1))[:600, :900])


@pytest.fixture(scope="session")
def slide_pyramid(tmp_path_factory, tissue):
    """A JPEG-tiled generic TIFF pyramid, levels 600x900, 300x450, 150x225 (downsamples 1, 2, 4),
    0.25 um per pixel at level 0 in its resolution tags (centimetre). OpenSlide opens it
    as generic-tiff."""
    path = str(tmp_path_factory.mktemp("slide") / "slide.tif")
    return _write_pyramid(path, tissue, levels=3, mpp=0.25)


@pytest.fixture(scope="session")
def aperio_svs(tmp_path_factory, tissue):
    """An Aperio SVS as Aperio lays it out: the baseline (tiled JPEG, MPP 0.499 in its
    description), a stripped thumbnail, then a level at downsample 4."""
    import tifffile

    path = str(tmp_path_factory.mktemp("svs") / "slide.svs")
    head = "Aperio Image Library v12.0.15 \r\n900x600 [0,0 900x600] (128x128) JPEG/RGB Q=90"
    with tifffile.TiffWriter(path) as tif:
        tif.write(tissue, tile=(128, 128), photometric="rgb", compression="jpeg",
                  description=head + "|AppMag = 20|MPP = 0.499", metadata=None)
        tif.write(np.ascontiguousarray(tissue[::8, ::8]), photometric="rgb", compression="jpeg",
                  description=head + " -> 113x75 - |AppMag = 20|MPP = 0.499", metadata=None)
        tif.write(np.ascontiguousarray(tissue[::4, ::4]), tile=(128, 128), photometric="rgb",
                  compression="jpeg", description=head + " -> 225x150 - |AppMag = 20|MPP = 0.499",
                  metadata=None)
    return path


@pytest.fixture(scope="session")
def write_pyramid():
    """write_pyramid(path, image, levels, mpp=None, compression="jpeg", tile=128, description=None)"""
    return _write_pyramid


@pytest.fixture
def random_regions():
    """random_regions(shape, count) -> [(origin, size)], seeded: the whole image, a corner
    pixel and ``count`` random boxes."""
    rng = np.random.default_rng(20240607)
    return lambda shape, count=12: _regions(shape, count, rng)


def _write_pyramid(path, image, levels, mpp=None, compression="jpeg", tile=128, description=None):
    """Levels of ``image`` (every 2**k-th pixel) as tiled pages, the later ones reduced-resolution."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for k in range(levels):
            level = np.ascontiguousarray(image[::2 ** k, ::2 ** k])
            options = {}
            if mpp is not None:
                options = dict(resolution=(1e4 / (mpp * 2 ** k),) * 2, resolutionunit="CENTIMETER")
            tif.write(level, tile=(tile, tile), photometric="rgb", compression=compression,
                      subfiletype=0 if k == 0 else 1,
                      description=description if k == 0 else None, metadata=None, **options)
    return path


def _regions(shape, count, rng):
    """``count`` random regions (origin, size) inside ``shape``, plus the whole image and
    a one-pixel corner."""
    found = [(tuple(0 for _ in shape), tuple(shape)),
             (tuple(n - 1 for n in shape), tuple(1 for _ in shape))]
    for _ in range(count):
        origin = tuple(int(rng.integers(0, n)) for n in shape)
        size = tuple(int(rng.integers(1, n - o + 1)) for o, n in zip(origin, shape))
        found.append((origin, size))
    return found
