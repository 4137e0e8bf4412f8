"""Axis orders that look misread, and mask labels: listed, warned about, remapped.

Matrix: axis warnings {a (64, 128, 128) .npy built as 2-D; write_store of
(3, 100, 120) arrays; none for (H, W, 3), hyperspectral (H, W, 200) or a
3-D (Z, Y, X, 2)} and volumes of different sizes built as 2-D (the error
says --spatial-ndim 3); mask labels {PNG 0/255 masks: values and counts in
the plan and the summary; --mask-map 255=1 and mask_map={255: 1}; JPEG
masks warn; more than 64 values warn; bad maps refused}.
"""

import os

import numpy as np
import pytest
from PIL import Image

from lazypatch import ImageStore, build, write_store
from lazypatch.cli import main
from lazypatch.errors import LazypatchWarning, ParameterError, ParameterTypeError


# -- axis order ---------------------------------------------------------------------------
def test_a_volume_in_a_npy_file_warns_naming_spatial_ndim_3(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "v.npy", np.zeros((64, 128, 128), np.uint8))
    with pytest.warns(LazypatchWarning, match=r"v\.npy' has shape \(64, 128, 128\), read as 64x128 pixels "
                                               r"with 128 channels.*--spatial-ndim 3") as caught:
        assert main(["build", str(tmp_path / "src"), str(tmp_path / "s.h5"), "--no-progress"]) == 0
    assert len(caught) == 1  # once, from the header pass (the writer does not repeat it)
    store = build(tmp_path / "src", tmp_path / "v.h5", spatial_ndim=3, progress=False)  # no warning
    assert store.shapes.tolist() == [[64, 128, 128]]
    store.close()


def test_channels_first_arrays_warn(tmp_path):
    images = [np.zeros((3, 100, 120), np.uint8)] * 2
    with pytest.warns(LazypatchWarning, match=r"image 0 has shape \(3, 100, 120\).*120 channels.*"
                                               r"np\.moveaxis\(image, 0, -1\)") as caught:
        write_store(tmp_path / "s.h5", images, progress=False).close()
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller


@pytest.mark.parametrize("shape, spatial_ndim", [((100, 120, 3), 2), ((256, 256, 200), 2), ((64, 64, 32), 2),
                                                 ((6, 20, 20, 2), 3), ((4, 200, 200), 2 + 1)])
def test_no_warning_for_plausible_axes(tmp_path, shape, spatial_ndim):
    # setup.cfg turns warnings into errors: a warning here fails the test
    write_store(tmp_path / "s.h5", [np.zeros(shape, np.uint8)], spatial_ndim=spatial_ndim, progress=False).close()


def test_volumes_of_different_sizes_as_2d_name_spatial_ndim_3(tmp_path):
    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "a.npy", np.zeros((30, 64, 64), np.uint16))
    np.save(tmp_path / "src" / "b.npy", np.zeros((30, 48, 48), np.uint16))
    with pytest.raises(ParameterError, match=r"b\.npy': all images must have the same number of channels: image 0 "
                                             r"has 64, image 1 has 48; if these are volumes \(Z, Y, X\) of different "
                                             r"sizes, pass spatial_ndim=3 \(--spatial-ndim 3\)"):
        build(tmp_path / "src", tmp_path / "s.h5")
    with pytest.raises(ParameterError, match=r"--spatial-ndim 3"):
        write_store(tmp_path / "w.h5", [np.zeros((30, 64, 64)), np.zeros((30, 48, 48))])
    assert sorted(os.listdir(tmp_path)) == ["src"]


# -- mask labels --------------------------------------------------------------------------
def binary_masks(tmp_path, suffix=".png", count=3):
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir()
    masks.mkdir()
    expected = []
    for k in range(count):
        mask = np.zeros((64, 80), np.uint8)
        mask[8:40, 10 + k:50] = 255
        Image.fromarray(np.full((64, 80, 3), k, np.uint8)).save(images / f"{k}.png")
        Image.fromarray(mask).save(masks / f"{k}{suffix}", **({"quality": 75} if suffix == ".jpg" else {}))
        expected.append(mask)
    return images, masks, expected


def test_labels_are_listed_and_remapped(tmp_path, capsys):
    images, masks, expected = binary_masks(tmp_path)
    ones = sum(int((m == 255).sum()) for m in expected)
    plan = build(images, tmp_path / "s.h5", masks=masks, dry_run=True)
    assert plan["mask_labels"] == {"values": [0, 255], "counts": [3 * 64 * 80 - ones, ones],
                                   "masks_read": 3, "masks": 3}
    out = str(tmp_path / "s.h5")
    assert main(["build", str(images), out, "--masks", str(masks), "--mask-map", "255=1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"mask labels: 0 ({3 * 64 * 80 - ones:,} px), 1 ({ones:,} px)" in text  # the plan
    share = 100 * ones / (3 * 64 * 80)
    assert f"mask labels: 0 ({100 - share:.1f}%), 1 ({share:.1f}%)" in text  # the summary, after writing
    store = ImageStore(out)
    for k, mask in enumerate(expected):
        assert np.array_equal(store.read_mask(k), (mask == 255).astype(np.uint8))
    assert store.verify() == []
    store.close()
    store = build(images, tmp_path / "p.h5", masks=masks, mask_map={255: 1, 0: 0}, progress=False)
    assert np.array_equal(store.read_mask(2), (expected[2] == 255).astype(np.uint8))
    store.close()
    swapped = build(images, tmp_path / "w.h5", masks=masks, mask_map="0=255,255=0", dry_run=True)
    assert swapped["mask_labels"]["counts"] == [ones, 3 * 64 * 80 - ones]  # a swap maps the original values


def test_jpeg_masks_warn(tmp_path):
    images, masks, _ = binary_masks(tmp_path, ".jpg")
    with pytest.warns(LazypatchWarning, match=r"3 of the 3 masks are JPEG files.*JPEG is lossy.*--mask-map 255=1"):
        plan = build(images, tmp_path / "s.h5", masks=masks, dry_run=True)
    assert len(plan["mask_labels"]["values"]) > 2  # the lossy values between 0 and 255


def test_masks_with_many_values_warn(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(images / "a.png")
    Image.fromarray((np.arange(50 * 60) % 100).astype(np.uint8).reshape(50, 60)).save(masks / "a.png")
    with pytest.warns(LazypatchWarning, match=r"the masks hold 100 distinct values \(1 of 1 masks read\), "
                                               r"more than the 64"):
        build(images, tmp_path / "s.h5", masks=masks, dry_run=True)


@pytest.mark.parametrize("mask_map, kind, pattern", [
    pytest.param("255", ParameterError, r"--mask-map \(mask_map\) must be OLD=NEW pairs of integers.*got '255'",
                 id="no ="),
    pytest.param("a=1", ParameterError, r"must be OLD=NEW pairs", id="not a number"),
    pytest.param({255: 1.5}, ParameterTypeError, r"mask_map must map integers to integers, got 255: 1\.5",
                 id="float"),
    pytest.param([255, 1], ParameterTypeError, r"mask_map must be a dict", id="a list"),
    pytest.param({300: 1}, ParameterError, r"300=1: the value 300 is outside what uint8 masks hold \(0\.\.255\)",
                 id="key outside the dtype"),
    pytest.param({255: -1}, ParameterError, r"255=-1: the new label -1 is outside what uint8 masks hold",
                 id="value outside the dtype"),
])
def test_bad_mask_maps(tmp_path, mask_map, kind, pattern):
    images, masks, _ = binary_masks(tmp_path, count=1)
    with pytest.raises(kind, match=pattern):
        build(images, tmp_path / "s.h5", masks=masks, mask_map=mask_map)
    with pytest.raises(ParameterError, match=r"--mask-map maps mask labels: it needs --masks FOLDER"):
        build(images, tmp_path / "s.h5", mask_map={255: 1})
