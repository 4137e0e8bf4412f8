"""PatchIndex against a brute-force oracle (plain nested loops).

Matrix: 2-D and 3-D x edge in {drop, shift, pad} x random per-axis patch and
stride x random image shapes (hypothesis), with pinned examples for
zero-patch images first, middle and last, and a 70,000-pixel axis. Checked:
locate == brute force; flat_index inverts locate; counts/offsets/len; scalar ==
vectorized; IndexError exactly outside [-len, len); subset == filtered brute
force; memory O(images).
"""

import pickle

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from lazypatch import FilteredIndex, PatchIndex, PatchIndexError
from lazypatch.index import ImageSearch
from lazypatch.testing import axis_origins, brute_force_patches, grid_strategy, shapes_strategy
from lazypatch.testing.internals import (image_search, image_search_with_max_steps, index_tables,
                                         max_bucket_steps)


def check_against_brute_force(shapes, patch, stride, edge):
    expected = brute_force_patches(shapes, patch, stride, edge)
    if not expected:
        with pytest.raises(ValueError, match="fits in none"):
            PatchIndex(shapes, patch, stride, edge)
        return None
    index = PatchIndex(shapes, patch, stride, edge)
    assert len(index) == len(expected)
    counts = np.bincount([i for i, _ in expected], minlength=len(shapes))
    assert index.counts.tolist() == counts.tolist()
    assert index.offsets.tolist() == np.cumsum(counts).tolist()
    flat = np.arange(len(index))
    image_ids, origins = index.locate(flat)
    assert image_ids.dtype == np.int64 and origins.dtype == np.int64
    assert origins.shape == (len(index), len(shapes[0]))
    assert [(int(i), tuple(o)) for i, o in zip(image_ids, origins.tolist())] == expected
    assert np.array_equal(index.flat_index(image_ids, origins), flat)
    # negative indices wrap like a list
    neg_ids, neg_origins = index.locate(flat - len(index))
    assert np.array_equal(neg_ids, image_ids) and np.array_equal(neg_origins, origins)
    return index


@given(shapes_strategy(ndim=2), grid_strategy(ndim=2))
@example(shapes=[(3, 3), (20, 20)], grid=((5, 5), (2, 2), "drop"))  # zero-patch image first
@example(shapes=[(20, 20), (3, 3), (9, 30)], grid=((5, 5), (4, 3), "drop"))  # middle
@example(shapes=[(20, 20), (3, 3)], grid=((5, 5), (5, 5), "drop"))  # last
@example(shapes=[(1, 70_000), (2, 3)], grid=((1, 7), (1, 3), "shift"))  # a 70,000 px axis
@example(shapes=[(10, 11)], grid=((4, 4), (3, 3), "shift"))
@example(shapes=[(3, 2)], grid=((4, 4), (3, 3), "pad"))
def test_locate_matches_brute_force_2d(shapes, grid):
    patch, stride, edge = grid
    check_against_brute_force(shapes, patch, stride, edge)


@given(shapes_strategy(ndim=3, max_images=4, max_side=14), grid_strategy(ndim=3, max_patch=6))
@example(shapes=[(2, 2, 2), (8, 9, 10), (1, 9, 9)], grid=((3, 3, 3), (2, 3, 4), "drop"))
def test_locate_matches_brute_force_3d(shapes, grid):
    patch, stride, edge = grid
    check_against_brute_force(shapes, patch, stride, edge)


@given(shapes_strategy(ndim=2), grid_strategy(ndim=2), st.data())
def test_scalar_equals_vectorized(shapes, grid, data):
    patch, stride, edge = grid
    assume(brute_force_patches(shapes, patch, stride, edge))  # an index with patches
    index = PatchIndex(shapes, patch, stride, edge)
    n = len(index)
    flat = data.draw(st.integers(-n, n - 1))
    image_id, origin = index.locate(flat)
    assert isinstance(image_id, int) and isinstance(origin, tuple)
    assert all(isinstance(v, int) for v in origin)
    ids, origins = index.locate(np.array([flat]))
    assert (image_id, origin) == (int(ids[0]), tuple(origins[0].tolist()))
    assert index.locate(np.int32(flat) if -2**31 <= flat < 2**31 else flat) == (image_id, origin)
    assert index.flat_index(image_id, origin) == flat % n


@given(shapes_strategy(ndim=2), grid_strategy(ndim=2), st.integers(-10, 10))
def test_index_error_exactly_outside(shapes, grid, offset):
    patch, stride, edge = grid
    assume(brute_force_patches(shapes, patch, stride, edge))  # an index with patches
    index = PatchIndex(shapes, patch, stride, edge)
    n = len(index)
    for flat in (n + offset, -n - 1 - offset):
        inside = -n <= flat < n
        if inside:
            index.locate(flat)
            index.locate(np.array([flat, 0]))
        else:
            with pytest.raises(IndexError, match=f"patch index {flat} is out of range for {n} patches"):
                index.locate(flat)
            with pytest.raises(PatchIndexError):
                index.locate(np.array([0, flat]))


@given(shapes_strategy(ndim=2, max_images=8), grid_strategy(ndim=2), st.data())
def test_subset_matches_filtered_brute_force(shapes, grid, data):
    patch, stride, edge = grid
    assume(brute_force_patches(shapes, patch, stride, edge))  # an index with patches
    index = PatchIndex(shapes, patch, stride, edge)
    chosen = data.draw(st.lists(st.integers(0, len(shapes) - 1), max_size=len(shapes), unique=True))
    sub = index.subset(chosen)
    expected = []
    for new_id, old_id in enumerate(chosen):
        expected += [(new_id, o) for i, o in brute_force_patches([shapes[old_id]], patch, stride, edge)]
    assert len(sub) == len(expected)
    if expected:
        ids, origins = sub.locate(np.arange(len(sub)))
        assert [(int(i), tuple(o)) for i, o in zip(ids, origins.tolist())] == expected
    assert sub.shapes.tolist() == [list(shapes[i]) for i in chosen]


# origins (0, 3, 6) along y and (0, 3, 6, 7) along x: 7 is the shifted last one
OFF_THE_GRID = PatchIndex([(10, 11)], patch_size=4, stride=3, edge="shift")


def test_flat_index_of_the_shifted_last_origin():
    assert OFF_THE_GRID.flat_index(0, (0, 7)) == 3


@pytest.mark.parametrize("image_ids, origins, kind, pattern", [
    pytest.param(0, (0, 1), ValueError, "not on the grid", id="x between grid points"),
    pytest.param(0, (0, 9), ValueError, "not on the grid", id="x past the shifted last origin"),
    pytest.param(0, (-3, 0), ValueError, "not on the grid", id="negative y"),
    pytest.param(0, (9, 0), ValueError, "not on the grid", id="y past the last origin"),
    pytest.param(1, (0, 0), IndexError, "image id 1 is out of range", id="image id out of range"),
    pytest.param([0, 0], [0, 0], ValueError, "origins must have shape", id="one origin for two images"),
])
def test_flat_index_rejects_origins_off_the_grid(image_ids, origins, kind, pattern):
    with pytest.raises(kind, match=pattern):
        OFF_THE_GRID.flat_index(image_ids, origins)


def test_empty_and_zero_patch_images():
    index = PatchIndex([(2, 2), (8, 8), (3, 100), (8, 8)], patch_size=4)
    assert index.counts.tolist() == [0, 4, 0, 4]
    assert index.locate(4) == (3, (0, 0))
    assert len(index.subset([0, 2])) == 0
    ids, origins = index.locate(np.zeros((0,), dtype=np.int64))
    assert ids.shape == (0,) and origins.shape == (0, 2)
    ids, origins = index.locate(np.array([[0, 7], [3, 4]]))
    assert ids.shape == (2, 2) and origins.shape == (2, 2, 2)


def test_wide_axis_is_64_bit():
    shapes = [(4, 70_000), (4, 200_000)]
    index = PatchIndex(shapes, patch_size=(4, 64), stride=(4, 1))
    last = len(index) - 1
    assert index.locate(last) == (1, (0, 200_000 - 64))
    assert index.locate(70_000 - 64) == (0, (0, 70_000 - 64))
    assert index.flat_index(1, (0, 199_000)) == (70_000 - 63) + 199_000


def test_memory_is_o_images_and_pickles():
    shapes = np.random.default_rng(0).integers(100, 5000, size=(100_000, 2))
    index = PatchIndex(shapes, patch_size=64, stride=32)
    owned = sum(array.nbytes for array in index_tables(index).values()) + image_search(index).nbytes
    assert owned <= 28 * len(shapes) + 16
    copy = pickle.loads(pickle.dumps(index))
    probe = np.arange(0, len(index), 9973)
    assert all(np.array_equal(a, b) for a, b in zip(copy.locate(probe), index.locate(probe)))
    assert copy.locate(5) == index.locate(5)


def test_axis_origins_oracle_matches_the_specification():
    # DESIGN.md section 3 formulas, independently of the loops in lazypatch.testing
    for length in range(1, 30):
        for patch in range(1, 12):
            for stride in range(1, 12):
                drop = axis_origins(length, patch, stride, "drop")
                assert len(drop) == ((length - patch) // stride + 1 if length >= patch else 0)
                pad = axis_origins(length, patch, stride, "pad")
                assert len(pad) == max(0, -(-(length - patch) // stride)) + 1
                shift = axis_origins(length, patch, stride, "shift")
                assert len(set(shift)) == len(shift) and shift[-1] == max(length - patch, 0)
                if stride <= patch:  # no gaps between patches: every pixel is covered
                    covered = set()
                    for o in shift:
                        covered.update(range(o, o + patch))
                    assert covered >= set(range(length))


@given(st.integers(1, 3000), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.3, 0.9]))
def test_bucket_search_equals_searchsorted(images, seed, empty):
    """NOTE [bucket search]: images of any sizes, many without patches or none at all."""
    rng = np.random.default_rng(seed)
    shapes = rng.integers(1, rng.integers(5, 200), size=(images, 2))
    shapes[rng.random(images) < empty] = 2  # images without patches
    if not (shapes >= 4).all(axis=1).any():
        shapes[0] = 4
    index = PatchIndex(shapes, patch_size=4, stride=3, edge="drop")
    flat = np.concatenate([rng.integers(0, len(index), 500), [0, len(index) - 1]])
    flat = np.concatenate([flat, index.offsets[index.offsets < len(index)]])  # every boundary
    flat = np.concatenate([flat, np.maximum(index.offsets[index.offsets < len(index)] - 1, 0)])
    expected = np.searchsorted(index.offsets, flat, side="right")
    assert np.array_equal(image_search(index)(flat), expected)
    # the plain search (used when bucket spans are too wide) agrees, and so do all step counts
    search = ImageSearch(index.bounds)
    assert search.table is None or search.steps <= max_bucket_steps()
    plain = image_search_with_max_steps(index.bounds, -1)
    assert plain.table is None and np.array_equal(plain(flat), expected)
    wide = image_search_with_max_steps(index.bounds, 64)
    assert wide.table is not None and np.array_equal(wide(flat), expected)


def test_bucket_search_at_a_million_images():
    shapes = np.random.default_rng(3).integers(200, 2000, size=(1_000_000, 2))
    shapes[::1000] = 10  # a few images without patches
    index = PatchIndex(shapes, patch_size=64, stride=32)
    search = image_search(index)
    assert search.table is not None and search.steps <= 4
    assert search.nbytes <= 4 * len(shapes) + 8
    flat = np.random.default_rng(4).integers(0, len(index), 100_000)
    assert np.array_equal(search(flat), np.searchsorted(index.offsets, flat, side="right"))


@pytest.mark.parametrize("edge", ["drop", "shift", "pad"])
def test_uint16_tables_at_the_limit(edge):
    """NOTE [compact tables]: shapes up to 65,535 are kept as uint16, one more as int32;
    origins, shifted last patches and flat_index stay exact on both sides."""
    for width in (65_535, 65_536):
        shapes = [(5, width), (3, 100), (70, 2)]
        index = PatchIndex(shapes, patch_size=(2, 64), stride=(2, 1000), edge=edge)
        assert index_tables(index)["shapes"].dtype == (np.uint16 if width < 65_536 else np.int32)
        pairs = brute_force_patches(shapes, (2, 64), (2, 1000), edge)
        ids, origins = index.locate(np.arange(len(index)))
        assert [(int(i), tuple(o)) for i, o in zip(ids, origins.tolist())] == pairs
        assert index.flat_index(ids, origins).tolist() == list(range(len(index)))
        assert all(index.locate(k) == pairs[k] for k in (0, len(index) - 1))


# -- arrays describing an index: computed once, read-only ------------------------------------
def test_index_arrays_are_read_only_and_computed_once():
    index = PatchIndex([(40, 50), (7, 9), (64, 64)], patch_size=8, stride=4)
    for name in ("shapes", "grid_shape", "counts", "offsets", "bounds"):
        first, again = getattr(index, name), getattr(index, name)
        assert not first.flags.writeable, name
        assert np.shares_memory(first, again), name
    kept = FilteredIndex(index, np.packbits(np.arange(len(index)) % 3 == 0))
    for name in ("counts", "offsets", "bounds"):
        assert not getattr(kept, name).flags.writeable, name
        assert np.shares_memory(getattr(kept, name), getattr(kept, name)), name
    assert index.counts.tolist() == np.diff(index.bounds).tolist()


def test_both_indexes_implement_the_index_protocol():
    from lazypatch.index import Index

    index = PatchIndex([(40, 50), (7, 9)], patch_size=8)
    kept = FilteredIndex(index, np.packbits(np.ones(len(index), bool)))
    members = [m for m in vars(Index) if not m.startswith("_") or m == "__len__"]
    for candidate in (index, kept):
        assert isinstance(candidate, Index)
        assert [m for m in members if not hasattr(candidate, m)] == []
    assert kept.locate_scalar(3) == index.locate_scalar(3)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: np.array(8), id="numpy 0-d array"),
    pytest.param(lambda: __import__("torch").tensor(8), id="torch 0-d tensor"),
    pytest.param(lambda: (np.array(8), __import__("torch").tensor(8)), id="tuple of 0-d values"),
])
def test_zero_dimensional_integer_arrays_are_accepted_as_sizes(make):
    index = PatchIndex([(40, 50)], patch_size=make())
    assert index.patch_size == (8, 8)


@pytest.mark.parametrize("value", [
    pytest.param(np.array(8.0), id="float 0-d array"),
    pytest.param(np.array(True), id="bool 0-d array"),
])
def test_zero_dimensional_non_integers_are_refused(value):
    with pytest.raises(TypeError, match="patch_size must be"):
        PatchIndex([(40, 50)], patch_size=value)
