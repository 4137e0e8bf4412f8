"""Validation of what a build is given: options, images, masks, names, metadata.

Every check names the parameter, the rule and the value, and runs before a
byte is written (``prevalidate`` when the shapes are known up front).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import LazypatchWarning, ParameterError, ParameterTypeError
from ..grid import axis_tuple, describe_shape, is_int
from ..store import format as fmt

MISSING = object()  # a sentinel: no value given


def check_options(spatial_ndim, layout, tile, compression, compression_opts, checksum):
    """Validate the layout options; returns (tile tuple or None, compression_opts)."""
    if not is_int(spatial_ndim) or spatial_ndim not in (2, 3):
        raise ParameterError(f"spatial_ndim must be 2 or 3, got {spatial_ndim!r}")
    if layout not in fmt.LAYOUTS:
        raise ParameterError(f"layout must be one of {fmt.LAYOUTS}, got {layout!r}")
    known = fmt.COMPRESSIONS + tuple(fmt.PLUGIN_COMPRESSIONS)
    if compression is not None and compression not in known:
        raise ParameterError(
            f"compression must be None or one of {known} (the last {len(fmt.PLUGIN_COMPRESSIONS)} "
            f"from the hdf5plugin package), got {compression!r}"
        )
    if not isinstance(checksum, (bool, np.bool_)):
        raise ParameterTypeError(f"checksum must be True or False, got {checksum!r}")
    for name, value in (("compression", compression), ("checksum", checksum)):
        if value and layout != "chunked":
            raise ParameterError(
                f"{name}={value!r} needs layout='chunked' (HDF5 filters work on chunks), "
                f"got layout={layout!r}"
            )
    if compression in fmt.PLUGIN_COMPRESSIONS and layout == "chunked":
        fmt.require_plugin(compression)
    if compression_opts is not None:
        levels = (0, 9) if compression == "gzip" else fmt.PLUGIN_COMPRESSIONS.get(compression, (0, None))[1]
        if levels is None:
            raise ParameterError(
                f"compression_opts applies to gzip, zstd and blosc (a level), got "
                f"compression_opts={compression_opts!r} with compression={compression!r}"
            )
        if not is_int(compression_opts) or not levels[0] <= compression_opts <= levels[1]:
            raise ParameterError(
                f"compression_opts must be a {compression} level {levels[0]}..{levels[1]}, "
                f"got {compression_opts!r}"
            )
    if layout == "contiguous":
        if tile is not None:
            raise ParameterError(
                f"tile applies to the 'tiled' and 'chunked' layouts, got tile={tile!r} "
                "with layout='contiguous'"
            )
        return None, compression_opts
    tile = axis_tuple(fmt.DEFAULT_TILE[spatial_ndim] if tile is None else tile, spatial_ndim, "tile")
    return tile, compression_opts


class ImageSpec:
    """What the first image fixes for the whole store."""

    def __init__(self, dtype, channels, channel_axis):
        self.dtype, self.channels, self.channel_axis = dtype, channels, channel_axis


def store_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype


def as_arraylike(value, what: str, position: int):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__getitem__"):
        return value
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise ParameterTypeError(
            f"{what} {position} must be an array or array-like, got {type(value).__name__}"
        )
    return np.asarray(value)


def describe_image(image, position: int, spatial_ndim: int):
    """(spatial shape, ImageSpec) of one image, or a clear error."""
    shape = tuple(int(v) for v in image.shape)
    if len(shape) not in (spatial_ndim, spatial_ndim + 1):
        axes = "(H, W) or (H, W, C)" if spatial_ndim == 2 else "(Z, Y, X) or (Z, Y, X, C)"
        raise ParameterError(
            f"image {position} has shape {shape}; with spatial_ndim={spatial_ndim} an image "
            f"is {axes}, channels last"
        )
    dtype = np.dtype(image.dtype)
    if dtype.kind not in fmt.PIXEL_KINDS:
        raise ParameterError(
            f"image {position} has dtype {dtype}; images must be bool, integer or float"
        )
    spatial = shape[:spatial_ndim]
    if min(spatial) < 1:
        raise ParameterError(f"image {position} is empty: shape {shape}")
    channel_axis = len(shape) == spatial_ndim + 1
    channels = shape[-1] if channel_axis else 1
    if channel_axis and channels < 1:
        raise ParameterError(f"image {position} has no channels: shape {shape}")
    return spatial, ImageSpec(store_dtype(dtype), channels, channel_axis)


def check_same(spec: ImageSpec, first: ImageSpec, position: int, first_position: int = 0,
               spatial_ndim: int = 2) -> None:
    """The image at ``position`` agrees with the one at ``first_position`` on dtype and channels."""
    if spec.dtype != first.dtype:
        raise ParameterError(
            f"all images must share one dtype: image {first_position} is {first.dtype.name}, "
            f"image {position} is {spec.dtype.name}"
        )
    if spec.channel_axis != first.channel_axis:
        kinds = {True: "has a channel axis", False: "has none"}
        raise ParameterError(
            "images must all have a channel axis or none ((H, W) and (H, W, 1) do not mix): "
            f"image {first_position} {kinds[first.channel_axis]}, image {position} {kinds[spec.channel_axis]}"
        )
    if spec.channels != first.channels:
        volumes = ""
        if spatial_ndim == 2 and max(spec.channels, first.channels) > 4:
            volumes = ("; if these are volumes (Z, Y, X) of different sizes, pass spatial_ndim=3 "
                       "(--spatial-ndim 3)")
        raise ParameterError(
            f"all images must have the same number of channels: image {first_position} has "
            f"{first.channels}, image {position} has {spec.channels}{volumes}"
        )


# an image whose last axis is longer than this and than a spatial axis looks channels-first
AXES_WARNING_CHANNELS = 16


def axes_warning(shape, spatial_ndim: int, what: str):
    """The message of a likely misread axis order, or None.

    An image (..., C) whose C is above 16 and above one of its spatial axes is
    more likely channels-first (C, H, W) or, with ``spatial_ndim=2``, a volume
    (Z, Y, X).

    >>> axes_warning((64, 128, 128), 2, "image 0").split(";")[0]
    'image 0 has shape (64, 128, 128), read as 64x128 pixels with 128 channels (channels last)'
    >>> axes_warning((512, 512, 3), 2, "image 0") is None
    True
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) != spatial_ndim + 1:
        return None
    channels, spatial = shape[-1], shape[:-1]
    if channels <= AXES_WARNING_CHANNELS or channels <= min(spatial):
        return None
    size = "x".join(str(v) for v in spatial)
    volume = ("a volume (Z, Y, X): pass spatial_ndim=3 (--spatial-ndim 3), or " if spatial_ndim == 2 else "")
    return (f"{what} has shape {shape}, read as {size} pixels with {channels} channels (channels "
            f"last); its last axis is longer than {AXES_WARNING_CHANNELS} and than axis "
            f"{spatial.index(min(spatial))}, as in {volume}channels first: move them last "
            f"(np.moveaxis(image, 0, -1)) before writing")


def warn(message: str) -> None:
    """A LazypatchWarning pointing at the first caller outside lazypatch."""
    import warnings

    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("lazypatch."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, LazypatchWarning, stacklevel=level)


def default_tile(shapes, spatial_ndim: int) -> tuple:
    """The tile when none is given: 64 per axis; a z extent of the deepest volume
    rounded up to a power of two when every volume is thinner than 64.

    >>> default_tile([(5, 300, 400), (3, 200, 200)], 3), default_tile([(100, 64, 64)], 3)
    ((8, 64, 64), (64, 64, 64))
    """
    tile = axis_tuple(fmt.DEFAULT_TILE[spatial_ndim], spatial_ndim, "tile")
    if spatial_ndim == 3 and len(shapes):
        deepest = int(max(int(s[0]) for s in shapes))
        if deepest < tile[0]:
            tile = (1 << max(deepest - 1, 0).bit_length(),) + tuple(tile[1:])
    return tile


def check_mask(mask, spatial, position: int, first_dtype):
    shape = tuple(int(v) for v in mask.shape)
    if shape != tuple(spatial):
        raise ParameterError(
            f"mask {position} has shape {shape}, its image has spatial shape {tuple(spatial)}"
        )
    dtype = np.dtype(mask.dtype)
    if dtype.kind not in fmt.MASK_KINDS:
        raise ParameterError(f"mask {position} has dtype {dtype}; masks must be integer or bool")
    dtype = store_dtype(dtype)
    if first_dtype is not None and dtype != first_dtype:
        raise ParameterError(
            f"all masks must share one dtype: mask 0 is {first_dtype.name}, "
            f"mask {position} is {dtype.name}"
        )
    return dtype


def meta_text(value, position: int, what: str = "meta") -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise ParameterTypeError(f"{what} {position} must be a dict or None, got {type(value).__name__}")

    def convert(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    try:
        return json.dumps(dict(value), default=convert, allow_nan=True, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{what} {position} cannot be stored as JSON: {exc}") from exc


UNITS = ("um", "mm", "m", "deg", None)


def geometry_text(value, position: int, image, spatial_ndim: int) -> str:
    """One image's geometry as JSON: ``value``, else the image's own ``geometry`` (a reader's)."""
    if value is None:
        value = getattr(image, "geometry", None)
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise ParameterTypeError(f"geometry {position} must be a dict or None, got {type(value).__name__}")
    value = dict(value)
    spacing = value.get("spacing")
    if spacing is not None:
        try:
            spacing = [float(v) for v in spacing]
        except (TypeError, ValueError):
            raise ParameterTypeError(f"geometry {position}: spacing must be {spatial_ndim} numbers, "
                                     f"got {spacing!r}") from None
        if len(spacing) != spatial_ndim or not all(v > 0 and np.isfinite(v) for v in spacing):
            raise ParameterError(f"geometry {position}: spacing must be {spatial_ndim} positive numbers "
                                 f"(one per spatial axis, (z,) y, x), got {value['spacing']!r}")
        value["spacing"] = spacing
    if value.get("unit") not in UNITS:
        raise ParameterError(f"geometry {position}: unit must be one of {UNITS}, got {value.get('unit')!r}")
    return meta_text(value, position, what="geometry")


def planned_shapes(images, spatial_ndim):
    """Spatial shapes of every image when known without reading pixels, else None."""
    sequence = isinstance(images, Sequence) or (
        hasattr(images, "__len__") and hasattr(images, "__getitem__") and not hasattr(images, "shape")
        and not isinstance(images, Mapping))
    if sequence and not isinstance(images, (str, bytes)):
        # NOTE: by position, not by iterating: a sequence may decode ahead when iterated
        items = [images[k] for k in range(len(images))]
        if all(hasattr(item, "shape") and len(item.shape) >= spatial_ndim for item in items):
            return [tuple(int(v) for v in item.shape[:spatial_ndim]) for item in items]
        return None
    shape = getattr(images, "shape", None)
    if shape is not None and hasattr(images, "__getitem__") and len(shape) >= spatial_ndim + 1:
        return [tuple(int(v) for v in shape[1:1 + spatial_ndim])] * int(shape[0])
    return None


def _iterate(values, what: str):
    if values is None:
        return None
    if isinstance(values, (str, bytes, Mapping)):
        raise ParameterTypeError(f"{what} must be an iterable of per-image values, got {type(values).__name__}")
    try:
        return iter(values)
    except TypeError:
        raise ParameterTypeError(f"{what} must be iterable, got {type(values).__name__}") from None


def zip_inputs(images, masks, names, meta, geometry=None):
    """Yield (position, image, mask, name, meta, geometry); the optional inputs must match in length."""
    image_iter = _iterate(images, "images")
    others = {"masks": _iterate(masks, "masks"), "names": _iterate(names, "names"),
              "meta": _iterate(meta, "meta"), "geometry": _iterate(geometry, "geometry")}
    position = -1
    for position, image in enumerate(image_iter):
        row = {}
        for key, iterator in others.items():
            if iterator is None:
                row[key] = None
                continue
            value = next(iterator, MISSING)
            if value is MISSING:
                raise ParameterError(f"{key} has {position} entries, fewer than the images")
            row[key] = value
        name = row["names"]
        if name is not None and not isinstance(name, str):
            raise ParameterTypeError(f"names must be strings, got {type(name).__name__} at {position}")
        yield position, image, row["masks"], name, row["meta"], row["geometry"]
    for key, iterator in others.items():
        if iterator is not None and next(iterator, MISSING) is not MISSING:
            raise ParameterError(f"{key} has more entries than the {position + 1} images")


def prevalidate(images, masks, spatial_ndim, shapes) -> None:
    """Check every shape and dtype before any file is created (shapes known up front)."""
    first = None
    mask_dtype = None
    mask_list = masks if isinstance(masks, Sequence) and not isinstance(masks, str) else None
    count = len(images) if isinstance(images, Sequence) else 0
    for position, image in ((k, images[k]) for k in range(count)):
        image = as_arraylike(image, "image", position)
        spatial, spec = describe_image(image, position, spatial_ndim)
        if first is None:
            first = spec
        else:
            check_same(spec, first, position, spatial_ndim=spatial_ndim)
        if mask_list is not None and position < len(mask_list) and mask_list[position] is not None:
            mask = as_arraylike(mask_list[position], "mask", position)
            mask_dtype = check_mask(mask, spatial, position, mask_dtype)
    if mask_list is not None and len(mask_list) != len(shapes):
        raise ParameterError(f"masks has {len(mask_list)} entries for {len(shapes)} images")


def check_tissue(tissue, spatial_ndim: int):
    """``tissue`` (one mask or None per image) as a list of C-contiguous uint8 0/1 masks
    and Nones; None when it is None or holds no mask.

    >>> [m.tolist() if m is not None else m for m in check_tissue([np.eye(2, dtype=bool), None], 2)]
    [[[1, 0], [0, 1]], None]
    >>> check_tissue([None, None], 2) is None
    True
    """
    if tissue is None:
        return None
    if isinstance(tissue, (str, bytes, Mapping, np.ndarray)) or not hasattr(tissue, "__iter__"):
        raise ParameterTypeError(
            f"tissue must be a sequence with one 2-D mask (or None) per image, got {type(tissue).__name__}"
        )
    masks = []
    for position, mask in enumerate(tissue):
        if mask is None:
            masks.append(None)
            continue
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        if isinstance(mask, (str, bytes, Mapping)) or not (hasattr(mask, "__array__")
                                                           or isinstance(mask, (list, tuple))):
            raise ParameterTypeError(f"tissue {position} must be a 2-D array or None, got {type(mask).__name__}")
        mask = np.asarray(mask)
        if mask.ndim != 2 or min(mask.shape) < 1:
            raise ParameterError(
                f"tissue {position} must be a 2-D mask (h, w) with at least one cell per axis, "
                f"got shape {mask.shape}"
            )
        if mask.dtype.kind != "b" and mask.dtype != np.uint8:
            raise ParameterError(
                f"tissue {position} must be bool, or uint8 of 0 and 1, got dtype {mask.dtype}"
            )
        if mask.dtype == np.uint8 and mask.max() > 1:
            raise ParameterError(
                f"tissue {position} must hold 0 and 1 only (uint8), got values up to {int(mask.max())}"
            )
        mask = np.ascontiguousarray(mask)
        masks.append(mask.view(np.uint8) if mask.dtype.kind == "b" else mask)  # no copy of C-ordered masks
    if all(mask is None for mask in masks):
        return None
    if spatial_ndim != 2:
        raise ParameterError(
            f"tissue masks apply to 2-D stores (slides), got tissue with spatial_ndim={spatial_ndim}"
        )
    return masks


def check_tissue_count(tissue: list, count: int) -> None:
    """``tissue`` has one entry per image."""
    if len(tissue) != count:
        raise ParameterError(f"tissue has {len(tissue)} entries for {count} images; give one mask "
                             "(or None) per image")
