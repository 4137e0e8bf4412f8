"""Choosing a reader, and the optional libraries.

A table of files, each made by its own library, and the reader the issue's
rule picks for it: a .tif goes to rasterio when it has GeoTIFF keys, to
tifffile when it has OME-XML, to OpenSlide when OpenSlide names a vendor
other than generic-tiff, else tifffile; NIfTI to nibabel, DICOM (a folder, a
.dcm, a DICOM file without extension) to pydicom, pictures to Pillow, .npy to
numpy. Then: ``reader=`` forces one; bad names and paths; each missing
library is an ImportError naming the extra that installs it; importing the
readers imports none of the libraries (nor torch).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lazypatch.errors import ImageReadError, ParameterError
from lazypatch.ingest.readers import READERS, choose_reader, open_image

tifffile = pytest.importorskip("tifffile")


def make_geotiff(path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    with rasterio.open(path, "w", driver="GTiff", height=8, width=8, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=Affine(0.1, 0, 5, 0, -0.1, 45)) as dataset:
        dataset.write(np.zeros((1, 8, 8), np.uint8))


def make_dicom(folder):
    """Two CT slices of one series, the bare tags a volume needs."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(folder)
    series = generate_uid()
    for k in range(2):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID, ds.SeriesInstanceUID, ds.Modality = CTImageStorage, series, "CT"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.set_pixel_data(np.full((4, 4), k, np.int16), "MONOCHROME2", 16)
        ds.save_as(os.path.join(folder, f"slice{k}"), enforce_file_format=True)


def make_nifti(path):
    nibabel = pytest.importorskip("nibabel")
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)


FILES = {
    "generic.tif": ("tifffile", lambda p, t: tifffile.imwrite(p, t[:64, :64], tile=(32, 32), compression="jpeg",
                                                              photometric="rgb")),
    "plain.tiff": ("tifffile", lambda p, t: tifffile.imwrite(p, t[:16, :16, 0])),
    "stack.ome.tif": ("tifffile", lambda p, t: tifffile.imwrite(p, t[:16, :16], metadata={"axes": "YXS"})),
    "scene.tif": ("rasterio", lambda p, t: make_geotiff(p)),
    "scan.nii": ("nibabel", lambda p, t: make_nifti(p)),
    "scan.nii.gz": ("nibabel", lambda p, t: make_nifti(p)),
    "series": ("pydicom", lambda p, t: make_dicom(p)),
    "photo.png": ("pillow", lambda p, t: Image.fromarray(t[:8, :8]).save(p)),
    "photo.JPG": ("pillow", lambda p, t: Image.fromarray(t[:8, :8]).save(p, format="JPEG")),
    "photo.bmp": ("pillow", lambda p, t: Image.fromarray(t[:8, :8]).save(p)),
    "photo.webp": ("pillow", lambda p, t: Image.fromarray(t[:8, :8]).save(p)),
    "array.npy": ("numpy", lambda p, t: np.save(p, t[:8, :8])),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_rule_picks(tmp_path, tissue, name):
    expected, make = FILES[name]
    path = str(tmp_path / name)
    make(path, tissue)
    assert choose_reader(path) == expected
    with open_image(path) as reader:
        assert reader.name == expected and reader.geometry["source"]["reader"] == expected


def test_openslide_vendors_and_dicom_without_extension(tmp_path, aperio_svs, slide_pyramid):
    pytest.importorskip("openslide")
    assert choose_reader(aperio_svs) == "openslide"  # OpenSlide names "aperio"
    assert choose_reader(slide_pyramid) == "tifffile"  # OpenSlide names "generic-tiff"
    assert choose_reader(tmp_path / "slide.mrxs") == "openslide"
    make_dicom(str(tmp_path / "series"))
    first = sorted(os.listdir(tmp_path / "series"))[0]
    assert choose_reader(tmp_path / "series" / first) == "pydicom"  # by the DICM preamble


def test_reader_forces_and_level_passes(slide_pyramid):
    with open_image(slide_pyramid, reader="openslide", level=2) as reader:
        assert reader.name == "openslide" and reader.shape == (150, 225, 3)
    with open_image(slide_pyramid, level=1) as reader:
        assert reader.name == "tifffile" and reader.geometry["level"] == 1


def test_readers_are_named():
    assert READERS == ("openslide", "tifffile", "nibabel", "pydicom", "rasterio", "pillow", "numpy")


def test_bad_choices(tmp_path):
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.xyz.*not an image lazypatch knows.*reader="):
        open_image(tmp_path / "notes.xyz")
    with pytest.raises(ParameterError, match=r"reader must be one of \('openslide',.*got 'gdal'"):
        open_image(tmp_path / "notes.xyz", reader="gdal")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        open_image(tmp_path / "missing.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ImageReadError, match=r"folder.*without a DICOM file"):
        open_image(tmp_path / "folder")


@pytest.mark.parametrize("reader, module, extra", [
    ("openslide", "openslide", "wsi"), ("tifffile", "tifffile", "tiff"), ("nibabel", "nibabel", "medical"),
    ("pydicom", "pydicom", "medical"), ("rasterio", "rasterio", "geo"),
])
def test_a_missing_library_names_its_extra(tmp_path, monkeypatch, reader, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` fail
    path = tmp_path / "a.tif"
    path.write_bytes(b"")
    with pytest.raises(ImportError, match=rf'the {reader} reader needs .*pip install "lazypatch\[{extra}\]"'):
        open_image(path, reader=reader)


@pytest.mark.system
def test_importing_the_readers_imports_no_library():
    libraries = ("openslide", "tifffile", "nibabel", "pydicom", "rasterio", "PIL", "torch")
    code = ("import sys, lazypatch.ingest.readers; "
            f"print(sorted(m for m in {libraries!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
