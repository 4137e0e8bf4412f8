"""Physical geometry per image (format 1.1): written, read back, checked, refused when wrong.

Matrix: given as a parameter or by the image object (a reader's ``geometry``),
absent (PNG-like arrays, stores of format 1.0), 2-D and 3-D spacing; bad
values (wrong length, non-positive, unknown unit, not a dict), each refused
before a file exists; a damaged geometry table found by ``verify``.
"""

import os

import h5py
import numpy as np
import pytest

from lazypatch import ImageStore, write_store
from lazypatch.errors import ParameterError, ParameterTypeError
from lazypatch.store import format as fmt


class _WithGeometry:
    """An array-like that knows its geometry, as the format readers do."""

    def __init__(self, array, geometry):
        self.array, self.geometry = array, geometry
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        return self.array[key]


def test_geometry_round_trips(tmp_path):
    affine = [[0, 0, -0.7, 10.0], [0, 0.5, 0, -3.0], [2.0, 0, 0, 1.5], [0, 0, 0, 1]]
    volumes = [np.zeros((4, 6, 5), np.int16), np.ones((3, 6, 5), np.int16)]
    geometry = [{"spacing": (2.0, 0.5, 0.7), "unit": "mm", "affine": affine,
                 "source": {"file": "a.nii.gz", "reader": "nibabel", "reader_version": "5"}}, None]
    store = write_store(tmp_path / "v.h5", volumes, spatial_ndim=3, geometry=geometry, progress=False)
    assert store.geometry(0) == {**geometry[0], "spacing": (2.0, 0.5, 0.7)}
    assert store.geometry(1) == {"spacing": None, "unit": None}
    assert store.attrs["lazypatch_format_minor"] == 1 and store.verify(progress=False) == []


def test_an_image_brings_its_own_geometry(tmp_path):
    slide = _WithGeometry(np.zeros((30, 40, 3), np.uint8),
                          {"spacing": [0.25, 0.25], "unit": "um", "level": 0, "downsample": 1.0})
    store = write_store(tmp_path / "s.h5", [slide, np.zeros((8, 8, 3), np.uint8)], progress=False)
    assert store.geometry(0)["spacing"] == (0.25, 0.25) and store.geometry(0)["unit"] == "um"
    assert store.geometry(1)["spacing"] is None
    given = write_store(tmp_path / "t.h5", [slide], geometry=[{"spacing": (1, 1), "unit": "um"}],
                        progress=False)
    assert given.geometry(0) == {"spacing": (1.0, 1.0), "unit": "um"}  # the parameter wins


def test_stores_without_geometry_give_none(tmp_path):
    old = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "store_format_1.0.h5")
    with ImageStore(old) as store:
        assert [store.geometry(k) for k in range(len(store))] == [{"spacing": None, "unit": None}] * 2


@pytest.mark.parametrize("geometry, kind, message", [
    pytest.param({"spacing": (1.0,), "unit": "um"}, ParameterError,
                 r"geometry 0: spacing must be 2 positive numbers .* got \(1.0,\)", id="spacing=(1.0,)"),
    pytest.param({"spacing": (1.0, 0.0), "unit": "um"}, ParameterError, r"spacing must be 2 positive",
                 id="spacing=(1, 0)"),
    pytest.param({"spacing": ("a", 1), "unit": "um"}, ParameterTypeError, r"spacing must be 2 numbers",
                 id="spacing=('a', 1)"),
    pytest.param({"spacing": (1, 1), "unit": "inch"}, ParameterError,
                 r"unit must be one of \('um', 'mm', 'm', 'deg', None\), got 'inch'", id="unit='inch'"),
    pytest.param([0.5, 0.5], ParameterTypeError, r"geometry 0 must be a dict or None, got list", id="a list"),
    pytest.param({"spacing": (1, 1), "unit": "um", "x": object()}, ParameterError,
                 r"geometry 0 cannot be stored as JSON", id="not JSON"),
])
def test_bad_geometry_is_refused_before_anything_is_written(tmp_path, geometry, kind, message):
    with pytest.raises(kind, match=message):
        write_store(tmp_path / "s.h5", [np.zeros((8, 8), np.uint8)], geometry=[geometry], progress=False)
    assert os.listdir(tmp_path) == []


def test_verify_finds_a_damaged_geometry_table(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, [np.zeros((8, 8), np.uint8)], geometry=[{"spacing": (0.5, 0.5), "unit": "um"}],
                progress=False).close()
    with h5py.File(path, "r") as f:
        offset = f[fmt.D_GEOMETRY].id.get_offset()
    with open(path, "r+b") as f:
        f.seek(offset + 3)
        byte = f.read(1)
        f.seek(offset + 3)
        f.write(bytes([byte[0] ^ 0x20]))
    with ImageStore(path) as store:
        damaged = store.verify(progress=False)
    assert [d["what"] for d in damaged] == ["geometry"] and "geometry" in damaged[0]["reason"]
