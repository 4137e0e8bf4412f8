"""The NIfTI reader against nibabel.

Volumes are written by nibabel with non-trivial affines: oblique (rotated
about two axes, anisotropic), flipped (negative zooms on x and z), a 4-D
image with channels, a 2-D image, with and without intensity scaling, as .nii
and .nii.gz.

Matrix: affines {oblique, flipped} x scaling {identity (on-disk dtype), slope
and intercept (float32)} x {.nii, .nii.gz} x regions, against nibabel's
``get_fdata`` / ``dataobj`` transposed (2, 1, 0); world coordinates of voxels
through ``geometry['affine']`` against ``nibabel.affines.apply_affine`` on the
original index; spacing against the zooms; .nii.gz slabs stream through one
gzip stream moving forward; a store written from the reader; bad input
(non-invertible affine, damaged file, RGB data, a level).
"""

import gzip
from pathlib import Path

import numpy as np
import pytest

nibabel = pytest.importorskip("nibabel")
from nibabel.affines import apply_affine, from_matvec  # noqa: E402

from lazypatch.errors import ImageReadError, ParameterError  # noqa: E402
from lazypatch.ingest.readers import NiftiReader, open_image  # noqa: E402


def rotation(angle, axis):
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


OBLIQUE = from_matvec(rotation(0.3, 2) @ rotation(-0.2, 0) @ np.diag([0.8, 0.9, 2.5]), [-90.5, 12.25, 40.0])
FLIPPED = from_matvec(np.diag([-1.5, 1.0, -3.0]), [120.0, -80.0, 60.0])


def phantom(shape):
    """Smooth integer content with a distinct value per voxel row, as a volume is."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in (tuple(shape[:3]) + (1,))[:3]], indexing="ij")
    body = 1000 * np.exp(-((x - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2) / 40.0) + 7 * z + x
    data = body.astype(np.int16).reshape(shape[:3])
    if len(shape) == 4:
        data = np.stack([data + 100 * c for c in range(shape[3])], axis=-1)
    return data


def write(path, data, affine, scaling=None):
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    if scaling is not None:
        image.header.set_slope_inter(*scaling)
    nibabel.save(image, str(path))
    return str(path)


def stored(array):
    return np.transpose(array, (2, 1, 0) + tuple(range(3, array.ndim)))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("affine", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])
@pytest.mark.parametrize("scaling", [None, (0.5, -1024.0)], ids=["identity", "scaled"])
def test_voxels_equal_nibabels(tmp_path, suffix, affine, scaling, random_regions):
    path = write(tmp_path / f"v{suffix}", phantom((23, 19, 11)), affine, scaling)
    image = nibabel.load(path)
    if scaling is None:
        expected = stored(np.asanyarray(image.dataobj))
        assert expected.dtype == image.get_data_dtype() == np.int16
    else:
        expected = stored(image.get_fdata()).astype(np.float32)  # nibabel scales in float64
        np.testing.assert_array_max_ulp(expected, stored(image.get_fdata(dtype=np.float32)), maxulp=1)
    with NiftiReader(path) as reader:
        assert reader.shape == (11, 19, 23) and reader.dtype == expected.dtype
        assert reader.scaled == (scaling is not None)
        for origin, size in random_regions(reader.shape, 10):
            box = tuple(slice(o, o + s) for o, s in zip(origin, size))
            np.testing.assert_array_equal(reader.read_region(origin, size), expected[box])
        for key in [np.s_[3:9], np.s_[-1, ::-2], np.s_[..., 4], np.s_[2, 3, 4], np.s_[10:2:-3, 1:4, ::5]]:
            np.testing.assert_array_equal(reader[key], expected[key])


@pytest.mark.parametrize("affine", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])
def test_world_coordinates_equal_nibabels(tmp_path, affine, rng):
    path = write(tmp_path / "v.nii.gz", phantom((23, 19, 11)), affine)
    image = nibabel.load(path)
    with NiftiReader(path) as reader:
        geometry = reader.geometry
    stored_affine = np.asarray(geometry["affine"])
    # the same matrix, its first three columns reversed: no arithmetic, bit for bit
    np.testing.assert_array_equal(stored_affine[:, [2, 1, 0, 3]], image.affine)
    ijk = np.stack([rng.integers(0, n, 50) for n in image.shape[:3]], axis=1)  # nibabel's (i, j, k)
    world = apply_affine(image.affine, ijk)
    ours = apply_affine(stored_affine, ijk[:, ::-1])  # the stored (z, y, x) of the same voxels
    if affine is FLIPPED:  # dyadic entries: every sum is exact
        np.testing.assert_array_equal(ours, world)
    else:  # the same three products, summed in the reverse order
        np.testing.assert_allclose(ours, world, rtol=0, atol=1e-12)
    zooms = image.header.get_zooms()
    assert geometry["spacing"] == (zooms[2], zooms[1], zooms[0])
    assert geometry["unit"] == "mm" and geometry["source"]["reader"] == "nibabel"
    assert set(geometry) == {"spacing", "unit", "affine", "source"}


def test_channels_and_flat_images(tmp_path):
    data = phantom((9, 8, 5, 3))
    path = write(tmp_path / "c.nii", data, FLIPPED)
    with open_image(path) as reader:
        assert reader.name == "nibabel" and reader.shape == (5, 8, 9, 3)
        np.testing.assert_array_equal(reader[...], stored(data))
        np.testing.assert_array_equal(reader[1:3, :, 4, 2], stored(data)[1:3, :, 4, 2])
    flat = write(tmp_path / "f.nii", phantom((9, 8)), np.diag([0.5, 0.5, 1.0, 1.0]))
    with NiftiReader(flat) as reader:
        assert reader.shape == (1, 8, 9)
        np.testing.assert_array_equal(reader[0], phantom((9, 8)).T)


def test_gzip_slabs_stream_forward_through_one_stream(tmp_path, monkeypatch):
    # NOTE [streaming .nii.gz]: nibabel's default opens a fresh stream per slice
    path = write(tmp_path / "v.nii.gz", phantom((40, 30, 24)), FLIPPED)
    streams, seeks = [], []
    original_init, original_seek = gzip.GzipFile.__init__, gzip.GzipFile.seek

    def init(self, *args, **kwargs):
        streams.append(id(self))
        return original_init(self, *args, **kwargs)

    def seek(self, offset, whence=0):
        seeks.append((id(self), offset, whence))
        return original_seek(self, offset, whence)

    monkeypatch.setattr(gzip.GzipFile, "__init__", init)
    monkeypatch.setattr(gzip.GzipFile, "seek", seek)
    with NiftiReader(path) as reader:
        streams.clear()
        slabs = [reader[z:z + 5] for z in range(0, 24, 5)]
    assert len(streams) == 1, "each slab reopened the .nii.gz"
    offsets = [offset for _, offset, _ in seeks]
    assert {stream for stream, _, _ in seeks} == set(streams)
    assert offsets == sorted(offsets) and all(whence == 0 for _, _, whence in seeks)
    np.testing.assert_array_equal(np.concatenate(slabs), stored(phantom((40, 30, 24))))
    streams.clear()
    image = nibabel.load(path)  # what the NOTE avoids: one stream per slice
    for z in range(0, 24, 5):
        image.dataobj[:, :, z:z + 5]
    assert len(streams) >= 5


def test_store_equals_nibabels_volume(tmp_path, make_store):
    path = write(tmp_path / "v.nii.gz", phantom((23, 19, 11)), OBLIQUE, (0.25, 3.0))
    with NiftiReader(path) as reader:
        store = make_store([reader], spatial_ndim=3, tile=(4, 8, 8))
    np.testing.assert_array_equal(store.read(0), stored(nibabel.load(path).get_fdata()).astype(np.float32))
    store.close()


def test_bad_input(tmp_path):
    singular = nibabel.Nifti1Image(phantom((6, 5, 4)), None)
    singular.set_sform(np.diag([1.0, 2.0, 0.0, 1.0]), code=2)
    nibabel.save(singular, str(tmp_path / "singular.nii"))
    with pytest.raises(ImageReadError, match=r"singular\.nii.*affine.*not invertible"):
        NiftiReader(tmp_path / "singular.nii")
    good = write(tmp_path / "v.nii.gz", phantom((16, 16, 16)), FLIPPED)
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(Path(good).read_bytes()[:600])
    with pytest.raises(ImageReadError, match=r"damaged\.nii\.gz"):
        with NiftiReader(damaged) as reader:
            reader[...]
    (tmp_path / "text.nii").write_text("not a volume")
    with pytest.raises(ImageReadError, match=r"nibabel cannot read .*text\.nii"):
        NiftiReader(tmp_path / "text.nii")
    rgb = np.zeros((4, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nibabel.save(nibabel.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii"))
    with pytest.raises(ImageReadError, match=r"rgb\.nii.*not supported"):
        NiftiReader(tmp_path / "rgb.nii")
    with pytest.raises(ParameterError, match=r"level applies to pyramids.*nibabel"):
        NiftiReader(good, level=1)
