"""Format readers: the field's image files as array-likes that ``write_store`` copies
band by band, each with its physical geometry.

Who uses it: users and (later) ``lazypatch build`` open a file with
:func:`open_image` and pass the reader to ``write_store``; its ``geometry``
goes with the image. One module per source library, each imported lazily
(a missing one is an ImportError naming the extra that installs it):

=========  ====================================================  ==================
reader     sources                                               extra
=========  ====================================================  ==================
openslide  whole-slide images (.svs .ndpi .mrxs .scn .bif,       ``lazypatch[wsi]``
           generic tiled TIFF...)
tifffile   OME-TIFF (pyramids, channels, Z), tiled TIFF, SVS     ``lazypatch[tiff]``
nibabel    NIfTI .nii / .nii.gz volumes                          ``lazypatch[medical]``
pydicom    a DICOM series (folder) or a multi-frame file         ``lazypatch[medical]``
rasterio   GeoTIFF / COG                                         ``lazypatch[geo]``
pillow     PNG, JPEG, BMP, WebP, GIF                             Pillow
numpy      .npy (memory-mapped)                                  -
=========  ====================================================  ==================

Every reader (:class:`ImageReader`) has ``shape`` (spatial axes first,
((z,) y, x), channels last), ``dtype``, ``ndim``, slicing with integers and
slices (``reader[r0:r1]`` reads only those rows), ``read_region(origin,
size)``, ``geometry`` and ``close()``.

``geometry`` is a JSON-able dict:

- ``spacing``: a tuple of positive floats per spatial axis in stored order,
  or None for sources without physical metadata (PNG, .npy); sign and
  orientation live only in ``affine`` / ``transform``;
- ``unit``: "um" (microscopy, WSI), "mm" (NIfTI, DICOM), "m" or "deg" (the
  CRS's unit), or None;
- ``affine`` (volumes): 4x4 nested lists mapping stored (z, y, x, 1) to world
  coordinates, RAS+ millimetres for NIfTI and DICOM;
- ``crs`` (WKT) and ``transform`` (rasterio's a, b, c, d, e, f);
- ``level`` and ``downsample`` (pyramids: openslide, tifffile, rasterio);
- ``source``: {"file", "reader", "reader_version"}.
The keys of the middle three lines are present only where the source has them.
"""

from ._base import ImageReader
from ._choose import READERS, choose_reader, open_image, reader_class
from ._nibabel import NiftiReader
from ._numpy import NumpyReader
from ._openslide import OpenSlideReader
from ._pillow import PillowReader
from ._pydicom import DicomReader
from ._rasterio import RasterioReader
from ._tifffile import TiffReader

__all__ = [
    "READERS",
    "DicomReader",
    "ImageReader",
    "NiftiReader",
    "NumpyReader",
    "OpenSlideReader",
    "PillowReader",
    "RasterioReader",
    "TiffReader",
    "choose_reader",
    "open_image",
    "reader_class",
]
