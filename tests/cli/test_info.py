"""``lazypatch info`` and ``describe()``: image names and which statistics are stored.

Matrix: stores of 1, 4 and 8 images (every name, the first 3 and the 1 other,
the first 3 and last 3); names that need quoting in the text output; label
statistics none, in the store, in a sidecar; channel statistics none and in
the store; the same facts through ``--json``.
"""

import json

import numpy as np
import pytest

from lazypatch import describe, write_store
from lazypatch.cli import main
from lazypatch.stats import LabelStats


def store_with(tmp_path, count, **options):
    names = [f"slide-{k}" for k in range(count)]
    images = [np.full((16, 16), k, np.uint8) for k in range(count)]
    masks = [np.eye(16, dtype=np.uint8) for _ in range(count)]
    return write_store(tmp_path / "s.h5", images, masks=masks, names=names, progress=False, **options)


@pytest.mark.parametrize("count, first, last", [
    (1, ["slide-0"], []),
    (4, ["slide-0", "slide-1", "slide-2"], ["slide-3"]),
    (8, ["slide-0", "slide-1", "slide-2"], ["slide-5", "slide-6", "slide-7"]),
])
def test_names(tmp_path, count, first, last):
    with store_with(tmp_path, count) as store:
        assert describe(store)["names"] == {"count": count, "first": first, "last": last}


def test_statistics_stored(tmp_path):
    with store_with(tmp_path, 2) as store:
        facts = describe(store)
        assert facts["label_stats"] is False and facts["channel_stats"] is None
        LabelStats.compute(store).write_sidecar(store)
        assert describe(store)["label_stats"] is True
    (tmp_path / "s.h5").unlink()
    (tmp_path / "s.h5.labels.h5").unlink()
    with store_with(tmp_path, 2, label_stats=True, channel_stats=True) as store:
        facts = describe(store)
        assert facts["label_stats"] is True and set(facts["channel_stats"]) >= {"mean", "std"}


def test_the_command(tmp_path, capsys):
    store_with(tmp_path, 8, label_stats=True).close()
    assert main(["info", str(tmp_path / "s.h5")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["names", "8:", "slide-0,", "slide-1,", "slide-2,", "…,", "slide-5,",
                                "slide-6,", "slide-7"] for line in lines), lines
    assert any(line.split() == ["label_stats", "True"] for line in lines), lines
    assert main(["info", str(tmp_path / "s.h5"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["names"]["count"] == 8 and facts["names"]["last"] == ["slide-5", "slide-6", "slide-7"]
    assert facts["label_stats"] is True


def test_names_that_need_quotes(tmp_path, capsys):
    write_store(tmp_path / "q.h5", [np.zeros((4, 4), np.uint8)] * 2, names=["a, b", " lead"],
                progress=False).close()
    assert main(["info", str(tmp_path / "q.h5")]) == 0
    assert "2: 'a, b', ' lead'" in capsys.readouterr().out
