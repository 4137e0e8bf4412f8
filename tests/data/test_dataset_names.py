"""PatchDataset in a user's words: images by name, and a warning for images that give no patch.

Matrix: image_ids as names, as numbers and mixed, against the same split by
number; unknown, ambiguous and wrongly typed names; the warning's count with
edge="drop" (and none with "shift" or when every image fits).
"""

import numpy as np
import pytest

from lazypatch import ImageStore, LazypatchWarning, PatchDataset, write_store
from lazypatch.errors import ParameterError, ParameterTypeError, PatchIndexError


@pytest.fixture
def store(tmp_path):
    images = [np.full((40 + 10 * k, 50, 3), k, np.uint8) for k in range(4)]
    write_store(tmp_path / "s.h5", images, names=["a.png", "b.png", "c/d.png", "small.png"],
                progress=False).close()
    return str(tmp_path / "s.h5")


@pytest.mark.parametrize("split", [
    pytest.param(["c/d.png", "a.png"], id="names"),
    pytest.param(["c/d.png", 0], id="a name and a number"),
    pytest.param(np.array([2, 0]), id="numbers"),
])
def test_images_by_name_equal_images_by_number(store, split):
    by_number = PatchDataset(store, patch_size=16, image_ids=[2, 0])
    chosen = PatchDataset(store, patch_size=16, image_ids=split)
    assert chosen.image_ids.tolist() == [2, 0]
    assert len(chosen) == len(by_number)
    assert chosen.read_batch(range(len(chosen)))["image"].equal(by_number.read_batch(range(len(by_number)))["image"])


@pytest.mark.parametrize("split, kind, message", [
    pytest.param(["a.png", "nope.png"], ParameterError, r"no image is named 'nope.png'", id="unknown name"),
    pytest.param(["a.pgn"], ParameterError, r"did you mean \['a.png'", id="misspelt name"),
    pytest.param(["a.png", 2.5], ParameterTypeError, r"image_ids must hold image numbers or names, got 2.5",
                 id="a float among names"),
    pytest.param(["a.png", 9], PatchIndexError, r"image id 9 is out of range for 4 images", id="number out of range"),
])
def test_bad_names(store, split, kind, message):
    with pytest.raises(kind, match=message):
        PatchDataset(store, patch_size=16, image_ids=split)


def test_ambiguous_names_are_refused(tmp_path):
    write_store(tmp_path / "s.h5", [np.zeros((20, 20), np.uint8)] * 2, names=["x", "x"], progress=False).close()
    with pytest.raises(ParameterError, match=r"2 images are named 'x'"):
        ImageStore(tmp_path / "s.h5").image_ids_of(["x"])


def test_images_without_patches_are_counted_in_a_warning(tmp_path):
    images = [np.zeros((64, 64), np.uint8), np.zeros((20, 70), np.uint8), np.zeros((30, 30), np.uint8)]
    path = str(tmp_path / "s.h5")
    write_store(path, images, progress=False).close()
    with pytest.warns(LazypatchWarning, match=r"2 of 3 images are smaller than patch_size \(32, 32\) and "
                                              r"contribute no patch with edge='drop'; use edge='shift' or 'pad'"):
        PatchDataset(path, patch_size=32)
    with pytest.warns(LazypatchWarning, match=r"1 of 2 images"):
        PatchDataset(path, patch_size=32, image_ids=[0, 2])


def test_no_warning_when_every_image_gives_patches(tmp_path, recwarn):
    images = [np.zeros((64, 64), np.uint8), np.zeros((20, 70), np.uint8)]
    path = str(tmp_path / "s.h5")
    write_store(path, images, progress=False).close()
    PatchDataset(path, patch_size=32, edge="shift")
    PatchDataset(path, patch_size=16)
    assert not [w for w in recwarn if issubclass(w.category, LazypatchWarning)]
