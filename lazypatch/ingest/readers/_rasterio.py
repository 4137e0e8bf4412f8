"""GeoTIFF and Cloud-Optimized GeoTIFF through rasterio (GDAL).

rasterio is what the Python remote-sensing stack (torchgeo, rioxarray) reads
rasters with: GDAL's drivers, windowed reads of tiled files, overviews, and
the CRS and affine transform as first-class objects. Bands are channels; a
region is one windowed read. ``level`` k > 0 reads overview k - 1 (GDAL's
``OVERVIEW_LEVEL``), whose transform GDAL adjusts to the coarser grid.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from ...errors import ImageReadError
from ._base import ImageReader, check_level, make_geometry, require


class RasterioReader(ImageReader):
    """A raster as an (H, W) (one band) or (H, W, C) (C bands) array-like.

    Parameters
    ----------
    path : str or os.PathLike
    level : int, optional
        0 (default) is the full resolution, k > 0 the k-th overview.

    Notes
    -----
    ``geometry``: ``crs`` (WKT), ``transform`` (rasterio's ``Affine`` terms
    a, b, c, d, e, f of this level), ``spacing`` (y, x) = the lengths of the
    transform's columns (e, b) and (a, d): in metres for a projected CRS
    (scaled by the CRS's unit when it is feet or another length), in degrees
    for a geographic one; spacing and unit are None without a CRS.
    """

    name = "rasterio"

    def __init__(self, path, level=None):
        rasterio = require("rasterio", self.name)
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such raster file: {self.path!r}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(self.path) as base:
                    count = 1 + len(base.overviews(1)) if base.count else 1
                    base_shape = (base.height, base.width)
                self.level = check_level(level, count, self.path, self.name)
                self.level_count = count
                options = {"overview_level": self.level - 1} if self.level else {}
                self._dataset = rasterio.open(self.path, **options)
        except rasterio.errors.RasterioIOError as exc:
            raise ImageReadError(f"rasterio cannot open {self.path!r} (not a raster, or damaged): {exc}") from exc
        dataset = self._dataset
        if dataset.count < 1 or len(set(dataset.dtypes)) != 1:
            dataset.close()
            raise ImageReadError(
                f"{self.path!r}: bands of one dtype are channels; it has {dataset.count} band(s) "
                f"of dtypes {sorted(set(dataset.dtypes))}"
            )
        self.count = dataset.count
        self.shape = (dataset.height, dataset.width) + ((dataset.count,) if dataset.count > 1 else ())
        self.dtype = np.dtype(dataset.dtypes[0])
        self.spatial_ndim = 2
        self.downsample = (base_shape[0] / dataset.height + base_shape[1] / dataset.width) / 2
        transform = tuple(float(v) for v in tuple(dataset.transform)[:6])
        crs = dataset.crs
        spacing = unit = None
        if crs is not None:
            a, b, _, d, e, _ = transform
            spacing = (math.hypot(b, e), math.hypot(a, d))
            if crs.is_geographic:
                unit = "deg"
            else:
                factor = crs.linear_units_factor[1]
                spacing, unit = tuple(v * factor for v in spacing), "m"
        georeferenced = crs is not None or transform != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        self.geometry = make_geometry(
            self.path, self.name, f"{rasterio.__version__} (GDAL {rasterio.__gdal_version__})",
            spacing=spacing, unit=unit, crs=crs.to_wkt() if crs is not None else None,
            transform=transform if georeferenced else None, level=self.level, downsample=self.downsample,
        )

    def _read(self, origin, size) -> np.ndarray:
        from rasterio.windows import Window

        (y0, x0), (height, width) = origin, size
        window = Window(x0, y0, width, height)
        if self.count == 1:
            return self._dataset.read(1, window=window)
        return np.ascontiguousarray(np.moveaxis(self._dataset.read(window=window), 0, -1))

    def _close(self) -> None:
        self._dataset.close()
