"""Foreground filtering: the FilteredIndex against brute force, and the filters themselves.

Matrix: FilteredIndex over random grids and random keep-bitmaps (hypothesis;
bitmaps longer than one 512-bit block) for len / locate / flat_index /
subset / out-of-range; foreground fractions from masks and from intensity
(Otsu) against numpy; PatchDataset(filter=) with DataLoader workers; the
pickled dataset stays small; a sidecar refuses another store's content and
another grid.
"""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lazypatch import PatchDataset, PatchIndex, write_store
from lazypatch.errors import StoreFormatError
from lazypatch.filtering import foreground_filter, otsu_threshold, patch_fractions
from lazypatch.index import FilteredIndex
from lazypatch.testing import brute_force_patches, grid_strategy, patch_oracle, shapes_strategy


@given(shapes_strategy(ndim=2, max_images=6, max_side=60), grid_strategy(ndim=2, max_patch=6),
       st.floats(0.0, 1.0), st.integers(0, 2**32 - 1), st.data())
def test_filtered_index_matches_brute_force(shapes, grid, density, seed, data):
    patch, stride, edge = grid
    patches = brute_force_patches(shapes, patch, stride, edge)
    assume(patches)  # a base index with patches
    base = PatchIndex(shapes, patch, stride, edge)
    keep = np.random.default_rng(seed).random(len(base)) < density
    index = FilteredIndex(base, np.packbits(keep))
    expected = [p for p, k in zip(patches, keep) if k]
    assert len(index) == len(expected)
    assert index.counts.tolist() == np.bincount([i for i, _ in expected], minlength=len(shapes)).tolist()
    if expected:
        ids, origins = index.locate(np.arange(len(index)))
        assert [(int(i), tuple(o)) for i, o in zip(ids, origins.tolist())] == expected
        assert np.array_equal(index.flat_index(ids, origins), np.arange(len(index)))
        k = data.draw(st.integers(-len(index), len(index) - 1))
        assert index.locate(k) == expected[k]
    with pytest.raises(IndexError):
        index.locate(len(index))
    dropped = [p for p, k in zip(patches, keep) if not k]
    if dropped:
        with pytest.raises(ValueError, match="not kept"):
            index.flat_index(dropped[0][0], dropped[0][1])
    chosen = data.draw(st.lists(st.integers(0, len(shapes) - 1), max_size=len(shapes), unique=True))
    sub = index.subset(chosen)
    sub_expected = [(n, o) for n, i in enumerate(chosen) for j, o in expected if j == i]
    assert len(sub) == len(sub_expected)
    if sub_expected:
        ids, origins = sub.locate(np.arange(len(sub)))
        assert [(int(i), tuple(o)) for i, o in zip(ids, origins.tolist())] == sub_expected


def test_patch_fractions_equal_numpy(rng):
    mask = rng.random((37, 53)) < 0.3
    for patch, stride, edge in [((8, 8), (5, 7), "drop"), ((10, 6), (10, 6), "pad"), ((64, 4), (3, 3), "shift")]:
        fractions = patch_fractions(mask.shape, patch, stride, edge, lambda r0, r1: mask[r0:r1])
        expected = [patch_oracle(mask.astype(np.int64), o, patch).sum() / np.prod(patch)
                    for _, o in brute_force_patches([mask.shape], patch, stride, edge)]
        assert np.allclose(fractions, expected)


def test_otsu_splits_two_populations(rng):
    values = np.r_[rng.normal(40, 5, 1000), rng.normal(200, 5, 3000)]
    assert 60 < otsu_threshold(values) < 180


@pytest.fixture
def tissue(tmp_path, rng):
    images, masks = [], []
    for k in range(4):
        image = np.full((96, 128, 3), 230, np.uint8)  # a bright slide
        image[16:80, 32:32 + 16 * (k + 1)] = 60  # a dark piece of tissue
        mask = (image[..., 0] < 100).astype(np.uint8)
        images.append(image)
        masks.append(mask)
    return write_store(tmp_path / "slides.h5", images, masks=masks, progress=False), images, masks


@pytest.mark.system
@pytest.mark.parametrize("source", ["mask", "intensity"])
def test_foreground_filter_and_dataset(tissue, source):
    store, images, masks = tissue
    path = foreground_filter(store, 16, threshold=0.5, source=source)
    ds = PatchDataset(store, 16, filter=path)
    expected = [(i, o) for i, o in brute_force_patches(store.shapes.tolist(), 16, 16, "drop")
                if masks[i][o[0]:o[0] + 16, o[1]:o[1] + 16].mean() >= 0.5]
    assert len(ds) == len(expected)
    got = [(ds[k]["image_id"], tuple(ds[k]["origin"].tolist())) for k in range(len(ds))]
    assert got == expected
    seen = []
    for batch in DataLoader(ds, batch_size=5, shuffle=True, num_workers=2):
        seen += batch["index"].tolist()
        assert (batch["image"] == 60).all()  # only tissue
    assert sorted(seen) == list(range(len(ds)))
    assert len(pickle.dumps(ds)) < 64 * 1024
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3]["image"], ds[3]["image"])
    sub = PatchDataset(store, 16, filter=path, image_ids=[3, 1])
    assert [sub[k]["image_id"] for k in range(len(sub))] == sorted(
        [3] * sum(i == 3 for i, _ in expected) + [1] * sum(i == 1 for i, _ in expected), key=lambda v: v != 3)


def test_filter_refuses_other_content_and_grids(tissue, tmp_path):
    store, images, masks = tissue
    path = foreground_filter(store, 16, threshold=0.5)
    with pytest.raises(StoreFormatError, match="patch_size"):
        PatchDataset(store, 32, filter=path)
    images[0] = images[0].copy()
    images[0][0, 0] = 1
    other = write_store(store.path, images, masks=masks, overwrite=True, progress=False)
    with pytest.raises(StoreFormatError, match="other content"):
        PatchDataset(other, 16, filter=path)


def test_many_images_pickle_small(tmp_path):
    images = np.zeros((3000, 16, 16), np.uint8)
    masks = np.ones((3000, 16, 16), np.uint8)
    store = write_store(tmp_path / "many.h5", images, masks=masks, progress=False)
    path = foreground_filter(store, 8, threshold=1.0)
    ds = PatchDataset(store, 8, filter=path)
    assert len(ds) == 3000 * 4
    assert len(pickle.dumps(ds)) < 64 * 1024


def test_a_filter_keeping_nothing_of_the_chosen_images_is_an_empty_dataset(tmp_path):
    masks = [np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8)]
    store = write_store(tmp_path / "s.h5", [np.zeros((8, 8), np.uint8)] * 2, masks=masks)
    kept = foreground_filter(store, 4, edge="shift", threshold=0.5)
    assert len(PatchDataset(store, 4, edge="shift", filter=kept, image_ids=[0])) == 0
    assert len(PatchDataset(store, 4, edge="shift", filter=kept, image_ids=[1, 0])) == 4
    mixed = write_store(tmp_path / "m.h5", [np.zeros((8, 8), np.uint8), np.zeros((16, 16), np.uint8)])
    with pytest.raises(ValueError, match=r"patch_size \(9, 9\) fits in none of the 1 selected images "
                                         r"with edge='drop'; use edge='shift' or 'pad'"):
        PatchDataset(mixed, 9, image_ids=[0])
