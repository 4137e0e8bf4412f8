"""PatchAggregator's grid: from_dataset takes the dataset's, and the default edge cannot mismatch silently.

Matrix: from_dataset on drop / shift / pad datasets, with image_ids (names)
and with a foreground filter (images complete when their kept patches have
arrived: finished in flight, memory bounded; a dropped patch is an error);
grid options given to from_dataset are refused; a drop dataset fed to an
aggregator built by hand with its default edge ("shift", NOTE [aggregator
grid]) warns at close and at result(), naming the fix; a shift dataset fed
to a drop aggregator is an error naming the origin.
"""

import re
import warnings

import h5py
import numpy as np
import pytest

from lazypatch import PatchAggregator, PatchDataset, foreground_filter
from lazypatch.errors import LazypatchWarning, ParameterError


@pytest.fixture
def images(rng):
    return [rng.integers(0, 255, (37 + 5 * k, 45, 3), dtype=np.uint8) for k in range(3)]


def feed(agg, dataset, watch=None):
    for k in range(0, len(dataset), 5):
        batch = dataset.read_batch(range(k, min(k + 5, len(dataset))))
        agg.add(batch["image"].float(), batch["image_id"], batch["origin"])
        if watch is not None:
            watch.append(agg.in_flight)


@pytest.mark.parametrize("edge", ["drop", "shift", "pad"])
def test_from_dataset_takes_the_whole_grid(make_store, images, edge):
    store = make_store(images, names=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LazypatchWarning)  # images smaller than the patch (drop)
        dataset = PatchDataset(store, (16, 12), stride=(10, 9), edge=edge, image_ids=["c", "a"])
    agg = PatchAggregator.from_dataset(dataset)
    assert (agg.patch_size, agg.stride, agg.edge) == (dataset.patch_size, dataset.stride, edge)
    assert agg.image_ids.tolist() == [2, 0] and len(agg.index) == len(dataset)
    in_flight = []
    feed(agg, dataset, in_flight)
    assert max(in_flight) <= 2 and agg.in_flight == 0  # every image completed as its last patch came
    for image_id in (2, 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # drop: uncovered borders are NaN
            result = agg.result(image_id).numpy()
        covered = ~np.isnan(result[0])
        assert covered.all() == (edge != "drop")
        assert np.allclose(result[:, covered], np.moveaxis(images[image_id], -1, 0)[:, covered])


@pytest.mark.parametrize("option", [{"edge": "shift"}, {"stride": 8}, {"patch_size": 8}, {"image_ids": [0]},
                                    {"filter": "f.h5"}])
def test_from_dataset_refuses_another_grid(make_store, images, option):
    dataset = PatchDataset(make_store(images), 16, stride=12)
    (key, value), = option.items()
    with pytest.raises(ParameterError, match=r"from_dataset takes the dataset's grid \(patch_size, stride, "
                                             rf"edge, image_ids, filter\); got {key}={re.escape(repr(value))} for a "
                                             r"dataset with patch_size=\(16, 16\), stride=\(12, 12\), edge='drop'"):
        PatchAggregator.from_dataset(dataset, **option)


def test_a_filtered_dataset_completes_its_images(make_store, tmp_path):
    images = []
    for k in range(3):
        image = np.full((64, 96, 3), 230, np.uint8)
        image[:32, : 32 * (k + 1)] = 40  # tissue in the top rows
        images.append(image)
    store = make_store(images)
    dataset = PatchDataset(store, 16, filter=foreground_filter(store, 16, source="intensity", progress=False))
    out = tmp_path / "preds.h5"
    in_flight = []
    with pytest.warns(RuntimeWarning, match="covered by no patch"):  # the dropped patches' pixels
        with PatchAggregator.from_dataset(dataset, out=out) as agg:
            assert agg.filter == dataset.filter
            feed(agg, dataset, in_flight)
            assert agg.in_flight == 0  # finished as their last kept patch arrived
    assert max(in_flight) <= 1
    with h5py.File(out, "r") as f:
        for k in range(3):
            result = f["predictions"][str(k)][()]
            assert np.array_equal(result[:, :32, : 32 * (k + 1)], np.full((3, 32, 32 * (k + 1)), 40.0))
            assert np.isnan(result[:, 32:]).all()
    agg = PatchAggregator.from_dataset(dataset)
    with pytest.raises(ParameterError, match=r"the patch at origin \(48, 0\) of image 0 is not kept by the filter"):
        agg.add(np.zeros((1, 3, 16, 16)), [0], [(48, 0)])


def test_a_filter_needs_the_store(make_store):
    store = make_store([np.zeros((32, 32), np.uint8)])
    with pytest.raises(ParameterError, match="filter='f.h5' needs the store it was computed for; this "
                                             "aggregator was given shapes"):
        PatchAggregator(store.shapes, 16, filter="f.h5")


def test_a_drop_dataset_on_the_default_edge_warns(make_store, images, tmp_path):
    """PatchDataset defaults to edge='drop', PatchAggregator to 'shift' (NOTE [aggregator grid])."""
    store = make_store(images)
    dataset = PatchDataset(store, 16)
    agg = PatchAggregator(store, 16)
    assert (dataset.edge, agg.edge) == ("drop", "shift")
    feed(agg, dataset)
    assert agg.in_flight == 3  # never complete: the border patches of 'shift' never come
    with pytest.warns(LazypatchWarning, match=r"3 images \(image 0 first\) received every patch of the grid with "
                                              r"edge='drop' and none of the border patches this aggregator's "
                                              r"edge='shift' adds.*PatchAggregator.from_dataset\(dataset\), or "
                                              r"pass edge='drop'") as caught:
        agg.close()
    assert caught[0].filename == __file__
    other = PatchAggregator(store, 16, out=tmp_path / "preds.h5")
    feed(other, dataset)
    with pytest.warns(LazypatchWarning, match=r"1 images \(image 1 first\)") as caught, \
            pytest.warns(RuntimeWarning, match="covered by no patch"):
        other.result(1)
    assert caught[0].filename == __file__
    with pytest.warns(RuntimeWarning):  # (the file's NaN borders; the mismatch was told already)
        other.close()


def test_no_warning_for_a_matching_or_partial_feed(make_store, images):
    store = make_store(images)
    dataset = PatchDataset(store, 16, edge="shift")
    agg = PatchAggregator(store, 16)
    feed(agg, dataset)
    assert agg.in_flight == 0
    part = PatchAggregator(store, 16)  # half of a drop grid's patches: not the drop pattern
    ids, origins = PatchDataset(store, 16).index.locate(np.arange(0, len(PatchDataset(store, 16)), 2))
    part.add(np.zeros((len(ids), 1, 16, 16)), ids, origins)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LazypatchWarning)
        part.close()


def test_a_shift_dataset_on_a_drop_aggregator_is_an_error(make_store, images):
    store = make_store(images)
    dataset = PatchDataset(store, 16, edge="shift")
    agg = PatchAggregator(store, 16, edge="drop")
    with pytest.raises(ParameterError, match=r"origin \(0, 29\) of image 0 is not on the grid"):
        feed(agg, dataset)
