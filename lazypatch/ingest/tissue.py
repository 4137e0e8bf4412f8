"""Tissue detection for slides: a low-resolution tissue mask from a thumbnail.

Who uses it: ``lazypatch build --tissue otsu`` calls :func:`tissue_mask` on
every slide and stores the masks (``write_store(..., tissue=...)``, format
1.2), so that ``foreground_filter(store, ..., source="tissue")`` keeps only
tissue patches and ``lazypatch info`` reports each slide's tissue fraction.

The method (tiatoolbox's and most pipelines' Otsu tissue masker):

1. a thumbnail at about 8 um per pixel (``max_spacing``): the coarsest
   pyramid level at or finer than that, reduced by an integer block mean,
   read band by band (bounded memory whatever the slide's size);
2. HSV saturation ``(max - min) / max`` of each thumbnail pixel: glass is
   white or gray (unsaturated) however bright, stained tissue is coloured;
3. Otsu's threshold of the saturations (``lazypatch.stats.foreground.otsu_threshold``);
4. connected pieces of tissue (8-connected) and holes in it (4-connected
   background not touching the border) smaller than 1% of the tissue area
   removed: dust, pen specks, and the small gaps of loose tissue.

The mask covers the whole slide: stored pixel (y, x) of an (H, W) image is
cell ``(y * h // H, x * w // W)`` of an (h, w) mask, whatever resolution the
image was stored at (``--level``, ``--mpp``).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from ..errors import ParameterError, ParameterTypeError

__all__ = ["TissueMask", "detect_tissue", "tissue_mask"]

THUMBNAIL_SIDE = 2048  # the longer side of the thumbnail of a slide without a pixel size
MAX_MASK_SIDE = 8192  # the most cells along a mask's side (65 mm at 8 um: more than a slide)
SMALL_FRACTION = 0.01  # specks and holes under this fraction of the tissue area are removed
_BAND_BYTES = 32 << 20  # source rows read at once when reducing a level to the thumbnail
_TO_UM = {"um": 1.0, "mm": 1e3, "m": 1e6}  # units of a length; "deg" and None have none


class TissueMask(NamedTuple):
    """A slide's tissue mask (:func:`tissue_mask`)."""

    mask: np.ndarray
    """(h, w) bool, True on tissue; covers the whole slide."""
    spacing: tuple | None
    """(y, x) size of a cell in um, or None when the slide's pixel size is unknown."""
    fraction: float
    """The fraction of the mask's cells that are tissue."""


def _ndimage():
    """scipy.ndimage, or an ImportError that says what to install."""
    try:
        import scipy.ndimage
    except ImportError as exc:
        raise ImportError(
            f"tissue detection needs scipy (import of 'scipy.ndimage' failed: {exc}); install it with: "
            'pip install "lazypatch[wsi]"'
        ) from exc
    return scipy.ndimage


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` of (h, w, 3) pixels, float64 (0 where max is 0).

    >>> saturation(np.array([[[255, 255, 255], [200, 100, 100], [0, 0, 0]]], np.uint8)).tolist()
    [[0.0, 0.5, 0.0]]
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    out = np.zeros(high.shape)
    np.divide(high - low, high, out=out, where=high > 0)
    return out


def detect_tissue(rgb: np.ndarray) -> np.ndarray:
    """The tissue of an RGB thumbnail: Otsu on HSV saturation, small specks and holes removed.

    Parameters
    ----------
    rgb : numpy.ndarray (h, w, 3)
        Pixels of any real dtype, not negative (a thumbnail at a few um per
        pixel: :func:`tissue_mask` makes one).

    Returns
    -------
    numpy.ndarray
        (h, w) bool: True where saturation is at or above Otsu's threshold of
        the image's saturations, after removing the connected pieces of tissue
        (8-connected) smaller than 1% of the tissue area and filling the holes
        (4-connected background that does not touch the image border) smaller
        than 1% of it. An image of one saturation (blank glass) has no tissue.

    Raises
    ------
    ParameterError
        Not an (h, w, 3) array of non-negative numbers.
    ImportError
        scipy is missing (``pip install "lazypatch[wsi]"``).

    Notes
    -----
    Otsu splits the saturations in two classes whatever they are: a
    thumbnail that is all tissue (no glass) loses its palest part. Pen marks
    are saturated and count as tissue.

    Examples
    --------
    >>> rgb = np.full((40, 40, 3), 240, np.uint8)   # glass
    >>> rgb[5:30, 5:30] = (200, 110, 170)           # a piece of pink tissue
    >>> rgb[15:17, 15:17] = 240                     # a small hole in it: filled
    >>> rgb[36, 36] = (120, 60, 160)                # a purple speck: removed
    >>> mask = detect_tissue(rgb)
    >>> int(mask.sum()), bool(mask[16, 16]), bool(mask[36, 36])
    (625, True, False)
    """
    from ..stats.foreground import otsu_threshold

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or min(rgb.shape[:2]) < 1 or rgb.dtype.kind not in "uif":
        raise ParameterError(f"rgb must be an (h, w, 3) array of pixel values, got shape {rgb.shape} {rgb.dtype}")
    if rgb.dtype.kind != "u" and (not np.isfinite(rgb).all() or rgb.min() < 0):
        raise ParameterError("rgb must hold finite values >= 0 (RGB intensities)")
    values = saturation(rgb)
    if values.min() == values.max():
        return np.zeros(values.shape, bool)
    tissue = values >= otsu_threshold(values)
    return remove_small(tissue, SMALL_FRACTION * int(tissue.sum()))


def remove_small(tissue: np.ndarray, area: float) -> np.ndarray:
    """``tissue`` without its 8-connected pieces smaller than ``area`` cells, and with its
    holes (4-connected background not touching the border) smaller than ``area`` filled.

    >>> tissue = np.zeros((7, 7), bool); tissue[1:5, 1:5] = True
    >>> tissue[2, 2] = False  # a one-cell hole
    >>> tissue[6, 6] = True  # a one-cell speck
    >>> [(bool(m[2, 2]), bool(m[6, 6])) for m in (remove_small(tissue, 2), remove_small(tissue, 1))]
    [(True, False), (False, True)]
    """
    ndimage = _ndimage()
    tissue = np.asarray(tissue, bool)
    labels, count = ndimage.label(tissue, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    small = sizes < area
    small[0] = False
    kept = tissue & ~small[labels]
    background, count = ndimage.label(~kept)  # 4-connected (the default cross)
    sizes = np.bincount(background.ravel(), minlength=count + 1)
    holes = sizes < area
    holes[0] = False
    border = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    holes[border] = False
    return kept | holes[background]


def tissue_mask(path, *, reader: str | None = None, spacing=None, max_spacing: float = 8.0) -> TissueMask:
    """The tissue mask of a slide, at about ``max_spacing`` um per cell, made with bounded memory.

    Parameters
    ----------
    path : str or os.PathLike
        An RGB or RGBA uint8 image that :func:`lazypatch.ingest.readers.open_image`
        opens: a whole-slide image, a pyramidal or plain TIFF, a PNG...
    reader : str, optional
        Force a reader (as ``open_image``; by default chosen by extension and content).
    spacing : float or (float, float), optional
        The level-0 pixel size in um, (y, x) or one number, for files whose
        reader finds none (``--assume-mpp``); a file's own pixel size wins.
    max_spacing : float
        The coarsest cell size of the mask, in um (8 by default).

    Returns
    -------
    TissueMask
        ``mask`` ((h, w) bool, :func:`detect_tissue` of the thumbnail),
        ``spacing`` ((y, x) um per cell, or None) and ``fraction`` (of cells
        that are tissue).

    Raises
    ------
    ParameterError, ParameterTypeError
        An image that is not RGB(A) uint8 (the message names the file), a bad
        ``spacing`` or ``max_spacing``.
    FileNotFoundError, ImageReadError, ImportError
        As ``open_image``: no such file, an unreadable one, a missing reader
        library; ImportError too without scipy.

    Notes
    -----
    With a pixel size (in um, or a length unit converted to um; a CRS in
    degrees counts as none): the thumbnail is the coarsest pyramid level whose
    spacing is at most ``max_spacing`` on both axes (level 0 when even it is
    coarser), reduced by the largest integer block per axis that keeps the
    cell at most ``max_spacing``; ``spacing`` of the result is that cell's size.
    A mask has at most 8,192 cells along a side (65 mm at 8 um): an image
    larger than that at its pixel size (level 0 coarser than ``max_spacing``)
    gets larger blocks.
    Without one: the thumbnail's longer side is at most 2,048 px (and more
    than 1,024 when the slide is larger): the coarsest level with a side of at
    least 2,048 px, reduced by ``ceil(longer side / 2048)`` on both axes; its
    ``spacing`` is None. A block mean averages the pixels a block holds (the
    last row and column of blocks may hold fewer), so the mask covers the
    slide's whole extent. RGBA pixels are composited onto white first
    (transparent pixels are glass). The level is read in bands of whole
    blocks of rows, at most about 32 MiB each (one block row if larger).

    Examples
    --------
    >>> import tempfile, os
    >>> slide = np.full((3000, 1000, 3), 235, np.uint8)
    >>> slide[500:2500, 200:800] = (190, 90, 160)  # stained tissue on glass
    >>> path = os.path.join(tempfile.mkdtemp(), "slide.npy")
    >>> np.save(path, slide)
    >>> found = tissue_mask(path, spacing=0.5)  # 0.5 um/px: blocks of 16 x 16 px, 8 um
    >>> found.mask.shape, found.spacing, round(found.fraction, 2)
    ((188, 63), (8.0, 8.0), 0.39)
    >>> tissue_mask(path).mask.shape  # no pixel size: a thumbnail of at most 2,048 px
    (1500, 500)
    """
    from .readers import open_image

    path_text = os.fspath(path)
    if isinstance(max_spacing, bool) or not isinstance(max_spacing, (int, float, np.integer, np.floating)) \
            or not math.isfinite(max_spacing) or max_spacing <= 0:
        raise ParameterError(f"max_spacing must be a positive number of um, got {max_spacing!r}")
    fallback = _check_spacing(spacing)
    with open_image(path, reader) as base:
        _check_rgb(base, path_text)
        count = max(1, int(getattr(base, "level_count", 1)))
        base_shape = tuple(int(v) for v in base.shape[:2])
        base_spacing = _um(base.geometry) or fallback
    levels = [(0, base_shape)]
    for level in range(1, count):  # each level's shape; the readers' level_count says how many
        with open_image(path, reader, level=level) as image:
            levels.append((level, tuple(int(v) for v in image.shape[:2])))
    if base_spacing is not None:
        level_spacing = {level: tuple(s * b / n for s, b, n in zip(base_spacing, base_shape, shape))
                         for level, shape in levels}
        tolerance = max_spacing * (1 + 1e-9)
        fine = [level for level, _ in levels if max(level_spacing[level]) <= tolerance]
        level = max(fine, key=lambda k: max(level_spacing[k])) if fine else 0
        cell = level_spacing[level]
        blocks = tuple(max(1, int(math.floor(tolerance / v))) for v in cell)
        shape = dict(levels)[level]
    else:
        large = [(level, shape) for level, shape in levels if max(shape) >= THUMBNAIL_SIDE]
        level, shape = min(large, key=lambda item: max(item[1])) if large else levels[0]
        blocks = (max(1, -(-max(shape) // THUMBNAIL_SIDE)),) * 2
    # an image coarser than max_spacing at level 0 (a scene in metres) gets larger blocks
    side = max(-(-n // b) for n, b in zip(shape, blocks))
    blocks = tuple(b * -(-side // MAX_MASK_SIDE) for b in blocks)
    mask_spacing = None if base_spacing is None else (cell[0] * blocks[0], cell[1] * blocks[1])
    with open_image(path, reader, level=level) as image:
        _check_rgb(image, path_text)
        thumbnail = block_mean(image, blocks)
    mask = detect_tissue(thumbnail)
    return TissueMask(mask, mask_spacing, float(mask.mean()))


def block_mean(image, blocks) -> np.ndarray:
    """The (ceil(H / by), ceil(W / bx), 3) uint8 thumbnail of an (H, W, 3 or 4) uint8
    array-like: the rounded mean of each block of ``blocks = (by, bx)`` pixels (fewer in
    the last row and column of blocks), read in bands of whole block rows; RGBA is
    composited onto white first.

    >>> image = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    >>> block_mean(image, (2, 2))[..., 0].tolist()
    [[8, 14], [32, 38], [50, 56]]
    """
    height, width, channels = (int(v) for v in image.shape)
    by, bx = (int(v) for v in blocks)
    rows_out, cols_out = -(-height // by), -(-width // bx)
    out = np.empty((rows_out, cols_out, 3), np.uint8)
    col_starts = np.arange(0, width, bx)
    col_sizes = np.diff(np.r_[col_starts, width])
    row_bytes = width * (channels + (24 if channels == 4 else 4))  # the source row and its working copies
    step = max(1, _BAND_BYTES // max(row_bytes * by, 1))  # block rows per band
    for i0 in range(0, rows_out, step):
        r0, r1 = i0 * by, min(height, (i0 + step) * by)
        band = np.asarray(image[r0:r1])
        if channels == 4:
            alpha = band[..., 3:].astype(np.float64) / 255
            band = band[..., :3] * alpha + 255 * (1 - alpha)
            sum_type = np.float64
        else:
            sum_type = np.uint64
        row_starts = np.arange(0, r1 - r0, by)
        row_sizes = np.diff(np.r_[row_starts, r1 - r0])
        sums = np.add.reduceat(np.add.reduceat(band, row_starts, axis=0, dtype=sum_type), col_starts, axis=1)
        counts = (row_sizes[:, None] * col_sizes[None, :])[..., None]
        out[i0:i0 + len(row_starts)] = np.clip(np.rint(sums / counts), 0, 255).astype(np.uint8)
    return out


def _check_rgb(image, path: str) -> None:
    shape, dtype = tuple(int(v) for v in image.shape), np.dtype(image.dtype)
    spatial = getattr(image, "spatial_ndim", None)  # None: a .npy, whose axes the caller names
    if len(shape) != 3 or shape[-1] not in (3, 4) or dtype != np.uint8 or spatial not in (None, 2):
        raise ParameterError(
            f"tissue detection needs an RGB or RGBA uint8 image (a slide, (H, W, 3 or 4)); {path!r} "
            f"is {shape} {dtype.name}"
        )


def _check_spacing(spacing):
    """``spacing`` (one number or (y, x), in um) as a (y, x) tuple of floats, or None."""
    if spacing is None:
        return None
    values = (spacing, spacing) if np.ndim(spacing) == 0 else spacing
    try:
        values = tuple(values)
        if len(values) != 2 or any(isinstance(v, (bool, str, bytes)) for v in values):
            raise TypeError
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ParameterTypeError(f"spacing must be a number of um or (y, x), got {spacing!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ParameterError(f"spacing must be positive (um per pixel), got {spacing!r}")
    return values


def _um(geometry) -> tuple | None:
    """A reader's (y, x) spacing in um, or None (none, or in degrees)."""
    spacing = (geometry or {}).get("spacing")
    scale = _TO_UM.get((geometry or {}).get("unit"))
    if spacing is None or scale is None or len(spacing) != 2:
        return None
    return tuple(float(v) * scale for v in spacing)
