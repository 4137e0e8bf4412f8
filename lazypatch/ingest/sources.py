"""The field's files in ``lazypatch build``: format readers, pyramid levels and resolution.

``lazypatch build`` reads PNG, JPEG, plain TIFF and ``.npy`` itself
(:mod:`lazypatch.ingest.files`); slides, OME-TIFF, NIfTI, DICOM series and
GeoTIFF go through the format readers (:mod:`lazypatch.ingest.readers`), one
:class:`SourceImage` per file. This module also decides the stored grid:

- ``level``: a pyramid level as stored (openslide, tifffile, rasterio);
- ``mpp`` (2-D, um): the coarsest level at or finer than ``mpp``, resampled to
  exactly ``mpp`` (:mod:`lazypatch.ingest.resample`); masks nearest;
- ``spacing`` (volumes, the source's unit, mm for NIfTI and DICOM): resampled
  per axis, linear for images, nearest for masks;
- ``assume_mpp``: the level-0 mpp of files that do not record one.

NOTE [stored geometry]: the geometry of a resampled or level image describes
the stored grid: ``spacing`` the achieved spacing ``s * L / out``, ``affine``
and ``transform`` composed with the map from stored to source index
(``i_src = (i + 0.5) * r - 0.5``, r = source / stored length per axis, pixel
areas aligned; rasterio's corner-based transform scales by r), and
``source_shape`` the spatial shape of the source's full-resolution grid, present
only when the stored grid differs from it (a level > 0 or a resampled image).
``lazypatch export --to-source`` uses it to go back.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ImageReadError, ParameterError
from .readers import choose_reader, open_image
from .resample import Resampled, achieved_spacing, output_shape

__all__ = ["SourceImage", "MPP_TOLERANCE"]

MPP_TOLERANCE = 0.01  # slides whose mpp differ by more than 1 % cannot share a store without --mpp


class SourceImage:
    """One image of a file read by a format reader, as ``lazypatch build``'s writer slices it.

    The header is read at construction (the file is closed again); pixels are
    read when sliced (``image[r0:r1]``, rows in ascending order), through one
    reader kept open until the last row has been read, so a ``.nii.gz`` is
    decompressed once. ``resample`` sets a new grid, ``mapping`` (a function)
    replaces mask values.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(64, dtype=np.uint8).reshape(8, 8))
    >>> image = SourceImage(path, "numpy")
    >>> image.shape, image.geometry["spacing"]
    ((8, 8), None)
    >>> image.resample((4, 4), order=0)
    >>> image[0:2].tolist()
    [[9, 11, 13, 15], [25, 27, 29, 31]]
    """

    decoded_whole = False
    ignored_pages, ignored_axes = 0, ""

    def __init__(self, path, reader=None, level=None, mask: bool = False):
        self.path = os.fspath(path)
        self.reader_name, self.level, self.mask = reader, level, mask
        with open_image(self.path, reader, level) as opened:
            self.reader_name = opened.name
            self.shape = tuple(int(n) for n in opened.shape)
            self.dtype = np.dtype(opened.dtype)
            self.spatial_ndim = opened._spatial
            self.level_count = int(opened.level_count)
            self.geometry = dict(opened.geometry)
        self._file = None
        self._setup()

    def _setup(self) -> None:
        self.source_shape = self.shape[:self.spatial_ndim]
        self.mapping = None
        self._out = None  # (out_shape, order) once resampled
        self._reader = None

    @classmethod
    def from_file(cls, header, spatial_ndim: int, geometry=None) -> "SourceImage":
        """A file ``lazypatch build`` reads itself (a :class:`~lazypatch.ingest.files.FileImage`),
        so it can be resampled; its ``mapping`` moves here."""
        image = cls.__new__(cls)
        image.path, image.reader_name, image.level, image.mask = header.path, None, None, header.mask
        image.shape, image.dtype, image.spatial_ndim = tuple(header.shape), header.dtype, spatial_ndim
        image.level_count = 1
        image.geometry = dict(geometry) if geometry is not None else {"spacing": None, "unit": None}
        image.ignored_pages, image.ignored_axes = header.ignored_pages, header.ignored_axes
        image._setup()
        image.mapping, header.mapping = header.mapping, None
        image._file = header
        return image

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def resample(self, out_shape, order: int) -> None:
        """Read the image on a grid of ``out_shape`` points (linear: order 1, nearest: 0)."""
        out_shape = tuple(int(n) for n in out_shape)
        if out_shape == self.source_shape:
            return
        self._out = (out_shape, order)
        self.shape = out_shape + self.shape[self.spatial_ndim:]

    def _copy(self) -> "SourceImage":
        image = SourceImage.__new__(SourceImage)
        image.__dict__.update(self.__dict__)
        image._reader = None
        return image

    def _source(self):
        if self._reader is None:
            reader = open_image(self.path, self.reader_name, self.level) if self._file is None else self._file._copy()
            self._opened = reader
            self._reader = reader if self._out is None else Resampled(reader, *self._out)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            if self._file is None:
                self._opened.close()
            self._reader = None

    def __getitem__(self, key):
        data = self._raw(key)
        return data if self.mapping is None else self.mapping(data)

    def _raw(self, key):
        try:
            data = np.asarray(self._source()[key])
        except (ImageReadError, ParameterError, ImportError):
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ImageReadError(f"cannot read {self.path!r} with {self.reader_name}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(key, slice) or key.indices(self.shape[0])[1] >= self.shape[0]:
            self.close()  # the writer has read the last rows: release the file
        return data

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"SourceImage({self.path!r}, {self.reader_name}, shape={self.shape}, dtype={self.dtype})"


# -- the stored grid ----------------------------------------------------------------------------
def pick_level(path, reader, mpp: float, spacing0=None) -> tuple:
    """(level, its spacing) of the coarsest pyramid level at or finer than ``mpp``; level 0
    when even it is coarser (then upsampled); (0, None) for a file without mpp.

    ``spacing0`` replaces the level-0 spacing of a file without one
    (``--assume-mpp``); level k's is then ``spacing0 * downsample_k``.
    """
    best, k, count = (0, None), 0, 1
    while k < count:  # levels run from the finest to the coarsest
        with open_image(path, reader, k) as opened:
            count = opened.level_count
            spacing = _spacing_of(opened.geometry, spacing0)
        if spacing is None:
            return 0, None
        if k and max(spacing) > mpp * (1 + 1e-9):
            break
        best, k = (k, spacing), k + 1
    return best


def _spacing_of(geometry: dict, spacing0=None):
    """A level's spacing, or ``spacing0`` (level 0) times its downsample when the file has none."""
    if geometry.get("spacing") is not None:
        return tuple(geometry["spacing"])
    if spacing0 is None:
        return None
    scale = float(geometry.get("downsample") or 1.0)
    return tuple(float(v) * scale for v in spacing0)


def stored_geometry(geometry: dict, source_shape, out_shape, level0_shape, spacing=None) -> dict:
    """The geometry of an image stored on ``out_shape`` points (NOTE [stored geometry]).

    ``geometry`` is the reader's (of the level read, of ``source_shape``),
    ``spacing`` the spacing to start from when the file has none (assumed).

    >>> g = {"spacing": (0.25, 0.25), "unit": "um", "level": 0, "downsample": 1.0}
    >>> new = stored_geometry(g, (1000, 800), (500, 400), (1000, 800))
    >>> new["spacing"], new["downsample"], new["source_shape"]
    ((0.5, 0.5), 2.0, [1000, 800])
    """
    geometry = dict(geometry)
    source_shape, out_shape = tuple(source_shape), tuple(out_shape)
    if geometry.get("spacing") is None and spacing is not None:
        geometry["spacing"], geometry["unit"] = tuple(float(v) for v in spacing), "um"
    ratios = [n / m for n, m in zip(source_shape, out_shape)]
    if geometry.get("spacing") is not None:
        geometry["spacing"] = achieved_spacing(source_shape, geometry["spacing"], out_shape)
    if "affine" in geometry:
        affine = np.asarray(geometry["affine"], dtype=np.float64)
        scale = np.eye(4)
        for axis, r in enumerate(ratios[-3:]):
            scale[axis, axis] = r
            scale[axis, 3] = (r - 1) / 2
        geometry["affine"] = (affine @ scale).tolist()
    if "transform" in geometry:  # rasterio's Affine (a, b, c, d, e, f): x = a*col + b*row + c
        a, b, c, d, e, f = geometry["transform"]
        ry, rx = ratios[-2:]
        geometry["transform"] = (a * rx, b * ry, c, d * rx, e * ry, f)
    if "downsample" in geometry:  # a pyramid's: relative to its level 0
        geometry["downsample"] = float(np.mean([n / m for n, m in zip(level0_shape, out_shape)]))
        geometry.setdefault("level", 0)
    if tuple(level0_shape) != out_shape:
        geometry["source_shape"] = [int(n) for n in level0_shape]
    return geometry


# -- lazypatch build: which object reads each file, and on which grid -----------------------------
_OWN_READERS = ("pillow", "numpy")  # files lazypatch.ingest.files decodes itself (and plain TIFF)
VOLUME_READERS = ("nibabel", "pydicom")


def reader_of(path, reader=None) -> str:
    """The format reader a file goes to: ``reader`` when given, else by extension and content."""
    return reader if reader is not None else choose_reader(path)


def reads_itself(path, name: str) -> bool:
    """Whether :mod:`lazypatch.ingest.files` decodes the file (PNG, JPEG, .npy, plain TIFF)."""
    return name in _OWN_READERS or (name == "tifffile" and os.path.isfile(path)
                                    and path.lower().endswith((".tif", ".tiff")))


def header_opener(*, spatial_ndim: int, reader=None, level=None, mpp=None, assume_mpp=None,
                  mask: bool = False, pages=None):
    """A function path -> header for :class:`~lazypatch.ingest.files.FileImages`.

    Images that ``lazypatch.ingest.files`` decodes itself stay ``FileImage`` (PNG
    decoded ahead in threads; a TIFF gets the tifffile reader's geometry) unless
    an option needs a format reader (``reader``, ``level``, ``mpp``); slides,
    NIfTI, DICOM, GeoTIFF and OME-TIFF pyramids become :class:`SourceImage`, at
    the level ``level`` names or ``mpp`` picks (:func:`pick_level`). Masks
    always choose their own reader (a palette PNG keeps its indices).
    """
    from .files import FileImage

    spacing0 = None if assume_mpp is None else (float(assume_mpp),) * 2

    def open_header(path):
        name = reader_of(path, None if mask else reader)
        if reads_itself(path, name) and (mask or (reader is None and level is None and mpp is None)):
            header = FileImage(path, spatial_ndim, mask, pages)
            header.geometry = _file_geometry(path, name, header, spatial_ndim)
            return header
        chosen = level
        if mpp is not None and not mask:
            chosen, spacing = pick_level(path, name, mpp, spacing0)
            if spacing is None:
                raise ParameterError(
                    f"{os.fspath(path)!r} records no pixel size (microns per pixel), so --mpp {mpp:g} "
                    f"(mpp=) cannot resample it; give its level-0 pixel size with --assume-mpp X "
                    f"(assume_mpp=)")
        return SourceImage(path, name, None if mask else chosen, mask)

    return open_header


def _file_geometry(path, name: str, header, spatial_ndim: int):
    """A TIFF's geometry as the tifffile reader finds it (None when it cannot read the file)."""
    if name != "tifffile":
        return None
    try:
        with open_image(path, "tifffile") as opened:
            geometry = dict(opened.geometry)
    except (ImageReadError, ParameterError, ImportError, OSError):
        return None
    spacing = geometry.get("spacing")
    if spacing is not None:
        if len(spacing) < spatial_ndim:
            return None
        geometry["spacing"] = tuple(spacing[-spatial_ndim:])  # a z-stack read as 2-D keeps y, x
    return geometry


def plan_grids(images, masks, *, spatial_ndim: int, level=None, mpp=None, assume_mpp=None,
               spacing=None, problems: list) -> None:
    """Set each image's stored grid and geometry, and its mask's, or add to ``problems``.

    ``images`` and ``masks`` are lists of headers (None where unreadable); a
    header that needs resampling is replaced by a :class:`SourceImage` in place.
    Checks: masks on the same grid and geometry as their image (1e-3
    relative), ``mpp`` only on 2-D and ``spacing`` only on volumes, and slides
    of one store within 1 % of one mpp unless ``mpp`` resamples them.
    """
    um = []
    for position, image in enumerate(images):
        if image is None:
            continue
        mask = masks[position] if masks is not None else None
        try:
            geometry = dict(getattr(image, "geometry", None) or {"spacing": None, "unit": None})
            source_shape = tuple(image.shape[:spatial_ndim])
            if assume_mpp is not None and spatial_ndim == 2 and geometry.get("spacing") is None:
                scale = float(geometry.get("downsample") or 1.0)
                geometry["spacing"], geometry["unit"] = (float(assume_mpp) * scale,) * 2, "um"
            out_shape = source_shape
            if mpp is not None:
                if spatial_ndim != 2:
                    raise ParameterError(f"--mpp (mpp=) resamples 2-D slides; {image.path!r} is a volume: "
                                         "give --spacing Z,Y,X (spacing=) instead")
                out_shape = output_shape(source_shape, geometry["spacing"], mpp)
            elif spacing is not None:
                if spatial_ndim != 3:
                    raise ParameterError(f"--spacing (spacing=) resamples volumes; {image.path!r} is 2-D: "
                                         "give --mpp X (mpp=) for slides")
                if geometry.get("spacing") is None:
                    raise ParameterError(f"{image.path!r} records no voxel spacing, so --spacing cannot "
                                         "resample it")
                out_shape = output_shape(source_shape, geometry["spacing"], spacing)
            if mask is not None:
                _check_mask_grid(image, mask, geometry, spatial_ndim, out_shape != source_shape)
            level0 = _level0_shape(image, source_shape)
            changed = out_shape != source_shape or level0 != source_shape
            if changed or geometry != getattr(image, "geometry", None):
                geometry = stored_geometry(geometry, source_shape, out_shape, level0)
            if out_shape != source_shape:
                image = images[position] = _regridded(image, out_shape, 1, spatial_ndim)
                if mask is not None:
                    masks[position] = _regridded(mask, out_shape, 0, spatial_ndim)
            image.geometry = geometry
            if mpp is None and geometry.get("unit") == "um" and spatial_ndim == 2:
                um.append((geometry["spacing"], image.path))
        except (ImageReadError, ParameterError, ImportError) as exc:
            if isinstance(exc, ImportError):
                raise
            problems.append(exc)
    if um:
        low = min(um, key=lambda item: max(item[0]))
        high = max(um, key=lambda item: max(item[0]))
        if max(high[0]) > max(low[0]) * (1 + MPP_TOLERANCE):
            problems.append(ParameterError(
                f"the slides have different pixel sizes: {high[1]!r} is {_um(high[0])}, {low[1]!r} is "
                f"{_um(low[0])} (more than {MPP_TOLERANCE:.0%} apart); patches of one size would cover "
                f"different areas: give --mpp X (mpp=) to resample every slide to one pixel size"))


def _um(spacing) -> str:
    return " x ".join(f"{v:.4g}" for v in spacing) + " um/px"


def _level0_shape(image, source_shape) -> tuple:
    """The spatial shape of level 0 of the image's file (its own shape when read at level 0)."""
    if not getattr(image, "level", None):
        return source_shape
    with open_image(image.path, image.reader_name, 0) as opened:
        return tuple(int(n) for n in opened.shape[:len(source_shape)])


def _regridded(header, out_shape, order: int, spatial_ndim: int):
    if not isinstance(header, SourceImage):
        header = SourceImage.from_file(header, spatial_ndim, getattr(header, "geometry", None))
    header.resample(out_shape, order)
    return header


def _check_mask_grid(image, mask, geometry: dict, spatial_ndim: int, resampled: bool) -> None:
    """A mask must be read on its image's grid: the same shape, and, where both record
    them, the same spacing and affine within 1e-3 relative."""
    if tuple(mask.shape[:spatial_ndim]) != tuple(image.shape[:spatial_ndim]):
        if not resampled:
            return  # the header pass's check_mask names it
        raise ParameterError(
            f"the mask {mask.path!r} has spatial shape {tuple(mask.shape[:spatial_ndim])}, its image "
            f"{image.path!r} {tuple(image.shape[:spatial_ndim])} as read (level "
            f"{getattr(image, 'level', None) or 0}): a mask must cover its image pixel for pixel")
    theirs = getattr(mask, "geometry", None) or {}
    for key in ("spacing", "affine"):
        mine, other = geometry.get(key), theirs.get(key)
        if mine is None or other is None:
            continue
        mine, other = np.asarray(mine, np.float64), np.asarray(other, np.float64)
        scale = max(float(np.abs(mine).max()), 1e-12)
        if mine.shape != other.shape or float(np.abs(mine - other).max()) > 1e-3 * scale:
            raise ParameterError(
                f"the mask {mask.path!r} is not on the grid of its image {image.path!r}: {key} "
                f"{_rounded(other)} against {_rounded(mine)} (more than 1e-3 relative apart); "
                "resample the mask onto its image first")


def _rounded(value) -> list:
    return np.round(np.asarray(value, np.float64), 6).tolist()


class MaskHeader:
    """A mask computed rather than read from an image file (rasterized annotations), as
    ``lazypatch build``'s writer slices its masks."""

    decoded_whole = False
    ignored_pages, ignored_axes = 0, ""
    mapping = None
    geometry = None

    def __init__(self, mask, path):
        self._mask, self.path = mask, os.fspath(path)
        self.shape, self.dtype = tuple(int(n) for n in mask.shape), np.dtype(mask.dtype)
        self.ndim = len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def _copy(self) -> "MaskHeader":
        return self

    def __getitem__(self, key):
        return np.asarray(self._mask[key])

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype)


def open_sources(paths, mask_paths, *, spatial_ndim: int, workers: int, pages, ingest: dict):
    """(images, masks or None, problems): every header read, every grid planned (the first pass,
    and in a cluster each shard's task again for its images)."""
    from .files import FileImages
    image_problems, mask_problems = [], []
    grid = {key: ingest[key] for key in ("level", "mpp", "assume_mpp")}
    images = FileImages(paths, spatial_ndim, workers=workers, pages=pages, problems=image_problems,
                        open_header=header_opener(spatial_ndim=spatial_ndim, reader=ingest["reader"],
                                                  pages=pages, **grid))
    mask_images = None
    if mask_paths and not ingest["annotations"]:
        mask_images = FileImages(mask_paths, spatial_ndim, workers=workers, mask=True, pages=pages,
                                 problems=mask_problems,
                                 open_header=header_opener(spatial_ndim=spatial_ndim, mask=True, pages=pages))
    problems = [exc for _, exc in image_problems] + [exc for _, exc in mask_problems]
    plan_grids(images.headers, mask_images.headers if mask_images is not None else None,
               spatial_ndim=spatial_ndim, spacing=ingest["spacing"], problems=problems, **grid)
    if ingest["annotations"]:
        mask_images = _annotation_masks(images, mask_paths, ingest, workers, problems)
    return images, mask_images, problems


def _annotation_masks(images, paths, ingest, workers, problems):
    """Each image's annotations rasterized on its stored grid (QuPath: level-0 pixels)."""
    from .annotations import AnnotationMask
    from .files import FileImages

    headers = []
    for image, path in zip(images.headers, paths):
        if image is None:
            headers.append(None)
            continue
        stored = tuple(image.shape[:2])
        level0 = tuple((getattr(image, "geometry", None) or {}).get("source_shape") or stored)
        try:
            mask = AnnotationMask(path, stored, ingest["classes"], scale=(stored[0] / level0[0],
                                                                           stored[1] / level0[1]),
                                  ignore_value=ingest["ignore_value"])
        except (ImageReadError, ParameterError) as exc:
            problems.append(exc)
            headers.append(None)
            continue
        headers.append(MaskHeader(mask, path))
    return FileImages.from_headers(paths, headers, workers)


def label_mapper(mask_map: dict, dtype):
    """A function replacing mask values as ``mask_map`` says, checked against the masks' dtype.

    >>> label_mapper({255: 1}, np.dtype(np.uint8))(np.array([0, 255, 7], np.uint8)).tolist()
    [0, 1, 7]
    """
    dtype = np.dtype(dtype)
    low, high = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for key, new in mask_map.items():
        for what, value in (("value", key), ("new label", new)):
            if not low <= value <= high:
                raise ParameterError(f"mask_map (--mask-map) {key}={new}: the {what} {value} is outside "
                                     f"what {dtype.name} masks hold ({low}..{high})")
    if dtype.kind == "u" and dtype.itemsize <= 2:
        table = np.arange(1 << (8 * dtype.itemsize), dtype=dtype)
        table[list(mask_map)] = list(mask_map.values())
        return lambda mask: table[mask]

    def apply(mask):
        out = np.array(mask, copy=True)
        for key, new in mask_map.items():  # every test on the original values: swaps work
            out[mask == key] = new
        return out

    return apply
