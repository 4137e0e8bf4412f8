"""``merge_predictions``: the predictions files of several ranks joined into one.

Matrix:

- ranks {1, 2, 3} x grid {drop with gaussian blending, shift with hann}, each
  rank an aggregator over ``PatchSampler(by_image=True)``'s images, in one
  process: the merge equals a single aggregator's file (image ids, names, file
  attributes, every prediction's values and attributes, ``geometry`` from a
  store with spacings included); rank aggregators over the whole grid (their
  files list every image); inputs in any order give one file;
- attributes survive whatever their form: extra attributes on predictions
  and files, a ``geometry`` that is not JSON, a prediction without image id;
- refused inputs, one table (exception, message regex), none writing a file:
  an image in two files (both named), one file twice, ``out`` among the
  inputs, different grids, different stores, files that are not predictions
  files (text, a store, no marker, a group for a prediction, integer values,
  truncated), missing files and folders, bad parameters;
- ``out`` exists: refused, or replaced with ``overwrite=True``; a failure
  while writing leaves neither ``out`` nor a temporary file.
"""

import json
import os
import re

import h5py
import numpy as np
import pytest
import torch

import lazypatch
from lazypatch import PatchAggregator, PatchDataset, PatchSampler, merge_predictions
from lazypatch.errors import ParameterError, ParameterTypeError, StoreExistsError, StoreFormatError

SHAPES = [(40, 52), (24, 24), (70, 30), (33, 47), (16, 64)]


@pytest.fixture
def store(make_store):
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 255, s + (3,), dtype=np.uint8) for s in SHAPES]
    geometry = [{"spacing": (0.5 * (k + 1), 0.25), "unit": "um"} for k in range(len(SHAPES))]
    return make_store(images, geometry=geometry)


def predict(batch):
    """A deterministic "model", elementwise so that a patch's values do not depend on its batch."""
    image = batch["image"].float()
    return torch.cat([torch.tanh((image[:, :1] - 128) / 64), image[:, 1:] / 255], dim=1)


def aggregate(dataset, out, numbers, *, image_ids=None, mode="gaussian"):
    grid = dict(stride=dataset.stride, edge=dataset.edge, filter=dataset.filter)
    with PatchAggregator(dataset.store, dataset.patch_size, mode=mode, image_ids=image_ids, out=out,
                         **grid) as aggregator:
        for first in range(0, len(numbers), 7):
            batch = dataset.read_batch(numbers[first:first + 7])
            aggregator.add(predict(batch), batch["image_id"], batch["origin"])
    return str(out)


def run_ranks(dataset, folder, num_replicas, *, whole_grid=False, mode="gaussian"):
    paths = []
    for rank in range(num_replicas):
        sampler = PatchSampler(dataset, shuffle=False, by_image=True, num_replicas=num_replicas, rank=rank)
        paths.append(aggregate(dataset, folder / f"rank{rank}.h5", np.asarray(list(sampler)), mode=mode,
                               image_ids=None if whole_grid else sampler.image_ids))
    return paths


def contents(path):
    """Everything a predictions file holds, as plain values."""
    with h5py.File(path, "r") as f:
        attrs = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        tables = {k: f[k][()].tolist() for k in ("image_ids", "names", "name_offsets")}
        predictions = {k: (d[()], d.dtype.str, {a: np.asarray(v).tolist() for a, v in d.attrs.items()})
                       for k, d in f["predictions"].items()}
    return attrs, tables, predictions


def assert_same(merged, single):
    attrs, tables, predictions = contents(merged)
    attrs_single, tables_single, predictions_single = contents(single)
    assert attrs == attrs_single and tables == tables_single
    assert sorted(predictions) == sorted(predictions_single)
    for key, (values, dtype, extra) in predictions.items():
        other = predictions_single[key]
        assert np.array_equal(values, other[0], equal_nan=True) and dtype == other[1], key
        assert extra == other[2], key


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
@pytest.mark.parametrize("grid, mode", [(dict(stride=12, edge="shift"), "gaussian"), (dict(stride=10, edge="pad"), "hann")])
def test_merge_equals_a_single_process(store, tmp_path, num_replicas, grid, mode):
    dataset = PatchDataset(store.path, 16, **grid)
    single = aggregate(dataset, tmp_path / "single.h5", np.arange(len(dataset)), mode=mode)
    paths = run_ranks(dataset, tmp_path, num_replicas, mode=mode)
    with h5py.File(paths[0], "r") as f:  # each rank's file holds its own images only
        assert len(f["predictions"]) < len(SHAPES) or num_replicas == 1
    merged = merge_predictions(paths, tmp_path / "merged.h5")
    assert merged == str(tmp_path / "merged.h5")
    assert_same(merged, single)
    assert_same(merge_predictions(paths[::-1], tmp_path / "reversed.h5"), single)
    with h5py.File(merged, "r") as f:
        geometry = json.loads(f["predictions"]["2"].attrs["geometry"])
        assert geometry["spacing"] == [1.5, 0.25] and geometry["unit"] == "um"
    # the predictions' reader sees the merged file as the single one
    read = [(p.name, p.array, p.geometry) for p in lazypatch.inference.read_predictions(merged)]
    expected = [(p.name, p.array, p.geometry) for p in lazypatch.inference.read_predictions(single)]
    assert [(n, g) for n, _, g in read] == [(n, g) for n, _, g in expected] and len(read) == len(SHAPES)
    assert all(np.array_equal(a, b) for (_, a, _), (_, b, _) in zip(read, expected))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_ranks_over_the_whole_grid(store, tmp_path):
    """Rank aggregators built on the whole grid list every image: the merge keeps one of each."""
    dataset = PatchDataset(store.path, 16, stride=12, edge="shift")
    single = aggregate(dataset, tmp_path / "single.h5", np.arange(len(dataset)))
    with pytest.warns(RuntimeWarning, match="images received no patch and are not in the file"):
        paths = run_ranks(dataset, tmp_path, 2, whole_grid=True)
    assert_same(merge_predictions(paths, tmp_path / "merged.h5"), single)


def write_rank(path, image_ids, names, predictions, **attrs):
    """A predictions file by hand: ``predictions`` maps a key to (array, {attribute: value})."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"lazypatch_predictions": 1, "patch_size": [4, 4], "stride": [4, 4], "edge": "shift",
                        "mode": "average", **attrs})
        f["image_ids"] = np.asarray(image_ids, np.int64)
        blob = "".join(names).encode()
        f["names"] = np.frombuffer(blob, np.uint8)
        f["name_offsets"] = np.concatenate([[0], np.cumsum([len(n.encode()) for n in names])]).astype(np.int64)
        group = f.create_group("predictions")
        for key, (values, attributes) in predictions.items():
            group[key] = values
            group[key].attrs.update(attributes)
    return str(path)


def test_every_attribute_is_kept_whatever_its_form(tmp_path):
    ones = np.ones((1, 4, 4), np.float32)
    a = write_rank(tmp_path / "a.h5", [3], ["c.png"], {
        "3": (ones * 3, {"image_id": 3, "name": np.bytes_(b"c.png"), "geometry": "not json {",
                         "calibration": np.arange(3.0), "note": "kept"})}, source="run 1")
    b = write_rank(tmp_path / "b.h5", [0, 1], ["a.png", "b.png"], {
        "1": (ones, {"image_id": 1, "name": "b.png", "geometry": json.dumps({"crs": "EPSG:32633"})}),
        "extra": (ones * 7, {"name": "an extra"})})  # no image id: after the images, by name
    merged = merge_predictions([a, b], tmp_path / "m.h5")
    with h5py.File(merged, "r") as f:
        assert list(f.attrs["patch_size"]) == [4, 4] and f.attrs["source"] == "run 1"
        assert f["image_ids"][()].tolist() == [0, 1, 3]
        assert bytes(f["names"][()]).decode() == "a.pngb.pngc.png"
        three = f["predictions"]["3"]
        assert three.attrs["geometry"] == "not json {" and three.attrs["note"] == "kept"
        assert three.attrs["calibration"].tolist() == [0.0, 1.0, 2.0] and three.attrs["name"] == b"c.png"
        assert json.loads(f["predictions"]["1"].attrs["geometry"]) == {"crs": "EPSG:32633"}
        assert np.array_equal(f["predictions"]["extra"][()], ones * 7)
        assert np.array_equal(f["predictions"]["3"][()], ones * 3)
        assert list(f["predictions"]) == ["1", "3", "extra"]


def test_an_image_in_two_files_names_both(store, tmp_path):
    dataset = PatchDataset(store.path, 16, stride=12, edge="shift")
    a = aggregate(dataset, tmp_path / "a.h5", np.arange(len(dataset)), image_ids=None)
    sampler = PatchSampler(dataset, shuffle=False, by_image=True, num_replicas=2, rank=1)
    b = aggregate(dataset, tmp_path / "b.h5", np.asarray(list(sampler)), image_ids=sampler.image_ids)
    first = int(sampler.image_ids[0])
    name = store.names[first]
    with pytest.raises(ParameterError, match=(
            rf"paths: image {re.escape(repr(name))} \(prediction '{first}'\) is in both {re.escape(repr(a))} and "
            rf"{re.escape(repr(b))}; each image must "
            r"come from one rank \(PatchSampler\(..., by_image=True\)")):
        merge_predictions([a, b], tmp_path / "m.h5")
    assert not os.path.exists(tmp_path / "m.h5")


def open_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def bad_inputs(tmp_path):
    ones = np.ones((1, 4, 4), np.float32)
    good = write_rank(tmp_path / "good.h5", [0], ["a"], {"0": (ones, {"image_id": 0, "name": "a"})})
    other = write_rank(tmp_path / "other.h5", [1], ["b"], {"1": (ones, {"image_id": 1, "name": "b"})})
    (tmp_path / "text.h5").write_text("not HDF5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(open_bytes(other)[:1500])
    files = {
        "good": good, "other": other, "text": str(tmp_path / "text.h5"), "plain": str(tmp_path / "plain.h5"),
        "truncated": str(truncated),
        "mode": write_rank(tmp_path / "mode.h5", [1], ["b"], {"1": (ones, {"image_id": 1})}, mode="gaussian"),
        "stride": write_rank(tmp_path / "stride.h5", [1], ["b"], {"1": (ones, {"image_id": 1})}, stride=[2, 2]),
        "renamed": write_rank(tmp_path / "renamed.h5", [0, 1], ["z", "b"], {"1": (ones, {"image_id": 1})}),
        "group": write_rank(tmp_path / "group.h5", [1], ["b"], {}),
        "integers": write_rank(tmp_path / "integers.h5", [1], ["b"], {"1": (np.ones((1, 4, 4), np.int32), {})}),
        "flat": write_rank(tmp_path / "flat.h5", [1], ["b"], {"1": (np.ones((4, 4), np.float32), {})}),
        "badid": write_rank(tmp_path / "badid.h5", [1], ["b"], {"1": (ones, {"image_id": 1.5})}),
        "tables": write_rank(tmp_path / "tables.h5", [1, 2], ["b"], {"1": (ones, {"image_id": 1})}),
    }
    with h5py.File(files["group"], "a") as f:
        f["predictions"].create_group("1")
    return files


@pytest.mark.parametrize("call, exception, message", [
    (lambda f, out: merge_predictions([], out), ParameterError, r"paths is empty: give the predictions files to merge"),
    (lambda f, out: merge_predictions(f["good"], out), ParameterTypeError, r"paths must be a sequence of predictions files, got '.*good.h5'"),
    (lambda f, out: merge_predictions([f["good"], f["good"]], out), ParameterError, r"paths lists one file twice: '.*good.h5' and '.*good.h5'"),
    (lambda f, out: merge_predictions([f["good"]], out, overwrite=1), ParameterTypeError, r"overwrite must be True or False, got 1"),
    (lambda f, out: merge_predictions([f["good"]], 3), ParameterTypeError, r"out must be a str or os.PathLike, got 3"),
    (lambda f, out: merge_predictions([f["good"]], f["good"], overwrite=True), ParameterError, r"out '.*good.h5' is one of the files to merge"),
    (lambda f, out: merge_predictions([f["good"]], f["other"]), StoreExistsError, r"out '.*other.h5' exists; pass overwrite=True to replace it"),
    (lambda f, out: merge_predictions([f["good"]], os.path.join(out, "no", "m.h5")), FileNotFoundError, r"the folder of out does not exist: '.*no'"),
    (lambda f, out: merge_predictions([f["good"]], os.path.dirname(out)), IsADirectoryError, r"out is a directory"),
    (lambda f, out: merge_predictions([f["good"], out + ".missing"], out), FileNotFoundError, r"no such predictions file"),
    (lambda f, out: merge_predictions([f["good"], f["text"]], out), StoreFormatError, r"'.*text.h5' is not a predictions file of PatchAggregator\(out=...\) \(not an HDF5 file\)"),
    (lambda f, out: merge_predictions([f["good"], f["plain"]], out), StoreFormatError, r"'.*plain.h5' is not a predictions file of PatchAggregator\(out=...\) \(no 'lazypatch_predictions' attribute or 'predictions' group\)"),
    (lambda f, out: merge_predictions([f["good"], f["truncated"]], out), StoreFormatError, r"'.*truncated.h5' is damaged"),
    (lambda f, out: merge_predictions([f["good"], f["mode"]], out), ParameterError, r"paths: the predictions were made on different grids: '.*good.h5' has mode='average', '.*mode.h5' has mode='gaussian'; merge the outputs of one inference"),
    (lambda f, out: merge_predictions([f["good"], f["stride"]], out), ParameterError, r"different grids: '.*good.h5' has stride=\[4, 4\], '.*stride.h5' has stride=\[2, 2\]"),
    (lambda f, out: merge_predictions([f["good"], f["renamed"]], out), ParameterError, r"paths: image 0 is 'a' in '.*good.h5' and 'z' in '.*renamed.h5': the files were not made on one store"),
    (lambda f, out: merge_predictions([f["group"]], out), StoreFormatError, r"'.*group.h5': prediction '1' is a group, not a dataset"),
    (lambda f, out: merge_predictions([f["integers"]], out), StoreFormatError, r"'.*integers.h5': prediction '1' is not a float dataset of shape \(channels, \*spatial\) \(int32 \(1, 4, 4\)\)"),
    (lambda f, out: merge_predictions([f["flat"]], out), StoreFormatError, r"prediction '1' is not a float dataset of shape \(channels, \*spatial\) \(float32 \(4, 4\)\)"),
    (lambda f, out: merge_predictions([f["badid"]], out), StoreFormatError, r"'.*badid.h5': prediction '1' has image_id 1.5, not an integer"),
    (lambda f, out: merge_predictions([f["tables"]], out), StoreFormatError, r"'.*tables.h5': 1 names for 2 image_ids"),
])
def test_refused_inputs(tmp_path, call, exception, message):
    files = bad_inputs(tmp_path)
    before = sorted(os.listdir(tmp_path))
    out = str(tmp_path / "merged.h5")
    with pytest.raises(exception, match=message):
        call(files, out)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a temporary file


def test_a_store_is_not_a_predictions_file(store, tmp_path):
    with pytest.raises(StoreFormatError, match=r"is not a predictions file .*no 'lazypatch_predictions' attribute"):
        merge_predictions([store.path], tmp_path / "m.h5")


def test_overwrite_and_failures_leave_nothing(tmp_path, monkeypatch):
    ones = np.ones((1, 4, 4), np.float32)
    a = write_rank(tmp_path / "a.h5", [0], ["a"], {"0": (ones, {"image_id": 0, "name": "a"})})
    b = write_rank(tmp_path / "b.h5", [1], ["b"], {"1": (ones * 2, {"image_id": 1, "name": "b"})})
    out = tmp_path / "m.h5"
    out.write_text("an older merge")
    assert merge_predictions([a, b], out, overwrite=True) == str(out)
    with h5py.File(out, "r") as f:
        assert sorted(f["predictions"]) == ["0", "1"]
    before = sorted(os.listdir(tmp_path))
    from lazypatch.store import format as fmt

    flush = fmt.flush
    calls = []

    def failing(h5_object, what):  # the disk fills while the second image is copied
        calls.append(what)
        if what == "'1'":
            raise OSError(28, "No space left on device")
        flush(h5_object, what)

    monkeypatch.setattr(fmt, "flush", failing)
    with pytest.raises(OSError, match="No space left"):
        merge_predictions([a, b], tmp_path / "new.h5")
    assert "'0'" in calls and sorted(os.listdir(tmp_path)) == before
    with pytest.raises(OSError, match="No space left"):
        merge_predictions([a, b], out, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == before
    with h5py.File(out, "r") as f:  # the previous file is untouched
        assert sorted(f["predictions"]) == ["0", "1"]
