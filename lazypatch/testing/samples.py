"""Sample files of the field, written by the field's own libraries, for tests, benchmarks
and the notebooks' recipes (nothing is downloaded).

- :func:`write_slide`: a JPEG-tiled pyramidal TIFF that OpenSlide opens as a
  generic TIFF and tifffile as a pyramid, made of real stained tissue
  (scikit-image's immunohistochemistry sample, flipped and offset tile by tile
  so no two neighbours repeat), with its pixel size in the resolution tags.
  Tiles are written from an iterator: a 100,000 x 80,000 slide never sits in RAM.
- :func:`write_annotations`: QuPath's "Export objects as GeoJSON" for polygons.
- :func:`write_nifti_pair`: a CT-like NIfTI volume and its label map.
- :func:`write_geotiff`: a georeferenced RGB scene (rasterio).

Each library is imported when its function runs (scikit-image, tifffile +
imagecodecs, nibabel, rasterio: the ``test`` extra has them all).
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["tissue_picture", "write_slide", "write_annotations", "write_nifti_pair", "write_geotiff"]


def tissue_picture() -> np.ndarray:
    """scikit-image's immunohistochemistry sample: 512 x 512 RGB uint8 of stained tissue."""
    import skimage.data

    return skimage.data.immunohistochemistry()


def _tiles(picture, height, width, tile, step, seed):
    """The tiles of a (height, width) level in row-major order: crops of ``picture`` at
    offsets and flips drawn per tile; pixel (y, x) of level k is pixel (y*step, x*step)
    of level 0 only approximately (each level is drawn anew at its own scale)."""
    rng = np.random.default_rng(seed)
    side = picture.shape[0]
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            oy, ox = (int(v) for v in rng.integers(0, side - tile, 2))
            crop = picture[oy:oy + tile, ox:ox + tile]
            flip = int(rng.integers(0, 4))
            crop = crop[::-1] if flip & 1 else crop
            crop = crop[:, ::-1] if flip & 2 else crop
            out = np.full((tile, tile, 3), 255, np.uint8)  # white glass past the border
            h, w = min(tile, height - y), min(tile, width - x)
            out[:h, :w] = crop[:h, :w]
            yield out


def write_slide(path, height: int, width: int, *, mpp: float = 0.25, levels: int = 3, tile: int = 256,
                quality: int = 90, seed: int = 0, background: float = 0.0):
    """Write a JPEG-tiled pyramidal TIFF of real tissue content; returns ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    height, width : int
        Level 0's size in pixels.
    mpp : float
        Level 0's pixel size in microns (resolution tags in centimetres).
    levels : int
        Pyramid levels, each half the previous one (reduced-resolution pages).
    tile, quality : int
        Tile side (a multiple of 16) and JPEG quality.
    seed : int
        Which crops and flips make the tiles.
    background : float
        Fraction of tiles (in bands at the top and bottom) left as white glass,
        for tissue detection.

    Examples
    --------
    >>> import tempfile, os, tifffile
    >>> path = write_slide(os.path.join(tempfile.mkdtemp(), "s.tif"), 600, 800, levels=2)
    >>> with tifffile.TiffFile(path) as tif:
    ...     [level.shape for level in tif.series[0].levels]
    [(600, 800, 3), (300, 400, 3)]
    """
    import tifffile

    picture = tissue_picture()
    path = os.fspath(path)
    with tifffile.TiffWriter(path, bigtiff=height * width * 3 > 2 ** 31) as tif:
        for k in range(levels):
            h, w = max(1, height >> k), max(1, width >> k)
            tiles = _tiles(picture, h, w, tile, 1 << k, seed + k)
            if background:
                tiles = _with_glass(tiles, h, w, tile, background)
            tif.write(tiles, shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                      compression="jpeg", compressionargs={"level": quality}, subfiletype=0 if k == 0 else 1, metadata=None,
                      resolution=(1e4 / (mpp * (1 << k)),) * 2, resolutionunit="CENTIMETER")
    return path


def _with_glass(tiles, height, width, tile, fraction):
    rows = -(-height // tile)
    cols = -(-width // tile)
    glass = int(round(rows * fraction / 2))
    for index, data in enumerate(tiles):
        row = index // cols
        yield np.full_like(data, 245) if row < glass or row >= rows - glass else data


def write_annotations(path, polygons) -> str:
    """Write QuPath-style GeoJSON: ``polygons`` is a list of (class name, [(x, y), ...]) in
    level-0 pixels; returns ``path``.

    >>> import tempfile, os, json
    >>> p = write_annotations(os.path.join(tempfile.mkdtemp(), "a.geojson"),
    ...                       [("Tumor", [(0, 0), (10, 0), (10, 10)])])
    >>> with open(p) as handle:
    ...     json.load(handle)["features"][0]["properties"]["classification"]["name"]
    'Tumor'
    """
    features = []
    for name, points in polygons:
        ring = [list(map(float, p)) for p in points]
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        features.append({"type": "Feature", "id": f"{len(features):08x}-0000-0000-0000-000000000000",
                         "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "annotation",
                                        "classification": {"name": name, "color": [200, 0, 0]}}})
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"type": "FeatureCollection", "features": features}, handle)
    return os.fspath(path)


def write_nifti_pair(image_path, mask_path, shape=(48, 40, 24), spacing=(0.8, 0.8, 2.5), seed: int = 0):
    """A CT-like int16 NIfTI volume (x, y, z) with a bright sphere, and its uint8 label map.

    Returns the (volume, labels) arrays as nibabel holds them (x, y, z).
    """
    import nibabel

    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float64)
    centre = np.array(shape) / 2 + rng.uniform(-3, 3, 3)
    radius = min(shape) / 3
    inside = (((grid - centre[:, None, None, None]) ** 2).sum(axis=0) < radius ** 2)
    volume = (rng.normal(40, 20, shape) + 200 * inside - 1000 * (grid[0] < 2)).astype(np.int16)
    labels = inside.astype(np.uint8)
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = [-shape[0] * spacing[0] / 2, -shape[1] * spacing[1] / 2, -60.0]
    nibabel.save(nibabel.Nifti1Image(volume, affine), os.fspath(image_path))
    nibabel.save(nibabel.Nifti1Image(labels, affine), os.fspath(mask_path))
    return volume, labels


def write_geotiff(path, height: int = 512, width: int = 512, *, crs: str = "EPSG:32633",
                  origin=(500000.0, 4200000.0), pixel: float = 10.0, seed: int = 0):
    """A georeferenced 3-band uint8 scene (north up, ``pixel`` metres); returns its transform."""
    import rasterio

    picture = tissue_picture()
    rng = np.random.default_rng(seed)
    bands = np.empty((3, height, width), np.uint8)
    for y in range(0, height, 256):
        for x in range(0, width, 256):
            oy, ox = (int(v) for v in rng.integers(0, 256, 2))
            h, w = min(256, height - y), min(256, width - x)
            bands[:, y:y + h, x:x + w] = picture[oy:oy + h, ox:ox + w].transpose(2, 0, 1)
    transform = rasterio.Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])
    with rasterio.open(os.fspath(path), "w", driver="GTiff", height=height, width=width, count=3,
                       dtype="uint8", crs=crs, transform=transform) as dataset:
        dataset.write(bands)
    return transform
