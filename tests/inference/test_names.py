"""PatchAggregator and image names: ``image_ids=`` and ``result()`` by name, names in the out file.

Matrix: image_ids by name, by number and mixed; result() by name; the out
file's ``image_ids`` / ``names`` / ``name_offsets`` datasets and each
prediction's ``image_id`` and ``name`` attributes, with a store and with
shapes only (names are the numbers); the errors (unknown or ambiguous name,
names without a store, a bare string), each naming the parameter and value.
"""

import h5py
import numpy as np
import pytest

from lazypatch import PatchAggregator
from lazypatch.errors import ParameterError, ParameterTypeError
from lazypatch.store import format as fmt


@pytest.fixture
def store(make_store, rng):
    images = [rng.random((20 + 4 * k, 24)).astype(np.float32) for k in range(3)]
    return make_store(images, names=["slide-a", "slide-b", "slide-c"])


def feed(agg, value=1.0):
    ids, origins = agg.index.locate(np.arange(len(agg.index)))
    agg.add(np.full((len(ids), 1) + agg.patch_size, value, np.float32), agg.image_ids[ids], origins)


def test_image_ids_by_name_and_the_out_file(store, tmp_path):
    out = tmp_path / "preds.h5"
    with PatchAggregator(store, 4, image_ids=["slide-c", 0], out=out) as agg:
        assert agg.image_ids.tolist() == [2, 0]
        feed(agg)
    with h5py.File(out, "r") as f:
        assert f["image_ids"][()].tolist() == [2, 0]
        assert fmt.read_texts(f, fmt.D_NAMES, str(out)) == ["slide-c", "slide-a"]
        assert sorted(f["predictions"]) == ["0", "2"]
        for key, name in (("2", "slide-c"), ("0", "slide-a")):
            attrs = f["predictions"][key].attrs
            assert fmt.text_attribute(attrs["name"]) == name and int(attrs["image_id"]) == int(key)
            assert np.all(f["predictions"][key][()] == 1)


def test_names_and_numbers_mixed_and_result_by_name(store):
    agg = PatchAggregator(store, 4, image_ids=[1, "slide-a"])
    assert agg.image_ids.tolist() == [1, 0]
    feed(agg, 2.0)
    assert np.all(agg.result("slide-b").numpy() == 2) and np.all(agg.result(1).numpy() == 2)
    with pytest.raises(ParameterError, match="image id 2 is not one of this aggregator's images"):
        agg.result("slide-c")


def test_shapes_only_names_are_numbers(tmp_path):
    out = tmp_path / "preds.h5"
    with PatchAggregator([(8, 8), (8, 12)], 4, out=out, image_ids=[1]) as agg:
        feed(agg)
    with h5py.File(out, "r") as f:
        assert fmt.read_texts(f, fmt.D_NAMES, str(out)) == ["1"]
        assert fmt.text_attribute(f["predictions"]["1"].attrs["name"]) == "1"


@pytest.mark.parametrize("make, error, message", [
    pytest.param(lambda s: PatchAggregator(s, 4, image_ids=["slide-x"]), ParameterError,
                 r"image_ids: no image is named 'slide-x' in .*; did you mean \['slide-", id="unknown name"),
    pytest.param(lambda s: PatchAggregator(s.shapes, 4, image_ids=["slide-a", 1]), ParameterError,
                 r"image_ids: names \('slide-a', \.\.\.\) need a store; this aggregator was given shapes",
                 id="names without a store"),
    pytest.param(lambda s: PatchAggregator(s, 4, image_ids="slide-a"), ParameterTypeError,
                 r"image_ids must be a sequence of image numbers or names, got 'slide-a'", id="a bare name"),
    pytest.param(lambda s: PatchAggregator(s, 4).result("nope"), ParameterError,
                 r"image_id: no image is named 'nope'", id="result of an unknown name"),
    pytest.param(lambda s: PatchAggregator(s.shapes, 4).result("slide-a"), ParameterError,
                 r"image_id 'slide-a': a name needs a store; this aggregator was given shapes",
                 id="result by name without a store"),
    pytest.param(lambda s: PatchAggregator(s, 4).result(1.5), ParameterTypeError,
                 r"image_id must be an integer or an image name, got 1.5", id="result of a float"),
])
def test_errors(store, make, error, message):
    with pytest.raises(error, match=message):
        make(store)


def test_an_ambiguous_name(make_store):
    store = make_store([np.zeros((8, 8), np.uint8)] * 2, names=["same", "same"])
    with pytest.raises(ParameterError, match="image_ids: 2 images are named 'same'"):
        PatchAggregator(store, 4, image_ids=["same"])
