"""Whole-slide images through OpenSlide (openslide-python + openslide-bin).

OpenSlide is the reference reader of the vendors' slide formats (Aperio .svs,
Hamamatsu .ndpi, MIRAX .mrxs, Leica .scn, Ventana .bif, Philips, Sakura,
Zeiss, DICOM WSI and generic tiled TIFF); openslide-bin ships the C library
as a wheel, so no system package is needed. One pyramid level is one image,
read region by region with ``OpenSlide.read_region``.

NOTE [OpenSlide levels with a fractional downsample]: ``read_region`` takes
its location in level-0 pixels and divides it by the level's downsample.
When that downsample is not an integer (an odd-sized level 0, and most
vendor pyramids: Aperio levels are 4.0003x, 16.002x...), a region starting
anywhere but 0 lands a fraction of a pixel off the level's grid and OpenSlide
resamples it (bilinearly, with partial alpha at the edges). This reader asks
for the level-0 location ``round(origin * downsample)``, the nearest OpenSlide
can express, so a region is OpenSlide's read at that location; reads are
bit-exact against a whole-level read only at level 0 and at levels with an
integer downsample. The tifffile reader reads any TIFF-based level exactly.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ImageReadError
from ._base import ImageReader, check_level, make_geometry, require


class OpenSlideReader(ImageReader):
    """One level of a slide as an (H, W, 3) uint8 RGB array-like.

    Parameters
    ----------
    path : str or os.PathLike
        A slide OpenSlide opens.
    level : int, optional
        The pyramid level (0, the full resolution, by default).

    Notes
    -----
    OpenSlide returns RGBA without premultiplication; pixels outside the
    scanned area are transparent. They are composited onto the slide's
    ``openslide.background-color`` (white when absent), as openslide-python's
    Deep Zoom generator does. ``geometry['spacing']`` is ``mpp * downsample``
    per axis (``openslide.mpp-y``, ``openslide.mpp-x``) in um, or None when
    the slide has no mpp. Also see NOTE [OpenSlide levels with a fractional
    downsample] in this module.
    """

    name = "openslide"

    def __init__(self, path, level=None):
        openslide = require("openslide", self.name)
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such slide file: {self.path!r}")
        try:
            self._slide = openslide.OpenSlide(self.path)
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise ImageReadError(
                f"{self.path!r} is not a slide OpenSlide can open (unknown or damaged format: {exc})"
            ) from exc
        except openslide.OpenSlideError as exc:
            raise ImageReadError(f"OpenSlide cannot open {self.path!r} (damaged slide?): {exc}") from exc
        slide = self._slide
        self.level = check_level(level, slide.level_count, self.path, self.name)
        self.level_count = int(slide.level_count)
        self.vendor = slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        width, height = slide.level_dimensions[self.level]
        self.shape = (int(height), int(width), 3)
        self.dtype = np.dtype(np.uint8)
        self.spatial_ndim = 2
        self.downsample = float(slide.level_downsamples[self.level])
        self.background = "#" + slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
        spacing = None
        mpp = [_positive(slide.properties.get(name)) for name in
               (openslide.PROPERTY_NAME_MPP_Y, openslide.PROPERTY_NAME_MPP_X)]
        if None not in mpp:
            spacing = tuple(v * self.downsample for v in mpp)
        version = f"{openslide.__version__} (OpenSlide {openslide.__library_version__})"
        self.geometry = make_geometry(
            self.path, self.name, version, spacing=spacing, unit="um" if spacing else None,
            level=self.level, downsample=self.downsample,
        )

    def location(self, origin) -> tuple:
        """The level-0 (x, y) OpenSlide reads a region at ``origin`` (y, x) of this level from
        (see NOTE [OpenSlide levels with a fractional downsample])."""
        y, x = origin
        return (int(round(x * self.downsample)), int(round(y * self.downsample)))

    def _read(self, origin, size) -> np.ndarray:
        height, width = size
        region = self._slide.read_region(self.location(origin), self.level, (width, height))
        return composite(region, self.background)

    def _close(self) -> None:
        self._slide.close()


def composite(region, background: str) -> np.ndarray:
    """An RGBA PIL image from ``read_region`` as (H, W, 3) uint8 RGB on ``background``
    (openslide-python's Deep Zoom generator does the same)."""
    if region.getextrema()[3][0] == 255:  # opaque everywhere: the colours as they are
        return np.asarray(region)[..., :3].copy()
    from PIL import Image

    return np.asarray(Image.composite(region, Image.new("RGB", region.size, background), region))


def _positive(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None
