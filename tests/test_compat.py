"""Every name of lazypatch 0.1 keeps working where it was.

``fixtures/public_names_0.1.json`` lists ``lazypatch.__all__`` and every public
attribute of every public module of the last flat-layout commit (generated
from that commit by importing each module and listing ``vars()``, leaving out
names starting with ``_``, third-party modules and ``annotations``).

Matrix: every old (module, name) resolves; moved names are the new objects; a
fresh interpreter imports from moved modules; a store written by 0.1 (format
1.0) opens, reads and verifies; new stores record the minor version.
"""

import importlib
import json
import os
import subprocess
import sys

import pytest

with open(os.path.join(os.path.dirname(__file__), "fixtures", "public_names_0.1.json"), encoding="utf-8") as _f:
    OLD = json.load(_f)

ROWS = [pytest.param(module, name, id=f"{module}.{name}") for module, names in sorted(OLD.items())
        for name in names]


@pytest.mark.parametrize("module, name", ROWS)
def test_old_name_resolves(module, name):
    value = getattr(importlib.import_module(module), name)
    assert value is not None


@pytest.mark.parametrize("module, name", [
    ("lazypatch.labels", "ClassSampler"), ("lazypatch.filtering", "foreground_filter"),
    ("lazypatch.store", "write_store"), ("lazypatch.normalize", "ChannelStats"),
    ("lazypatch.dataset", "PatchDataset"), ("lazypatch.aggregate", "PatchAggregator"),
    ("lazypatch.transforms", "TorchvisionTransform"), ("lazypatch.sampling", "SeededTransform"),
])
def test_old_name_is_the_new_object(module, name):
    import lazypatch

    new = getattr(lazypatch, name)
    old = getattr(importlib.import_module(module), name)
    assert old is new


@pytest.mark.system
def test_from_import_of_a_moved_module_works_in_a_fresh_interpreter():
    code = ("from lazypatch.labels import ClassSampler, LabelStats; "
            "from lazypatch.filtering import foreground_filter; "
            "from lazypatch.store import write_store, ImageStore; "
            "import lazypatch.aggregate as a; print(a.PatchAggregator.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "lazypatch.inference.aggregator"


def test_error_classes_stay_attributes_of_lazypatch():
    import lazypatch
    import lazypatch.errors as errors

    for name in OLD["lazypatch.errors"]:
        assert getattr(lazypatch, name) is getattr(errors, name)


def test_unknown_names_raise_attribute_error():
    import lazypatch
    import lazypatch.labels
    import lazypatch.store

    for module in (lazypatch, lazypatch.labels, lazypatch.store):
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            getattr(module, "nonexistent")


def test_a_store_written_by_lazypatch_0_1_still_opens():
    # fixtures/store_format_1.0.h5: written by lazypatch 0.1 (format 1, before the minor
    # version attribute) from these images, with masks, names, meta and both statistics
    import numpy as np

    import lazypatch

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), rng.integers(0, 255, (33, 20, 3), dtype=np.uint8)]
    path = os.path.join(os.path.dirname(__file__), "fixtures", "store_format_1.0.h5")
    with lazypatch.ImageStore(path) as store:
        assert store.attrs.get("lazypatch_format_minor") is None
        assert store.names == ["a", "b"] and store.meta(0) == {"mpp": 0.5}
        for image_id, image in enumerate(images):
            np.testing.assert_array_equal(store.read(image_id), image)
            np.testing.assert_array_equal(store.read_mask(image_id), (image[..., 0] > 128).astype(np.uint8))
        assert store.verify(progress=False) == []
        assert lazypatch.LabelStats.open(store).totals() == {
            0: int(sum((i[..., 0] <= 128).sum() for i in images)), 1: int(sum((i[..., 0] > 128).sum() for i in images))}
        assert lazypatch.ChannelStats.open(store).max.tolist() == np.max([i.max(axis=(0, 1)) for i in images], 0).tolist()


def test_new_stores_record_the_minor_format_version(tmp_path):
    import numpy as np

    import lazypatch
    from lazypatch.store import format as fmt

    store = lazypatch.write_store(tmp_path / "s.h5", [np.zeros((8, 8), np.uint8)], progress=False)
    assert store.attrs["lazypatch_format_version"] == fmt.FORMAT_VERSION
    assert store.attrs["lazypatch_format_minor"] == fmt.format_minor(tissue=False) == 1  # 1.2 only with tissue
    store.close()
