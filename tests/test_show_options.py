"""lazypatch show: the image by name, the channels displayed, the legend of the mask colours.

Matrix: ``image=`` / ``--image`` by name and by number (and an unknown name, a
name outside a dataset's image_ids); ``channels=`` / ``--channels`` of one or
three channels, in any order, on the image panel and every sample panel, and
its error table (count, range, type); the legend: one entry per colour drawn
with the labels it shows (label 0 none, labels 1 and 11 share a colour, at
most three labels an entry), none without masks.
"""

import re

import matplotlib
import numpy as np
import pytest
import skimage.data

import lazypatch
from lazypatch import write_store
from lazypatch.cli import main
from lazypatch.errors import ParameterError, ParameterTypeError, PatchIndexError
from lazypatch.show import show, to_display


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("show-options")
    images = [skimage.data.astronaut(), skimage.data.coffee()]
    masks = [(image[..., 0] // 86).astype(np.uint8) for image in images]  # labels 0, 1, 2
    write_store(folder / "masked.h5", images, masks=masks, names=["astronaut", "coffee"], progress=False)
    rng = np.random.default_rng(0)
    bands = [rng.integers(0, 4000, (96, 128, 5), dtype=np.uint16) for _ in range(2)]
    write_store(folder / "bands.h5", bands, names=["field-a", "field-b"], progress=False)
    many = np.arange(64 * 64).reshape(64, 64) // 128  # labels 0..31, 128 pixels each
    write_store(folder / "labels.h5", [np.zeros((64, 64), np.uint8)], masks=[many.astype(np.uint8)],
                progress=False)
    return folder


def legend(figure):
    found = [legend for legend in figure.legends if legend.get_gid() == "lazypatch-legend"]
    return found[0] if found else None


# -- the image by name -------------------------------------------------------------------
def test_image_by_name(stores):
    figure = show(stores / "masked.h5", image="coffee", patch_size=64, samples=1)
    assert "image 1 'coffee': 400x600" in figure.axes[0].get_title()


def test_cli_image_by_name(stores, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["show", str(stores / "masked.h5"), "--out", str(out), "--patch", "64", "--image", "coffee",
                 "--samples", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: image 1 ('coffee', 400x600)")
    assert main(["show", str(stores / "masked.h5"), "--out", str(out), "--image", "cofee"]) == 1
    assert re.search(r"lazypatch show: error: image: no image is named 'cofee' in .*masked\.h5'; did you mean "
                     r"\['coffee'\]\?", capsys.readouterr().err)


def test_a_name_outside_the_dataset(stores):
    dataset = lazypatch.PatchDataset(stores / "masked.h5", 64, image_ids=["astronaut"])
    with pytest.raises(PatchIndexError, match=r"image 1 is not in the dataset, whose image_ids are \[0\]"):
        show(dataset, image="coffee")


# -- channels ----------------------------------------------------------------------------
def test_three_channels_in_any_order(stores):
    store = lazypatch.ImageStore(stores / "bands.h5")
    figure = show(store, image=1, patch_size=32, samples=4, channels=(4, 2, 0))
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), to_display(store.read(1)[..., [4, 2, 0]]))
    assert all(axes.images[0].get_array().shape == (32, 32, 3) for axes in figure.axes[1:])
    assert "5 x uint16 (shown: 4, 2, 0)" in figure._suptitle.get_text()


def test_one_channel_is_gray(stores):
    store = lazypatch.ImageStore(stores / "bands.h5")
    for channels in (3, [3], np.array([3])):
        figure = show(store, patch_size=32, samples=2, channels=channels)
        np.testing.assert_allclose(figure.axes[0].images[0].get_array(), to_display(store.read(0)[..., 3]))
        assert all(axes.images[0].get_array().shape == (32, 32) for axes in figure.axes[1:])


def test_cli_channels(stores, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["show", str(stores / "bands.h5"), "--out", str(out), "--channels", "2,1,0", "--samples", "2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; channels 2,1,0")
    assert main(["show", str(stores / "bands.h5"), "--out", str(out), "--channels", "1,5"]) == 1
    assert "lazypatch show: error: channels must name 1 channel (gray) or 3 (red, green, blue), got 2: (1, 5)" \
        in capsys.readouterr().err


@pytest.mark.parametrize("channels, error, message", [
    pytest.param((0, 1), ParameterError, r"channels must name 1 channel \(gray\) or 3 \(red, green, blue\), "
                 r"got 2: \(0, 1\)", id="two"),
    pytest.param((0, 1, 2, 3), ParameterError, r"got 4: \(0, 1, 2, 3\)", id="four"),
    pytest.param((0, 1, 5), ParameterError, r"channels: channel 5 is out of range for a store of 5 channels "
                 r"\(0 to 4\), got \(0, 1, 5\)", id="out of range"),
    pytest.param(-1, ParameterError, r"channels: channel -1 is out of range", id="negative"),
    pytest.param("rgb", ParameterTypeError, r"channels must be a channel number or a sequence of them, got 'rgb'",
                 id="a string"),
    pytest.param((0.0, 1, 2), ParameterTypeError, r"channels must be channel numbers \(integers\), got "
                 r"\(0\.0, 1, 2\)", id="a float"),
    pytest.param(True, ParameterTypeError, r"channels must be a channel number or a sequence of them, got True",
                 id="a bool"),
])
def test_bad_channels(stores, channels, error, message):
    with pytest.raises(error, match=message):
        show(stores / "bands.h5", patch_size=32, channels=channels)


# -- the legend of the mask colours -------------------------------------------------------------
def test_legend_of_the_labels_drawn(stores):
    figure = show(stores / "masked.h5", patch_size=64, samples=4)
    drawn = legend(figure)
    assert [text.get_text() for text in drawn.get_texts()] == ["1", "2"]
    assert drawn.get_title().get_text() == "mask labels"
    tab10 = matplotlib.colormaps["tab10"]
    colours = [handle.get_facecolor()[:3] for handle in drawn.legend_handles]
    np.testing.assert_allclose(colours, [tab10(0)[:3], tab10(1)[:3]])
    assert legend(show(stores / "bands.h5", patch_size=32, samples=2)) is None


def test_labels_sharing_a_colour(stores):
    figure = show(stores / "labels.h5", patch_size=64, samples=1)  # labels 1..31 drawn
    texts = [text.get_text() for text in legend(figure).get_texts()]
    assert texts == ["1, 11, 21, …"] + [f"{k}, {k + 10}, {k + 20}" for k in range(2, 11)]
