"""The Pillow and numpy readers, and the array-like contract every reader shares.

Pillow: PNG (RGB, 16-bit grey, palette with and without transparency, 1-bit),
JPEG, BMP, WebP against ``numpy.asarray(PIL.Image.open(...))`` (palette
images converted as a person sees them). numpy: .npy memory-mapped, against
``numpy.load``. Neither has geometry (spacing and unit None).

The contract (on a Pillow and a numpy reader): slicing with integers,
negative indices, steps, reversed slices, ``...`` and empty slices equals
numpy's on the whole array; integers out of range are IndexError, other index
types ParameterTypeError; ``read_region`` outside the image is a
ParameterError; a closed reader an ImageReadError; ``np.asarray(reader)``.
"""

import numpy as np
import pytest
from PIL import Image

from lazypatch.errors import ImageReadError, ParameterError, ParameterTypeError
from lazypatch.ingest.readers import NumpyReader, PillowReader, open_image


def _palette(tissue, transparent):
    image = Image.fromarray(tissue[:64, :80]).quantize(16)
    if transparent:
        image.info["transparency"] = 3
    return image


PICTURES = {
    "rgb.png": lambda t: Image.fromarray(t[:70, :90]),
    "gray16.png": lambda t: Image.fromarray(t[:70, :90, 0].astype(np.uint16) * 251),
    "palette.png": lambda t: _palette(t, False),
    "palette-alpha.png": lambda t: _palette(t, True),
    "bits.png": lambda t: Image.fromarray(t[:70, :90, 0] > 128),
    "photo.jpg": lambda t: Image.fromarray(t[:70, :90]),
    "photo.bmp": lambda t: Image.fromarray(t[:70, :90]),
    "photo.webp": lambda t: Image.fromarray(t[:70, :90]),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_pillow_equals_pillows_decode(tmp_path, tissue, name):
    path = str(tmp_path / name)
    PICTURES[name](tissue).save(path)
    with Image.open(path) as image:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        expected = np.asarray(image)
    with open_image(path) as reader:
        assert reader.name == "pillow"
        assert reader.shape == expected.shape and reader.dtype == expected.dtype
        np.testing.assert_array_equal(reader[...], expected)
        np.testing.assert_array_equal(reader.read_region((3, 5), (20, 7)), expected[3:23, 5:12])
        assert reader.geometry["spacing"] is None and reader.geometry["unit"] is None
        assert reader.geometry["source"]["reader"] == "pillow"


def test_numpy_is_memory_mapped_and_equals_numpy(tmp_path, make_store):
    array = np.arange(5 * 7 * 6, dtype=np.float32).reshape(5, 7, 6)
    path = str(tmp_path / "v.npy")
    np.save(path, array)
    with open_image(path) as reader:
        assert reader.name == "numpy" and reader.spatial_ndim is None
        assert isinstance(reader._array, np.memmap)
        np.testing.assert_array_equal(reader[1:4, ::2], array[1:4, ::2])
        np.testing.assert_array_equal(reader.read_region((1, 2, 3), (2, 2, 2)), array[1:3, 2:4, 3:5])
        assert set(reader.geometry) == {"spacing", "unit", "source"} and reader.geometry["spacing"] is None
        store = make_store([reader], spatial_ndim=3, tile=(2, 4, 4))
    np.testing.assert_array_equal(store.read(0), array)
    store.close()


@pytest.fixture(params=["pillow", "numpy"])
def contract(request, tmp_path, tissue):
    """(reader, the whole array) for the contract tests."""
    array = np.ascontiguousarray(tissue[:31, :45])
    if request.param == "pillow":
        path = str(tmp_path / "a.png")
        Image.fromarray(array).save(path)
        reader = PillowReader(path)
    else:
        path = str(tmp_path / "a.npy")
        np.save(path, array)
        reader = NumpyReader(path)
    yield reader, array
    reader.close()


KEYS = [np.s_[...], np.s_[3], np.s_[-1], np.s_[2:9], np.s_[2:9, 4], np.s_[::3, ::-4], np.s_[20:3:-2, -5:, 1],
        np.s_[..., 2], np.s_[5, ...], np.s_[4:4], np.s_[30:100], np.s_[-100:3], np.s_[1, 2, 0], np.s_[:, 44]]


@pytest.mark.parametrize("key", KEYS, ids=[str(k) for k in KEYS])
def test_slicing_equals_numpy(contract, key):
    reader, array = contract
    np.testing.assert_array_equal(reader[key], array[key])
    assert reader[key].shape == array[key].shape


def test_contract_errors(contract):
    reader, array = contract
    assert reader.ndim == 3 and reader.nbytes == array.nbytes
    np.testing.assert_array_equal(np.asarray(reader), array)
    with pytest.raises(IndexError):
        reader[31]
    with pytest.raises(IndexError):
        reader[..., ...]
    if isinstance(reader, PillowReader):  # numpy's own errors for the memory map
        with pytest.raises(ParameterTypeError, match="readers take integers, slices and"):
            reader[1.5]
        with pytest.raises(ParameterTypeError, match="readers take integers, slices and"):
            reader[[1, 2]]
        with pytest.raises(IndexError, match="too many indices"):
            reader[1, 2, 3, 4]
    with pytest.raises(ParameterError, match=r"region origin \(30, 40\) size \(2, 2\) reaches outside"):
        reader.read_region((30, 40), (2, 2))
    with pytest.raises(ParameterTypeError, match="origin must be 2 ints"):
        reader.read_region((1.0, 2), (2, 2))
    reader.close()
    reader.close()
    with pytest.raises(ImageReadError, match="was closed"):
        reader[0]
    assert "closed" in repr(reader)


def test_bad_input(tmp_path):
    (tmp_path / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(ImageReadError, match=r"Pillow cannot read .*damaged\.png"):
        PillowReader(tmp_path / "damaged.png")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match=r"numpy cannot read .*objects\.npy"):
        NumpyReader(tmp_path / "objects.npy")
    with pytest.raises(ParameterError, match=r"level applies to pyramids.*pillow"):
        PillowReader(tmp_path / "damaged.png", level=2)
