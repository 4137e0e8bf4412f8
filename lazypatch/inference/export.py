"""Stitched predictions as the field's files: NIfTI, OME-TIFF, GeoTIFF, with their geometry.

``PatchAggregator(..., out="preds.h5")`` writes each image's prediction with its
image's geometry (a JSON attribute ``geometry``, the dict of
``ImageStore.geometry``); :func:`read_predictions` reads them back.
:func:`export` writes one file per image,
``OUT_DIR/<image name without its suffix>.<ext>``, that the source's own tools
open in place:

- ``nifti`` (nibabel, ``.nii.gz``): the array back in nibabel's (x, y, z[, C])
  order and the affine with its first three columns reversed (the inverse of
  the NIfTI reader's permutation), so nibabel's world coordinates of every
  voxel are the store's; a 2-D image is a volume of one slice; without an
  affine, the spacing on the diagonal;
- ``ome-tiff`` (tifffile, ``.ome.tif``): axes (C,) (Z,) Y, X with
  ``PhysicalSizeX/Y/Z`` and their unit (``µm``, ``mm``, ``m``);
- ``geotiff`` (rasterio, ``.tif``): one band per channel, the image's CRS and
  transform (an image without a CRS is an error).

Values are float32 (C, ...) probabilities as stitched (NaN where no patch
reached), or with ``argmax=True`` the label of the largest channel (the
smallest unsigned dtype that holds the channel count). ``to_source=True``
resamples back to the source's full-resolution grid (``geometry["source_shape"]``,
present when the store was built with ``--level`` > 0, ``--mpp`` or
``--spacing``) with :func:`lazypatch.ingest.resample.resample`: linear for
probabilities, nearest for labels (argmax first), and the geometry composed
back (NOTE [stored geometry] in :mod:`lazypatch.ingest.sources`): with
``r = source_shape / stored shape`` per axis, ``affine_source = affine @ inv(S)``
(S scales by r and shifts by (r - 1) / 2: pixel centres), ``transform_source =
transform * Affine.scale(1 / rx, 1 / ry)`` (corner-based) and ``spacing / r``.
Without ``source_shape`` the image is already on its source's grid.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Iterator, NamedTuple

import numpy as np

from ..errors import ParameterError, ParameterTypeError, StoreExistsError, StoreFormatError
from ..store import format as fmt
from ..store.publish import temporary_path

__all__ = ["FORMATS", "Prediction", "export", "read_predictions"]

FORMATS = {"nifti": ".nii.gz", "ome-tiff": ".ome.tif", "geotiff": ".tif"}  # format -> file suffix
# format -> (module, the reader whose extra installs it: see EXTRAS in lazypatch.ingest.readers._base)
_LIBRARIES = {"nifti": ("nibabel", "nibabel"), "ome-tiff": ("tifffile", "tifffile"),
              "geotiff": ("rasterio", "rasterio")}
_OME_UNITS = {"um": "µm", "mm": "mm", "m": "m"}
_NIFTI_UNITS = {"mm": "mm", "um": "micron", "m": "meter"}
_NO_GEOMETRY = {"spacing": None, "unit": None}  # images given to the aggregator as shapes


class Prediction(NamedTuple):
    """One image of a predictions file: its name, (C, *spatial) float32 values and geometry."""

    name: str
    array: np.ndarray
    geometry: dict


class _Entry(NamedTuple):
    key: str
    name: str
    shape: tuple
    geometry: dict


def _catalog(h5, path: str) -> list:
    """The predictions of an open file in image order, without their arrays."""
    if "lazypatch_predictions" not in h5.attrs or "predictions" not in h5:
        raise StoreFormatError(f"{path!r} is not a predictions file of PatchAggregator(out=...) "
                               "(no 'lazypatch_predictions' attribute or 'predictions' group)")
    group = h5["predictions"]
    entries = []
    for key in sorted(group, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k)):
        dataset = group[key]
        if dataset.ndim < 3:
            raise StoreFormatError(f"{path!r}: prediction {key!r} has shape {dataset.shape}; a prediction "
                                   "is (channels, *spatial) with 2 or 3 spatial axes")
        name = fmt.text_attribute(dataset.attrs.get("name")) or key
        text = fmt.text_attribute(dataset.attrs.get("geometry"))
        geometry = dict(_NO_GEOMETRY)
        if text is not None:
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise StoreFormatError(f"{path!r}: the geometry of prediction {name!r} is not JSON "
                                       f"({exc})") from exc
            if not isinstance(value, dict):
                raise StoreFormatError(f"{path!r}: the geometry of prediction {name!r} is not a JSON object")
            geometry.update(value)
        if geometry.get("spacing") is not None:
            geometry["spacing"] = tuple(float(v) for v in geometry["spacing"])
        entries.append(_Entry(key, name, tuple(dataset.shape), geometry))
    return entries


def _open(path):
    """The predictions file open for reading, or StoreFormatError naming it."""
    import h5py

    path = fmt.check_path(os.fspath(path), "predictions")
    if not h5py.is_hdf5(path):
        raise StoreFormatError(f"{path!r} is not a predictions file of PatchAggregator(out=...) "
                               "(not an HDF5 file)")
    with fmt.damage_is_format_error(path, "the predictions file"):
        return path, h5py.File(path, "r")


def read_predictions(predictions) -> Iterator[Prediction]:
    """Yield every image of a ``PatchAggregator(out=...)`` file, one at a time.

    Parameters
    ----------
    predictions : str or os.PathLike
        The aggregator's ``out`` file.

    Yields
    ------
    Prediction
        ``(name, array, geometry)``: the image's name in the store (its
        number when the aggregator was given shapes), its (C, *spatial)
        float32 values (NaN where no patch reached) and its geometry, the
        dict of ``ImageStore.geometry`` (``{"spacing": None, "unit": None}``
        for images given as shapes).

    Raises
    ------
    FileNotFoundError
        No such file.
    StoreFormatError
        The file is not a predictions file, or is damaged.

    Examples
    --------
    >>> import numpy as np, tempfile, os, lazypatch
    >>> tmp = tempfile.TemporaryDirectory()
    >>> with lazypatch.PatchAggregator([(4, 4)], 4, out=os.path.join(tmp.name, "p.h5")) as aggregator:
    ...     aggregator.add(np.ones((1, 2, 4, 4), np.float32), [0], [(0, 0)])
    >>> [(p.name, p.array.shape, p.geometry) for p in read_predictions(os.path.join(tmp.name, "p.h5"))]
    [('0', (2, 4, 4), {'spacing': None, 'unit': None})]
    >>> tmp.cleanup()
    """
    path, h5 = _open(predictions)  # checked now, not at the first next()
    with h5, fmt.damage_is_format_error(path, "the predictions"):
        entries = _catalog(h5, path)
    return _read(path, entries)


def _read(path: str, entries) -> Iterator[Prediction]:
    path, h5 = _open(path)
    with h5, fmt.damage_is_format_error(path, "the predictions"):
        for entry in entries:
            array = np.asarray(h5["predictions"][entry.key][()], np.float32)
            yield Prediction(entry.name, array, entry.geometry)


def _stem(name: str) -> str:
    """An image name without its file suffix, its folders kept ('sub/a.nii.gz' -> 'sub/a')."""
    from ..ingest.files import IMAGE_SUFFIXES, READER_SUFFIXES

    suffixes = sorted(set(IMAGE_SUFFIXES + READER_SUFFIXES + (".ome.tif", ".ome.tiff")), key=len, reverse=True)
    for suffix in suffixes:  # a DICOM series folder ('1.2.840.1') keeps its dots
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _targets(entries, out_dir: str, suffix: str) -> list:
    """The file of each image under ``out_dir``; a name leaving it or two images on one file is an error."""
    root = os.path.abspath(out_dir)
    targets, seen = [], {}
    for entry in entries:
        target = os.path.normpath(os.path.join(root, _stem(entry.name) + suffix))
        if os.path.commonpath([root, target]) != root or target == root:
            raise ParameterError(f"image {entry.name!r} would be written outside out_dir {out_dir!r}; "
                                 "rename it in the store")
        key = os.path.normcase(target)
        if key in seen:
            raise ParameterError(f"images {seen[key]!r} and {entry.name!r} would both be written to "
                                 f"{target!r}; export them to separate folders")
        seen[key] = entry.name
        targets.append(target)
    return targets


def _check(entry: _Entry, format: str, to_source: bool, path: str) -> None:
    """What the format and ``to_source`` need of one image, checked before any file is written."""
    spatial = entry.shape[1:]
    if format == "geotiff":
        if not entry.geometry.get("crs") or not entry.geometry.get("transform"):
            raise ParameterError(f"format='geotiff' (--format geotiff) needs a CRS and transform; image "
                                 f"{entry.name!r} has none (its source was not a GeoTIFF): export it as "
                                 "ome-tiff or nifti")
        if len(spatial) != 2:
            raise ParameterError(f"format='geotiff' (--format geotiff) takes 2-D images; image {entry.name!r} "
                                 f"is {len(spatial)}-D: export it as nifti or ome-tiff")
    source = entry.geometry.get("source_shape")
    if to_source and source is not None and (
            len(source) != len(spatial) or not all(isinstance(n, int) and n > 0 for n in source)):
        raise StoreFormatError(f"{path!r}: the source_shape {source!r} of image {entry.name!r} is not "
                               f"{len(spatial)} positive integers")


def _labels(data: np.ndarray) -> np.ndarray:
    """The channel of the largest value per pixel (NaN never wins) in the smallest unsigned dtype."""
    channels = data.shape[0]
    dtype = np.uint8 if channels <= 1 << 8 else np.uint16 if channels <= 1 << 16 else np.uint32
    return np.argmax(np.where(np.isnan(data), -np.inf, data), axis=0).astype(dtype)


def _to_source(data: np.ndarray, geometry: dict, labels: bool):
    """``data`` (labels: spatial; else (C, *spatial)) on the source's grid, and its geometry."""
    from ..ingest.resample import resample

    source = geometry.get("source_shape")
    spatial = data.shape if labels else data.shape[1:]
    if source is None:
        return data, geometry
    source = tuple(int(n) for n in source)
    geometry = dict(geometry)
    del geometry["source_shape"]
    if source == tuple(spatial):
        return data, geometry
    if labels:
        data = resample(data, source, order=0)
    else:  # channels last for resample, and back
        data = np.moveaxis(resample(np.moveaxis(data, 0, -1), source, order=1), -1, 0).astype(np.float32)
    ratios = [m / n for m, n in zip(spatial, source)]  # stored length / source length: inverse of r
    if geometry.get("spacing") is not None:
        geometry["spacing"] = tuple(s * q for s, q in zip(geometry["spacing"], ratios))
    if geometry.get("affine") is not None:  # stored (z, y, x) of a source index j: (j + 0.5) / r - 0.5
        scale = np.eye(4)
        for axis, q in zip(range(3 - len(ratios), 3), ratios):
            scale[axis, axis], scale[axis, 3] = q, (q - 1) / 2
        geometry["affine"] = (np.asarray(geometry["affine"], np.float64) @ scale).tolist()
    if geometry.get("transform") is not None:  # corner-based: scaled columns
        a, b, c, d, e, f = geometry["transform"]
        qy, qx = ratios[-2:]
        geometry["transform"] = [a * qx, b * qy, c, d * qx, e * qy, f]
    if "downsample" in geometry:
        geometry["downsample"] = 1.0
    if "level" in geometry:
        geometry["level"] = 0
    return data, geometry


def _write_nifti(library, path, data, geometry, labels: bool) -> None:
    spatial = data.ndim if labels else data.ndim - 1
    array = data if labels else np.moveaxis(data, 0, -1)  # channels last
    if spatial == 2:
        array = array[None]
    if geometry.get("affine") is not None:
        affine = np.asarray(geometry["affine"], np.float64)
    else:  # the spacing on the diagonal, stored (z, y, x) order; 1 for a 2-D image's slice
        spacing = tuple(geometry.get("spacing") or (1.0,) * spatial)
        affine = np.diag(list((1.0,) * (3 - len(spacing)) + spacing) + [1.0])
    nib_affine = affine.copy()
    nib_affine[:, :3] = affine[:, 2::-1]  # stored (z, y, x) columns -> nibabel's (x, y, z)
    axes = (2, 1, 0) + tuple(range(3, array.ndim))
    image = library.Nifti1Image(np.ascontiguousarray(np.transpose(array, axes)), nib_affine)
    image.header.set_xyzt_units(_NIFTI_UNITS.get(geometry.get("unit"), "unknown"))
    library.save(image, path)


def _write_ome(library, path, data, geometry, labels: bool) -> None:
    spatial = data.ndim if labels else data.ndim - 1
    metadata = {"axes": ("" if labels else "C") + "ZYX"[3 - spatial:]}
    spacing, unit = geometry.get("spacing"), geometry.get("unit")
    if spacing is not None:
        for letter, value in zip("ZYX"[3 - spatial:], spacing):
            metadata[f"PhysicalSize{letter}"] = float(value)
            if unit in _OME_UNITS:
                metadata[f"PhysicalSize{letter}Unit"] = _OME_UNITS[unit]
    library.imwrite(path, data, ome=True, metadata=metadata, photometric="minisblack")


def _write_geotiff(library, path, data, geometry, labels: bool) -> None:
    from rasterio.crs import CRS

    bands = data[None] if labels else data
    with library.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2],
                      count=bands.shape[0], dtype=bands.dtype.name, crs=CRS.from_wkt(geometry["crs"]),
                      transform=library.Affine(*geometry["transform"])) as dataset:
        dataset.write(bands)


def _library(format: str):
    """The module that writes ``format``, or an ImportError naming the extra to install."""
    from ..ingest.readers._base import EXTRAS, require

    module, reader = _LIBRARIES[format]
    try:
        return require(module, reader)
    except ImportError as exc:
        extra, packages = EXTRAS[reader]
        raise ImportError(f"format={format!r} (--format {format}) needs {packages}; install it with: "
                          f'pip install "lazypatch[{extra}]"') from exc


_WRITERS = {"nifti": _write_nifti, "ome-tiff": _write_ome, "geotiff": _write_geotiff}


def export(predictions, out_dir, *, format: str, argmax: bool = False, to_source: bool = False,
           overwrite: bool = False, progress: bool | None = True) -> list:
    """Write every prediction of a ``PatchAggregator(out=...)`` file as a NIfTI, OME-TIFF or GeoTIFF.

    Parameters
    ----------
    predictions : str or os.PathLike
        The aggregator's ``out`` file.
    out_dir : str or os.PathLike
        Created if needed; ``<image name without its suffix>.<ext>`` per image
        (``.nii.gz``, ``.ome.tif`` or ``.tif``), folders in the name kept.
    format : {"nifti", "ome-tiff", "geotiff"}
        The file format, with the geometry each holds (module docstring).
    argmax : bool
        Labels (the largest channel, smallest unsigned dtype) instead of
        float32 (C, ...) probabilities.
    to_source : bool
        Resample back to the source's full-resolution grid, linear for
        probabilities and nearest for labels (module docstring); a no-op for
        images stored on their source's grid.
    overwrite : bool
        Replace existing files.
    progress : bool or None
        Show a progress bar of images written (None: when stderr is a terminal).

    Returns
    -------
    list of str
        The files written, in the predictions' order.

    Raises
    ------
    ParameterError
        An unknown format, an image the format cannot hold (geotiff without a
        CRS, or not 2-D), or two images with one file name. All are checked
        before any file is written.
    StoreExistsError
        A file exists and ``overwrite`` is false (checked before writing any).
    StoreFormatError
        ``predictions`` is not a predictions file.
    ImportError
        The format's library is missing (the message names the extra).

    Every file is written under a temporary name and renamed when complete,
    so a failure leaves none half-written (the files completed before it stay).

    Examples
    --------
    >>> import numpy as np, tempfile, os, lazypatch
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = tmp.name
    >>> store = lazypatch.write_store(os.path.join(folder, "s.h5"), [np.zeros((8, 8), np.uint8)],
    ...                               names=["scan.png"], progress=False)
    >>> with lazypatch.PatchAggregator(store, 4, out=os.path.join(folder, "p.h5")) as aggregator:
    ...     aggregator.add(np.ones((4, 2, 4, 4), np.float32), [0] * 4, [(0, 0), (0, 4), (4, 0), (4, 4)])
    >>> written = export(os.path.join(folder, "p.h5"), os.path.join(folder, "out"), format="ome-tiff",
    ...                  argmax=True, progress=False)
    >>> [os.path.basename(p) for p in written]
    ['scan.ome.tif']
    >>> store.close()
    >>> tmp.cleanup()
    """
    if not isinstance(format, str):
        raise ParameterTypeError(f"format must be a string, one of {', '.join(FORMATS)}, got {format!r}")
    if format not in FORMATS:
        raise ParameterError(f"format (--format) must be one of {', '.join(FORMATS)}, got {format!r}")
    library = _library(format)
    out_dir = os.fspath(out_dir)
    path, h5 = _open(predictions)
    with h5:
        with fmt.damage_is_format_error(path, "the predictions"):
            entries = _catalog(h5, path)
        for entry in entries:
            _check(entry, format, to_source, path)
        targets = _targets(entries, out_dir, FORMATS[format])
        existing = [t for t in targets if os.path.lexists(t)]
        if existing and not overwrite:
            raise StoreExistsError(f"{existing[0]!r} exists ({len(existing)} of the {len(targets)} files to "
                                   "write); pass overwrite=True (--overwrite) to replace them")
        from tqdm import tqdm

        show = progress if progress is not None else sys.stderr.isatty()
        written = []
        for entry, target in zip(tqdm(entries, desc="lazypatch export", unit="image", disable=not show,
                                      file=sys.stderr, leave=False), targets):
            with fmt.damage_is_format_error(path, f"the prediction of image {entry.name!r}"):
                data = np.asarray(h5["predictions"][entry.key][()], np.float32)
            geometry = entry.geometry
            if argmax:
                data = _labels(data)
            if to_source:
                data, geometry = _to_source(data, geometry, labels=argmax)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # the library picks compression by suffix (.nii.gz): the temporary name keeps it
            tmp = temporary_path(target) + FORMATS[format]
            try:
                _WRITERS[format](library, tmp, data, geometry, argmax)
                os.replace(tmp, target)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
            written.append(target)
    return written
