"""Every name of lazypatch 0.1 keeps working where it was.

``data/public_names_0.1.json`` lists ``lazypatch.__all__`` and every public
attribute of every public module of the last flat-layout commit (generated
from that commit by importing each module and listing ``vars()``, leaving out
names starting with ``_``, third-party modules and ``annotations``).
"""

import importlib
import json
import os
import subprocess
import sys

import pytest

with open(os.path.join(os.path.dirname(__file__), "data", "public_names_0.1.json"), encoding="utf-8") as _f:
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
