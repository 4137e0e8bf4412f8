"""TIFF through tifffile (+ imagecodecs): OME-TIFF pyramids with channels and Z,
generic tiled or stripped TIFF (JPEG, LZW, deflate, zstd, JPEG 2000...), SVS
without OpenSlide.

tifffile knows every TIFF flavour's metadata (OME-XML, SVS, ImageJ) and gives
each page a decode function for one tile or strip; imagecodecs holds the
codecs. A region decodes only the tiles (or strips) it touches, read from the
file in offset order: a level is never decoded whole.

The image is the first series (the main image: SVS labels and macros, OME
thumbnails come after it); ``level`` picks a level of its pyramid. Its axes
become (Z, Y, X, C): Z when the series has more than one plane along Z (or
tifffile's generic I/Q page axis), channels from OME's C and the samples of a
pixel (S) when there are several; any other axis (time...) must have one
entry.

Physical pixel size, in um: OME-XML ``PhysicalSizeX/Y/Z`` with their units;
else the SVS description's MPP; else the TIFF resolution tags when their unit
is a length (centimetre, or tifffile's millimetre and micrometre) — not inch:
see NOTE [TIFF resolution in inches].

NOTE [TIFF resolution in inches]: most TIFF writers put 72 or 300 dots per
inch in files that have no physical size at all (a screenshot is not 353 um
per pixel). OpenSlide's generic-tiff reader also reads the resolution tags
only when their unit is centimetre; this reader does the same, so the two
readers give one spacing for one file.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from ...errors import ImageReadError, LazypatchError
from ...grid import ceil_div
from ._base import ImageReader, check_level, make_geometry, require

_JPEG = {6, 7, 33007, 34892}  # compressions whose decode takes the JPEG tables
_TO_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "micron": 1.0, "mm": 1e3,
          "cm": 1e4, "dm": 1e5, "m": 1e6, "Å": 1e-4, "\u212b": 1e-4}
_RESOLUTION_UNIT_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # centimetre, millimetre, micrometre (tifffile)


class TiffReader(ImageReader):
    """One level of a TIFF's main image as a ((Z,) Y, X[, C]) array-like.

    Parameters
    ----------
    path : str or os.PathLike
    level : int, optional
        The pyramid level of the first series (0, the full resolution, by
        default).

    Examples
    --------
    >>> import numpy as np, tempfile, os, tifffile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.tif")
    >>> tifffile.imwrite(path, np.arange(64 * 48, dtype=np.uint16).reshape(64, 48), tile=(16, 16),
    ...                  resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    >>> reader = TiffReader(path)
    >>> reader.shape, reader.geometry["spacing"], reader.geometry["unit"]
    ((64, 48), (0.5, 0.5), 'um')
    >>> int(reader[20:22, 30][1])
    1038
    >>> reader.close()
    """

    name = "tifffile"

    def __init__(self, path, level=None):
        tifffile = require("tifffile", self.name)
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such TIFF file: {self.path!r}")
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:
            raise ImageReadError(f"tifffile cannot open {self.path!r} (not a TIFF, or damaged): {exc}") from exc
        try:
            self._open(tifffile, level)
        except BaseException as exc:
            self._tif.close()
            if isinstance(exc, LazypatchError) or not isinstance(exc, Exception):
                raise
            raise ImageReadError(f"tifffile cannot read {self.path!r}: {type(exc).__name__}: {exc}") from exc

    def _open(self, tifffile, level) -> None:
        tif = self._tif
        if not tif.series:
            raise ImageReadError(f"{self.path!r} holds no image that tifffile can read")
        series = tif.series[0]
        levels = series.levels
        self.level = check_level(level, len(levels), self.path, self.name)
        self.level_count = len(levels)
        chosen = levels[self.level]
        axes, shape = chosen.get_axes(False), tuple(int(n) for n in chosen.get_shape(False))
        self._pages = list(chosen.pages)
        key = next((p for p in self._pages if p is not None), None)
        if key is None:
            raise ImageReadError(f"{self.path!r}: level {self.level} has no pages")
        self._key = key.keyframe
        self._plan(axes, shape)
        self.dtype = np.dtype(chosen.dtype)
        self._check_decoder()
        base_shape = levels[0].get_shape(False)
        y_axis, x_axis = axes.index("Y"), axes.index("X")
        ratios = (base_shape[y_axis] / shape[y_axis], base_shape[x_axis] / shape[x_axis])
        self.downsample = (ratios[0] + ratios[1]) / 2  # OpenSlide's definition of a level's downsample
        spacing = self._spacing(series, (base_shape[y_axis], base_shape[x_axis]))
        if spacing is not None:
            spacing = spacing[:-2] + (spacing[-2] * ratios[0], spacing[-1] * ratios[1])
        version = tifffile.__version__
        imagecodecs = _version_of("imagecodecs")
        if imagecodecs:
            version += f" (imagecodecs {imagecodecs})"
        self.geometry = make_geometry(
            self.path, self.name, version, spacing=spacing, unit="um" if spacing else None,
            level=self.level, downsample=self.downsample,
        )

    # -- axes ---------------------------------------------------------------------------
    def _plan(self, axes: str, shape: tuple) -> None:
        """Map the series' page-leading axes and the page's own axes to (Z, Y, X, C)."""
        pages = len(self._pages)
        y_at = axes.index("Y")
        cut = max(p for p in range(y_at + 1) if math.prod(shape[:p]) == pages)
        lead_axes, lead_shape = axes[:cut], shape[:cut]
        page_axes = axes[cut:]
        key = self._key
        if key.imagedepth > 1 or not set(page_axes) <= set("YXS"):
            raise ImageReadError(
                f"{self.path!r}: TIFF pages with axes {page_axes!r} (volumetric tiles) are not supported"
            )
        self._lead_shape = lead_shape
        self._z_axes = [k for k, a in enumerate(lead_axes) if a in "ZIQ" and lead_shape[k] > 1]
        self._c_axes = [k for k, a in enumerate(lead_axes) if a == "C" and lead_shape[k] > 1]
        others = [(a, n) for k, (a, n) in enumerate(zip(lead_axes, lead_shape))
                  if n > 1 and k not in self._z_axes + self._c_axes]
        if len(self._z_axes) > 1 or len(self._c_axes) > 1 or others:
            extra = others or [(lead_axes[k], lead_shape[k]) for k in self._z_axes[1:] + self._c_axes[1:]]
            raise ImageReadError(
                f"{self.path!r}: tifffile reads its axes as {axes} {shape}; lazypatch reads one "
                f"((Z,) Y, X[, C]) image, and axis {extra[0][0]} has {extra[0][1]} entries "
                "(time series and multi-position images: write one file per image)"
            )
        self._samples = int(key.samplesperpixel)
        self._planar = key.planarconfig == 2 and self._samples > 1
        depth = lead_shape[self._z_axes[0]] if self._z_axes else 1
        colours = lead_shape[self._c_axes[0]] if self._c_axes else 1
        channels = colours * self._samples
        height, width = int(key.imagelength), int(key.imagewidth)
        self.spatial_ndim = 3 if self._z_axes else 2
        self.shape = ((depth,) if self._z_axes else ()) + (height, width) + ((channels,) if channels > 1 else ())
        self._colours = colours

    def _page_index(self, z: int, colour: int) -> int:
        index = [0] * len(self._lead_shape)
        if self._z_axes:
            index[self._z_axes[0]] = z
        if self._c_axes:
            index[self._c_axes[0]] = colour
        return int(np.ravel_multi_index(index, self._lead_shape)) if index else 0

    def _check_decoder(self) -> None:
        key = self._key
        try:
            key.decode(None, 0)  # unsupported codecs are refused here, before any pixel
        except Exception as exc:
            compression = getattr(key.compression, "name", key.compression)
            raise ImageReadError(
                f"tifffile cannot decode {self.path!r}: its compression {compression} ({exc}); "
                'tifffile decodes JPEG, JPEG 2000, LZW, zstd, WebP... through imagecodecs: '
                'pip install "lazypatch[tiff]"'
            ) from exc

    # -- physical size ----------------------------------------------------------------------
    def _spacing(self, series, base: tuple):
        """Level-0 pixel size in um, (z,) y, x, or None; ``base`` is level 0's (height, width)."""
        tif = self._tif
        if tif.is_ome and tif.ome_metadata:
            sizes = _ome_sizes(tif.ome_metadata, tif.series.index(series), base, self.spatial_ndim)
            if sizes is not None:
                return sizes
        if self.spatial_ndim == 3:
            return None
        if tif.is_svs:
            mpp = _svs_mpp(tif.pages.first.description)
            if mpp:
                return (mpp, mpp)
        page = tif.pages.first
        unit = int(page.tags.valueof(296, 2))
        scale = _RESOLUTION_UNIT_UM.get(unit)
        x_resolution, y_resolution = (_rational(page.tags.valueof(tag)) for tag in (282, 283))
        if scale is None or not x_resolution or not y_resolution:
            return None
        return (scale / y_resolution, scale / x_resolution)

    # -- reading ----------------------------------------------------------------------------
    def _read(self, origin, size) -> np.ndarray:
        if self.spatial_ndim == 3:
            (z0, y0, x0), (depth, height, width) = origin, size
        else:
            (y0, x0), (height, width), z0, depth = origin, size, 0, 1
        out = np.zeros((depth, height, width, self._colours, self._samples), self.dtype)
        for z in range(depth):
            for colour in range(self._colours):
                page = self._pages[self._page_index(z0 + z, colour)]
                if page is not None:  # a missing page (OME) reads as zeros, as tifffile fills it
                    self._page_region(page, y0, x0, out[z, :, :, colour])
        out = out.reshape((depth, height, width, self._colours * self._samples))
        if self.spatial_ndim == 2:
            out = out[0]
        return out if len(self.shape) > self.spatial_ndim else out[..., 0]

    def _page_region(self, page, y0: int, x0: int, out: np.ndarray) -> None:
        """Decode the tiles or strips of ``page`` that meet the region into ``out`` (h, w, S)."""
        key = page.keyframe  # the page itself, or the page a TiffFrame shares its structure with
        height, width = int(key.imagelength), int(key.imagewidth)
        if key.is_tiled:
            segment_height, segment_width = int(key.tilelength), int(key.tilewidth)
        else:
            segment_height, segment_width = min(int(key.rowsperstrip or height), height), width
        rows, cols = ceil_div(height, segment_height), ceil_div(width, segment_width)
        y1, x1 = y0 + out.shape[0], x0 + out.shape[1]
        indices = [(plane * rows + row) * cols + col
                   for plane in range(self._samples if self._planar else 1)
                   for row in range(y0 // segment_height, ceil_div(y1, segment_height))
                   for col in range(x0 // segment_width, ceil_div(x1, segment_width))]
        offsets, counts = page.dataoffsets, page.databytecounts
        arguments = {}
        if key.compression in _JPEG:
            arguments = {"jpegtables": page.jpegtables, "jpegheader": key.jpegheader}
        handle = self._tif.filehandle
        segments = handle.read_segments([offsets[k] for k in indices], [counts[k] for k in indices],
                                        indices=indices, sort=True, lock=handle.lock)
        for data, index in segments:
            decoded, (plane, _, top, left, _), _ = key.decode(data, index, **arguments)
            if decoded is None:  # a sparse TIFF's missing tile: zeros
                continue
            decoded = decoded.reshape(decoded.shape[-3:])
            a, b = max(y0, top), min(y1, top + decoded.shape[0])
            c, d = max(x0, left), min(x1, left + decoded.shape[1])
            if a >= b or c >= d:
                continue
            samples = slice(plane, plane + 1) if self._planar else slice(None)
            out[a - y0:b - y0, c - x0:d - x0, samples] = decoded[a - top:b - top, c - left:d - left]

    def _close(self) -> None:
        self._tif.close()


def _ome_sizes(xml: str, image_index: int, base: tuple, spatial_ndim: int):
    """PhysicalSize(Z,) Y, X of OME Image ``image_index`` in um, or None when any is missing
    or the Image's SizeY, SizeX are not ``base`` (then it is not the series read)."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    images = [element for element in root if element.tag.endswith("}Image") or element.tag == "Image"]
    if image_index >= len(images):
        return None
    pixels = next((e for e in images[image_index] if e.tag.endswith("Pixels")), None)
    if pixels is None or (_number(pixels.get("SizeY")), _number(pixels.get("SizeX"))) != base:
        return None
    values = []
    for axis in ("Z", "Y", "X")[3 - spatial_ndim:]:
        value = _number(pixels.get(f"PhysicalSize{axis}"))
        factor = _TO_UM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if not value or factor is None:
            return None
        values.append(value * factor)
    return tuple(values)


def _svs_mpp(description: str):
    """The ``MPP = x`` field of an Aperio description (``Aperio ...|AppMag = 20|MPP = 0.4990|...``)."""
    for field in description.split("|")[1:]:
        name, _, value = field.partition("=")
        if name.strip() == "MPP":
            return _number(value.strip())
    return None


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _rational(value):
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return _number(value)


def _version_of(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""
