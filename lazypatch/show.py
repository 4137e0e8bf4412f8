"""Pictures of a store: an image with its patch grid, and a grid of sample patches.

``lazypatch show STORE --out grid.png`` and :func:`show` (for notebooks) draw
one figure: on the left one image with the patch grid over it, the sampled
patches of that image highlighted; on the right a grid of random patches from
the whole store (or dataset), each titled with its image and origin, the mask
overlaid when the store has masks, with a legend of the label colours under
the panels. The image is chosen by number or name, the channels displayed
(one, gray, or three, RGB) with ``channels``. :func:`to_display` turns any image or
patch array into something ``imshow`` shows faithfully.

matplotlib is imported inside the functions that draw, never at import time,
and figures are made with ``matplotlib.figure.Figure`` on an Agg canvas: no
pyplot, no GUI backend, nothing global changed. In a notebook the returned
Figure displays itself.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

from . import _compat
from .grid import describe_shape, grid_counts, is_int
from .errors import ParameterError, ParameterTypeError, PatchIndexError
from .index import PatchIndex

__all__ = ["show", "to_display"]

FIGSIZE = (12.0, 6.0)  # inches: a 1200 x 600 PNG at the default dpi of 100
DEFAULT_PATCH = 256  # the largest default patch side, see show()
_IMAGE_PIXELS = 1024  # the image panel shows at most this many pixels per axis
_SAMPLE_PIXELS = 256  # a sample panel shows at most this many pixels per axis
_READ_COLUMNS = 4096  # the widest read of a decimated view (see NOTE [bounded reads])
_MAX_RECTANGLES = 256  # more grid positions than this are drawn as lines
_LOCATE_LIMIT = 4096  # an image with more patches is drawn as lines without locating them
_MAX_LINES = 128  # lines per axis; a denser grid draws every k-th line
_MASK_COLORS = 10  # labels 1, 2, ... cycle through tab10 (distinct hues; tab20 pairs look alike)
_MASK_ALPHA = 0.4  # the overlay's, and its legend's, opacity


# -- the command line ------------------------------------------------------------------


# -- the notebook function -------------------------------------------------------------
def show(store, image=None, patch_size=None, stride=None, edge=None, *, samples: int = 16,
         seed: int = 0, out=None, dpi: float = 100, figsize=FIGSIZE, channels=None):
    """Draw an image with its patch grid, and a grid of random sample patches.

    Parameters
    ----------
    store : ImageStore, path, list of shard paths, or PatchDataset
        What to draw. A :class:`~lazypatch.PatchDataset` brings its own grid
        (``patch_size``, ``stride``, ``edge``, ``image_ids``, ``filter``): the
        samples come from its patches only. Images are shown as stored: the
        dataset's ``transform``, ``dtype`` and ``normalize`` are not applied.
    image : int or str, optional
        The image drawn with its grid: the store's number, or its name
        (``store.names``). Default: 0, or the first image of a dataset
        restricted by ``image_ids``.
    patch_size, stride, edge
        The grid (see :class:`~lazypatch.PatchIndex`); leave them ``None``
        with a dataset. ``patch_size`` defaults, per axis, to the smaller of
        256 and the smallest image's extent, so every image holds a patch;
        ``stride`` to ``patch_size``; ``edge`` to ``"drop"``.
    samples : int
        How many random patches to show (fewer when the grid has fewer),
        drawn without replacement from every patch of the store or dataset.
    seed : int
        Seed of that draw: the same seed shows the same patches.
    out : path, optional
        Also save the figure there (PNG for a ``.png`` name or none; another
        extension matplotlib knows, e.g. ``.pdf``, gives that format).
    dpi : float
        Resolution of the figure and of the saved picture.
    figsize : (float, float)
        Width and height in inches; the PNG is ``figsize * dpi`` pixels.
    channels : int or sequence of int, optional
        The store's channels to display: one (gray) or three (red, green,
        blue), e.g. ``(3, 2, 1)`` for a false-colour picture of a
        multispectral store. Default: the first 3, or the first (see
        :func:`to_display`).

    Returns
    -------
    matplotlib.figure.Figure
        Its first axes is the image panel, the others the sample panels in
        sample order (sorted by patch number).

    Raises
    ------
    ParameterError, ParameterTypeError
        A bad ``samples``, ``seed``, ``dpi``, ``figsize``, ``channels``, grid,
        a grid parameter given together with a dataset, or an ``image`` name
        the store does not have (or has several times).
    PatchIndexError
        ``image`` is not an image of the store (or of the dataset).

    Notes
    -----
    Pixels are scaled for display by :func:`to_display`: the image panel by its
    own 1st and 99th percentiles, the sample panels by percentiles shared by
    all samples, so they compare. Masks are overlaid at alpha 0.4 with label 0
    left transparent and labels 1, 2, ... cycling through the 10 colours of
    ``tab10``; a legend under the panels gives each colour drawn with the
    labels it shows (``1, 11`` when both are drawn).

    A large image is shown decimated to at most 1,024 pixels per axis (every
    k-th pixel, read row by row; see NOTE [bounded reads]): the whole image is
    never read. Up to 256 grid positions are drawn as rectangles; a larger
    grid as lines at the patch origins and at the end of the last patch,
    every k-th line when there are more than 128 per axis (for a filtered
    dataset those lines are the unfiltered grid's). Sampled patches of the
    image are outlined in yellow.

    A 3-D store (spatial_ndim=3) shows the middle z slice of the image and of
    each sampled patch; the grid and the outlined samples drawn over the image
    are projected onto (y, x).
    """
    figure, _ = render(store, image, patch_size, stride, edge, samples, seed, dpi, figsize, channels)
    if out is not None:
        save_figure(figure, out, dpi)
    return figure


def to_display(array, channels_first: bool = False, limits=None) -> np.ndarray:
    """An image or patch as float32 in [0, 1], ready for ``imshow``.

    Parameters
    ----------
    array : array-like (or CPU tensor)
        (H, W), (H, W, C) channels-last as the store returns them, or
        (C, H, W) with ``channels_first=True`` as dataset samples are.
    channels_first : bool
        Whether a 3-D ``array`` has its channels first.
    limits : (low, high), optional
        Values shown as 0 and 1, per shown channel (or one for all), e.g.
        shared by several patches. Default: this array's 1st and 99th
        percentiles per channel, over its finite values. Ignored for uint8
        and bool data.

    Returns
    -------
    numpy.ndarray of float32
        (H, W) for a gray picture, (H, W, 3) for RGB. 1 channel is gray; of
        2 channels the first is shown, gray; 3 are RGB; of 4 or more the
        first 3 are shown as RGB (a 4th, e.g. alpha, is dropped). uint8 is
        shown as is (divided by 255), bool as 0 and 1; other integers and
        floats are stretched per channel from ``limits`` to [0, 1] and
        clipped. NaN shows as 0.

    Raises
    ------
    ParameterError
        ``array`` is not 2-D or 3-D, or has no channels.
    ParameterTypeError
        ``array`` does not hold real numbers.

    Examples
    --------
    >>> to_display(np.array([[0, 255]], np.uint8)).tolist()
    [[0.0, 1.0]]
    >>> to_display(np.zeros((2, 5, 4), np.uint16), channels_first=True).shape
    (5, 4)
    >>> to_display(np.zeros((5, 4, 4), np.uint8)).shape
    (5, 4, 3)
    >>> to_display(np.array([[0.0, 2.0, np.nan]]), limits=(0, 4)).tolist()
    [[0.0, 0.5, 0.0]]
    """
    image = np.asarray(array)
    if image.ndim not in (2, 3):
        raise ParameterError(
            f"array must be (H, W), (H, W, C) or, with channels_first, (C, H, W); "
            f"got shape {image.shape}"
        )
    if image.ndim == 2:
        image = image[..., None]
    elif channels_first:
        image = np.moveaxis(image, 0, -1)
    if image.shape[-1] == 0:
        raise ParameterError(f"array has no channels: shape {np.asarray(array).shape}")
    image = _shown_channels(image)
    if image.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255
    elif image.dtype.kind == "b":
        scaled = image.astype(np.float32)
    elif image.dtype.kind in "iuf":
        low, high = _percentile_limits(image) if limits is None else limits
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        span = np.where(high > low, high - low, 1.0)
        scaled = np.clip((image - low) / span, 0, 1).astype(np.float32)
        scaled[np.isnan(scaled)] = 0
    else:
        raise ParameterTypeError(f"array must hold real numbers, got {image.dtype}")
    return scaled[..., 0] if scaled.shape[-1] == 1 else scaled


def _shown_channels(image: np.ndarray) -> np.ndarray:
    """The channels shown of a channels-last image: the first 3, or else the first."""
    return image[..., :3] if image.shape[-1] >= 3 else image[..., :1]


def _percentile_limits(image: np.ndarray):
    """The 1st and 99th percentiles of each channel of (..., C), over finite values.

    A channel without a finite value gets (0, 1), and no warning.
    """
    pixels = image.reshape(-1, image.shape[-1])
    low, high = np.zeros(pixels.shape[1]), np.ones(pixels.shape[1])
    for channel in range(pixels.shape[1]):
        values = pixels[:, channel].astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            low[channel], high[channel] = np.percentile(values, (1, 99))
    return low, high


# -- what to draw ------------------------------------------------------------------------
class _Source:
    """The store, the grid and the images of what is shown."""

    def __init__(self, source, patch_size, stride, edge):
        from .store import ImageStore

        self.opened = False
        dataset_module = sys.modules.get("lazypatch.data.dataset")  # imported iff a PatchDataset exists
        if dataset_module is not None and isinstance(source, dataset_module.PatchDataset):
            given = {"patch_size": patch_size, "stride": stride, "edge": edge}
            given = {k: v for k, v in given.items() if v is not None}
            if given:
                raise ParameterError(
                    f"patch_size, stride and edge come from the dataset; leave them None, got "
                    + ", ".join(f"{k}={v!r}" for k, v in given.items())
                )
            self.store, self.index = source.store, source.index
            self.image_ids = source.image_ids
            self.pad_value, self.mask_pad_value = source.pad_value, source.mask_pad_value
            return
        if isinstance(source, (str, bytes, os.PathLike, list, tuple)):
            source, self.opened = ImageStore(source), True
        elif not isinstance(source, ImageStore):
            raise ParameterTypeError(
                "store must be an ImageStore, a path, a list of shard paths or a PatchDataset, "
                f"got {type(source).__name__}"
            )
        self.store = source
        try:
            if patch_size is None:
                patch_size = tuple(int(v) for v in np.minimum(source.shapes.min(axis=0), DEFAULT_PATCH))
            self.index = PatchIndex(source.shapes, patch_size, stride, "drop" if edge is None else edge)
        except Exception:
            self.close()
            raise
        self.image_ids = None
        self.pad_value = self.mask_pad_value = 0

    def close(self) -> None:
        if self.opened:
            self.store.close()

    def number(self, image) -> int:
        """The store's number of ``image``, given by number or by name."""
        if isinstance(image, str):
            return int(self.store.image_ids_of([image], "image")[0])
        if not is_int(image):
            raise ParameterTypeError(
                f"image must be an integer, got {type(image).__name__} {image!r} (or an image name, a str)")
        return int(image)

    def local(self, image: int) -> int:
        """The index's number of a store image (they differ for a dataset with image_ids)."""
        if not 0 <= image < len(self.store):
            raise PatchIndexError(f"image {image} is out of range for a store of {len(self.store)} images")
        if self.image_ids is None:
            return int(image)
        found = np.flatnonzero(self.image_ids == image)
        if found.size == 0:
            shown = self.image_ids[:10].tolist()
            raise PatchIndexError(
                f"image {image} is not in the dataset, whose image_ids are "
                f"{shown}{' ...' if len(self.image_ids) > 10 else ''}"
            )
        return int(found[0])

    def store_ids(self, local: np.ndarray) -> np.ndarray:
        return local if self.image_ids is None else self.image_ids[local]

    def check_channels(self, channels) -> None:
        """Keep the channels to display (one or three of the store's), checked."""
        self.channels = _check_channels(channels, self.store.channels)

    def shown(self, pixels: np.ndarray) -> np.ndarray:
        """The channels to display of a channels-last view."""
        return pixels if self.channels is None else pixels[..., list(self.channels)]


def _check_channels(channels, count: int):
    if channels is None:
        return None
    items = (channels,) if is_int(channels) else channels
    if isinstance(items, (str, bytes)) or not isinstance(items, (tuple, list, np.ndarray)):
        raise ParameterTypeError(f"channels must be a channel number or a sequence of them, got {channels!r}")
    items = tuple(items.tolist() if isinstance(items, np.ndarray) else items)
    if not all(is_int(c) for c in items):
        raise ParameterTypeError(f"channels must be channel numbers (integers), got {channels!r}")
    if len(items) not in (1, 3):
        raise ParameterError(f"channels must name 1 channel (gray) or 3 (red, green, blue), got {len(items)}: "
                             f"{tuple(int(c) for c in items)}")
    bad = [int(c) for c in items if not 0 <= c < count]
    if bad:
        raise ParameterError(f"channels: channel {bad[0]} is out of range for a store of {count} channels "
                             f"(0 to {count - 1}), got {tuple(int(c) for c in items)}")
    return tuple(int(c) for c in items)

def _check_options(samples, seed, dpi, figsize) -> None:
    if not is_int(samples) or samples < 1:
        raise ParameterError(f"samples must be a positive integer, got {samples!r}")
    if not is_int(seed) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    if not _is_positive_number(dpi):
        raise ParameterError(f"dpi must be a positive number, got {dpi!r}")
    if (not isinstance(figsize, (tuple, list)) or len(figsize) != 2
            or not all(_is_positive_number(v) for v in figsize)):
        raise ParameterError(f"figsize must be (width, height) in inches, positive numbers, got {figsize!r}")


def _is_positive_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def render(source, image, patch_size, stride, edge, samples, seed, dpi, figsize, channels=None):
    """(Figure, facts for the command line's summary line)."""
    _check_options(samples, seed, dpi, figsize)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError('lazypatch show draws with matplotlib: pip install "lazypatch[show]" '
                          "(or pip install matplotlib)") from exc
    source = _Source(source, patch_size, stride, edge)
    try:
        source.check_channels(channels)
        if image is None:
            image = 0 if source.image_ids is None else int(source.image_ids[0])
        image = source.number(image)
        local = source.local(image)
        return _draw(source, image, local, samples, seed, dpi, figsize)
    finally:
        source.close()


def _draw(source: _Source, image: int, local: int, samples: int, seed: int, dpi, figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    store, index = source.store, source.index
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(len(index), size=min(samples, len(index)), replace=False))
    sample_locals, sample_origins = index.locate(flat)
    sample_ids = source.store_ids(sample_locals)

    figure = Figure(figsize=tuple(figsize), dpi=dpi)
    FigureCanvasAgg(figure)
    columns = max(1, math.ceil(math.sqrt(len(flat))))  # a filter may keep no patch at all
    rows = max(1, math.ceil(len(flat) / columns))
    bottom = 0.13 if store.has_masks else 0.06  # room for the legend of the mask colours
    layout = GridSpec(1, 2, figure=figure, left=0.05, right=0.98, bottom=bottom, top=0.88, wspace=0.12)
    image_axes = figure.add_subplot(layout[0, 0])
    cells = layout[0, 1].subgridspec(rows, columns, wspace=0.08, hspace=0.35)
    sample_axes = [figure.add_subplot(cells[k // columns, k % columns]) for k in range(len(flat))]

    facts = _draw_image(image_axes, source, image, local,
                        sample_origins[sample_ids == image])
    labels = facts.pop("labels") | _draw_samples(sample_axes, source, sample_ids, sample_origins)
    if labels:
        _legend(figure, labels)
    facts.update(samples=len(flat), total=len(index), channels=source.channels)
    shown = f" (shown: {', '.join(map(str, source.channels))})" if source.channels is not None else ""
    figure.suptitle(f"{os.path.basename(store.path)}"
                    f"{f' (+{len(store.paths) - 1} shards)' if len(store.paths) > 1 else ''}: "
                    f"{len(store)} images, {store.channels} x {store.dtype.name}{shown}, "
                    f"{len(index)} patches of {describe_shape(index.patch_size)}; "
                    f"{len(flat)} random patches (seed {seed})", fontsize=10)
    return figure, facts


def _draw_image(axes, source: _Source, image: int, local: int, highlighted: np.ndarray) -> dict:
    """The image (its middle z slice) with its grid; the facts for the summary line."""
    store, index = source.store, source.index
    shape = tuple(int(v) for v in store.shapes[image])
    origin = (shape[0] // 2, 0, 0) if len(shape) == 3 else (0, 0)
    size = (1,) + shape[1:] if len(shape) == 3 else shape
    pixels, mask, step = _read_view(store, image, origin, size, _IMAGE_PIXELS)
    extent = (0, pixels.shape[1] * step, pixels.shape[0] * step, 0)
    axes.imshow(to_display(source.shown(pixels)), cmap="gray", vmin=0, vmax=1, extent=extent,
                interpolation="nearest")
    labels = _overlay(axes, mask, extent) if mask is not None else set()
    height, width = shape[-2:]

    count = int(index.counts[local])
    start = int(index.offsets[local]) - count
    patch = index.patch_size[-2:]
    if 0 < count <= _LOCATE_LIMIT:  # 3-D: many z positions may share a (y, x)
        origins = np.unique(index.locate(np.arange(start, start + count))[1][:, -2:], axis=0)
    else:
        origins = np.empty((0, 2), np.int64)
    if 0 < len(origins) <= _MAX_RECTANGLES:
        for y, x in origins.tolist():
            _outline(axes, (y, x), patch, "cyan", 0.6, "lazypatch-patch")
        ends = origins.max(axis=0) + patch
        drawn = f"{len(origins)} grid positions"
    elif count:
        ends, thinned = _draw_lines(axes, shape[-2:], index)
        drawn = "grid lines" + (f" (1 in {thinned})" if thinned > 1 else "")
    else:
        ends, drawn = (height, width), "no patches"
    for y, x in highlighted[:, -2:].tolist():
        _outline(axes, (y, x), patch, "yellow", 1.5, "lazypatch-sample")
    if len(highlighted):
        ends = np.maximum(ends, highlighted[:, -2:].max(axis=0) + patch)
    axes.set_xlim(0, max(width, int(ends[1])))
    axes.set_ylim(max(height, int(ends[0])), 0)
    axes.tick_params(labelsize=7)

    name = store.names[image]
    where = f", z {origin[0]} of {shape[0]}" if len(shape) == 3 else ""
    shown = f", shown 1:{step}" if step > 1 else ""
    axes.set_title(f"image {image} {name!r}: {describe_shape(shape)}{where}{shown}\n"
                   f"{count} patches, stride {describe_shape(index.stride)}, "
                   f"edge={index.edge!r}; {drawn}, samples in yellow", fontsize=8)
    return {"image": image, "name": name, "shape": shape, "patches": count, "labels": labels,
            "grid": tuple(int(v) for v in grid_counts(np.array([shape]), index.patch_size,
                                                      index.stride, index.edge)[0]),
            "patch_size": index.patch_size, "stride": index.stride, "edge": index.edge}


def _outline(axes, origin, patch, color, linewidth, gid) -> None:
    from matplotlib.patches import Rectangle

    (y, x), (height, width) = origin, patch
    axes.add_patch(Rectangle((x, y), width, height, fill=False, edgecolor=color,
                             linewidth=linewidth, gid=gid))


def _draw_lines(axes, lengths, index):
    """Lines at each axis's grid origins and the last patch's end; (the ends, k of every k-th)."""
    from matplotlib.collections import LineCollection

    positions, thinned = [], 1
    for length, patch, stride in zip(lengths, index.patch_size[-2:], index.stride[-2:]):
        axis = PatchIndex([[length]], patch, stride, index.edge)
        origins = axis.locate(np.arange(len(axis)))[1][:, 0]
        step = math.ceil(len(origins) / _MAX_LINES)
        thinned = max(thinned, step)
        positions.append(np.append(origins[::step], origins[-1] + patch))
    ys, xs = positions
    segments = [[(xs[0], y), (xs[-1], y)] for y in ys] + [[(x, ys[0]), (x, ys[-1])] for x in xs]
    axes.add_collection(LineCollection(segments, colors="cyan", linewidths=0.5, gid="lazypatch-grid"))
    return (ys[-1], xs[-1]), thinned


def _draw_samples(axes_list, source: _Source, image_ids, origins) -> set:
    """The sample panels; the mask labels drawn."""
    store, patch = source.store, source.index.patch_size
    views = []
    for image_id, origin in zip(image_ids.tolist(), origins.tolist()):
        if len(patch) == 3:  # the middle z slice of a 3-D patch
            origin, size = (origin[0] + patch[0] // 2,) + tuple(origin[1:]), (1,) + patch[1:]
        else:
            origin, size = tuple(origin), patch
        pixels, mask, step = _read_view(store, image_id, origin, size, _SAMPLE_PIXELS,
                                        source.pad_value, source.mask_pad_value)
        views.append((source.shown(pixels), mask, step))
    limits = None
    if views and store.dtype != np.uint8 and store.dtype.kind in "iuf":
        # one scale for every sample, so that they compare
        pixels = [_shown_channels(v[0]) for v in views]
        limits = _percentile_limits(np.concatenate([p.reshape(-1, p.shape[-1]) for p in pixels]))
    names = store.names
    drawn = set()
    for axes, (pixels, mask, step), image_id, origin in zip(axes_list, views, image_ids.tolist(),
                                                            origins.tolist()):
        extent = (0, pixels.shape[1] * step, pixels.shape[0] * step, 0)
        axes.imshow(to_display(pixels, limits=limits), cmap="gray", vmin=0, vmax=1, extent=extent,
                    interpolation="nearest")
        if mask is not None:
            drawn |= _overlay(axes, mask, extent)
        name = names[image_id]
        name = name if len(name) <= 14 else name[:13] + "…"
        axes.set_title(f"#{image_id} {name}\n{tuple(origin)}", fontsize=6)
        axes.set_axis_off()
    return drawn


def _overlay(axes, mask: np.ndarray, extent) -> set:
    """Overlay a mask (label 0 transparent); the labels drawn."""
    import matplotlib

    values = mask.astype(np.int64)
    labels = np.ma.masked_equal(values, 0)
    labels = (labels - 1) % _MASK_COLORS
    axes.imshow(labels, cmap=matplotlib.colormaps["tab10"], vmin=-0.5, vmax=_MASK_COLORS - 0.5,
                alpha=_MASK_ALPHA, extent=extent, interpolation="nearest", gid="lazypatch-mask")
    return set(np.unique(values[values != 0]).tolist())


def _legend(figure, labels: set) -> None:
    """Under the panels: each mask colour drawn, with the labels it shows (at most 3 a colour)."""
    import matplotlib
    from matplotlib.patches import Patch

    colours = matplotlib.colormaps["tab10"]
    by_colour = {}
    for label in sorted(labels):
        by_colour.setdefault((label - 1) % _MASK_COLORS, []).append(label)
    handles, texts = [], []
    for colour, values in sorted(by_colour.items(), key=lambda item: item[1][0]):
        handles.append(Patch(facecolor=colours(colour), alpha=_MASK_ALPHA, edgecolor=colours(colour)))
        texts.append(", ".join(map(str, values[:3])) + (", …" if len(values) > 3 else ""))
    legend = figure.legend(handles, texts, loc="lower center", ncol=len(handles), fontsize=7,
                           title="mask labels", title_fontsize=7, frameon=False, handlelength=1.2,
                           columnspacing=1.0)
    legend.set_gid("lazypatch-legend")


# NOTE [bounded reads]: an image may be far larger than RAM. A view of it keeps every
# step-th pixel so that no side exceeds the panel's limit, read one kept row at a time
# in pieces of at most _READ_COLUMNS (rounded to a multiple of the step) columns: memory
# stays O(limit^2 + _READ_COLUMNS), and only the kept rows are ever read.
def _read_view(store, image_id: int, origin: tuple, size: tuple, limit: int,
               pad_value=0, mask_pad_value=0):
    """A 2-D view of the box ``[origin, origin + size)``: (pixels (h, w, C), mask or None, step).

    For a 3-D store the box is one z slice (``size[0] == 1``).
    """
    height, width = size[-2:]
    step = max(1, math.ceil(max(height, width) / limit))
    if step == 1:
        pixels = store.read_region(image_id, origin, size, pad_value).reshape(height, width, -1)
        mask = (store.read_mask_region(image_id, origin, size, mask_pad_value).reshape(height, width)
                if store.has_masks else None)
        return pixels, mask, 1
    columns = max(step, _READ_COLUMNS // step * step)
    kept_rows = range(0, height, step)
    kept_columns = len(range(0, width, step))
    pixels = np.empty((len(kept_rows), kept_columns, store.channels), store.dtype)
    mask = np.empty((len(kept_rows), kept_columns), store.mask_dtype) if store.has_masks else None
    prefix, (y0, x0) = tuple(origin[:-2]), origin[-2:]
    ones = (1,) * len(prefix)
    for row, dy in enumerate(kept_rows):
        for dx in range(0, width, columns):
            piece = (1, min(columns, width - dx))
            at = prefix + (y0 + dy, x0 + dx)
            kept = slice(dx // step, dx // step + len(range(0, piece[1], step)))
            region = store.read_region(image_id, at, ones + piece, pad_value)
            pixels[row, kept] = region.reshape(piece[1], -1)[::step]
            if mask is not None:
                region = store.read_mask_region(image_id, at, ones + piece, mask_pad_value)
                mask[row, kept] = region.reshape(piece[1])[::step]
    return pixels, mask, step


def save_figure(figure, out, dpi) -> None:
    figure.savefig(os.fspath(out), dpi=dpi)


def __getattr__(name):  # names of lazypatch 0.1's show module
    return _compat.moved(__name__, name)
