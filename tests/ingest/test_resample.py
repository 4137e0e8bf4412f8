"""Tile-wise resampling (lazypatch.ingest.resample) against scikit-image's whole-image resize.

Matrix: uint8 RGB photographs, int16 and float32 volumes; down- and upsampling,
non-integer factors, one axis only; piece budgets small enough that every
output band is cut into many pieces (tile borders everywhere); reads in bands
of rows as the writer does. Reference: ``skimage.transform.resize(img, out,
order=1, anti_aliasing=True, preserve_range=True)``, rounded: within 1 of it
everywhere. Masks: ``order=0`` takes the source pixel holding each output
pixel's centre (a brute-force loop is the oracle), never a new value.
"""

import numpy as np
import pytest
import skimage.data
import skimage.transform
from hypothesis import given, settings
from hypothesis import strategies as st

import lazypatch.ingest.resample as resample_module
from lazypatch.errors import ParameterError, ParameterTypeError
from lazypatch.ingest.resample import Resampled, achieved_spacing, output_shape, resample


def reference(image, out_shape):
    result = skimage.transform.resize(image.astype(np.float64), out_shape, order=1, anti_aliasing=True,
                                      preserve_range=True)
    if image.dtype.kind in "ui":
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(result), info.min, info.max)
    return result


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(resample_module, "_PIECE_BYTES", 1 << 14)


@pytest.mark.parametrize("out_shape", [(256, 256), (200, 301), (700, 650), (37, 512), (512, 130)])
def test_photograph_within_one_of_scikit_image_across_pieces_and_bands(out_shape, small_pieces):
    image = skimage.data.astronaut()[::2, ::2]  # 256 x 256 RGB
    image = np.ascontiguousarray(image)
    expected = reference(image, out_shape)
    resampled = Resampled(image, out_shape)
    assert resampled.shape == out_shape + (3,) and resampled.dtype == np.uint8
    whole = resampled[...]
    assert np.abs(whole.astype(np.int64) - expected).max() <= 1
    bands = np.concatenate([resampled[r:r + 29] for r in range(0, out_shape[0], 29)])
    np.testing.assert_array_equal(bands, whole)  # any band split gives the same pixels


@given(shape=st.tuples(st.integers(2, 30), st.integers(2, 30), st.integers(2, 30)),
       out=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
       seed=st.integers(0, 2 ** 16))
@settings(max_examples=40, deadline=None)
def test_volumes_within_one_of_scikit_image(shape, out, seed):
    volume = np.random.default_rng(seed).integers(-2000, 2000, shape).astype(np.int16)
    old = resample_module._PIECE_BYTES
    resample_module._PIECE_BYTES = 1 << 10
    try:
        got = Resampled(volume, out)[...]
    finally:
        resample_module._PIECE_BYTES = old
    assert np.abs(got.astype(np.int64) - reference(volume, out)).max() <= 1


def test_float_images_stay_float_and_close(small_pieces):
    image = skimage.data.camera()[:200, :300].astype(np.float32) / 255
    got = Resampled(image, (70, 90))[...]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference(image, (70, 90)), atol=1e-5)


def brute_nearest(image, out_shape):
    out = np.empty(out_shape, image.dtype)
    for o in np.ndindex(*out_shape):
        source = tuple(min(int((k + 0.5) * n / m), n - 1) for k, n, m in zip(o, image.shape, out_shape))
        out[o] = image[source]
    return out


@given(shape=st.tuples(st.integers(1, 25), st.integers(1, 25)),
       out=st.tuples(st.integers(1, 40), st.integers(1, 40)), seed=st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_masks_take_the_pixel_under_each_centre(shape, out, seed):
    mask = np.random.default_rng(seed).integers(0, 5, shape).astype(np.uint8)
    got = Resampled(mask, out, order=0)[...]
    np.testing.assert_array_equal(got, brute_nearest(mask, out))
    assert set(np.unique(got)) <= set(np.unique(mask))


def test_masks_match_scikit_image_nearest():
    mask = (skimage.data.coins()[:240, :300] > 100).astype(np.uint8) * 3
    for out in [(120, 150), (97, 211), (500, 333)]:
        expected = skimage.transform.resize(mask, out, order=0, anti_aliasing=False, preserve_range=True)
        np.testing.assert_array_equal(resample(mask, out, order=0), expected.astype(np.uint8))


def test_output_shape_and_achieved_spacing():
    assert output_shape((1000, 801), (0.25, 0.25), 0.5) == (500, 400)
    assert output_shape((3, 3), (0.25, 0.25), 100.0) == (1, 1)
    assert achieved_spacing((1000, 801), (0.25, 0.25), (500, 400)) == (0.5, 0.25 * 801 / 400)
    with pytest.raises(ParameterError, match="one value per axis"):
        output_shape((10, 10), (1.0,), 0.5)


def test_reads_only_the_region_it_needs():
    class Counting:
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.boxes = array, array.shape, array.dtype, []

        def __getitem__(self, key):
            self.boxes.append(key)
            return self.array[key]

    source = Counting(np.zeros((4000, 300, 3), np.uint8))
    Resampled(source, (2000, 150))[1000:1010]
    rows = [(box[0].start, box[0].stop) for box in source.boxes]
    assert min(r[0] for r in rows) >= 1990 and max(r[1] for r in rows) <= 2030


@pytest.mark.parametrize("call, kind, message", [
    (lambda: Resampled(np.zeros((4, 4)), (2, 2), order=3), ParameterError, r"order must be 0 .* or 1"),
    (lambda: Resampled(np.zeros((4, 4)), (0, 2)), ParameterTypeError, r"out_shape must be positive"),
    (lambda: Resampled(np.zeros((4, 4)), (2, 2, 2)), ParameterError, r"more axes than the image"),
    (lambda: Resampled(np.zeros((4, 4), bool), (2, 2)), ParameterError, r"linear resampling takes integer"),
])
def test_bad_input(call, kind, message):
    with pytest.raises(kind, match=message):
        call()
