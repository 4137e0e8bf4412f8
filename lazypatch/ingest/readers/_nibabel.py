"""NIfTI volumes (.nii, .nii.gz) through nibabel.

nibabel is the reference implementation of NIfTI's header, its sform/qform
rules and its intensity scaling. Its array is (X, Y, Z[, C]) (i fastest on
disk); lazypatch stores volumes (Z, Y, X[, C]), so the reader is that array
transposed (2, 1, 0), and ``geometry['affine']`` is nibabel's affine with its
first three columns reversed: the world coordinates of a stored voxel
(z, y, x) are nibabel's of (x, y, z), exactly (a permutation, no arithmetic).

NOTE [streaming .nii.gz]: a z-slab of the stored volume is a contiguous
byte range of the NIfTI file (z is its slowest axis), which nibabel's array
proxy reads with ``fileslice``. By default nibabel opens the file anew for
every slice, and a gzip stream cannot seek: each slab would decompress the
file from its start again (quadratic in the size). The image is opened with
``keep_file_open=True``, so the proxy keeps one gzip stream and slabs read in
ascending z only move it forward: the file is decompressed once per pass
(tests/ingest/readers/test_nibabel.py counts the streams and the seeks).
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ImageReadError
from ._base import ImageReader, make_geometry, no_level, require

_UNITS = {"mm": "mm", "unknown": "mm", "meter": "m", "micron": "um"}


class NiftiReader(ImageReader):
    """A NIfTI image as a (Z, Y, X) or (Z, Y, X, C) volume array-like.

    Parameters
    ----------
    path : str or os.PathLike
        A .nii or .nii.gz file (or any format ``nibabel.load`` opens as a
        spatial image).

    Notes
    -----
    - A 4-D image's last axis is channels; a 5-D one with one entry on axis 3
      (NIfTI's vector images) too; a 2-D one is a volume of one slice.
    - dtype: the on-disk dtype (native byte order) when the scaling is the
      identity; float32 with ``scl_slope`` and ``scl_inter`` applied otherwise
      (nibabel scales in float64; the result is rounded once to float32).
    - ``geometry``: ``spacing`` is the header's zooms in stored order (z, y, x);
      ``unit`` the header's spatial unit ("mm" when unknown, as NIfTI
      readers assume); ``affine`` nibabel's ``img.affine`` (sform, else qform,
      else the zooms) composed with the axis reversal. A non-invertible affine
      is an ImageReadError.

    Examples
    --------
    >>> import numpy as np, nibabel, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "v.nii.gz")
    >>> affine = np.array([[-2.0, 0, 0, 90], [0, 1.5, 0, -120], [0, 0, 3.0, -60], [0, 0, 0, 1]])
    >>> nibabel.save(nibabel.Nifti1Image(np.zeros((4, 5, 6), np.int16), affine), path)
    >>> reader = NiftiReader(path)
    >>> reader.shape, reader.dtype.name, reader.geometry["spacing"]  # (z, y, x)
    ((6, 5, 4), 'int16', (3.0, 1.5, 2.0))
    >>> np.asarray(reader.geometry["affine"])[:3].tolist()  # columns z, y, x, translation
    [[0.0, 0.0, -2.0, 90.0], [0.0, 1.5, 0.0, -120.0], [3.0, 0.0, 0.0, -60.0]]
    >>> reader.close()
    """

    name = "nibabel"

    def __init__(self, path, level=None):
        nibabel = require("nibabel", self.name)
        self.path = os.fspath(path)
        no_level(level, self.path, self.name)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such NIfTI file: {self.path!r}")
        try:
            # see NOTE [streaming .nii.gz]
            image = nibabel.load(self.path, keep_file_open=True)
        except Exception as exc:
            raise ImageReadError(f"nibabel cannot read {self.path!r} (not NIfTI, or damaged): {exc}") from exc
        proxy = image.dataobj
        if not hasattr(proxy, "slope") or not hasattr(image, "affine"):
            raise ImageReadError(f"{self.path!r}: nibabel reads it as {type(image).__name__}, "
                                 "not an image with an array proxy and an affine")
        self._proxy = proxy
        nib_shape = tuple(int(n) for n in image.shape)
        raw = np.dtype(image.get_data_dtype())
        if raw.fields is not None or raw.kind not in "biuf":
            raise ImageReadError(
                f"{self.path!r}: NIfTI data type {raw} is not supported (images are bool, "
                "integer or float; RGB NIfTI: convert it to a 4-D image with channels last)"
            )
        self._vector = len(nib_shape) == 5 and nib_shape[3] == 1
        if len(nib_shape) == 2:
            nib_shape += (1,)
        if self._vector:
            nib_shape = nib_shape[:3] + nib_shape[4:]
        if len(nib_shape) not in (3, 4):
            raise ImageReadError(
                f"{self.path!r}: a NIfTI image of shape {tuple(image.shape)}; lazypatch reads (X, Y, Z) "
                "volumes and (X, Y, Z, C) with channels last"
            )
        self._flat = len(image.shape) == 2
        self.shape = (nib_shape[2], nib_shape[1], nib_shape[0]) + nib_shape[3:]
        self.spatial_ndim = 3
        self.scaled = not (float(proxy.slope) == 1.0 and float(proxy.inter) == 0.0)
        self.dtype = np.dtype(np.float32) if self.scaled else raw.newbyteorder("=")
        affine = np.asarray(image.affine, dtype=np.float64)
        if not np.all(np.isfinite(affine)) or np.linalg.matrix_rank(affine[:3, :3]) < 3:
            raise ImageReadError(
                f"{self.path!r}: its affine (sform or qform) is not invertible: voxels would have no "
                f"distinct world coordinates; every NIfTI read needs an invertible 3x3 part, got "
                f"{affine[:3, :3].round(6).tolist()}"
            )
        self.affine = affine[:, [2, 1, 0, 3]]  # stored (z, y, x) -> nibabel (x, y, z): columns reversed
        zooms = [float(v) for v in image.header.get_zooms()[:3]] + [1.0] * (3 - len(image.header.get_zooms()[:3]))
        spacing = tuple(abs(v) for v in zooms[::-1])
        if not all(np.isfinite(v) and v > 0 for v in spacing):
            spacing = tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        space_unit = image.header.get_xyzt_units()[0] if hasattr(image.header, "get_xyzt_units") else "unknown"
        self.geometry = make_geometry(
            self.path, self.name, nibabel.__version__, spacing=spacing,
            unit=_UNITS.get(space_unit, "mm"), affine=self.affine,
        )

    def _read(self, origin, size) -> np.ndarray:
        (z0, y0, x0), (depth, height, width) = origin, size
        slicer = (slice(x0, x0 + width), slice(y0, y0 + height))
        if not self._flat:
            slicer += (slice(z0, z0 + depth),)
        if self._vector:
            slicer += (0,)
        data = np.asarray(self._proxy[slicer])
        if self._flat:
            data = data[..., None]
        order = (2, 1, 0) + tuple(range(3, data.ndim))
        return np.ascontiguousarray(data.transpose(order), dtype=self.dtype)

    def _close(self) -> None:
        opener = getattr(self._proxy, "_opener", None)  # the stream kept open (NOTE [streaming .nii.gz])
        if opener is not None and hasattr(opener, "close_if_mine"):
            opener.close_if_mine()
        self._proxy = None
