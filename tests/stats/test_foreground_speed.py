"""foreground_filter read in bands: the same keep-bitmap as the previous implementation, read once.

Matrix: the keep-bitmap and the per-image thresholds of ``foreground_filter``
against the implementation it replaced (copied below as the oracle: integral
images over 64 MiB bands, a float32 gray image, the thumbnail read in full) on
small stores, for source {intensity, mask} x random grids (hypothesis: patch,
stride, edge, threshold) x pixel dtypes {uint8, uint16, int16, int32,
float32} x 1/3/4 channels x intensity {"otsu", a number} x darker/brighter,
with tiny bands (every band boundary inside a patch); 3-D stores; tiled,
contiguous and gzip-chunked layouts; thumbnails sparse enough to be read row
by row and in blocks whose row sampling restarts (the previous sample, kept).
Then what the speed rests on, counted instead of timed: an image is read
once (its thumbnail read along with it when it is the whole image), rows no
patch covers are not read, and the progress bar.
"""

import os
import tempfile
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lazypatch import write_store
from lazypatch.errors import ParameterTypeError
from lazypatch.index import PatchIndex
from lazypatch.stats import foreground
from lazypatch.stats.foreground import foreground_filter, otsu_threshold, patch_fractions
from lazypatch.testing import brute_force_patches, patch_oracle


# -- the previous implementation (lazypatch 4e651aa), reading through the public API ---------
def _previous_axis_origins(length, patch, stride, edge):
    one = PatchIndex([(length,)], patch, stride, edge) if length >= patch or edge != "drop" else None
    if one is None:
        return np.zeros(0, np.int64)
    return one.locate(np.arange(len(one)))[1][:, 0]


def _previous_fractions(shape, patch_size, stride, edge, read_band, band_bytes):
    nd = len(shape)
    origins = [_previous_axis_origins(shape[a], patch_size[a], stride[a], edge) for a in range(nd)]
    if any(len(o) == 0 for o in origins):
        return np.zeros(0)
    row = int(np.prod(shape[1:])) * 8
    rows_per_band = max(patch_size[0] * 2, band_bytes // max(row, 1))
    result = np.zeros(tuple(len(o) for o in origins))
    volume = float(np.prod(patch_size))
    first = 0
    while first < len(origins[0]):
        band_start = int(origins[0][first])
        last = first
        while last + 1 < len(origins[0]) and origins[0][last + 1] + patch_size[0] - band_start <= rows_per_band:
            last += 1
        band_stop = min(int(origins[0][last]) + patch_size[0], shape[0])
        values = np.asarray(read_band(band_start, band_stop), dtype=np.int64)
        integral = np.zeros(tuple(s + 1 for s in values.shape), np.int64)
        integral[tuple(slice(1, None) for _ in range(nd))] = values
        for axis in range(nd):
            np.cumsum(integral, axis=axis, out=integral)
        lo = [np.clip(origins[0][first:last + 1] - band_start, 0, values.shape[0])]
        hi = [np.clip(origins[0][first:last + 1] + patch_size[0] - band_start, 0, values.shape[0])]
        for axis in range(1, nd):
            lo.append(np.clip(origins[axis], 0, shape[axis]))
            hi.append(np.clip(origins[axis] + patch_size[axis], 0, shape[axis]))
        total = 0
        for corner in range(1 << nd):
            index, sign = [], 1
            for axis in range(nd):
                take_hi = (corner >> axis) & 1
                points = hi[axis] if take_hi else lo[axis]
                sign *= 1 if take_hi else -1
                view = [1] * nd
                view[axis] = len(points)
                index.append(points.reshape(view))
            total = total + sign * integral[tuple(index)]
        result[first:last + 1] = total / volume
        first = last + 1
    return result.reshape(-1)


def _previous_intensity_reader(store, image_id, threshold, darker, band_bytes):
    shape = tuple(int(v) for v in store.shapes[image_id])

    def gray(r0, r1):
        region = store.read_region(image_id, (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:])
        return region.astype(np.float32).mean(axis=-1)

    if threshold == "otsu":
        step = max(1, int((np.prod(shape) / 1e6) ** (1 / len(shape))))
        rows = max(1, (band_bytes // 4) // max(int(np.prod(shape[1:])), 1))
        every = (slice(None, None, step),) * len(shape)
        sample = [gray(r0, min(r0 + rows, shape[0]))[every].ravel() for r0 in range(0, shape[0], rows)]
        threshold = otsu_threshold(np.concatenate(sample))

    def read(r0, r1):
        values = gray(r0, r1)
        return values < threshold if darker else values > threshold
    return read, threshold


def previous_keep(store, patch_size, stride=None, edge="drop", *, threshold=0.5, source="mask",
                  classes=None, intensity="otsu", darker=True, band_bytes=64 << 20):
    """(keep bitmap, per-image thresholds) as the previous foreground_filter computed them."""
    index = PatchIndex(store.shapes, patch_size, stride, edge)
    keep = np.zeros(len(index), bool)
    thresholds = []
    for image_id in range(len(store)):
        if index.counts[image_id] == 0:
            thresholds.append(np.nan)
            continue
        shape = tuple(int(v) for v in store.shapes[image_id])
        if source == "mask":
            wanted = None if classes is None else np.asarray(classes)

            def read(r0, r1, image_id=image_id, shape=shape, wanted=wanted):
                mask = store.read_mask_region(image_id, (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:])
                return np.isin(mask, wanted) if wanted is not None else mask != 0
            thresholds.append(np.nan)
        else:
            read, used = _previous_intensity_reader(store, image_id, intensity, darker, band_bytes)
            thresholds.append(used)
        fractions = _previous_fractions(shape, index.patch_size, index.stride, edge, read, band_bytes)
        span = index.image_range(image_id)
        keep[span.start:span.stop] = fractions >= threshold
    return keep, np.asarray(thresholds, dtype=np.float64)


def new_keep(store, *args, **options):
    path = foreground_filter(store, *args, progress=False, **options)
    with h5py.File(path, "r") as f:
        count = int(f.attrs["patches"])
        return np.unpackbits(f["keep"][()])[:count].astype(bool), f["intensity_threshold"][()]


def assert_same(store, *args, band_bytes=64 << 20, **options):
    keep, thresholds = new_keep(store, *args, **options)
    options.pop("path", None)
    expected_keep, expected_thresholds = previous_keep(store, *args, band_bytes=band_bytes, **options)
    np.testing.assert_array_equal(thresholds, expected_thresholds)
    np.testing.assert_array_equal(keep, expected_keep)
    return keep


def tissue_images(rng, shapes, dtype, channels):
    """Images with a dark blob on a bright background, noisy, and a few extreme pixels."""
    images = []
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    low, high = (info.min, info.max) if info is not None and info.bits <= 16 else (-1000, 3000)
    for shape in shapes:
        y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[-2:]], indexing="ij")
        blob = (y - rng.uniform(-0.5, 0.5)) ** 2 + (x - rng.uniform(-0.5, 0.5)) ** 2 < rng.uniform(0.1, 0.5)
        base = np.where(blob, 0.25, 0.85) + rng.normal(0, 0.1, blob.shape)
        base = np.broadcast_to(base, shape) if len(shape) == 3 else base
        pixel = low + np.clip(base, 0, 1)[..., None] * (high - low) * rng.uniform(0.8, 1.0, channels)
        image = pixel.astype(dtype)
        image.reshape(-1)[rng.integers(0, image.size, 5)] = high if info is not None else np.float32(7e3)
        images.append(image)
    return images


DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32]


@given(st.integers(0, 2**32 - 1),
       st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), min_size=1, max_size=3),
       st.sampled_from(DTYPES), st.sampled_from([1, 3, 4]),
       st.tuples(st.integers(1, 12), st.integers(1, 12)), st.tuples(st.integers(1, 14), st.integers(1, 14)),
       st.sampled_from(["drop", "shift", "pad"]), st.floats(0, 1), st.booleans(),
       st.sampled_from(["otsu", 0.4, 100, 2e4]), st.sampled_from([1, 512, 4096, 64 << 20]))
def test_intensity_filter_equals_the_previous_one(seed, shapes, dtype, channels, patch, stride, edge,
                                                   threshold, darker, intensity, band_bytes):
    assume(brute_force_patches(shapes, patch, stride, edge))  # a grid with patches
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder, \
            write_store(os.path.join(folder, "s.h5"), tissue_images(rng, shapes, dtype, channels),
                        progress=False) as store, \
            mock.patch.object(foreground, "_BAND_BYTES", band_bytes):
        assert_same(store, patch, stride, edge, threshold=threshold, source="intensity",
                    intensity=intensity, darker=darker, path=os.path.join(folder, "f.h5"))


@given(st.integers(0, 2**32 - 1),
       st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), min_size=1, max_size=3),
       st.tuples(st.integers(1, 12), st.integers(1, 12)), st.tuples(st.integers(1, 14), st.integers(1, 14)),
       st.sampled_from(["drop", "shift", "pad"]), st.floats(0, 1),
       st.sampled_from([None, [2], [1, 3]]), st.sampled_from([1, 300, 64 << 20]))
def test_mask_filter_equals_the_previous_one(seed, shapes, patch, stride, edge, threshold, classes, band_bytes):
    assume(brute_force_patches(shapes, patch, stride, edge))
    rng = np.random.default_rng(seed)
    images = [np.zeros(s, np.uint8) for s in shapes]
    masks = [((rng.random(s) < rng.random()) * rng.integers(1, 4, s)).astype(np.uint8) for s in shapes]
    with tempfile.TemporaryDirectory() as folder, \
            write_store(os.path.join(folder, "s.h5"), images, masks=masks, progress=False) as store, \
            mock.patch.object(foreground, "_BAND_BYTES", band_bytes):
        assert_same(store, patch, stride, edge, threshold=threshold, source="mask", classes=classes,
                    path=os.path.join(folder, "f.h5"))


@pytest.mark.parametrize("layout,options", [("tiled", {"tile": 8}), ("contiguous", {}),
                                            ("chunked", {"tile": 16, "compression": "gzip"})])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_3d_stores_and_layouts(make_store, rng, layout, options, dtype):
    shapes = [(12, 40, 33), (5, 9, 70)]
    images = tissue_images(rng, shapes, dtype, 2)
    masks = [(image[..., 0] > image[..., 0].mean()).astype(np.uint8) for image in images]
    store = make_store(images, masks=masks, spatial_ndim=3, layout=layout, **options)
    for grid in [((4, 8, 8), None, "drop"), ((3, 16, 10), (2, 5, 7), "shift"), ((5, 7, 9), (6, 9, 4), "pad")]:
        with mock.patch.object(foreground, "_BAND_BYTES", 2000):
            assert_same(store, *grid, source="intensity", threshold=0.3)
            assert_same(store, *grid, source="intensity", threshold=0.3, intensity=0.5 if dtype == np.float32 else 90,
                        darker=False)
            assert_same(store, *grid, source="mask", threshold=0.6)


@pytest.mark.parametrize("block", [16 << 20, 2000 * 7])
@pytest.mark.parametrize("row_reads,kept_bytes", [(4, 64 << 20), (4, 0), (2, 64 << 20)])
def test_a_sampled_thumbnail_is_the_previous_sample(make_store, rng, row_reads, kept_bytes, block):
    """2000 x 2000 pixels: a thumbnail of every 2nd pixel, taken from the kept channel sums,
    read in bands or row by row (NOTE [reading the thumbnail]); in blocks of 7 rows the
    sampled rows restart at each block (0, 2, 4, 6, 7, 9, ...)."""
    image = tissue_images(rng, [(2000, 2000)], np.uint8, 3)[0]
    store = make_store([image], tile=64)
    with mock.patch.object(foreground, "_THUMBNAIL_ROW_READS", row_reads), \
            mock.patch.object(foreground, "_KEPT_BYTES", kept_bytes), \
            mock.patch.object(foreground, "_THUMBNAIL_BLOCK", block):
        assert foreground._thumbnail_rows((2000, 2000))[0] == 2
        keep = assert_same(store, 256, 200, "shift", source="intensity", threshold=0.4, band_bytes=4 * block)
    assert 0 < keep.sum() < len(keep)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_gray_rule_equals_the_float32_mean(rng, dtype, channels):
    """Integer channel sums against the cut (NOTE [gray from sums]) classify every pixel as the
    float32 mean of its channels against the threshold did, at thresholds on and next to the
    gray values themselves."""
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        pixels = rng.integers(info.min, info.max, (20000, channels), dtype=dtype, endpoint=True)
        levels = rng.integers(info.min, info.max, 300, dtype=dtype, endpoint=True)
        extremes = np.array([info.min, info.max, 0, 1], dtype)
    else:
        pixels = rng.normal(0, 1e3, (20000, channels)).astype(dtype)
        levels, extremes = pixels[:300, 0], np.array([0, 1, -1e30, 1e30], dtype)
    pixels = np.concatenate([pixels, np.repeat(np.r_[levels, extremes][:, None], channels, axis=1)])
    gray = pixels.astype(np.float32).mean(axis=-1)  # the previous rule, channels last
    picked = rng.choice(gray, 100)
    thresholds = [float(v) for v in picked] + [float(np.nextafter(v, np.float32(np.inf))) for v in picked[:30]]
    thresholds += [float(np.nextafter(np.float64(v), np.inf)) for v in picked[:30]]  # between two float32
    thresholds += [int(v) for v in picked[:30]] + [np.float64(picked[0]), 0, -1, 0.5, 1e9, -1e9,
                                                   float("inf"), float("-inf"), float("nan")]
    for darker in (True, False):
        intensity = foreground._Intensity(np.dtype(dtype), channels, darker)
        values = intensity.values(np.ascontiguousarray(pixels.T))  # channels first, as read
        for threshold in thresholds:
            expected = gray < threshold if darker else gray > threshold
            np.testing.assert_array_equal(intensity.rule(threshold)(values), expected,
                                          err_msg=f"threshold {threshold!r}, darker={darker}")
        np.testing.assert_array_equal(intensity.gray(values), gray)


class CountingStore:
    """Counts the image rows read, through every reading method of a store."""

    def __init__(self, store):
        self.rows, self.depth = 0, 0
        for name in ("read_region", "read_regions", "read_mask_region", "read_box_unchecked",
                     "read_batch_unchecked"):
            setattr(store, name, self.wrap(getattr(store, name), name))

    def wrap(self, method, name):
        def counted(*args, **kwargs):
            if not self.depth:  # read_region calls read_box_unchecked: count the outer call
                batch = len(args[0]) if name in ("read_regions", "read_batch_unchecked") else 1
                self.rows += batch * args[2][0]
            self.depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self.depth -= 1
        return counted


def test_an_image_is_read_once(make_store, rng):
    """Otsu's thumbnail of an image of up to 16 Mi pixels is dense (every 1st to 3rd pixel):
    taken from the image's values, kept from the one read (NOTE [reading the thumbnail])."""
    images = tissue_images(rng, [(300, 200), (130, 150)], np.uint8, 3) + [np.zeros((3000, 3000, 3), np.uint8)]
    store = make_store(images, masks=[np.ones(i.shape[:2], np.uint8) for i in images])
    assert [foreground._thumbnail_rows(tuple(s))[0] for s in store.shapes] == [1, 1, 3]
    counter = CountingStore(store)
    foreground_filter(store, 10, progress=False, source="intensity")
    assert counter.rows == 300 + 130 + 3000
    counter.rows = 0
    foreground_filter(store, 10, progress=False, source="mask")
    assert counter.rows == 300 + 130 + 3000


def test_rows_no_patch_covers_are_not_read(make_store, rng):
    store = make_store(tissue_images(rng, [(100, 50)], np.uint8, 3),
                       masks=[np.ones((100, 50), np.uint8)])
    counter = CountingStore(store)
    foreground_filter(store, 10, 30, progress=False, source="mask")  # rows 0-9, 30-39, 60-69, 90-99
    assert counter.rows == 40
    counter.rows = 0
    foreground_filter(store, 10, 30, progress=False, source="intensity", intensity=120)
    assert counter.rows == 40


def test_a_large_image_reads_a_sparse_thumbnail_first(make_store, rng):
    """4000 x 4000 pixels (step 4): a thumbnail of 1000 rows, read row by row, then the image."""
    image = np.full((4000, 4000), 200, np.uint8)
    image[1000:2500, 500:3000] = 40
    store = make_store([image], tile=64)
    counter = CountingStore(store)
    keep = new_keep(store, 500, source="intensity")[0]
    assert counter.rows == 4000 + 1000
    np.testing.assert_array_equal(keep.reshape(8, 8), previous_keep(store, 500, source="intensity")[0].reshape(8, 8))


def test_progress_bar(make_store, rng, capsys):
    store = make_store(tissue_images(rng, [(64, 64)], np.uint8, 3))
    foreground_filter(store, 16, source="intensity", progress=True)
    assert "lazypatch foreground" in capsys.readouterr().err
    foreground_filter(store, 16, source="intensity", progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(ParameterTypeError, match=r"progress must be True, False or None, got 'yes'"):
        foreground_filter(store, 16, source="intensity", progress="yes")


def test_patch_fractions_skips_uncovered_rows_and_checks_bands():
    mask = np.arange(40 * 9).reshape(40, 9) % 3 == 0
    asked = []

    def read(r0, r1):
        asked.append((r0, r1))
        return mask[r0:r1]
    fractions = patch_fractions(mask.shape, (4, 3), (10, 3), "drop", read)
    expected = [patch_oracle(mask.astype(np.int64), o, (4, 3)).sum() / 12
                for _, o in brute_force_patches([mask.shape], (4, 3), (10, 3), "drop")]
    np.testing.assert_array_equal(fractions, expected)
    assert asked == [(0, 4), (10, 14), (20, 24), (30, 34)]
    with pytest.raises(ValueError, match=r"read_band\(0, 4\) must return shape \(4, 9\), got \(4, 8\)"):
        patch_fractions(mask.shape, (4, 3), (10, 3), "drop", lambda r0, r1: mask[r0:r1, :8])
