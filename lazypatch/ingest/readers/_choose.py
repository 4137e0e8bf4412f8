"""Which reader opens a path: by extension, and for TIFF by content.

A TIFF's first directory is read here with a few lines of ``struct`` (classic
and BigTIFF, either byte order) rather than through tifffile, so choosing
needs no optional library: a GeoTIFF opens with only the ``geo`` extra.
"""

from __future__ import annotations

import os
import struct

from ...errors import ImageReadError, ParameterError
from ._base import ImageReader

# reader -> (its module in this package, its class)
_CLASSES = {
    "openslide": ("_openslide", "OpenSlideReader"),
    "tifffile": ("_tifffile", "TiffReader"),
    "nibabel": ("_nibabel", "NiftiReader"),
    "pydicom": ("_pydicom", "DicomReader"),
    "rasterio": ("_rasterio", "RasterioReader"),
    "pillow": ("_pillow", "PillowReader"),
    "numpy": ("_numpy", "NumpyReader"),
}

READERS = tuple(_CLASSES)

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".btf", ".tf8", ".qptiff")
SLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".svslide", ".czi")  # OpenSlide formats that are not TIFF
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
SUFFIXES = TIFF_SUFFIXES + SLIDE_SUFFIXES + NIFTI_SUFFIXES + PILLOW_SUFFIXES + (".dcm", ".npy")

_GEOTIFF_TAGS = {33550, 33922, 34264, 34735}  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory
_DESCRIPTION = 270


def reader_class(name: str) -> type:
    """The class of the reader called ``name`` (one of READERS).

    >>> reader_class("numpy").__name__
    'NumpyReader'
    """
    if name not in READERS:
        raise ParameterError(f"reader must be one of {READERS}, got {name!r}")
    import importlib

    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(f".{module}", __package__), cls)


def open_image(path, reader: str | None = None, level: int | None = None) -> ImageReader:
    """Open an image file (or a DICOM series folder) with the reader that fits it.

    Parameters
    ----------
    path : str or os.PathLike
    reader : {"openslide", "tifffile", "nibabel", "pydicom", "rasterio", "pillow", "numpy"}, optional
        Force a reader; by default :func:`choose_reader` picks one.
    level : int, optional
        A pyramid level (openslide, tifffile, rasterio); the others take None or 0.

    Returns
    -------
    ImageReader
        Close it (or use it in a ``with`` block) when done.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ImageReadError
        A file no reader takes, or one its reader cannot read (the message
        names the file and the rule).
    ParameterError
        An unknown reader, or a level out of range.
    ImportError
        The reader's library is missing; the message says which extra installs it.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.zeros((4, 6), np.uint8))
    >>> with open_image(path) as image:
    ...     image.name, image.shape, image.geometry["spacing"]
    ('numpy', (4, 6), None)
    """
    name = choose_reader(path) if reader is None else reader
    return reader_class(name)(path, level=level)


def choose_reader(path) -> str:
    """The name of the reader for ``path``, by extension and content.

    - a folder: pydicom (a DICOM series) when it holds a DICOM file;
    - .nii, .nii.gz: nibabel; .dcm or a file with DICOM's preamble: pydicom;
      .png, .jpg, .jpeg, .bmp, .webp, .gif: pillow; .npy: numpy;
    - .mrxs, .vms, .vmu, .svslide, .czi: openslide;
    - TIFF (.tif, .tiff, .svs, .ndpi, .scn, .bif..., or TIFF's magic bytes):
      rasterio when it has GeoTIFF tags, tifffile when it has OME-XML,
      openslide when OpenSlide names a vendor other than generic-tiff, else
      tifffile (OpenSlide is asked only when openslide-python is installed).

    >>> choose_reader("scan.nii.gz"), choose_reader("photo.JPG")
    ('nibabel', 'pillow')
    """
    path = os.fspath(path)
    lower = path.lower()
    if os.path.isdir(path):
        if any(_is_dicom(os.path.join(path, name)) for name in sorted(os.listdir(path))):
            return "pydicom"
        raise ImageReadError(f"{path!r} is a folder without a DICOM file; only a DICOM series is "
                             "read from a folder")
    if lower.endswith(NIFTI_SUFFIXES):
        return "nibabel"
    if lower.endswith(PILLOW_SUFFIXES):
        return "pillow"
    if lower.endswith(".npy"):
        return "numpy"
    if lower.endswith(SLIDE_SUFFIXES):
        return "openslide"
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such image file: {path!r}")
    if lower.endswith(".dcm") or _is_dicom(path):
        return "pydicom"
    tags = _tiff_tags(path)
    if tags is None:
        raise ImageReadError(
            f"{path!r} is not an image lazypatch knows: not TIFF or DICOM by content, and its extension "
            f"is none of {', '.join(SUFFIXES)}; pass reader= to choose one"
        )
    if tags.keys() & _GEOTIFF_TAGS:
        return "rasterio"
    if tags.get(_DESCRIPTION, b"").rstrip(b"\0 \r\n").endswith(b"OME>"):
        return "tifffile"
    vendor = _openslide_vendor(path)
    if vendor not in (None, "generic-tiff"):
        return "openslide"
    return "tifffile"


def _is_dicom(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _openslide_vendor(path: str):
    try:
        import openslide
    except (ImportError, OSError):
        return None
    return openslide.OpenSlide.detect_format(path)


def _tiff_tags(path: str):
    """{tag: value bytes} of a TIFF's first directory (the values of tags whose
    value fits or lies at an offset; counts of others), or None when not a TIFF."""
    with open(path, "rb") as handle:
        head = handle.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return None
        order = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 42:
            offset = struct.unpack(order + "I", head[4:8])[0]
            count_format, entry_format, entry_size = "H", "HHI4s", 12
        elif version == 43 and len(head) >= 16:
            offset = struct.unpack(order + "Q", head[8:16])[0]
            count_format, entry_format, entry_size = "Q", "HHQ8s", 20
        else:
            return None
        try:
            handle.seek(offset)
            (count,) = struct.unpack(order + count_format, handle.read(struct.calcsize(count_format)))
            entries = handle.read(entry_size * min(count, 4096))
            tags = {}
            for k in range(len(entries) // entry_size):
                tag, kind, number, value = struct.unpack(order + entry_format,
                                                         entries[k * entry_size:(k + 1) * entry_size])
                tags[tag] = value
                if tag == _DESCRIPTION and kind == 2:
                    if number <= len(value):
                        tags[tag] = value[:number]
                    else:
                        where = struct.unpack(order + ("I" if version == 42 else "Q"), value)[0]
                        handle.seek(where)
                        tags[tag] = handle.read(number)
        except struct.error:
            return {}  # a TIFF whose first directory is cut short: tifffile will say what is wrong
        return tags
