"""lazypatch show and lazypatch.show: the picture of an image, its grid and sample patches.

Matrix:
- ``to_display``: uint8 (as is), uint16 (1st..99th percentile stretch), float with NaN
  and all-NaN, bool, 1/2/3/4/5 channels, channels-first, shared limits, bad shapes;
- the figure: PNG size from figsize and dpi, one axes per sample, rectangles for a
  small grid, lines (thinned) for a large one, pad grids, highlighted samples, mask
  overlays only with masks, the image panel's pixels, seeded samples;
- sources: a path, an ImageStore, shards, a 3-D store (middle z slice), a PatchDataset
  with image_ids (samples only from those images);
- a huge image is read decimated, row by row, never whole;
- the command line, and one table of bad inputs (call, exception, message);
- matplotlib is not imported by ``import lazypatch.show`` nor by building the parser.
"""

import re
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

import lazypatch
from lazypatch import ImageStore, write_store
from lazypatch.cli import main
from lazypatch.errors import LazypatchError
from lazypatch.show import show, to_display


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two RGB photographs (512x512 and 400x600) with 3-label masks."""
    folder = tmp_path_factory.mktemp("show")
    images = [skimage.data.astronaut(), skimage.data.coffee()]
    masks = [(image[..., 0] // 86).astype(np.uint8) for image in images]  # labels 0, 1, 2
    write_store(folder / "masked.h5", images, masks=masks, names=["astronaut", "coffee"],
                progress=False)
    write_store(folder / "plain.h5", images, names=["astronaut", "coffee"], progress=False)
    return folder


def gids(axes, gid):
    return [a for a in axes.patches if a.get_gid() == gid]


def sample_titles(figure):
    return [axes.get_title() for axes in figure.axes[1:]]


def sample_image_ids(figure):
    return [int(re.match(r"#(\d+) ", title).group(1)) for title in sample_titles(figure)]


# -- to_display --------------------------------------------------------------------------
def test_uint8_is_shown_as_is():
    image = skimage.data.astronaut()
    shown = to_display(image)
    assert shown.dtype == np.float32 and shown.shape == (512, 512, 3)
    np.testing.assert_allclose(shown, image / 255, atol=1e-6)
    gray = skimage.data.camera()
    np.testing.assert_allclose(to_display(gray), gray / 255, atol=1e-6)


def test_uint16_is_stretched_from_the_1st_to_the_99th_percentile():
    image = np.arange(10001, dtype=np.uint16).reshape(1, -1)  # percentiles: 100 and 9900
    shown = to_display(image)
    assert shown.shape == (1, 10001)
    assert shown[0, 100] == 0 and shown[0, 9900] == 1
    assert shown[0, 5000] == pytest.approx(0.5)
    assert shown[0, 0] == 0 and shown[0, -1] == 1  # clipped outside the percentiles
    assert shown[0, 2550] == pytest.approx(2450 / 9800)


def test_percentiles_are_per_channel():
    ramp = np.arange(10001, dtype=np.float64)
    image = np.stack([ramp, ramp * 10 + 5, -ramp], axis=-1)[None]  # (1, 10001, 3)
    shown = to_display(image)
    np.testing.assert_allclose(shown[0, 5000], [0.5, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(shown[0, 100], [0, 0, 1], atol=1e-6)


def test_float_with_nan_and_inf():
    image = np.arange(10001, dtype=np.float32).reshape(1, -1)
    image[0, ::2] = np.nan  # the finite values are the odd numbers 1..9999
    image[0, 1] = np.inf
    shown = to_display(image)
    assert not np.isnan(shown).any()
    assert (shown[0, ::2] == 0).all()
    assert shown[0, 1] == 1
    low, high = np.percentile(np.arange(3, 10001, 2), (1, 99))
    assert shown[0, 5001] == pytest.approx((5001 - low) / (high - low))
    assert (to_display(np.full((4, 4), np.nan)) == 0).all()  # no warning (warnings are errors)


def test_constant_and_bool_images():
    assert (to_display(np.full((3, 3), 7, np.int16)) == 0).all()
    np.testing.assert_array_equal(to_display(np.eye(3, dtype=bool)), np.eye(3))


@pytest.mark.parametrize("channels, shape, shown_channels", [
    (1, (6, 5), [0]),
    (2, (6, 5), [0]),
    (3, (6, 5, 3), [0, 1, 2]),
    (4, (6, 5, 3), [0, 1, 2]),
    (5, (6, 5, 3), [0, 1, 2]),
])
def test_channels(channels, shape, shown_channels):
    image = (np.arange(6 * 5 * channels).reshape(6, 5, channels) * 7 % 256).astype(np.uint8)
    shown = to_display(image)
    assert shown.shape == shape
    expected = image[..., shown_channels] / 255
    np.testing.assert_allclose(shown, expected[..., 0] if len(shown_channels) == 1 else expected,
                               atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_first_equals_channels_last(dtype, channels):
    image = (np.random.default_rng(channels).random((channels, 7, 9)) * 200).astype(dtype)
    np.testing.assert_array_equal(to_display(image, channels_first=True),
                                  to_display(np.moveaxis(image, 0, -1)))


def test_channels_first_accepts_a_dataset_sample(photos):
    dataset = lazypatch.PatchDataset(photos / "plain.h5", patch_size=32)
    sample = dataset[3]
    expected = ImageStore(photos / "plain.h5").read_region(0, tuple(sample["origin"].tolist()), (32, 32))
    np.testing.assert_allclose(to_display(sample["image"], channels_first=True), expected / 255,
                               atol=1e-6)


def test_shared_limits():
    image = np.array([[10, 20, 30]], np.uint16)
    np.testing.assert_allclose(to_display(image, limits=(0, 40)), [[0.25, 0.5, 0.75]])
    rgb = np.stack([image, image, image], axis=-1)
    np.testing.assert_allclose(to_display(rgb, limits=([0, 10, 20], [40, 30, 40]))[0, 1],
                               [0.5, 0.5, 0])


# -- the figure ------------------------------------------------------------------------------
def test_png_size_follows_figsize_and_dpi(photos, tmp_path):
    out = tmp_path / "a.png"
    figure = show(photos / "masked.h5", patch_size=64, out=out)
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (1200, 600)
    assert len(figure.axes) == 1 + 16
    show(photos / "masked.h5", patch_size=64, out=tmp_path / "b.png", dpi=50, figsize=(8, 5),
         samples=3)
    with Image.open(tmp_path / "b.png") as picture:
        assert picture.size == (400, 250)


def test_small_grid_is_drawn_as_one_rectangle_per_patch(photos):
    figure = show(photos / "plain.h5", patch_size=128, samples=4)
    rectangles = gids(figure.axes[0], "lazypatch-patch")
    assert len(rectangles) == 16  # 512x512 in 128x128 patches
    corners = sorted((r.get_y(), r.get_x(), r.get_height(), r.get_width()) for r in rectangles)
    assert corners == [(y, x, 128, 128) for y in range(0, 512, 128) for x in range(0, 512, 128)]
    assert not [c for c in figure.axes[0].collections if c.get_gid() == "lazypatch-grid"]

    overlapping = show(photos / "plain.h5", image=1, patch_size=128, stride=64, samples=1)
    assert len(gids(overlapping.axes[0], "lazypatch-patch")) == 5 * 8  # 400x600


def test_pad_grid_reaches_past_the_image(photos):
    figure = show(photos / "plain.h5", image=1, patch_size=256, edge="pad", samples=1)
    rectangles = gids(figure.axes[0], "lazypatch-patch")
    assert len(rectangles) == 2 * 3
    assert max(r.get_x() + r.get_width() for r in rectangles) == 768
    assert figure.axes[0].get_xlim() == (0, 768) and figure.axes[0].get_ylim() == (512, 0)


def test_large_grid_is_drawn_as_lines(photos):
    figure = show(photos / "plain.h5", patch_size=16, samples=4)
    assert not gids(figure.axes[0], "lazypatch-patch")
    (lines,) = [c for c in figure.axes[0].collections if c.get_gid() == "lazypatch-grid"]
    assert len(lines.get_segments()) == 33 + 33  # origins 0, 16, ..., 496 and the end, 512

    dense = show(photos / "plain.h5", patch_size=4, stride=1, samples=1)  # 509 origins per axis
    (lines,) = [c for c in dense.axes[0].collections if c.get_gid() == "lazypatch-grid"]
    assert len(lines.get_segments()) == 2 * (len(range(0, 509, 4)) + 1)  # every 4th line
    assert "grid lines (1 in 4)" in dense.axes[0].get_title()


def test_sampled_patches_are_outlined(photos):
    figure = show(photos / "plain.h5", patch_size=64, samples=16, seed=3)
    in_image_0 = [t for t in sample_titles(figure) if t.startswith("#0 ")]
    outlined = gids(figure.axes[0], "lazypatch-sample")
    assert 0 < len(outlined) == len(in_image_0) < 16
    origins = sorted((int(r.get_y()), int(r.get_x())) for r in outlined)
    titled = sorted(tuple(int(v) for v in re.findall(r"\d+", t.split("\n")[1])) for t in in_image_0)
    assert origins == titled


def test_masks_are_overlaid_only_when_present(photos):
    def overlays(figure):
        return [im for axes in figure.axes for im in axes.images if im.get_gid() == "lazypatch-mask"]

    masked = show(photos / "masked.h5", patch_size=64, samples=5)
    assert len(overlays(masked)) == 1 + 5
    mask = ImageStore(photos / "masked.h5").read_mask(0)
    shown = overlays(masked)[0].get_array()
    np.testing.assert_array_equal(shown.mask, mask == 0)  # background transparent
    np.testing.assert_array_equal(shown.filled(-1), np.where(mask == 0, -1, mask.astype(int) - 1))
    assert overlays(show(photos / "plain.h5", patch_size=64, samples=5)) == []


def test_image_panel_shows_the_image(photos):
    figure = show(photos / "plain.h5", image=1, patch_size=64, samples=1)
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), skimage.data.coffee() / 255,
                               atol=1e-6)
    assert "image 1 'coffee': 400x600" in figure.axes[0].get_title()


def test_samples_depend_on_the_seed_only(photos):
    first = sample_titles(show(photos / "plain.h5", patch_size=32, seed=5, samples=6))
    assert first == sample_titles(show(photos / "plain.h5", patch_size=32, seed=5, samples=6))
    assert first != sample_titles(show(photos / "plain.h5", patch_size=32, seed=6, samples=6))
    assert len(set(first)) == 6  # without replacement


def test_fewer_patches_than_samples(photos):
    figure = show(photos / "plain.h5", patch_size=256, samples=100)
    assert len(figure.axes) == 1 + 4 + 2  # 2x2 patches of astronaut, 1x2 of coffee


def test_default_patch_size_fits_every_image(tmp_path):
    store = write_store(tmp_path / "s.h5", [np.zeros((300, 700), np.uint8), np.zeros((120, 900), np.uint8)],
                        progress=False)
    figure = show(store, samples=2)
    assert "7 patches of 120x256" in figure.texts[0].get_text()  # 2x2 + 1x3 (drop)
    # a store passed in stays open: it still reads (a closed one raises StoreClosedError)
    assert store.read_region(0, (0, 0), (1, 1)).shape == (1, 1, 1)


# -- sources -------------------------------------------------------------------------------
def test_sixteen_bit_samples_share_one_scale(tmp_path):
    ramp = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 10
    store = write_store(tmp_path / "s.h5", [ramp], progress=False)
    figure = show(store, patch_size=32, samples=4)
    shown = [axes.images[0].get_array() for axes in figure.axes[1:]]
    low, high = np.percentile(ramp, (1, 99))  # the four patches tile the image
    for axes, pixels in zip(figure.axes[1:], shown):
        y, x = (int(v) for v in re.findall(r"\d+", axes.get_title().split("\n")[1]))
        expected = np.clip((ramp[y:y + 32, x:x + 32] - low) / (high - low), 0, 1)
        np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_shards(photos, tmp_path):
    write_store(tmp_path / "b.h5", [skimage.data.chelsea()], names=["chelsea"], progress=False)
    figure = show([photos / "plain.h5", tmp_path / "b.h5"], image=2, patch_size=64, samples=40)
    assert "image 2 'chelsea'" in figure.axes[0].get_title()
    assert {0, 1, 2} <= set(sample_image_ids(figure))
    assert "#2 chelsea" in "".join(sample_titles(figure))


def test_three_dimensional_store_shows_middle_slices(tmp_path):
    volume = np.random.default_rng(0).integers(0, 4000, (9, 40, 48)).astype(np.uint16)
    masks = [(volume > 2000).astype(np.uint8)]
    store = write_store(tmp_path / "v.h5", [volume], masks=masks, spatial_ndim=3, progress=False)
    figure = show(store, patch_size=(4, 16, 16), samples=3)
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), to_display(volume[4]), atol=1e-6)
    assert "z 4 of 9" in figure.axes[0].get_title()
    assert len(gids(figure.axes[0], "lazypatch-patch")) == 2 * 3  # (y, x) positions of 2 z layers
    origins = [tuple(int(v) for v in re.findall(r"\d+", t.split("\n")[1])) for t in sample_titles(figure)]
    slices = np.concatenate([volume[z + 2, y:y + 16, x:x + 16].ravel() for z, y, x in origins])
    low, high = np.percentile(slices, (1, 99))
    for axes, (z, y, x) in zip(figure.axes[1:], origins):
        expected = np.clip((volume[z + 2, y:y + 16, x:x + 16] - low) / (high - low), 0, 1)
        np.testing.assert_allclose(axes.images[0].get_array(), expected, atol=1e-6)
        background = masks[0][z + 2, y:y + 16, x:x + 16] == 0
        np.testing.assert_array_equal(axes.images[1].get_array().mask, background)


def test_dataset_with_image_ids(tmp_path):
    images = [np.full((64, 64), 10 * k, np.uint8) for k in range(5)]
    store = write_store(tmp_path / "s.h5", images, progress=False)
    dataset = lazypatch.PatchDataset(store, patch_size=16, stride=8, image_ids=[3, 1])
    figure = show(dataset, samples=30, seed=1)
    assert set(sample_image_ids(figure)) == {1, 3}
    assert "image 3 " in figure.axes[0].get_title()  # the dataset's first image by default
    assert len(gids(figure.axes[0], "lazypatch-patch")) == 7 * 7
    for axes, image_id in zip(figure.axes[1:], sample_image_ids(figure)):
        np.testing.assert_allclose(axes.images[0].get_array(), np.full((16, 16), 10 * image_id / 255),
                                   atol=1e-6)
    with pytest.raises(IndexError, match=r"image 0 is not in the dataset, whose image_ids are \[3, 1\]"):
        show(dataset, image=0)


def test_filtered_dataset_draws_kept_patches(tmp_path):
    from lazypatch.filtering import foreground_filter

    mask = np.zeros((64, 64), np.uint8)
    mask[:32, :32] = 1
    store = write_store(tmp_path / "s.h5", [np.zeros((64, 64), np.uint8)], masks=[mask], progress=False)
    sidecar = foreground_filter(store, 16)
    dataset = lazypatch.PatchDataset(store, 16, filter=sidecar)
    figure = show(dataset, samples=50)
    assert len(gids(figure.axes[0], "lazypatch-patch")) == 4
    assert len(figure.axes) == 1 + 4


def test_huge_image_is_read_decimated_row_by_row(tmp_path, monkeypatch):
    source = np.memmap(tmp_path / "big.raw", np.uint8, "w+", shape=(20000, 3000))
    source[::7] = 200
    source[:, ::11] = 90
    store = write_store(tmp_path / "big.h5", [source], progress=False)
    reads = []
    original = ImageStore.read_region

    def spy(self, image_id, origin, size, *args, **kwargs):
        reads.append(tuple(size))
        return original(self, image_id, origin, size, *args, **kwargs)

    monkeypatch.setattr(ImageStore, "read_region", spy)
    figure = show(store, patch_size=256, samples=4)
    assert max(max(size) for size in reads) <= 4096
    assert sum(int(np.prod(size)) for size in reads) <= source.size // 15
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (1000, 150)  # every 20th pixel
    np.testing.assert_allclose(shown, source[::20, ::20] / 255, atol=1e-6)
    assert "shown 1:20" in figure.axes[0].get_title()


# -- the command line ------------------------------------------------------------------------
def test_cli_writes_the_picture(photos, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["show", str(photos / "masked.h5"), "--out", str(out), "--patch", "64",
                 "--image", "1", "--samples", "9", "--dpi", "50"]) == 0
    printed = capsys.readouterr().out
    assert printed == (f"wrote {out}: image 1 ('coffee', 400x600) with a 6x9 grid of 54 patches of "
                       "64x64 (stride 64x64, edge='drop'); 9 sample patches of 118\n")
    with Image.open(out) as picture:
        assert picture.size == (600, 300)


def test_cli_shards_and_stride(photos, tmp_path, capsys):
    write_store(tmp_path / "b.h5", [skimage.data.chelsea()], progress=False)
    out = tmp_path / "grid.png"
    assert main(["show", str(photos / "plain.h5"), str(tmp_path / "b.h5"), "--out", str(out),
                 "--patch", "128,64", "--stride", "64", "--edge", "shift", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "image 0 ('astronaut', 512x512) with a 7x8 grid of 56 patches of 128x64 (stride 64x64, " \
           "edge='shift')" in printed
    # coffee (400x600) has 6x10 patches, chelsea (300x451) 4x8
    assert printed.endswith(f"16 sample patches of {56 + 6 * 10 + 4 * 8}\n")
    assert out.exists()


@pytest.mark.parametrize("arguments, message", [
    pytest.param(["--image", "5"], "image 5 is out of range for a store of 2 images", id="--image 5"),
    pytest.param(["--patch", "1000"], r"patch_size \(1000, 1000\) fits in none of the 2 images", id="--patch 1000"),
    pytest.param(["--patch", "0"], r"patch_size must be positive integers, got \(0, 0\)", id="--patch 0"),
    pytest.param(["--samples", "0"], "samples must be a positive integer, got 0", id="--samples 0"),
    pytest.param(["--seed", "-1"], "seed must be a non-negative integer, got -1", id="--seed -1"),
    pytest.param(["--dpi", "0"], "dpi must be a positive number, got 0.0", id="--dpi 0"),
])
def test_cli_bad_inputs(photos, tmp_path, capsys, arguments, message):
    out = tmp_path / "x.png"
    assert main(["show", str(photos / "plain.h5"), "--out", str(out)] + arguments) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(f"lazypatch show: error: {message}.*\n", error, re.DOTALL), error
    assert not out.exists()


def test_cli_missing_store(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nothing.h5"), "--out", str(tmp_path / "x.png")]) == 1
    assert "nothing.h5" in capsys.readouterr().err


# -- bad inputs ------------------------------------------------------------------------------
# each call gets the 2-image store's path and a PatchDataset over it
BAD = [
    pytest.param(lambda path, ds: show(path, samples=0), ValueError,
                 r"samples must be a positive integer, got 0", id="samples=0"),
    pytest.param(lambda path, ds: show(path, samples=2.0), ValueError,
                 r"samples must be a positive integer, got 2\.0", id="samples=2.0"),
    pytest.param(lambda path, ds: show(path, samples=True), ValueError,
                 r"samples must be a positive integer, got True", id="samples=True"),
    pytest.param(lambda path, ds: show(path, seed=-3), ValueError,
                 r"seed must be a non-negative integer, got -3", id="seed=-3"),
    pytest.param(lambda path, ds: show(path, dpi=0), ValueError, r"dpi must be a positive number, got 0", id="dpi=0"),
    pytest.param(lambda path, ds: show(path, dpi=float("nan")), ValueError,
                 r"dpi must be a positive number, got nan", id="dpi=nan"),
    pytest.param(lambda path, ds: show(path, figsize=(4,)), ValueError,
                 r"figsize must be \(width, height\) in inches, positive numbers, got \(4,\)", id="figsize=(4,)"),
    pytest.param(lambda path, ds: show(path, image=2), IndexError,
                 r"image 2 is out of range for a store of 2 images", id="image=2"),
    pytest.param(lambda path, ds: show(path, image=-1), IndexError,
                 r"image -1 is out of range for a store of 2 images", id="image=-1"),
    pytest.param(lambda path, ds: show(path, image=1.0), TypeError,
                 r"image must be an integer, got float 1\.0", id="image=1.0"),
    pytest.param(lambda path, ds: show(path, patch_size=600), ValueError,
                 r"patch_size \(600, 600\) fits in none of the 2 images", id="patch_size=600"),
    pytest.param(lambda path, ds: show(path, patch_size=(8, 8, 8)), ValueError,
                 r"patch_size must have one entry per spatial axis \(2\), got 3", id="patch_size=(8, 8, 8)"),
    pytest.param(lambda path, ds: show(path, patch_size=8, edge="wrap"), ValueError,
                 r"edge must be one of \('drop', 'shift', 'pad'\), got 'wrap'", id="edge='wrap'"),
    pytest.param(lambda path, ds: show(3), TypeError,
                 r"store must be an ImageStore, a path, a list of shard paths or a PatchDataset, got int",
                 id="store=3"),
    pytest.param(lambda path, ds: show(ds, patch_size=32), ValueError,
                 r"patch_size, stride and edge come from the dataset; leave them None, got patch_size=32",
                 id="dataset and patch_size=32"),
    pytest.param(lambda path, ds: show(ds, edge="pad"), ValueError,
                 r"leave them None, got edge='pad'", id="dataset and edge='pad'"),
    pytest.param(lambda path, ds: to_display(np.zeros((2, 3, 4, 5))), ValueError,
                 r"array must be \(H, W\), \(H, W, C\) or, with channels_first, \(C, H, W\); "
                 r"got shape \(2, 3, 4, 5\)",
                 id="to_display 4-D array"),
    pytest.param(lambda path, ds: to_display(np.zeros((4, 5, 0))), ValueError,
                 r"array has no channels: shape \(4, 5, 0\)", id="to_display no channels"),
    pytest.param(lambda path, ds: to_display(np.zeros((4, 5), complex)), TypeError,
                 r"array must hold real numbers, got complex128", id="to_display complex"),
    pytest.param(lambda path, ds: to_display(np.array([["a"]])), TypeError,
                 r"array must hold real numbers, got <U1", id="to_display strings"),
]


@pytest.fixture(scope="module")
def dataset(photos):
    return lazypatch.PatchDataset(photos / "plain.h5", patch_size=64)


@pytest.mark.parametrize("call, kind, pattern", BAD)
def test_bad_inputs(photos, dataset, call, kind, pattern):
    with pytest.raises(kind, match=pattern) as caught:
        call(photos / "plain.h5", dataset)
    assert isinstance(caught.value, LazypatchError)


# -- imports --------------------------------------------------------------------------------
@pytest.mark.system
def test_matplotlib_is_imported_only_to_draw():
    code = ("import sys, lazypatch.show, lazypatch.cli; lazypatch.cli.build_parser(); "
            "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.system
def test_drawing_does_not_use_pyplot(photos):
    code = (f"import sys; from lazypatch.show import show; show({str(photos / 'plain.h5')!r}, samples=2); "
            "print('matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
