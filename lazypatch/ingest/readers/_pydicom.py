"""DICOM volumes through pydicom: a folder of the slices of one series, or one
multi-frame file (enhanced CT/MR with functional groups).

pydicom reads every DICOM encoding and, with its pixel handlers, every
transfer syntax that has a Python decoder; it is what the rest of the Python
medical stack builds on. Headers are read first (``stop_before_pixels``); a
region decodes only the slices (or frames) it needs.

Geometry, from the DICOM standard (PS3.3 C.7.6.2.1.1): the pixel at row r,
column c of a slice lies at ``ImagePositionPatient + X * dc * c + Y * dr * r``
in LPS millimetres, with X, Y the row and column direction cosines of
``ImageOrientationPatient`` and (dr, dc) = ``PixelSpacing``. Slices are
ordered by their position projected on the slice normal X x Y, ascending; the
z column of the affine is the step from one slice to the next (the slices
must be evenly spaced), and the affine maps to RAS+ like NIfTI's: LPS rows 0
and 1 negated.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ImageReadError
from ._base import ImageReader, make_geometry, no_level, require

_ORIENTATION_TOLERANCE = 1e-4
_SPACING_TOLERANCE = 0.01  # relative: slice gaps may differ by 1 % (decimal strings, table jitter)


class DicomReader(ImageReader):
    """A DICOM series (a folder) or a multi-frame file as a (Z, Y, X[, C]) volume array-like.

    Parameters
    ----------
    path : str or os.PathLike
        A folder holding the files of one series (other files, such as
        DICOMDIR or notes, are skipped), or one DICOM file.

    Notes
    -----
    - dtype: the stored pixels' dtype when every slice's RescaleSlope is 1
      and RescaleIntercept 0 (or absent); else float32 of
      ``pixels * slope + intercept`` computed in float64 per slice, as
      pydicom's ``apply_rescale`` does (Hounsfield units for CT).
    - Two series in one folder, slices with different orientations or sizes,
      two slices at one position, or uneven gaps are ImageReadErrors naming
      the files and the rule.
    - ``geometry``: ``spacing`` (slice step, row spacing, column spacing) in
      mm, ``affine`` the 4x4 from stored (z, y, x) to RAS+ mm.
    """

    name = "pydicom"

    def __init__(self, path, level=None):
        pydicom = require("pydicom", self.name)
        self.path = os.fspath(path)
        no_level(level, self.path, self.name)
        if os.path.isdir(self.path):
            slices = self._read_folder(pydicom)
        elif os.path.isfile(self.path):
            slices = self._read_file(pydicom)
        else:
            raise FileNotFoundError(f"no such DICOM file or folder: {self.path!r}")
        self._slices = _order(slices, self.path)
        first = self._slices[0]
        rows, columns, samples = first.rows, first.columns, first.samples
        for item in self._slices:
            if (item.rows, item.columns, item.samples) != (rows, columns, samples):
                raise ImageReadError(
                    f"{self.path!r}: slices differ in size: {first.where} is {rows}x{columns}x{samples}, "
                    f"{item.where} is {item.rows}x{item.columns}x{item.samples} (rows x columns x samples); "
                    "a series is one volume"
                )
        self.shape = (len(self._slices), rows, columns) + ((samples,) if samples > 1 else ())
        self.spatial_ndim = 3
        self.scaled = any((s.slope, s.intercept) != (1.0, 0.0) for s in self._slices)
        try:
            raw = self._pixels(first)
        except Exception as exc:
            raise ImageReadError(f"pydicom cannot decode the pixels of {first.where}: {exc}") from exc
        self.dtype = np.dtype(np.float32) if self.scaled else raw.dtype.newbyteorder("=")
        self.affine, spacing = _affine(self._slices)
        self.geometry = make_geometry(self.path, self.name, pydicom.__version__, spacing=spacing,
                                      unit="mm", affine=self.affine)

    # -- headers ----------------------------------------------------------------------------
    def _read_folder(self, pydicom) -> list:
        names = sorted(n for n in os.listdir(self.path) if not n.startswith("."))
        headers, series = [], {}
        for name in names:
            file = os.path.join(self.path, name)
            if not os.path.isfile(file):
                continue
            try:
                header = pydicom.dcmread(file, stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:
                continue  # not DICOM: a note, a DICOMDIR's companions
            except Exception as exc:
                raise ImageReadError(f"pydicom cannot read {file!r} (damaged DICOM file?): {exc}") from exc
            if "Rows" not in header:  # no image: DICOMDIR, structured reports
                continue
            uid = str(header.get("SeriesInstanceUID", ""))
            series.setdefault(uid, file)
            headers.append((file, header))
        if not headers:
            raise ImageReadError(f"{self.path!r} holds no DICOM image file")
        if len(series) > 1:
            listed = ", ".join(f"{uid!r} (e.g. {os.path.basename(f)!r})" for uid, f in series.items())
            raise ImageReadError(
                f"{self.path!r} holds {len(series)} DICOM series: {listed}; a folder holds one series "
                "(one SeriesInstanceUID): move each series into its own folder"
            )
        if len(headers) > 1 and any(int(h.get("NumberOfFrames", 1) or 1) > 1 for _, h in headers):
            raise ImageReadError(
                f"{self.path!r} mixes a multi-frame file with other slices; a volume is one "
                "multi-frame file or a folder of single-frame slices"
            )
        if len(headers) == 1:
            return _frames(*headers[0])
        return [_slice(file, header, header, None) for file, header in headers]

    def _read_file(self, pydicom) -> list:
        try:
            header = pydicom.dcmread(self.path, stop_before_pixels=True)
        except Exception as exc:
            raise ImageReadError(f"pydicom cannot read {self.path!r} (not DICOM, or damaged): {exc}") from exc
        if "Rows" not in header:
            raise ImageReadError(f"{self.path!r} is a DICOM file without an image (no Rows)")
        return _frames(self.path, header)

    # -- pixels -----------------------------------------------------------------------------
    def _pixels(self, item) -> np.ndarray:
        from pydicom.pixels import pixel_array

        return pixel_array(item.file, index=item.frame) if item.frame is not None else pixel_array(item.file)

    def _read(self, origin, size) -> np.ndarray:
        (z0, y0, x0), (depth, height, width) = origin, size
        out = np.empty(tuple(size) + tuple(self.shape[3:]), self.dtype)
        for k in range(depth):
            item = self._slices[z0 + k]
            pixels = self._pixels(item)[y0:y0 + height, x0:x0 + width]
            if self.scaled:
                pixels = pixels.astype(np.float64) * item.slope + item.intercept
            out[k] = pixels
        return out


class _Slice:
    """What a slice (or frame) brings: where it is, where its pixels are, its rescale."""

    __slots__ = ("file", "frame", "position", "orientation", "pixel_spacing", "thickness",
                 "rows", "columns", "samples", "slope", "intercept", "where")


def _slice(file, header, groups, frame) -> _Slice:
    item = _Slice()
    item.file, item.frame = file, frame
    item.where = repr(file) if frame is None else f"frame {frame} of {file!r}"
    item.rows, item.columns = int(header.Rows), int(header.Columns)
    item.samples = int(header.get("SamplesPerPixel", 1) or 1)
    item.position = _vector(_attribute(groups, header, "PlanePositionSequence", "ImagePositionPatient"), 3,
                            "ImagePositionPatient", item.where)
    item.orientation = _vector(_attribute(groups, header, "PlaneOrientationSequence", "ImageOrientationPatient"),
                               6, "ImageOrientationPatient", item.where)
    item.pixel_spacing = _vector(_attribute(groups, header, "PixelMeasuresSequence", "PixelSpacing"), 2,
                                 "PixelSpacing", item.where)
    thickness = (_attribute(groups, header, "PixelMeasuresSequence", "SpacingBetweenSlices")
                 or _attribute(groups, header, "PixelMeasuresSequence", "SliceThickness"))
    item.thickness = float(thickness) if thickness else None
    slope = _attribute(groups, header, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _attribute(groups, header, "PixelValueTransformationSequence", "RescaleIntercept")
    item.slope = 1.0 if slope in (None, "") else float(slope)
    item.intercept = 0.0 if intercept in (None, "") else float(intercept)
    return item


def _frames(file, header) -> list:
    """The slices of one file: its frames when it has several (with their functional groups)."""
    count = int(header.get("NumberOfFrames", 1) or 1)
    if count == 1:
        return [_slice(file, header, header, None)]
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != count:
        raise ImageReadError(
            f"{file!r}: a multi-frame DICOM file of {count} frames needs a "
            "PerFrameFunctionalGroupsSequence with one item per frame (enhanced CT/MR) to place them"
        )
    return [_slice(file, header, per_frame[k], k) for k in range(count)]


def _attribute(groups, header, sequence: str, keyword: str):
    """``keyword`` from a frame's functional group ``sequence``, the shared groups, or the top level."""
    shared = header.get("SharedFunctionalGroupsSequence")
    for source in (groups, shared[0] if shared else None):
        if source is None:
            continue
        items = source.get(sequence)
        if items:
            value = items[0].get(keyword)
            if value is not None:
                return value
    return header.get(keyword)


def _vector(value, length: int, keyword: str, where: str) -> np.ndarray:
    if value is None:
        raise ImageReadError(f"{where} has no {keyword}; lazypatch places DICOM slices by it")
    vector = np.asarray([float(v) for v in value], dtype=np.float64)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise ImageReadError(f"{where}: {keyword} must be {length} numbers, got {list(value)!r}")
    return vector


def _order(slices: list, path: str) -> list:
    """The slices sorted by position along the normal, checked to form one volume."""
    first = slices[0]
    for item in slices[1:]:
        if np.abs(item.orientation - first.orientation).max() > _ORIENTATION_TOLERANCE:
            raise ImageReadError(
                f"{path!r}: slices differ in ImageOrientationPatient ({first.where}: "
                f"{first.orientation.tolist()}, {item.where}: {item.orientation.tolist()}); "
                "a volume has one orientation"
            )
        if np.abs(item.pixel_spacing - first.pixel_spacing).max() > 1e-6 * first.pixel_spacing.max():
            raise ImageReadError(
                f"{path!r}: slices differ in PixelSpacing ({first.where}: {first.pixel_spacing.tolist()}, "
                f"{item.where}: {item.pixel_spacing.tolist()})"
            )
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    heights = np.array([float(item.position @ normal) for item in slices])
    order = np.argsort(heights, kind="stable")
    slices = [slices[k] for k in order]
    heights = heights[order]
    if len(slices) > 1:
        gaps = np.diff(heights)
        at = int(np.argmin(gaps))
        if gaps[at] <= 1e-6 * max(1.0, abs(heights).max()):
            raise ImageReadError(
                f"{path!r}: {slices[at].where} and {slices[at + 1].where} lie at one position "
                f"({slices[at].position.tolist()}); a series holds each slice once"
            )
        step = (heights[-1] - heights[0]) / (len(slices) - 1)
        if np.abs(gaps - step).max() > _SPACING_TOLERANCE * step:
            raise ImageReadError(
                f"{path!r}: slices are not evenly spaced along the normal (gaps from {gaps.min():.4g} "
                f"to {gaps.max():.4g} mm); lazypatch stores one spacing per axis (a missing slice?)"
            )
    return slices


def _affine(slices: list):
    """(RAS+ affine of stored (z, y, x), spacing (z, y, x)) of sorted slices."""
    first = slices[0]
    row, column = first.orientation[:3], first.orientation[3:]
    row_spacing, column_spacing = first.pixel_spacing
    if len(slices) > 1:
        step = (slices[-1].position - first.position) / (len(slices) - 1)
    else:  # one slice: its thickness along the normal (1 mm when the file states none)
        step = np.cross(row, column) * (first.thickness or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = column * row_spacing
    affine[:3, 2] = row * column_spacing
    affine[:3, 3] = first.position
    affine[:2] *= -1  # LPS -> RAS
    affine += 0.0  # no negative zeros (-0.0 from the flip) in the stored JSON
    spacing = (float(np.linalg.norm(step)), float(row_spacing), float(column_spacing))
    return affine, spacing
