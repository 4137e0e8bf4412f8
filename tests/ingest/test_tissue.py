"""Tissue detection (``lazypatch.ingest.tissue``): the pure step, then the thumbnail of a file.

Matrix: ``detect_tissue`` on a synthetic H&E-like picture (pink and purple
tissue on noisy glass, with a small and a large hole, a hole open to the
border, specks on glass and a speck touching tissue by a corner) against a
brute-force expectation (nested-loop flood fills); a faint stain (Otsu, not a
fixed cut); blank glass. ``tissue_mask`` on JPEG-tiled pyramidal TIFFs through
tifffile and OpenSlide at mpp 1, 3 and 0.25 (level 2 reduced by 2, level 1
as is, level 1 reduced by 16), without mpp (the 2,048-px rule, and
``spacing=`` as --assume-mpp), a file's own mpp winning over ``spacing=``,
an image coarser than 8 um (the cap on a mask's side),
against the same reader's whole level reduced by a plain block mean; band
reads bounded; RGBA composited on white; bad inputs, each a clear error
naming the file or parameter; scipy missing.
"""

import os
import sys
from collections import deque

import numpy as np
import pytest

from lazypatch.errors import ParameterError, ParameterTypeError
from lazypatch.ingest import tissue as tissue_module
from lazypatch.ingest.readers import open_image
from lazypatch.ingest.tissue import TissueMask, detect_tissue, tissue_mask
from lazypatch.testing.samples import write_slide

# -- the oracle: plain loops --------------------------------------------------------------------
EIGHT = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
FOUR = [(-1, 0), (1, 0), (0, -1), (0, 1)]


def components(cells, neighbours):
    """[set of (y, x)] of the connected True cells of a 2-D bool array."""
    height, width = cells.shape
    seen, found = np.zeros_like(cells), []
    for y in range(height):
        for x in range(width):
            if not cells[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            queue, piece = deque([(y, x)]), set()
            while queue:
                cy, cx = queue.popleft()
                piece.add((cy, cx))
                for dy, dx in neighbours:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < height and 0 <= nx < width and cells[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            found.append(piece)
    return found


def expected_tissue(rgb, cut):
    """Saturation at or above ``cut``, then specks (8-connected) and holes (4-connected, not
    touching the border) under 1% of the tissue area removed, by flood fills."""
    rgb = rgb.astype(np.float64)
    high, low = rgb.max(-1), rgb.min(-1)
    tissue = (high - low) / np.where(high > 0, high, 1) >= cut
    area = 0.01 * tissue.sum()
    out = tissue.copy()
    for piece in components(tissue, EIGHT):
        if len(piece) < area:
            for y, x in piece:
                out[y, x] = False
    height, width = out.shape
    for piece in components(~out, FOUR):
        border = any(y in (0, height - 1) or x in (0, width - 1) for y, x in piece)
        if not border and len(piece) < area:
            for y, x in piece:
                out[y, x] = True
    return out


def he_picture(rng, faint=False):
    """120 x 160 RGB uint8: noisy glass, a pink and a purple piece of tissue, a pink bar,
    holes, specks (saturation: glass under 0.02, tissue over 0.3, or 0.07 when faint)."""
    glass = rng.integers(232, 250, (120, 160, 1)) + rng.integers(-2, 3, (120, 160, 3))
    picture = glass.astype(np.int64)
    yy, xx = np.mgrid[:120, :160]
    pink, purple, spread = np.array([226, 140, 192]), np.array([130, 70, 172]), 8
    if faint:
        pink, purple, spread = np.array([240, 215, 230]), np.array([226, 205, 238]), 4
    noise = lambda count: rng.integers(-spread, spread + 1, (count, 3))  # noqa: E731
    blob = ((yy - 55) / 40.0) ** 2 + ((xx - 60) / 50.0) ** 2 < 1
    picture[blob] = pink + noise(int(blob.sum()))
    lump = ((yy - 60) / 25.0) ** 2 + ((xx - 130) / 20.0) ** 2 < 1
    picture[lump] = purple + noise(int(lump.sum()))
    picture[95:115, 100:140] = pink + noise(800).reshape(20, 40, 3)  # a bar
    picture[50:53, 50:53] = 245  # a 9-cell hole: filled
    picture[30:46, 70:86] = 244  # a 256-cell hole: kept (over 1% of the tissue)
    picture[0:8, 120:126] = purple  # tissue at the border with a notch open to it: no hole
    picture[0:3, 122:124] = 246
    picture[110:112, 10:12] = purple  # a 4-cell speck on glass: removed
    picture[112:117, 150:155] = pink  # a 25-cell speck: removed too (1% is about 60 cells)
    picture[94, 99] = purple  # a cell touching the bar by a corner only: part of it
    return np.clip(picture, 0, 255).astype(np.uint8)


def test_detect_tissue_matches_flood_fills(rng):
    picture = he_picture(rng)
    found = detect_tissue(picture)
    np.testing.assert_array_equal(found, expected_tissue(picture, 0.2))
    assert found[51, 51] and not found[35, 75] and not found[1, 122] and not found[110, 10]
    assert not found[114, 152] and found[94, 99]


def test_detect_tissue_uses_otsu_not_a_fixed_cut(rng):
    faint = he_picture(rng, faint=True)
    found = detect_tissue(faint)
    assert not expected_tissue(faint, 0.2).any()  # a fixed cut for normal stains finds nothing
    np.testing.assert_array_equal(found, expected_tissue(faint, 0.05))
    assert 0.3 < found.mean() < 0.6


def test_blank_glass_has_no_tissue():
    assert not detect_tissue(np.full((32, 48, 3), 240, np.uint8)).any()
    assert not detect_tissue(np.zeros((4, 4, 3), np.float32)).any()


# -- from files -----------------------------------------------------------------------------------
def reduce_by_blocks(level, blocks):
    """Block means of a whole (H, W, 3) level, by padding with NaN and reshaping."""
    by, bx = blocks
    height, width = level.shape[:2]
    padded = np.full((-(-height // by) * by, -(-width // bx) * bx, 3), np.nan)
    padded[:height, :width] = level
    means = np.nanmean(padded.reshape(padded.shape[0] // by, by, padded.shape[1] // bx, bx, 3), axis=(1, 3))
    return np.rint(means).astype(np.uint8)


def expected_mask(path, reader, level, blocks):
    with open_image(path, reader, level=level) as image:
        return detect_tissue(reduce_by_blocks(image[...], blocks))


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """JPEG-tiled pyramids of 1024 x 768 pixels, 3 levels (downsamples 1, 2, 4), with glass
    in the top and bottom quarter of every level, at several mpp."""
    folder = tmp_path_factory.mktemp("slides")
    return {mpp: write_slide(str(folder / f"mpp{mpp}.tif"), 1024, 768, mpp=mpp, levels=3 if mpp != 0.25 else 2,
                             tile=64, background=0.5)
            for mpp in (1.0, 3.0, 0.25)}


@pytest.mark.parametrize("reader", ["tifffile", "openslide"])
@pytest.mark.parametrize("mpp, level, blocks, shape", [
    pytest.param(1.0, 2, (2, 2), (128, 96), id="mpp1-level2-by2"),
    pytest.param(3.0, 1, (1, 1), (512, 384), id="mpp3-level1"),
    pytest.param(0.25, 1, (16, 16), (32, 24), id="mpp0.25-level1-by16"),
])
def test_tissue_mask_picks_the_coarsest_level_at_8um(slides, reader, mpp, level, blocks, shape):
    found = tissue_mask(slides[mpp], reader=reader)
    assert isinstance(found, TissueMask) and found.mask.dtype == bool and found.mask.shape == shape
    step = mpp * 2 ** level * blocks[0]
    assert found.spacing == pytest.approx((step, step)) and max(found.spacing) <= 8.0
    np.testing.assert_array_equal(found.mask, expected_mask(slides[mpp], reader, level, blocks))
    assert found.fraction == pytest.approx(found.mask.mean())
    quarter = shape[0] // 4
    assert not found.mask[:quarter - 1].any() and not found.mask[-quarter + 1:].any()  # glass
    assert found.mask[quarter + 1:-quarter - 1].mean() > 0.25  # stained parts of the picture


def test_a_files_own_mpp_wins_over_spacing(slides):
    assert tissue_mask(slides[1.0], spacing=100.0).spacing == pytest.approx((8.0, 8.0))


@pytest.fixture(scope="module")
def no_mpp_pyramid(tmp_path_factory):
    """A JPEG-tiled pyramid without a pixel size: 1024 x 768, 512 x 384, 256 x 192."""
    import tifffile

    picture = tifffile.imread(write_slide(str(tmp_path_factory.mktemp("src") / "s.tif"), 1024, 768, levels=1,
                                          tile=64, background=0.5))
    path = str(tmp_path_factory.mktemp("nompp") / "slide.tif")
    with tifffile.TiffWriter(path) as tif:
        for k in range(3):
            tif.write(np.ascontiguousarray(picture[::2 ** k, ::2 ** k]), tile=(64, 64), photometric="rgb",
                      compression="jpeg", subfiletype=0 if k == 0 else 1, metadata=None)
    return path


def test_without_mpp_a_thumbnail_of_at_most_2048_px(no_mpp_pyramid, monkeypatch):
    monkeypatch.setattr(tissue_module, "THUMBNAIL_SIDE", 300)  # the rule, at this pyramid's scale
    found = tissue_mask(no_mpp_pyramid)  # level 1 (512 px, the coarsest >= 300) by ceil(512 / 300) = 2
    assert found.spacing is None and found.mask.shape == (256, 192)
    np.testing.assert_array_equal(found.mask, expected_mask(no_mpp_pyramid, "tifffile", 1, (2, 2)))
    monkeypatch.setattr(tissue_module, "THUMBNAIL_SIDE", 2048)
    assert tissue_mask(no_mpp_pyramid).mask.shape == (1024, 768)  # every level is smaller: level 0 as is


def test_spacing_stands_in_for_a_missing_mpp(no_mpp_pyramid):
    found = tissue_mask(no_mpp_pyramid, spacing=(2.0, 2.0))  # levels at 2, 4, 8 um: level 2 as is
    assert found.spacing == pytest.approx((8.0, 8.0)) and found.mask.shape == (256, 192)
    np.testing.assert_array_equal(found.mask, expected_mask(no_mpp_pyramid, "tifffile", 2, (1, 1)))
    coarse = tissue_mask(no_mpp_pyramid, spacing=0.5, max_spacing=16.0)  # level 2 (2 um) by 8
    assert coarse.spacing == pytest.approx((16.0, 16.0)) and coarse.mask.shape == (32, 24)


def test_reads_are_bands_of_whole_block_rows(tmp_path, monkeypatch):
    from lazypatch.ingest.readers import NumpyReader

    slide = np.full((1001, 300, 3), 236, np.uint8)
    slide[100:900, 50:250] = (226, 140, 192)
    slide[300:700, 100:200] = (130, 70, 172)
    path = str(tmp_path / "slide.npy")
    np.save(path, slide)
    whole = tissue_mask(path, spacing=1.0)  # blocks of 8 x 8
    rows = []
    original = NumpyReader.__getitem__

    def spy(self, key):
        rows.append(key)
        return original(self, key)

    monkeypatch.setattr(NumpyReader, "__getitem__", spy)
    monkeypatch.setattr(tissue_module, "_BAND_BYTES", 8 * 300 * 7 * 5)  # 5 block rows a band
    banded = tissue_mask(path, spacing=1.0)
    np.testing.assert_array_equal(banded.mask, whole.mask)
    assert whole.mask.shape == (126, 38)
    assert rows == [slice(r, min(r + 40, 1001)) for r in range(0, 1001, 40)]


def test_a_mask_has_at_most_max_mask_side_cells(tmp_path, monkeypatch):
    scene = np.full((300, 200, 3), 240, np.uint8)
    scene[100:200, 50:150] = (130, 70, 172)
    path = str(tmp_path / "scene.npy")
    np.save(path, scene)
    monkeypatch.setattr(tissue_module, "MAX_MASK_SIDE", 64)
    coarse = tissue_mask(path, spacing=100.0)  # level 0 already coarser than 8 um: blocks of ceil(300 / 64) = 5
    assert coarse.mask.shape == (60, 40) and coarse.spacing == pytest.approx((500.0, 500.0))
    np.testing.assert_array_equal(coarse.mask, detect_tissue(reduce_by_blocks(scene, (5, 5))))
    assert tissue_mask(path).mask.shape == (60, 40) and tissue_mask(path).spacing is None


def test_transparent_pixels_are_glass(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[...] = (130, 70, 172, 255)
    rgba[:, :32, 3] = 0  # transparent: glass, whatever its colour
    rgba[:, 16:32, :3] = 250
    path = str(tmp_path / "rgba.npy")
    np.save(path, rgba)
    found = tissue_mask(path, spacing=2.0)  # blocks of 4
    assert not found.mask[:, :8].any() and found.mask[:, 8:].all()


@pytest.mark.parametrize("call, kind, message", [
    pytest.param(lambda p: tissue_mask(p("gray", np.zeros((8, 8), np.uint8))), ParameterError,
                 r"RGB or RGBA uint8 .*gray\.npy' is \(8, 8\) uint8", id="gray"),
    pytest.param(lambda p: tissue_mask(p("deep", np.zeros((8, 8, 3), np.uint16))), ParameterError,
                 r"RGB or RGBA uint8 .*deep\.npy' is \(8, 8, 3\) uint16", id="uint16"),
    pytest.param(lambda p: tissue_mask(p("two", np.zeros((8, 8, 2), np.uint8))), ParameterError,
                 r"two\.npy' is \(8, 8, 2\)", id="two-channels"),
    pytest.param(lambda p: tissue_mask(p("rgb", np.zeros((8, 8, 3), np.uint8)), spacing=0), ParameterError,
                 r"spacing must be positive", id="spacing-zero"),
    pytest.param(lambda p: tissue_mask(p("rgb", np.zeros((8, 8, 3), np.uint8)), spacing=(1, 2, 3)),
                 ParameterTypeError, r"spacing must be a number of um or \(y, x\), got \(1, 2, 3\)", id="spacing-3"),
    pytest.param(lambda p: tissue_mask(p("rgb", np.zeros((8, 8, 3), np.uint8)), spacing="0.5"),
                 ParameterTypeError, r"spacing must be a number", id="spacing-text"),
    pytest.param(lambda p: tissue_mask(p("rgb", np.zeros((8, 8, 3), np.uint8)), max_spacing=-8),
                 ParameterError, r"max_spacing must be a positive number of um, got -8", id="max-spacing"),
    pytest.param(lambda p: tissue_mask(p("rgb", np.zeros((8, 8, 3), np.uint8)), max_spacing=True),
                 ParameterError, r"max_spacing must be a positive number", id="max-spacing-bool"),
    pytest.param(lambda p: tissue_mask(p("rgb", np.zeros((8, 8, 3), np.uint8)), reader="pillow"),
                 Exception, r"rgb\.npy", id="wrong-reader"),
    pytest.param(lambda p: detect_tissue(np.zeros((8, 8), np.uint8)), ParameterError,
                 r"rgb must be an \(h, w, 3\) array of pixel values, got shape \(8, 8\)", id="detect-2d"),
    pytest.param(lambda p: detect_tissue(np.full((2, 2, 3), -1.0)), ParameterError,
                 r"finite values >= 0", id="detect-negative"),
])
def test_bad_input(tmp_path, call, kind, message):
    def write(name, array):
        path = str(tmp_path / f"{name}.npy")
        np.save(path, array)
        return path

    with pytest.raises(kind, match=message):
        call(write)


def test_scipy_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    with pytest.raises(ImportError, match=r'pip install "lazypatch\[wsi\]"'):
        detect_tissue(np.eye(4)[..., None].repeat(3, -1) * [200, 100, 100])


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        tissue_mask(os.path.join(tmp_path, "none.tif"))
