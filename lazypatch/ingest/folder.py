"""Building from files: ``lazypatch.build(source, output, **options)``, the Python
form of ``lazypatch build``.

Two passes. The first reads headers only (shapes, dtypes, mask pairing),
validates everything and plans the output (``dry_run=True`` stops there and
returns the plan). The second decodes and writes through
:func:`~lazypatch.ingest.write_store`: PNG and JPEG decoded ahead in worker
threads, one writer, a progress bar, and a summary (images, bytes, seconds,
MB/s).

Files are taken in code-point order of their path relative to the source, so
building twice gives identical pixel, mask and table datasets.
"""

from __future__ import annotations

import errno
import os
import sys
import time

import numpy as np

from ..errors import ParameterError, ParameterTypeError, StoreExistsError
from ..grid import axis_tuple, is_int
from ..store import ImageStore
from ..store import format as fmt
from ._signals import cleans_up_on_termination
from .builder import write_store
from .files import FileImages, list_images, pair_masks
from .shards import parse_size, shard_glob, shard_path, split_shards, stored_bytes
from .validate import check_mask, check_options, check_same, describe_image

__all__ = ["build", "DEFAULT_WORKERS"]

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _optional_int(value, name: str):
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not is_int(value):
        raise ParameterTypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _tile(value, spatial_ndim: int):
    """A tile given as the CLI writes it ('64', '64,32', '64x32') or as an int or tuple."""
    if isinstance(value, str):
        try:
            parts = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
        except ValueError:
            parts = []
        if not parts:
            raise ParameterError(f"tile must be an int or comma-separated ints, got {value!r}")
        value = parts[0] if len(parts) == 1 else tuple(parts)
    return value


@cleans_up_on_termination  # NOTE [termination] in lazypatch.ingest._signals
def build(source, output, *, masks=None, mask_suffix: str = "", allow_unmatched: bool = False,
          layout: str = "tiled", tile=None, compression=None, compression_opts=None,
          checksum: bool = False, spatial_ndim=2, stats: bool = False, label_stats: bool = False,
          shards=None, shard_size=None, shard_index=None, workers=DEFAULT_WORKERS,
          dry_run: bool = False, overwrite: bool = False, progress: bool = True, verbose: bool = False):
    """Build a store (or shards of one) from a folder, file or glob of image files.

    The Python form of ``lazypatch build SOURCE OUTPUT``: each keyword is the
    command's long flag with ``-`` written ``_`` (``--no-progress`` is
    ``progress=False``), with the same defaults. Values may be given as the
    command line writes them (``tile="64,64"``, ``shard_size="2GB"``) or in
    their natural type (``tile=(64, 64)``, ``shard_size=2 * 10**9``).

    Parameters
    ----------
    source : str or os.PathLike
        A folder (searched recursively), an image file or a glob of PNG, JPEG,
        TIFF or .npy files.
    output : str or os.PathLike
        The store to write (``.h5``); with ``shards`` or ``shard_size`` the
        name shards are derived from (``OUT-00000-of-00004.h5``).
    masks : str, optional
        Folder (or glob) of masks, paired with images by file stem.
    mask_suffix : str
        Suffix of mask stems, e.g. ``"_mask"``.
    allow_unmatched : bool
        Leave out images with no mask or several (default: an error).
    layout, tile, compression, compression_opts, checksum, spatial_ndim
        As for :func:`~lazypatch.write_store`.
    stats : bool
        Per-channel statistics, for ``PatchDataset(normalize=...)``.
    label_stats : bool
        Per-block label counts of the masks, for ``ClassSampler``.
    shards : int, optional
        Write this many shard files, balanced by bytes.
    shard_size : str or int, optional
        Instead: shards of at most about this size (``"2GB"`` or bytes).
    shard_index : int, optional
        Write only this shard (0-based): one machine per shard.
    workers : int
        Threads decoding PNG/JPEG ahead of the writer; 0 for none.
    dry_run : bool
        Check everything and return the plan; write nothing.
    overwrite : bool
        Replace existing output files.
    progress : bool
        Show a progress bar (when stderr is a terminal).
    verbose : bool
        Print the plan and the summary, as the command does.

    Returns
    -------
    ImageStore or dict
        The new store, opened (every written shard as one store); with
        ``dry_run=True`` the plan as a dict.

    Raises
    ------
    ParameterError, ParameterTypeError
        Bad options, or images that cannot share a store (the message names the file).
    FileNotFoundError
        No image files in ``source``, or the output folder does not exist.
    IsADirectoryError
        ``output`` is a directory.
    StoreExistsError
        An output file exists and ``overwrite`` is false.
    ImageReadError
        A file cannot be decoded.
    SystemExit
        ``Terminated`` on SIGTERM or SIGHUP, after removing the temporary
        files (see :func:`~lazypatch.write_store`).

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     np.save(os.path.join(folder, f"image{k}.npy"), np.full((40, 30, 3), k, np.uint8))
    >>> plan = build(folder, os.path.join(folder, "out.h5"), dry_run=True)
    >>> plan["images"], plan["outputs"][0]["images"]
    (3, [0, 3])
    >>> store = build(folder, os.path.join(folder, "out.h5"), progress=False)
    >>> len(store), store.names
    (3, ['image0.npy', 'image1.npy', 'image2.npy'])
    >>> store.close()
    """
    started = time.perf_counter()
    for name, value in (("source", source), ("output", output)):
        if not isinstance(value, (str, os.PathLike)):
            raise ParameterTypeError(f"{name} must be a path (str or os.PathLike), got {value!r}")
    source, output = os.fspath(source), os.fspath(output)
    spatial_ndim = _optional_int(spatial_ndim, "spatial_ndim")
    tile = _tile(tile, spatial_ndim)
    compression_opts = _optional_int(compression_opts, "compression_opts")
    shards = _optional_int(shards, "shards")
    shard_index = _optional_int(shard_index, "shard_index")
    workers = _optional_int(workers, "workers")
    checksum, stats, label_stats, allow_unmatched, dry_run, overwrite, progress, verbose = (
        _flag(v, n) for v, n in ((checksum, "checksum"), (stats, "stats"), (label_stats, "label_stats"),
                                 (allow_unmatched, "allow_unmatched"), (dry_run, "dry_run"),
                                 (overwrite, "overwrite"), (progress, "progress"), (verbose, "verbose")))
    tile, compression_opts = check_options(spatial_ndim, layout, tile, compression, compression_opts, checksum)
    if workers < 0:
        raise ParameterError(f"--workers (workers) must be 0 or more, got {workers}")
    if shards is not None and shard_size is not None:
        raise ParameterError("give --shards or --shard-size (shards= or shard_size=), not both")
    size = parse_size(shard_size) if shard_size is not None else None
    if mask_suffix and not masks:
        raise ParameterError(f"--mask-suffix {mask_suffix!r} needs --masks FOLDER (mask_suffix= needs masks=)")
    if allow_unmatched and not masks:
        raise ParameterError("--allow-unmatched needs --masks FOLDER (allow_unmatched= needs masks=)")
    if label_stats and not masks:
        raise ParameterError("--label-stats counts mask labels: it needs --masks FOLDER (label_stats= needs masks=)")
    _check_output(output)

    paths, root = list_images(source)
    if not paths:
        raise FileNotFoundError(errno.ENOENT, "no PNG, JPEG, TIFF or .npy files in", source)
    mask_paths, report = None, None
    if masks:
        paths, mask_paths, report = pair_masks(paths, masks, mask_suffix, allow_unmatched, image_root=root)
        if not paths:
            hint = f"; {report['hint']}" if report["hint"] else ""
            raise ParameterError(f"no image in {source!r} has a mask in {masks!r}{hint}")

    # pass 1: headers
    images = FileImages(paths, spatial_ndim, workers=workers)
    mask_images = FileImages(mask_paths, spatial_ndim, workers=workers, mask=True) if mask_paths else None
    names = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    first, mask_dtype, shapes = None, None, []
    for position, image in enumerate(images.headers):
        spatial, spec = describe_image(image, position, spatial_ndim)
        shapes.append(spatial)
        try:
            if first is None:
                first = spec
            else:
                check_same(spec, first, position)
            if mask_images is not None:
                mask_dtype = check_mask(mask_images.headers[position], spatial, position, mask_dtype)
        except ParameterError as exc:
            raise ParameterError(f"{exc} ({names[position]})") from None
    shapes = np.array(shapes, np.int64)
    stored_tile = tile if tile is not None else axis_tuple(fmt.DEFAULT_TILE[spatial_ndim], spatial_ndim, "tile")
    per_image = stored_bytes(shapes, first.channels, first.dtype.itemsize, layout, stored_tile)
    if mask_images is not None:
        per_image = per_image + stored_bytes(shapes, 1, mask_dtype.itemsize, layout, stored_tile)
    sharded = shards is not None or size is not None
    ranges = split_shards(per_image, shards, size) if sharded else [(0, len(paths))]
    outputs = [shard_path(output, k, len(ranges)) for k in range(len(ranges))] if sharded else [output]
    chosen = list(range(len(ranges)))
    if shard_index is not None:
        if not 0 <= shard_index < len(ranges):
            raise ParameterError(f"--shard-index (shard_index) must be within [0, {len(ranges)}), got {shard_index}")
        chosen = [shard_index]
    plan = _plan(source, layout, images, shapes, first, mask_dtype, report, per_image, ranges, outputs, chosen)
    if verbose:
        print(_plan_text(plan, dry_run))
    if dry_run:
        return plan
    for k in chosen:
        if os.path.lexists(outputs[k]) and not overwrite:
            raise StoreExistsError(errno.EEXIST, "the output exists; pass overwrite=True (--overwrite) "
                                                 "to replace it", outputs[k])

    # pass 2: decode and write
    written = 0
    command = " ".join(["lazypatch"] + sys.argv[1:]) if sys.argv[1:2] == ["build"] else "lazypatch build"
    for k in chosen:
        a, b = ranges[k]
        provenance = {"command": command, "source": os.path.abspath(source),
                      "masks": os.path.abspath(masks) if masks else None,
                      "shard": [k, len(ranges)], "first_image": int(a), "mask_suffix": mask_suffix}
        try:
            store = write_store(
                outputs[k], images.part(a, b), masks=mask_images.part(a, b) if mask_images else None,
                names=names[a:b], spatial_ndim=spatial_ndim, layout=layout, tile=tile,
                compression=compression, compression_opts=compression_opts, checksum=checksum,
                overwrite=overwrite, progress=None if progress else False, channel_stats=stats,
                label_stats=label_stats, provenance=provenance,
            )
        except BaseException:
            done = [outputs[j] for j in chosen[:chosen.index(k)]]
            if done:  # whole files, kept: the collection is incomplete until every shard exists
                print(f"the collection is incomplete: {len(done)} of {len(ranges)} shards were written "
                      f"({', '.join(done)}); shard {k} failed: fix it, then finish with "
                      f"--shard-index {k} (and each later one)", file=sys.stderr)
            raise
        written += os.path.getsize(store.path)
        store.close()
    seconds = time.perf_counter() - started
    if verbose:
        source_bytes = sum(images.headers[j].nbytes for k in chosen for j in range(*ranges[k]))
        count = sum(ranges[k][1] - ranges[k][0] for k in chosen)
        print(f"wrote {count} images ({source_bytes / 1e6:,.1f} MB of pixels, {written / 1e6:,.1f} MB "
              f"on disk) in {seconds:.1f} s, {source_bytes / 1e6 / max(seconds, 1e-9):,.0f} MB/s: "
              + ", ".join(outputs[k] for k in chosen))
        if len(ranges) > 1:
            print(f"open them as one store: ImageStore(sorted(glob.glob({shard_glob(output, len(ranges))!r})))")
    return ImageStore([outputs[k] for k in chosen] if len(chosen) > 1 else outputs[chosen[0]])


def _check_output(output: str) -> None:
    """Fail before the first pass on an output that can never be written."""
    if os.path.isdir(output):
        raise IsADirectoryError(errno.EISDIR, "the output is a directory; give a file name such as "
                                              "OUT.h5", output)
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "the folder of the output does not exist", folder)


def _size(nbytes: int) -> str:
    """``1.23 GB``, ``45.6 MB``, ``789 kB``: decimal units, three significant figures."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def _plan(source, layout, images, shapes, spec, mask_dtype, report, per_image, ranges, outputs, chosen) -> dict:
    return {
        "source": source, "images": len(images), "layout": layout,
        "dtype": spec.dtype.name, "channels": spec.channels, "channel_axis": bool(spec.channel_axis),
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_median": np.median(shapes, axis=0).astype(int).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
        "mask_dtype": None if mask_dtype is None else mask_dtype.name,
        "masks": None if report is None else {key: report[key] for key in report},
        "stacks": [h.path for h in images.headers if h.ignored_pages > 0],
        "decoded_bytes": int(sum(h.nbytes for h in images.headers)),
        "stored_bytes": int(per_image.sum()),
        "outputs": [{"path": outputs[k], "images": [int(ranges[k][0]), int(ranges[k][1])],
                     "stored_bytes": int(per_image[ranges[k][0]:ranges[k][1]].sum())} for k in chosen],
        "shards": len(ranges),
    }


def _plan_text(plan: dict, dry_run: bool) -> str:
    channels = f"{plan['channels']} channel(s)" + ("" if plan["channel_axis"] else " (no channel axis)")
    lines = [f"{plan['images']} images in {plan['source']!r}: {channels} of {plan['dtype']}, "
             f"shapes min {plan['shape_min']}, median {plan['shape_median']}, max {plan['shape_max']}"]
    if plan["mask_dtype"] is not None:
        lines.append(f"masks: {plan['images']} paired by stem ({plan['mask_dtype']})")
    if plan["stacks"]:
        lines.append(f"{len(plan['stacks'])} multi-page TIFF(s), e.g. {plan['stacks'][0]!r}: first page only "
                     f"(--spatial-ndim 3 reads them as stacks)")
    report = plan["masks"]
    if report is not None:
        for key, what in (("missing", "image(s) without a mask, left out"),
                          ("ambiguous", "image(s) with several masks, left out"),
                          ("shared", "mask(s) each named by several images, those images left out"),
                          ("unclaimed", "mask(s) matching no image, ignored")):
            if report[key]:
                shown = [p if isinstance(p, str) else p[0] for p in report[key][:5]]
                lines.append(f"{len(report[key])} {what}: {shown}{' ...' if len(report[key]) > 5 else ''}")
        if report["hint"]:
            lines.append(report["hint"])
    lines.append(f"about {_size(plan['stored_bytes'])} in layout {plan['layout']!r} "
                 f"({_size(plan['decoded_bytes'])} of decoded pixels)")
    for entry in plan["outputs"]:
        a, b = entry["images"]
        lines.append(f"  {entry['path']}: images {a}..{b - 1}, about {_size(entry['stored_bytes'])}")
    if dry_run:
        lines.append("dry run: nothing written")
    return "\n".join(lines)
