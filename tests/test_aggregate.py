"""PatchAggregator: stitching predictions back.

Matrix: mode {average, gaussian, hann, crop} x edge {drop, shift, pad} x
random shapes, patch and stride (hypothesis), 2-D and 3-D; the identity
prediction returns the image; zero stays zero; uncovered pixels are NaN with
a warning; duplicates count once; shuffled input; a filtered subset of
patches; the out-of-core HDF5 file (atomic, bounded memory); from_dataset;
bad input.
"""

import os
import pathlib
import warnings

import h5py
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from lazypatch import PatchAggregator, PatchDataset, PatchIndex
from lazypatch.testing import brute_force_patches, patch_oracle, proc_status

MODES = ["average", "gaussian", "hann", "crop"]


def feed(agg, images, order=None, batch=7):
    index = agg.index
    flat = np.arange(len(index)) if order is None else order
    for k in range(0, len(flat), batch):
        ids, origins = index.locate(flat[k:k + batch])
        patches = np.stack([np.moveaxis(patch_oracle(images[i], o, agg.patch_size), -1, 0)
                            for i, o in zip(ids, origins.tolist())])
        agg.add(patches, ids, origins)


@given(
    st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=3),
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.sampled_from(["drop", "shift", "pad"]),
    st.sampled_from(MODES),
)
def test_identity_round_trip(shapes, patch, stride, edge, mode):
    assume(brute_force_patches(shapes, patch, stride, edge))  # some patch fits somewhere
    rng = np.random.default_rng(0)
    images = [rng.random((2,) + tuple(s)).astype(np.float32) for s in shapes]
    channels_last = [np.moveaxis(im, 0, -1) for im in images]
    agg = PatchAggregator(shapes, patch, stride=stride, edge=edge, mode=mode)
    index = agg.index
    for k in range(0, len(index), 5):
        ids, origins = index.locate(np.arange(k, min(k + 5, len(index))))
        patches = np.stack([np.moveaxis(patch_oracle(channels_last[i], o, patch), -1, 0)
                            for i, o in zip(ids, origins.tolist())])
        agg.add(torch.from_numpy(patches), torch.from_numpy(ids), torch.from_numpy(origins))
    for i, image in enumerate(images):
        covered = np.zeros(image.shape[1:], bool)
        for j, o in brute_force_patches([shapes[i]], patch, stride, edge):
            covered[o[0]:o[0] + patch[0], o[1]:o[1] + patch[1]] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = agg.result(i).numpy()
        assert result.shape == image.shape and result.dtype == np.float32
        assert np.allclose(result[:, covered], image[:, covered], rtol=1e-5, atol=1e-6)
        assert np.isnan(result[:, ~covered]).all()


@pytest.mark.parametrize("mode", MODES)
def test_3d_zero_and_constant(mode):
    shapes = [(7, 9, 11)]
    agg = PatchAggregator(shapes, (4, 4, 4), stride=(3, 2, 3), mode=mode)
    ids, origins = agg.index.locate(np.arange(len(agg.index)))
    agg.add(np.full((len(ids), 1, 4, 4, 4), 2.5, np.float32), ids, origins)
    assert np.allclose(agg.result(0).numpy(), 2.5)
    zero = PatchAggregator(shapes, (4, 4, 4), stride=(3, 2, 3), mode=mode)
    zero.add(np.zeros((len(ids), 3, 4, 4, 4)), ids, origins)
    assert (zero.result(0).numpy() == 0).all()


def test_uncovered_pixels_warn_with_their_count():
    agg = PatchAggregator([(10, 10)], 4, stride=4, edge="drop")
    ids, origins = agg.index.locate(np.arange(len(agg.index)))
    agg.add(np.ones((len(ids), 1, 4, 4)), ids, origins)
    with pytest.warns(RuntimeWarning, match="36 pixels of image 0 are covered by no patch"):
        result = agg.result(0).numpy()
    assert np.isnan(result).sum() == 36


def test_shuffled_duplicates_and_subsets(rng):
    shapes = [(20, 17), (9, 31)]
    images = [rng.random((1,) + s).astype(np.float32) for s in shapes]
    last = [np.moveaxis(im, 0, -1) for im in images]
    agg = PatchAggregator(shapes, 6, stride=4, mode="gaussian")
    order = rng.permutation(len(agg.index))
    order = np.concatenate([order, order[:5]])  # a distributed sampler's wrap repeats
    feed(agg, last, order)
    for i in range(2):
        assert np.allclose(agg.result(i).numpy(), images[i], atol=1e-6)
    # only some patches (a filtered dataset): still the exact weighted mean where covered
    part = PatchAggregator(shapes, 6, stride=4, mode="hann")
    feed(part, last, np.arange(0, len(part.index), 2))
    with pytest.warns(RuntimeWarning):
        result = part.result(0).numpy()
    covered = ~np.isnan(result)
    assert np.allclose(result[covered], images[0][covered], atol=1e-6)


def test_out_of_core_file_is_atomic_and_memory_bounded(tmp_path, rng):
    shapes = [(512, 512)] * 40  # 40 images x 2 channels x 1 MiB of float32 each
    out = tmp_path / "preds.h5"
    before = proc_status().get("RssAnon", 0.0)
    peak = before
    with PatchAggregator(shapes, 64, stride=48, out=out) as agg:
        index = agg.index
        ones = np.ones((64, 2, 64, 64), np.float32)
        for k in range(0, len(index), 64):
            ids, origins = index.locate(np.arange(k, min(k + 64, len(index))))
            agg.add(ones[: len(ids)] * ids[:, None, None, None], ids, origins)
            assert agg.in_flight <= 2
            peak = max(peak, proc_status().get("RssAnon", 0.0))
        assert not out.exists()  # published only when closed
    if before:
        assert peak - before < 2 * 2 + 64  # two images in flight (MiB) + 64 MiB
    assert sorted(os.listdir(tmp_path)) == ["preds.h5"]
    with h5py.File(out, "r") as f:
        assert len(f["predictions"]) == 40
        assert np.allclose(f["predictions"]["7"][()], 7.0)
    failed = tmp_path / "failed.h5"
    with pytest.raises(RuntimeError):
        with PatchAggregator(shapes, 64, out=failed):
            raise RuntimeError("model crashed")
    assert sorted(os.listdir(tmp_path)) == ["preds.h5"]


def test_from_dataset_and_subsets(make_store, rng):
    images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    ds = PatchDataset(make_store(images), 16, stride=12, edge="shift", image_ids=[2, 0])
    agg = PatchAggregator.from_dataset(ds, mode="crop")
    for k in range(0, len(ds), 8):
        batch = ds.read_batch(range(k, min(k + 8, len(ds))))
        agg.add(batch["image"].float(), batch["image_id"], batch["origin"])
    for i in (2, 0):
        assert np.allclose(agg.result(i).numpy(), np.moveaxis(images[i], -1, 0))


def test_bad_input():
    agg = PatchAggregator([(10, 10)], 4)
    with pytest.raises(ValueError, match="mode must be one of"):
        PatchAggregator([(10, 10)], 4, mode="max")
    with pytest.raises(ValueError, match=r"predictions must have shape \(B, C, \*\(4, 4\)\)"):
        agg.add(np.zeros((2, 1, 3, 4)), [0, 0], [(0, 0), (0, 4)])
    with pytest.raises(ValueError, match="not on the grid"):
        agg.add(np.zeros((1, 1, 4, 4)), [0], [(1, 0)])
    agg.add(np.zeros((1, 2, 4, 4)), [0], [(0, 0)])
    with pytest.raises(ValueError, match="keep 2 channels"):
        agg.add(np.zeros((1, 3, 4, 4)), [0], [(0, 4)])
    with pytest.raises(IndexError, match="image id 3 is out of range"):
        agg.add(np.zeros((1, 2, 4, 4)), [3], [(0, 0)])
    with pytest.warns(RuntimeWarning):
        agg.result(0)
    with pytest.raises(ValueError, match="already finished"):
        agg.add(np.zeros((1, 2, 4, 4)), [0], [(0, 4)])


def test_out_file_is_never_replaced_unasked(tmp_path, make_store):
    store = make_store([np.zeros((10, 10), np.uint8)])
    before = pathlib.Path(store.path).read_bytes()
    with pytest.raises(ValueError, match="out is the store the predictions are made on"):
        PatchAggregator(store, 5, out=store.path, overwrite=True)
    with pytest.raises(ValueError, match="out is the store the predictions are made on"):
        PatchAggregator(store.path, 5, out=store.path)
    assert pathlib.Path(store.path).read_bytes() == before
    out = tmp_path / "preds.h5"
    out.write_bytes(b"earlier results")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        PatchAggregator([(10, 10)], 5, out=out)
    with pytest.raises(TypeError, match="overwrite must be True or False, got 1"):
        PatchAggregator([(10, 10)], 5, out=out, overwrite=1)
    assert out.read_bytes() == b"earlier results"
    with PatchAggregator([(10, 10)], 5, out=out, overwrite=True) as agg:
        ids, origins = agg.index.locate(np.arange(len(agg.index)))
        agg.add(np.ones((len(ids), 1, 5, 5)), ids, origins)
    with h5py.File(out, "r") as f:
        assert np.all(f["predictions"]["0"][()] == 1)


def test_closing_an_incomplete_out_file_warns(tmp_path):
    out = tmp_path / "preds.h5"
    agg = PatchAggregator([(10, 10), (10, 10)], 5, out=out)
    agg.add(np.ones((1, 1, 5, 5)), [0], [(0, 0)])
    with pytest.warns(RuntimeWarning, match=r"75 pixels of 1 images are covered by no patch and are NaN "
                                            r"\(image 0: 75\); 1 images received no patch") as caught:
        agg.close()
    assert caught[0].filename == __file__  # the warning names the caller's line
    with pytest.warns(RuntimeWarning, match="1 images received no patch") as caught:
        with PatchAggregator([(10, 10), (10, 10)], 5, out=tmp_path / "other.h5") as other:
            other.add(np.ones((4, 1, 5, 5)), [0] * 4, [(0, 0), (0, 5), (5, 0), (5, 5)])
    assert caught[0].filename == __file__
    with h5py.File(out, "r") as f:
        assert np.isnan(f["predictions"]["0"][()]).sum() == 75
        assert list(f["predictions"]) == ["0"]


def test_an_unclosed_out_file_leaves_nothing(tmp_path):
    agg = PatchAggregator([(10, 10)], 5, out=tmp_path / "preds.h5")
    agg.add(np.ones((1, 1, 5, 5)), [0], [(0, 0)])
    assert len(os.listdir(tmp_path)) == 1  # the temporary file
    del agg
    assert os.listdir(tmp_path) == []


def test_a_forked_child_leaves_the_parents_out_file_alone(tmp_path):
    agg = PatchAggregator([(10, 10)], 5, out=tmp_path / "preds.h5")
    pid = os.fork()
    if pid == 0:  # a child that exits normally runs the finalizers it inherited
        try:
            del agg
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    ids, origins = agg.index.locate(np.arange(len(agg.index)))
    agg.add(np.ones((len(ids), 1, 5, 5)), ids, origins)
    agg.close()
    assert os.listdir(tmp_path) == ["preds.h5"]


def test_errors_name_the_store_image_ids_of_a_subset():
    agg = PatchAggregator([(10, 10), (20, 20), (30, 30)], 5, image_ids=[2, 1])
    with pytest.raises(ValueError, match=r"origin \(1, 1\) of image 2 is not on the grid"):
        agg.add(np.ones((1, 1, 5, 5)), [2], [[1, 1]])
    with pytest.raises(ValueError, match="image id 0 is not one of this aggregator's images"):
        agg.add(np.ones((1, 1, 5, 5)), [0], [[0, 0]])


def test_index_is_reused_not_rebuilt():
    index = PatchIndex([(12, 12)], 4, stride=2)
    agg = PatchAggregator([(12, 12)], 4, stride=2)
    assert len(agg.index) == len(index)
