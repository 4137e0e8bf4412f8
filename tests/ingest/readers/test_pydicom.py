"""The DICOM reader against pydicom and the DICOM standard's geometry.

Series are written with pydicom's dataset API (``Dataset``,
``FileMetaDataset``, ``set_pixel_data``, ``save_as``): a CT-like series of
int16 slices with RescaleIntercept -1024 (Hounsfield units), its files
shuffled and named out of order, oblique (rotated in-plane) or tilted (the
normal off the z axis); an MR-like series without rescaling (on-disk dtype);
an enhanced multi-frame file with functional groups and frames out of order.

Matrix: orientation {oblique, tilted} x rescale {HU, identity} x
{folder of slices, multi-frame file}: pixels against pydicom's
``pixel_array`` and ``apply_rescale`` of each slice in order of position
along the normal; the affine against PS3.3 C.7.6.2.1.1 applied to each
slice's own tags (LPS -> RAS); a store written from the reader; bad input
(two series in a folder, uneven gaps, a damaged file, a folder without DICOM).
"""

import os

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_rescale, pixel_array  # noqa: E402
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from lazypatch.errors import ImageReadError  # noqa: E402
from lazypatch.ingest.readers import DicomReader, open_image  # noqa: E402

ROWS, COLUMNS = 12, 10
OBLIQUE = [0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0]  # rotated 30 degrees in the axial plane
TILTED = [1.0, 0.0, 0.0, 0.0, 0.939693, -0.34202]  # gantry-like tilt of 20 degrees


def pixels(k):
    row, column = np.mgrid[:ROWS, :COLUMNS]
    return (200 * np.sin(row / 3.0 + k) + 30 * column + 1000 + 13 * k).astype(np.int16)


def base(sop_class, series_uid):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Phantom^Test", "0"
    return ds


def write_series(folder, orientation=OBLIQUE, count=6, gap=2.5, rescale=(1, -1024), series_uid=None,
                 seed=0, first=(-120.5, 80.25, 33.0)):
    """A folder of ``count`` slices along the normal of ``orientation``, written in shuffled
    order under shuffled names; returns the slices' positions in ascending order."""
    os.makedirs(folder, exist_ok=True)
    series_uid = series_uid or generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    order = np.random.default_rng(seed).permutation(count)
    for name, k in enumerate(order):
        ds = base(CTImageStorage, series_uid)
        position = [round(float(v), 4) for v in np.asarray(first) + normal * gap * k]
        ds.ImagePositionPatient = position
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = [0.7, 0.8]  # between rows, between columns
        ds.SliceThickness = gap
        ds.InstanceNumber = int(k) + 1
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.set_pixel_data(pixels(int(k)), "MONOCHROME2", 16)
        ds.save_as(os.path.join(folder, f"IM{name:04d}"), enforce_file_format=True)
    return folder


def library_volume(folder):
    """pydicom's pixels (rescaled unless identity) of each file, sorted along the slice normal."""
    datasets = [pydicom.dcmread(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
    normal = np.cross(*np.reshape([float(v) for v in datasets[0].ImageOrientationPatient], (2, 3)))
    datasets.sort(key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
    identity = all((float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))) == (1, 0)
                   for ds in datasets)
    arrays = [ds.pixel_array if identity else apply_rescale(ds.pixel_array, ds).astype(np.float32)
              for ds in datasets]
    return np.stack(arrays), datasets


def dicom_world(ds, row, column):
    """PS3.3 C.7.6.2.1.1: the LPS position of pixel (row, column) of one slice, then RAS."""
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    lps = (np.array([float(v) for v in ds.ImagePositionPatient])
           + orientation[:3] * column_spacing * column + orientation[3:] * row_spacing * row)
    return lps * [-1, -1, 1]


@pytest.mark.parametrize("orientation", [OBLIQUE, TILTED], ids=["oblique", "tilted"])
@pytest.mark.parametrize("rescale", [(1, -1024), None], ids=["hounsfield", "identity"])
def test_series_equals_pydicom_and_the_standards_geometry(tmp_path, orientation, rescale, random_regions):
    folder = write_series(str(tmp_path / "ct"), orientation, rescale=rescale)
    expected, datasets = library_volume(folder)
    with DicomReader(folder) as reader:
        assert reader.shape == (6, ROWS, COLUMNS) == expected.shape
        assert reader.dtype == (np.float32 if rescale else np.int16) == expected.dtype
        for origin, size in random_regions(reader.shape, 10):
            box = tuple(slice(o, o + s) for o, s in zip(origin, size))
            np.testing.assert_array_equal(reader.read_region(origin, size), expected[box])
        np.testing.assert_array_equal(reader[::-2, 3], expected[::-2, 3])
        geometry = reader.geometry
    affine = np.asarray(geometry["affine"])
    for z, ds in enumerate(datasets):
        for row, column in [(0, 0), (ROWS - 1, 0), (0, COLUMNS - 1), (5, 7)]:
            np.testing.assert_allclose(affine @ [z, row, column, 1], np.append(dicom_world(ds, row, column), 1),
                                       rtol=0, atol=1e-3)  # positions are written to 0.1 um
    assert geometry["spacing"] == pytest.approx((2.5, 0.7, 0.8), abs=1e-3)
    assert geometry["unit"] == "mm" and geometry["source"]["reader"] == "pydicom"
    assert set(geometry) == {"spacing", "unit", "affine", "source"}


def test_multiframe_file(tmp_path):
    order = [3, 0, 4, 1, 2]
    normal = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    ds = base(EnhancedCTImageStorage, generate_uid())
    shared = Dataset()
    orientation, measures, transformation = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = OBLIQUE
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.8], 3.0
    transformation.RescaleSlope, transformation.RescaleIntercept = 2, -1000
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [transformation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in order:
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = [round(float(v), 4) for v in np.array([10.0, -20.0, 5.0]) + normal * 3.0 * k]
        frame.PlanePositionSequence = [position]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.set_pixel_data(np.stack([pixels(k) for k in order]), "MONOCHROME2", 16)
    path = str(tmp_path / "enhanced.dcm")
    ds.save_as(path, enforce_file_format=True)
    stack = pixel_array(path)
    expected = (stack[np.argsort(order)].astype(np.float64) * 2 - 1000).astype(np.float32)
    with open_image(path) as reader:
        assert reader.name == "pydicom" and reader.shape == (5, ROWS, COLUMNS)
        np.testing.assert_array_equal(reader[...], expected)
        affine = np.asarray(reader.geometry["affine"])
    np.testing.assert_allclose(affine[:3, 0], normal * 3.0 * [-1, -1, 1], atol=1e-3)
    np.testing.assert_allclose(affine[:3, 3], [-10.0, 20.0, 5.0], atol=1e-3)


def test_store_equals_the_series(tmp_path, make_store):
    folder = write_series(str(tmp_path / "ct"))
    with DicomReader(folder) as reader:
        store = make_store([reader], spatial_ndim=3, tile=(2, 8, 8))
    np.testing.assert_array_equal(store.read(0), library_volume(folder)[0])
    store.close()


def test_bad_input(tmp_path):
    uid_a, uid_b = generate_uid(), generate_uid()
    mixed = str(tmp_path / "mixed")
    write_series(mixed, series_uid=uid_a, count=3)
    write_series(str(tmp_path / "b"), series_uid=uid_b, count=2)
    for name in os.listdir(tmp_path / "b"):
        os.rename(tmp_path / "b" / name, os.path.join(mixed, "b" + name))
    with pytest.raises(ImageReadError, match=rf"mixed.*2 DICOM series.*({uid_a}.*{uid_b}|{uid_b}.*{uid_a})"):
        DicomReader(mixed)
    gap = write_series(str(tmp_path / "gap"), count=5)
    os.remove(os.path.join(gap, sorted(os.listdir(gap))[2]))
    with pytest.raises(ImageReadError, match=r"gap.*not evenly spaced"):
        DicomReader(gap)
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(bytes(128) + b"DICM" + bytes(range(200)))
    with pytest.raises(ImageReadError, match=r"damaged\.dcm"):
        DicomReader(damaged)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ImageReadError, match=r"empty.*no DICOM image"):
        DicomReader(tmp_path / "empty")
