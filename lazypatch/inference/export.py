"""Stitched predictions as the field's files: NIfTI, OME-TIFF, GeoTIFF, with their geometry.

``PatchAggregator(..., out="preds.h5")`` writes each image's prediction with its
image's geometry (a JSON attribute ``geometry``, the dict of
``ImageStore.geometry``). :func:`export` writes one file per image,
``OUT_DIR/<image name without its suffix>.<ext>``, that the source's own tools
open in place:

- ``nifti`` (nibabel, ``.nii.gz``): the array back in nibabel's (x, y, z[, C])
  order and the affine with its first three columns reversed (the inverse of
  the NIfTI reader's permutation), so nibabel's world coordinates of every
  voxel are the store's; a 2-D image is a volume of one slice;
- ``ome-tiff`` (tifffile, ``.ome.tif``): axes (C,) (Z,) Y, X with
  ``PhysicalSizeX/Y/Z`` and their unit;
- ``geotiff`` (rasterio, ``.tif``): one band per channel, the image's CRS and
  transform (an image without a CRS is an error).

Values are float32 (C, ...) probabilities as stitched (NaN where no patch
reached), or with ``argmax=True`` the label of the largest channel (the
smallest unsigned dtype). ``to_source=True`` resamples back to the source's
full-resolution grid (``geometry["source_shape"]``, present when the store was
built with ``--level`` > 0, ``--mpp`` or ``--spacing``): linear for
probabilities, nearest for labels (argmax first), and the geometry composed
back (NOTE [stored geometry] in :mod:`lazypatch.ingest.sources`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ParameterError, StoreExistsError, StoreFormatError
from ..store import format as fmt

__all__ = ["FORMATS", "export", "read_predictions"]

FORMATS = {"nifti": ".nii.gz", "ome-tiff": ".ome.tif", "geotiff": ".tif"}
_OME_UNITS = {"um": "µm", "mm": "mm", "m": "m"}


def read_predictions(path):
    """Yield ``(name, array (C, *spatial) float32, geometry dict)`` of a predictions file."""
    import h5py

    path = fmt.check_path(os.fspath(path), "predictions file")
    with fmt.damage_is_format_error(path, "the predictions file"), h5py.File(path, "r") as f:
        if "lazypatch_predictions" not in f.attrs or "predictions" not in f:
            raise StoreFormatError(f"{path!r} is not a predictions file of PatchAggregator(out=...)")
        group = f["predictions"]
        for key in sorted(group, key=lambda k: int(k) if k.isdigit() else k):
            dataset = group[key]
            name = fmt.text_attribute(dataset.attrs.get("name")) or key
            text = fmt.text_attribute(dataset.attrs.get("geometry")) or '{"spacing": null, "unit": null}'
            yield name, np.asarray(dataset[()], np.float32), json.loads(text)


def _stem(name: str) -> str:
    from ..ingest.files import stem

    folder = os.path.dirname(name)
    return os.path.join(folder, stem(name)) if folder else stem(name)


def _to_source(data: np.ndarray, geometry: dict, labels: bool):
    """``data`` (labels: spatial; else (C, *spatial)) on the source's grid, and its geometry."""
    from ..ingest.resample import resample

    source = geometry.get("source_shape")
    spatial = data.shape if labels else data.shape[1:]
    if not source or tuple(source) == tuple(spatial):
        return data, geometry
    source = tuple(int(n) for n in source)
    if labels:
        data = resample(data, source, order=0)
    else:
        data = np.moveaxis(resample(np.moveaxis(data, 0, -1), source, order=1), -1, 0)
    ratios = [n / m for n, m in zip(source, spatial)]
    geometry = dict(geometry)
    if geometry.get("spacing") is not None:
        geometry["spacing"] = tuple(s / r for s, r in zip(geometry["spacing"], ratios))
    if "affine" in geometry:
        scale = np.eye(4)
        for axis, r in enumerate(ratios[-3:]):
            scale[axis, axis], scale[axis, 3] = r, (r - 1) / 2
        geometry["affine"] = (np.asarray(geometry["affine"]) @ np.linalg.inv(scale)).tolist()
    if "transform" in geometry:
        a, b, c, d, e, f = geometry["transform"]
        ry, rx = ratios[-2:]
        geometry["transform"] = (a / rx, b / ry, c, d / rx, e / ry, f)
    geometry.pop("source_shape", None)
    return data, geometry


def _write_nifti(path, data, geometry, labels: bool) -> None:
    from ..ingest.readers._base import require

    nibabel = require("nibabel", "nibabel")
    spatial = data.ndim if labels else data.ndim - 1
    array = data if labels else np.moveaxis(data, 0, -1)  # channels last
    if spatial == 2:
        array = array[None]
    affine = np.asarray(geometry["affine"], np.float64) if "affine" in geometry else None
    if affine is None:  # 2-D (or no affine): the spacing on the diagonal, stored (z, y, x) order
        spacing = tuple(geometry.get("spacing") or (1.0,) * spatial)
        spacing = (1.0,) * (3 - len(spacing)) + spacing
        affine = np.diag(list(spacing) + [1.0])
    axes = (2, 1, 0) + tuple(range(3, array.ndim))
    nib_affine = affine.copy()
    nib_affine[:, :3] = affine[:, 2::-1]
    image = nibabel.Nifti1Image(np.ascontiguousarray(np.transpose(array, axes)), nib_affine)
    image.header.set_xyzt_units({"mm": "mm", "um": "micron", "m": "meter"}.get(geometry.get("unit"), "unknown"))
    nibabel.save(image, path)


def _write_ome(path, data, geometry, labels: bool) -> None:
    from ..ingest.readers._base import require

    tifffile = require("tifffile", "tifffile")
    spatial = data.ndim if labels else data.ndim - 1
    axes = ("" if labels else "C") + ("ZYX" if spatial == 3 else "YX")
    metadata = {"axes": axes}
    spacing, unit = geometry.get("spacing"), geometry.get("unit")
    if spacing is not None:
        for letter, value in zip("ZYX"[3 - spatial:], spacing):
            metadata[f"PhysicalSize{letter}"] = float(value)
            if unit in _OME_UNITS:
                metadata[f"PhysicalSize{letter}Unit"] = _OME_UNITS[unit]
    tifffile.imwrite(path, data, ome=True, metadata=metadata, photometric="minisblack")


def _write_geotiff(path, data, geometry, labels: bool, name: str) -> None:
    from ..ingest.readers._base import require

    rasterio = require("rasterio", "rasterio")
    if not geometry.get("crs") or not geometry.get("transform"):
        raise ParameterError(f"--format geotiff needs a CRS and transform; image {name!r} has none (its source "
                             "was not a GeoTIFF): export it as ome-tiff or nifti")
    bands = data[None] if labels else data
    if bands.ndim != 3:
        raise ParameterError(f"--format geotiff takes 2-D images; image {name!r} is {bands.ndim - 1}-D")
    transform = rasterio.Affine(*geometry["transform"])
    with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2],
                       count=bands.shape[0], dtype=bands.dtype.name, crs=rasterio.crs.CRS.from_wkt(geometry["crs"]),
                       transform=transform) as dataset:
        dataset.write(bands)


def export(predictions, out_dir, *, format: str, argmax: bool = False, to_source: bool = False,
           overwrite: bool = False) -> list:
    """Write every prediction of a ``PatchAggregator(out=...)`` file as a NIfTI, OME-TIFF or GeoTIFF.

    Parameters
    ----------
    predictions : str or os.PathLike
        The aggregator's ``out`` file.
    out_dir : str or os.PathLike
        Created if needed; ``<image name without suffix>.<ext>`` per image.
    format : {"nifti", "ome-tiff", "geotiff"}
    argmax : bool
        Labels (the largest channel) instead of float32 probabilities.
    to_source : bool
        Resample back to the source's full-resolution grid (module docstring).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of str
        The files written, in the predictions' order.

    Raises
    ------
    ParameterError
        An unknown format, or an image the format cannot hold (geotiff
        without a CRS); nothing is written for it and later images.
    StoreExistsError
        A file exists and ``overwrite`` is false (checked before writing any).
    StoreFormatError
        ``predictions`` is not a predictions file.

    Examples
    --------
    >>> import numpy as np, tempfile, os, lazypatch
    >>> folder = tempfile.mkdtemp()
    >>> store = lazypatch.write_store(os.path.join(folder, "s.h5"), [np.zeros((8, 8), np.uint8)])
    >>> aggregator = lazypatch.PatchAggregator(store, 4, out=os.path.join(folder, "p.h5"))
    >>> aggregator.add(np.ones((4, 2, 4, 4), np.float32), [0] * 4, [(0, 0), (0, 4), (4, 0), (4, 4)])
    >>> aggregator.close()
    >>> [os.path.basename(p) for p in export(os.path.join(folder, "p.h5"), folder, format="ome-tiff")]
    ['0.ome.tif']
    >>> store.close()
    """
    if format not in FORMATS:
        raise ParameterError(f"format (--format) must be one of {', '.join(FORMATS)}, got {format!r}")
    out_dir = os.fspath(out_dir)
    items = list(read_predictions(predictions))
    targets = [os.path.join(out_dir, _stem(name) + FORMATS[format]) for name, _, _ in items]
    existing = [t for t in targets if os.path.lexists(t)]
    if existing and not overwrite:
        raise StoreExistsError(f"{existing[0]!r} exists ({len(existing)} of the {len(targets)} files); pass "
                               "overwrite=True (--overwrite) to replace them")
    written = []
    for (name, data, geometry), target in zip(items, targets):
        if argmax:
            filled = np.where(np.isnan(data), -np.inf, data)
            labels = np.argmax(filled, axis=0)
            data = labels.astype(np.uint8 if data.shape[0] <= 256 else np.uint16)
        if to_source:
            data, geometry = _to_source(data, geometry, labels=argmax)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        folder, base = os.path.split(target)
        tmp = os.path.join(folder, f".{os.getpid()}.tmp-{base}")
        try:
            if format == "nifti":
                _write_nifti(tmp, data, geometry, argmax)
            elif format == "ome-tiff":
                _write_ome(tmp, data, geometry, argmax)
            else:
                _write_geotiff(tmp, data, geometry, argmax, name)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(target)
    return written
