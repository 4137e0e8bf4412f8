"""Tissue masks in the store (format 1.2): written, read back, routed, checked, refused.

Matrix: masks of sizes smaller and larger than their image, bool and uint8,
with an image without one, over the three layouts; all None (no group, format
1.1) and none given; shards with and without masks; the minor version written
(1.1 without masks, 1.2 with) and a 1.1 reader refusing 1.2; the stored
fractions against a brute-force upsampling; ``verify`` finding a flipped mask
byte (naming the image) and a damaged table; damaged tables refused at open
(offsets cut short or disagreeing, impossible shapes, masks cut short, a
group in a 3-D store, a link); bad ``tissue`` arguments, each refused before a
file exists, with images given as a list and as a generator.
"""

import os

import h5py
import numpy as np
import pytest

from lazypatch import ImageStore, write_store
from lazypatch.errors import IntegrityError, ParameterError, ParameterTypeError, StoreFormatError
from lazypatch.store import format as fmt


def upsampled(mask, shape):
    """The mask at full resolution: pixel (y, x) takes cell (y * h // H, x * w // W)."""
    (h, w), (height, width) = mask.shape, shape
    rows = np.arange(height) * h // height
    cols = np.arange(width) * w // width
    return np.asarray(mask, bool)[rows[:, None], cols[None, :]]


def images_and_masks(rng):
    images = [rng.integers(0, 255, shape + (3,), dtype=np.uint8) for shape in [(40, 60), (7, 9), (33, 20)]]
    masks = [rng.random((5, 7)) < 0.5, None, (rng.random((50, 3)) < 0.5).astype(np.uint8)]  # 50 > 33 rows
    return images, masks


@pytest.mark.parametrize("layout", ["tiled", "contiguous", "chunked"])
def test_tissue_round_trips(tmp_path, rng, layout):
    images, masks = images_and_masks(rng)
    options = {"tile": 16} if layout != "contiguous" else {}
    with write_store(tmp_path / "s.h5", images, tissue=masks, layout=layout, progress=False, **options) as store:
        assert store.has_tissue and store.attrs["lazypatch_format_minor"] == 2
        for image_id, mask in enumerate(masks):
            found = store.tissue(image_id)
            if mask is None:
                assert found is None
            else:
                assert found.dtype == bool and found.shape == mask.shape
                np.testing.assert_array_equal(found, mask.astype(bool))
        expected = [upsampled(m, i.shape[:2]).mean() if m is not None else np.nan for m, i in zip(masks, images)]
        np.testing.assert_allclose(store.tissue_fractions, expected, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(store.read(0), images[0])
        assert store.verify(progress=False) == []


@pytest.mark.parametrize("tissue", [None, [None, None]])
def test_without_masks_the_store_stays_1_1(tmp_path, tissue):
    store = write_store(tmp_path / "s.h5", [np.zeros((8, 8, 3), np.uint8)] * 2, tissue=tissue, progress=False)
    with store, h5py.File(store.path, "r") as f:
        assert fmt.G_TISSUE not in f and store.attrs["lazypatch_format_minor"] == 1
        assert not store.has_tissue and store.tissue(1) is None
        assert np.isnan(store.tissue_fractions).all() and store.tissue_fractions.shape == (2,)


def test_a_1_1_reader_refuses_a_1_2_store(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    write_store(path, [np.zeros((8, 8, 3), np.uint8)], tissue=[np.ones((2, 2), bool)], progress=False).close()
    monkeypatch.setattr(fmt, "FORMAT_MINOR", 1)
    with pytest.raises(StoreFormatError, match=r"format version 1\.2.* reads versions 1\.0 to 1\.1 .*upgrade"):
        ImageStore(path)


def test_shards_route_tissue(tmp_path, rng):
    images, masks = images_and_masks(rng)
    a = write_store(tmp_path / "a.h5", images[:2], tissue=masks[:2], progress=False)
    b = write_store(tmp_path / "b.h5", images[2:], progress=False)
    c = write_store(tmp_path / "c.h5", images[2:], tissue=masks[2:], progress=False)
    for store in (a, b, c):
        store.close()
    with ImageStore([a.path, b.path, c.path]) as store:
        assert store.has_tissue and len(store) == 4
        np.testing.assert_array_equal(store.tissue(0), masks[0])
        assert store.tissue(1) is None and store.tissue(2) is None
        np.testing.assert_array_equal(store.tissue(3), masks[2].astype(bool))
        fractions = store.tissue_fractions
        assert np.isnan(fractions[[1, 2]]).all() and fractions[3] == pytest.approx(
            upsampled(masks[2], images[2].shape[:2]).mean())
        assert store.verify(progress=False) == []
    with ImageStore(b.path) as only:
        assert not only.has_tissue


def _flip(path, dataset, at=0):
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()
    with open(path, "r+b") as handle:
        handle.seek(offset + at)
        byte = handle.read(1)[0]
        handle.seek(offset + at)
        handle.write(bytes([byte ^ 0x10]))


def test_verify_names_the_image_whose_mask_is_damaged(tmp_path, rng):
    images, masks = images_and_masks(rng)
    store = write_store(tmp_path / "s.h5", images, tissue=masks, names=["a", "b", "c"], progress=False)
    store.close()
    _flip(store.path, fmt.D_TISSUE_MASKS, at=5 * 7 + 4)  # a cell of image 2's mask (after image 0's 35)
    with ImageStore(store.path) as damaged:
        np.testing.assert_array_equal(damaged.tissue(0), masks[0])
        with pytest.raises(IntegrityError, match=r"s\.h5' is damaged: the tissue mask of image 2: CRC32"):
            damaged.tissue(2)
        found = damaged.verify(progress=False)
        assert [(e["image"], e["name"], e["what"]) for e in found] == [(2, "c", "tissue")]


def test_verify_finds_a_damaged_fraction_table(tmp_path, rng):
    images, masks = images_and_masks(rng)
    store = write_store(tmp_path / "s.h5", images, tissue=masks, progress=False)
    store.close()
    _flip(store.path, fmt.D_TISSUE_FRACTION, at=3)
    with ImageStore(store.path) as damaged:
        found = damaged.verify(progress=False)
        assert [(e["image"], e["what"]) for e in found] == [(None, "tissue")]
        assert "/tissue/fraction: CRC32" in found[0]["reason"]


def _replace(name, value):
    def change(f):
        del f[name]
        f.create_dataset(name, data=value)
    return change


@pytest.mark.parametrize("change, message", [
    pytest.param(_replace(fmt.D_TISSUE_OFFSETS, np.array([0, 35], np.int64)),
                 r"'tissue/offsets' has shape \(2,\) \(int64\), expected \(4,\) int64", id="offsets-cut-short"),
    pytest.param(_replace(fmt.D_TISSUE_OFFSETS, np.array([0, 35, 35, 186], np.int64)),
                 r"'tissue/offsets' disagrees with 'tissue/shapes'", id="offsets-disagree"),
    pytest.param(_replace(fmt.D_TISSUE_OFFSETS, np.array([0, 35, 35, 185], np.int32)),
                 r"expected \(4,\) int64", id="offsets-int32"),
    pytest.param(_replace(fmt.D_TISSUE_SHAPES, np.array([[5, 7], [0, 3], [50, 3]], np.int64)),
                 r"'tissue/shapes' holds impossible mask sizes", id="shape-half-empty"),
    pytest.param(_replace(fmt.D_TISSUE_SHAPES, np.array([[5, 7], [0, 0], [-50, -3]], np.int64)),
                 r"impossible mask sizes", id="shape-negative"),
    pytest.param(_replace(fmt.D_TISSUE_MASKS, np.zeros(180, np.uint8)),
                 r"disagrees with .* the 180 cells of 'tissue/masks'", id="masks-cut-short"),
    pytest.param(_replace(fmt.D_TISSUE_CRC, np.zeros(3, np.int64)), r"'tissue/crc32' .*expected \(3,\) uint32",
                 id="crc-type"),
    pytest.param(lambda f: f.__delitem__(fmt.D_TISSUE_FRACTION), r"dataset 'tissue/fraction' is missing",
                 id="fraction-missing"),
    pytest.param(lambda f: (f.__delitem__(fmt.D_TISSUE_MASKS),
                            f.__setitem__(fmt.D_TISSUE_MASKS, h5py.SoftLink("/tissue/shapes"))),
                 r"'tissue/masks' is a SoftLink", id="soft-link"),
    pytest.param(lambda f: (f.move(fmt.G_TISSUE, "elsewhere"),
                            f.__setitem__(fmt.G_TISSUE, h5py.SoftLink("/elsewhere"))),
                 r"'tissue' must be a group of the store itself", id="group-link"),
])
def test_damaged_tables_are_refused_at_open(tmp_path, rng, change, message):
    images, masks = images_and_masks(rng)
    path = tmp_path / "s.h5"
    write_store(path, images, tissue=masks, progress=False).close()
    with h5py.File(path, "r+") as f:
        change(f)
    with pytest.raises(StoreFormatError, match=message) as raised:
        ImageStore(path)
    assert "s.h5" in str(raised.value)


def test_a_tissue_group_in_a_3d_store_is_refused(tmp_path):
    path = tmp_path / "v.h5"
    write_store(path, [np.zeros((4, 8, 8), np.uint8)], spatial_ndim=3, progress=False).close()
    with h5py.File(path, "r+") as f:
        f.create_group(fmt.G_TISSUE)
    with pytest.raises(StoreFormatError, match=r"v\.h5'.* in a 3-D store; tissue masks are 2-D only"):
        ImageStore(path)


def test_a_truncated_mask_table_is_refused(tmp_path, rng):
    images, masks = images_and_masks(rng)
    path = tmp_path / "s.h5"
    write_store(path, images, tissue=[np.ones((200, 300), bool), None, None], progress=False).close()
    with h5py.File(path, "r") as f:
        end = f[fmt.D_TISSUE_MASKS].id.get_offset() + 60_000
    with open(path, "r+b") as handle:
        handle.truncate(end)
    with pytest.raises(StoreFormatError, match=r"s\.h5'"):
        ImageStore(path)


def _generator(images):
    yield from images


@pytest.mark.parametrize("tissue, options, kind, message", [
    pytest.param([np.ones((2, 2), bool)], {}, ParameterError,
                 r"tissue has 1 entries for 3 images; give one mask \(or None\) per image", id="too-few"),
    pytest.param([np.ones((2, 2), bool)] * 4, {}, ParameterError, r"tissue has 4 entries for 3 images",
                 id="too-many"),
    pytest.param([np.ones((2, 2, 1), bool), None, None], {}, ParameterError,
                 r"tissue 0 must be a 2-D mask \(h, w\) with at least one cell per axis, got shape \(2, 2, 1\)",
                 id="3d-mask"),
    pytest.param([None, np.ones((0, 4), bool), None], {}, ParameterError, r"tissue 1 .* got shape \(0, 4\)",
                 id="empty-axis"),
    pytest.param([None, None, np.ones((2, 2), np.float32)], {}, ParameterError,
                 r"tissue 2 must be bool, or uint8 of 0 and 1, got dtype float32", id="float"),
    pytest.param([None, None, np.full((2, 2), 255, np.uint8)], {}, ParameterError,
                 r"tissue 2 must hold 0 and 1 only \(uint8\), got values up to 255", id="uint8-255"),
    pytest.param([None, "mask", None], {}, ParameterTypeError, r"tissue 1 must be a 2-D array or None, got str",
                 id="text-entry"),
    pytest.param(np.ones((3, 2, 2), bool), {}, ParameterTypeError,
                 r"tissue must be a sequence with one 2-D mask \(or None\) per image, got ndarray", id="stacked"),
    pytest.param("otsu", {}, ParameterTypeError, r"tissue must be a sequence .* got str", id="text"),
])
@pytest.mark.parametrize("given", ["list", "generator"])
def test_bad_tissue_is_refused_and_nothing_written(tmp_path, rng, tissue, options, kind, message, given):
    images, _ = images_and_masks(rng)
    path = tmp_path / "s.h5"
    with pytest.raises(kind, match=message):
        write_store(path, images if given == "list" else _generator(images), tissue=tissue, progress=False,
                    **options)
    assert os.listdir(tmp_path) == []


def test_tissue_needs_a_2d_store(tmp_path):
    with pytest.raises(ParameterError, match=r"tissue masks apply to 2-D stores \(slides\), got tissue with "
                                             r"spatial_ndim=3"):
        write_store(tmp_path / "v.h5", [np.zeros((4, 8, 8), np.uint8)], spatial_ndim=3,
                    tissue=[np.ones((2, 2), bool)], progress=False)
    assert os.listdir(tmp_path) == []
