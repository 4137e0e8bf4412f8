"""``lazypatch build``: a folder of image files into one store, or into shards.

Two passes. The first reads headers only (shapes, dtypes, mask pairing),
validates everything and prints what would be written (``--dry-run`` stops
there). The second decodes and writes through ``write_store``, the same code
path as the Python API: PNG and JPEG decoded ahead in worker threads, one writer,
a progress bar, and a summary (images, bytes, seconds, MB/s).

Files are taken in code-point order of their path relative to the source, so
building twice gives identical pixel, mask and table datasets.
"""

from __future__ import annotations

import os
import re
import sys
import time

import numpy as np

from . import _format as fmt
from .errors import ParameterError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12,
          "tb": 1e12, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def add_arguments(build) -> None:
    from .cli import _int_list

    build.add_argument("source", help="folder (searched recursively), image file or glob of PNG, "
                                      "JPEG, TIFF or .npy files")
    build.add_argument("output", help="the store file to write (.h5); with --shards, the name "
                                      "shards are derived from (OUT-00000-of-00004.h5)")
    build.add_argument("--masks", metavar="DIR", help="folder (or glob) of masks, paired with images by file stem")
    build.add_argument("--mask-suffix", default="", help="suffix of mask stems, e.g. '_mask'")
    build.add_argument("--allow-unmatched", action="store_true",
                       help="leave out images with no mask or several (default: an error)")
    build.add_argument("--layout", default="tiled", choices=("tiled", "contiguous", "chunked"))
    build.add_argument("--tile", type=_int_list, help="tile size, an int or per-axis 'Y,X'")
    build.add_argument("--compression", help="gzip or lzf (needs --layout chunked); with "
                                             "hdf5plugin installed also zstd, lz4, blosc, bitshuffle")
    build.add_argument("--compression-opts", type=int, help="gzip level 0-9, or the codec's level")
    build.add_argument("--checksum", action="store_true", help="fletcher32 per chunk (needs --layout chunked)")
    build.add_argument("--spatial-ndim", type=int, default=2, choices=(2, 3))
    build.add_argument("--stats", action="store_true",
                       help="per-channel statistics for PatchDataset(normalize=...)")
    build.add_argument("--label-stats", action="store_true",
                       help="per-block label counts of the masks, for ClassSampler")
    build.add_argument("--shards", type=int, help="write this many shard files (balanced by bytes)")
    build.add_argument("--shard-size", help="instead: shards of at most about this size, e.g. 2GB")
    build.add_argument("--shard-index", type=int,
                       help="write only this shard (0-based): one machine per shard")
    build.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="threads decoding PNG/JPEG ahead of the writer (default: min(4, CPUs)); 0: none")
    build.add_argument("--dry-run", action="store_true", help="check everything, print the plan, write nothing")
    build.add_argument("--overwrite", action="store_true", help="replace existing output files")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_size(text: str) -> int:
    match = _SIZE.match(text or "")
    unit = (match.group(2) or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise ParameterError(f"--shard-size must be a size such as 500MB or 2GB, got {text!r}")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ParameterError(f"--shard-size must be positive, got {text!r}")
    return size


def stored_bytes(shapes, channels: int, itemsize: int, layout: str, tile) -> np.ndarray:
    """Bytes each image takes in the store (tiles padded at the border)."""
    shapes = np.asarray(shapes, np.int64)
    if layout != "contiguous":
        shapes = fmt.tile_grid(shapes, tile) * np.asarray(tile, np.int64)
    return shapes.prod(axis=1) * channels * itemsize


def split_shards(nbytes: np.ndarray, count=None, size=None) -> list:
    """(start, stop) image ranges of contiguous shards, balanced by bytes."""
    total = len(nbytes)
    if count is not None:
        if count < 1 or count > total:
            raise ParameterError(f"--shards must be between 1 and the {total} images, got {count}")
        cumulative = np.cumsum(nbytes)
        bounds = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, count) / count, side="left") + 1
        bounds = np.clip(bounds, np.arange(1, count), total - count + np.arange(1, count))
        for k in range(1, len(bounds)):  # strictly increasing: no empty shard
            bounds[k] = max(bounds[k], bounds[k - 1] + 1)
        edges = [0] + bounds.tolist() + [total]
        return list(zip(edges[:-1], edges[1:]))
    ranges, start, used = [], 0, 0
    for k, n in enumerate(nbytes.tolist()):
        if k > start and used + n > size:
            ranges.append((start, k))
            start, used = k, 0
        used += n
    ranges.append((start, total))
    return ranges


def shard_path(output: str, number: int, count: int) -> str:
    base, ext = os.path.splitext(output)
    return f"{base}-{number:05d}-of-{count:05d}{ext or '.h5'}"


def run(args) -> int:
    from ._files import FileImages, list_images, pair_masks
    from .store import write_store
    from ._write import check_options

    started = time.perf_counter()
    check_options(args.spatial_ndim, args.layout, args.tile, args.compression, args.compression_opts,
                  args.checksum)
    if args.workers < 0:
        raise ParameterError(f"--workers must be 0 or more, got {args.workers}")
    if args.shards is not None and args.shard_size is not None:
        raise ParameterError("give --shards or --shard-size, not both")
    if args.mask_suffix and not args.masks:
        raise ParameterError(f"--mask-suffix {args.mask_suffix!r} needs --masks FOLDER")
    if args.allow_unmatched and not args.masks:
        raise ParameterError("--allow-unmatched needs --masks FOLDER")
    if args.label_stats and not args.masks:
        raise ParameterError("--label-stats counts mask labels: it needs --masks FOLDER")
    paths, root = list_images(args.source)
    if not paths:
        raise FileNotFoundError(f"no PNG, JPEG, TIFF or .npy files in {args.source!r}")
    mask_paths, report = None, None
    if args.masks:
        paths, mask_paths, report = pair_masks(paths, args.masks, args.mask_suffix, args.allow_unmatched,
                                                   image_root=root)
        if not paths:
            hint = f"; {report['hint']}" if report["hint"] else ""
            raise ParameterError(f"no image in {args.source!r} has a mask in {args.masks!r}{hint}")
    # pass 1: headers
    images = FileImages(paths, args.spatial_ndim, workers=args.workers)
    masks = FileImages(mask_paths, args.spatial_ndim, workers=args.workers, mask=True) if mask_paths else None
    names = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    from ._write import describe_image, check_same, check_mask

    first = None
    mask_dtype = None
    for position, image in enumerate(images._headers):
        spatial, spec = describe_image(image, position, args.spatial_ndim)
        try:
            if first is None:
                first = spec
            else:
                check_same(spec, first, position)
            if masks is not None:
                mask_dtype = check_mask(masks._headers[position], spatial, position, mask_dtype)
        except ParameterError as exc:
            raise ParameterError(f"{exc} ({names[position]})") from None
    shapes = np.array([describe_image(h, 0, args.spatial_ndim)[0] for h in images._headers], np.int64)
    tile = args.tile if args.tile is not None else fmt.DEFAULT_TILE[args.spatial_ndim]
    tile = (tile,) * args.spatial_ndim if isinstance(tile, int) else tuple(tile)
    per_image = stored_bytes(shapes, first.channels, first.dtype.itemsize, args.layout, tile)
    if masks is not None:
        per_image = per_image + stored_bytes(shapes, 1, mask_dtype.itemsize, args.layout, tile)
    ranges = [(0, len(paths))]
    if args.shards is not None or args.shard_size is not None:
        ranges = split_shards(per_image, args.shards,
                              parse_size(args.shard_size) if args.shard_size is not None else None)
    outputs = [args.output] if len(ranges) == 1 and args.shards is None and args.shard_size is None \
        else [shard_path(args.output, k, len(ranges)) for k in range(len(ranges))]
    chosen = range(len(ranges))
    if args.shard_index is not None:
        if not 0 <= args.shard_index < len(ranges):
            raise ParameterError(f"--shard-index must be within [0, {len(ranges)}), got {args.shard_index}")
        chosen = [args.shard_index]
    _print_plan(args, images, shapes, first, mask_dtype, report, per_image, ranges, outputs, chosen)
    if args.dry_run:
        return 0
    for k in chosen:
        if os.path.exists(outputs[k]) and not args.overwrite:
            raise FileExistsError(f"{outputs[k]!r} exists; pass --overwrite to replace it")
    # pass 2: decode and write
    written = 0
    for k in chosen:
        a, b = ranges[k]
        provenance = {"command": " ".join(["lazypatch"] + sys.argv[1:]) if sys.argv[1:2] == ["build"]
                      else "lazypatch build", "source": os.path.abspath(args.source),
                      "masks": os.path.abspath(args.masks) if args.masks else None,
                      "shard": [k, len(ranges)], "first_image": int(a),
                      "mask_suffix": args.mask_suffix}
        try:
            store = write_store(
                outputs[k], _Slice(images, a, b), masks=_Slice(masks, a, b) if masks else None,
                names=names[a:b], spatial_ndim=args.spatial_ndim, layout=args.layout, tile=args.tile,
                compression=args.compression, compression_opts=args.compression_opts,
                checksum=args.checksum, overwrite=args.overwrite,
                progress=False if args.no_progress else None, channel_stats=args.stats,
                label_stats=args.label_stats, provenance=provenance,
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
    source_bytes = sum(images._headers[j].nbytes for k in chosen for j in range(*ranges[k]))
    count = sum(b - a for k in chosen for a, b in [ranges[k]])
    print(f"wrote {count} images ({source_bytes / 1e6:,.1f} MB of pixels, {written / 1e6:,.1f} MB "
          f"on disk) in {seconds:.1f} s, {source_bytes / 1e6 / max(seconds, 1e-9):,.0f} MB/s: "
          + ", ".join(outputs[k] for k in chosen))
    if len(ranges) > 1:
        print(f"open them as one store: ImageStore(sorted(glob.glob({_glob_of(args.output, len(ranges))!r})))")
    return 0


class _Slice:
    """Images ``[a, b)`` of a FileImages, keeping its parallel decoding."""

    def __init__(self, images, a: int, b: int):
        self.images, self.a, self.b = images, a, b

    def __len__(self) -> int:
        return self.b - self.a

    def __getitem__(self, position):
        if not 0 <= position < len(self):
            raise IndexError(position)
        return self.images[self.a + position]

    def __iter__(self):
        from ._files import FileImages

        part = FileImages.__new__(FileImages)
        part.paths = self.images.paths[self.a:self.b]
        part.workers = self.images.workers
        part._headers = self.images._headers[self.a:self.b]
        return iter(part)


def _size(nbytes: int) -> str:
    """``1.23 GB``, ``45.6 MB``, ``789 kB``: decimal units, three significant figures."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def _glob_of(output: str, count: int) -> str:
    base, ext = os.path.splitext(output)
    return f"{base}-*-of-{count:05d}{ext or '.h5'}"


def _print_plan(args, images, shapes, spec, mask_dtype, report, per_image, ranges, outputs, chosen):
    channels = f"{spec.channels} channel(s)" + ("" if spec.channel_axis else " (no channel axis)")
    lines = [
        f"{len(images)} images in {args.source!r}: {channels} of {spec.dtype}, "
        f"shapes min {shapes.min(axis=0).tolist()}, median {np.median(shapes, axis=0).astype(int).tolist()}, "
        f"max {shapes.max(axis=0).tolist()}",
    ]
    if mask_dtype is not None:
        lines.append(f"masks: {len(images)} paired by stem ({mask_dtype})")
    stacks = [h.path for h in images._headers if getattr(h._rows, "ignored_pages", 0) > 0]
    if stacks:
        lines.append(f"{len(stacks)} multi-page TIFF(s), e.g. {stacks[0]!r}: first page only "
                     f"(--spatial-ndim 3 reads them as stacks)")
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
    total = int(per_image.sum())
    lines.append(f"about {_size(total)} in layout {args.layout!r} "
                 f"({_size(sum(h.nbytes for h in images._headers))} of decoded pixels)")
    for k in chosen:
        a, b = ranges[k]
        lines.append(f"  {outputs[k]}: images {a}..{b - 1}, about {_size(int(per_image[a:b].sum()))}")
    if args.dry_run:
        lines.append("dry run: nothing written")
    print("\n".join(lines))
