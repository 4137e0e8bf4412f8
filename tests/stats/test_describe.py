"""describe(): mask label counts and geometry, as ``lazypatch info --json`` prints them.

Matrix: a store with label statistics (counts against numpy), one without
(None); geometry shared by every image, differing, and absent.
"""

import json

import numpy as np

from lazypatch import describe, write_store
from lazypatch.cli import main


def test_mask_labels_and_geometry(tmp_path, capsys):
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 3, (30, 40), dtype=np.uint8) for _ in range(3)]
    geometry = [{"spacing": (0.5, 0.5), "unit": "um"}] * 3
    path = str(tmp_path / "s.h5")
    write_store(path, [np.zeros((30, 40), np.uint8)] * 3, masks=masks, label_stats=True,
                geometry=geometry, progress=False).close()
    facts = describe(path)
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]))
    assert facts["mask_labels"] == {str(k): int(v) for k, v in enumerate(counts)}
    assert facts["geometry"] == {"spacing": [0.5, 0.5], "unit": "um", "same_for_all": True}
    assert main(["info", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(facts))


def test_without_statistics_or_geometry(tmp_path):
    path = str(tmp_path / "s.h5")
    write_store(path, [np.zeros((8, 8), np.uint8)] * 2, masks=[np.zeros((8, 8), np.uint8)] * 2,
                geometry=[{"spacing": (1, 1), "unit": "mm"}, {"spacing": (2, 2), "unit": "mm"}],
                progress=False).close()
    facts = describe(path)
    assert facts["mask_labels"] is None and facts["geometry"]["same_for_all"] is False
    plain = str(tmp_path / "p.h5")
    write_store(plain, [np.zeros((8, 8), np.uint8)], progress=False).close()
    assert describe(plain)["geometry"] is None
