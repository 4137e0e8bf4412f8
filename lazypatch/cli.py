"""The ``lazypatch`` command line: build, info, index, show, verify, bench, demo.

``main(argv=None) -> int`` is testable in-process; ``python -m lazypatch``
and the ``lazypatch`` console script both call it. Every subcommand goes
through the public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import __version__
from .errors import LazypatchError

__all__ = ["main"]


def _int_list(text: str):
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or comma-separated ints, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected an int or comma-separated ints, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazypatch",
        description="Random-access training patches from image collections larger than RAM.",
    )
    parser.add_argument("--version", action="version", version=f"lazypatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    build = commands.add_parser("build", help="write a store (or shards) from a folder of image files")
    from ._build import add_arguments as add_build_arguments

    add_build_arguments(build)
    build.set_defaults(func=cmd_build)

    info = commands.add_parser("info", help="describe a store")
    info.add_argument("store", nargs="+", help="a store file, or several shards of one store")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--patch", type=_int_list, help="also count patches of this size")
    info.add_argument("--stride", type=_int_list)
    info.add_argument("--edge", default="drop", choices=("drop", "shift", "pad"))
    info.set_defaults(func=cmd_info)

    index = commands.add_parser(
        "index", help="compute label statistics or a foreground filter into a sidecar file")
    index.add_argument("store")
    index.add_argument("--labels", action="store_true", help="per-block label counts (for ClassSampler)")
    index.add_argument("--block", type=_int_list, default=64, help="block of --labels (default 64)")
    index.add_argument("--stats", action="store_true",
                       help="per-channel statistics (for PatchDataset(normalize=...))")
    index.add_argument("--foreground", action="store_true",
                       help="a filter keeping grid patches with enough foreground")
    index.add_argument("--patch", type=_int_list, help="grid of --foreground")
    index.add_argument("--stride", type=_int_list)
    index.add_argument("--edge", default="drop", choices=("drop", "shift", "pad"))
    index.add_argument("--threshold", type=float, default=0.5, help="minimum foreground fraction")
    index.add_argument("--from", dest="source", default="mask", choices=("mask", "intensity"))
    index.add_argument("--intensity", default="otsu", help="'otsu' or a number (with --from intensity)")
    index.add_argument("--brighter", action="store_true", help="foreground is brighter than the threshold")
    index.add_argument("--out", help="sidecar path (default: next to the store)")
    index.set_defaults(func=cmd_index)

    show = commands.add_parser(
        "show", help="draw an image with its patch grid and a grid of sample patches (PNG)")
    from .show import add_arguments as add_show_arguments

    add_show_arguments(show)
    show.set_defaults(func=cmd_show)

    verify = commands.add_parser(
        "verify", help="re-read every image and compare with the checksums written at build time")
    verify.add_argument("store", nargs="+", help="a store file, or several shards of one store")
    verify.add_argument("--json", action="store_true", help="print the damaged images as JSON")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.set_defaults(func=cmd_verify)

    bench = commands.add_parser("bench", help="measure random-access throughput side by side with baselines")
    from ._bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    demo = commands.add_parser("demo", help="build a store from sample images and read patches from it")
    demo.add_argument("--out", default="lazypatch-demo", help="folder for the store and the picture")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `lazypatch info ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (LazypatchError, OSError, ValueError, TypeError, ImportError) as exc:
        print(f"lazypatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lazypatch {args.command}: interrupted", file=sys.stderr)
        return 130


# -- build ---------------------------------------------------------------------------
def cmd_build(args) -> int:
    from ._build import run

    return run(args)


# -- info ------------------------------------------------------------------------------
def describe(store, patch=None, stride=None, edge="drop") -> dict:
    """The facts ``lazypatch info`` prints, as a dict."""
    shapes = store.shapes
    facts = {
        "path": store.path,
        "images": len(store),
        "spatial_ndim": store.spatial_ndim,
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_median": np.median(shapes, axis=0).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
        "dtype": store.dtype.name,
        "channels": store.channels,
        "channel_axis": store.channel_axis,
        "masks": store.mask_dtype.name if store.has_masks else None,
        "layout": store.layout,
        "tile": list(store.tile) if store.tile else None,
        "compression": store.compression,
        "checksum": store.checksum,
        "read_path": _read_path(store),
        "pixels": int(shapes.prod(axis=1).sum()),
        "bytes_on_disk": store.nbytes,
        "format_version": store.attrs.get("lazypatch_format_version"),
        "written_by": store.attrs.get("lazypatch_version"),
    }
    if len(store.paths) > 1:
        facts["shards"] = store.paths
    provenance = store.attrs.get("provenance")
    if provenance:
        try:
            facts["provenance"] = json.loads(provenance)
        except ValueError:
            facts["provenance"] = provenance
    from .normalize import ChannelStats

    try:
        facts["channel_stats"] = {k: [round(v, 4) for v in values]
                                  for k, values in ChannelStats.open(store).summary().items()}
    except FileNotFoundError:
        facts["channel_stats"] = None
    if patch is not None:
        from .index import PatchIndex

        index = PatchIndex(shapes, patch, stride, edge)
        per_patch = int(np.prod(index.patch_size)) * store.channels * store.dtype.itemsize
        facts["grid"] = {
            "patch_size": list(index.patch_size),
            "stride": list(index.stride),
            "edge": edge,
            "patches": len(index),
            "images_without_patches": int((index.counts == 0).sum()),
            "bytes_per_epoch": len(index) * per_patch,
        }
    return facts


def _read_path(store) -> str:
    if store.layout == "chunked":
        why = ", ".join(filter(None, [f"{store.compression} compression" if store.compression else "",
                                     "fletcher32 checksums" if store.checksum else ""])) or "chunks"
        return f"h5py: HDF5 decodes the chunks ({why}); one call per run of consecutive chunks"
    return {
        "auto": "uncompressed tiles at computed offsets: memory map when the page cache holds "
                "a batch's pages, else pread (asked per batch with RWF_NOWAIT probes)",
        "mmap": "uncompressed tiles at computed offsets: memory map (io='mmap')",
        "pread": "uncompressed tiles at computed offsets: pread from a thread pool (io='pread')",
    }[store.io]


def cmd_info(args) -> int:
    from .store import ImageStore

    with ImageStore(args.store if len(args.store) > 1 else args.store[0]) as store:
        facts = describe(store, args.patch, args.stride, args.edge)
    if args.json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "grid":
            for sub, subvalue in value.items():
                print(f"{('grid.' + sub):<{width + 5}}  {subvalue}")
        else:
            print(f"{key:<{width + 5}}  {value}")
    return 0


# -- index -----------------------------------------------------------------------------------
def cmd_index(args) -> int:
    from .store import ImageStore

    if args.labels + args.foreground + args.stats != 1:
        raise ValueError("choose one of --labels, --stats or --foreground")
    store = ImageStore(args.store)
    if args.stats:
        from .normalize import ChannelStats

        stats = ChannelStats.compute(store)
        path = stats.write_sidecar(store, args.out)
        print(f"wrote {path}: {stats!r}")
        return 0
    if args.labels:
        from .labels import LabelStats

        stats = LabelStats.compute(store, args.block)
        path = stats.write_sidecar(store, args.out)
        print(f"wrote {path}: {len(stats.blocks)} (block, label, count) rows, labels "
              f"{sorted(stats.totals())[:20]}")
        return 0
    from .filtering import foreground_filter

    if args.patch is None:
        raise ValueError("--foreground needs --patch (the grid the filter is for)")
    intensity = args.intensity if args.intensity == "otsu" else float(args.intensity)
    path = foreground_filter(store, args.patch, args.stride, args.edge, threshold=args.threshold,
                             source=args.source, intensity=intensity, darker=not args.brighter,
                             path=args.out)
    import h5py

    with h5py.File(path, "r") as f:
        kept, total = int(f.attrs["kept"]), int(f.attrs["patches"])
    print(f"wrote {path}: keeps {kept} of {total} patches ({kept / max(total, 1):.1%}); use "
          f"PatchDataset(store, ..., filter={path!r})")
    return 0


# -- show -------------------------------------------------------------------------------------
def cmd_show(args) -> int:
    from .show import run

    return run(args)


# -- verify -------------------------------------------------------------------------------
def cmd_verify(args) -> int:
    """Exit status 0 when every image matches its checksum, 2 when any is damaged."""
    from .store import ImageStore

    with ImageStore(args.store if len(args.store) > 1 else args.store[0]) as store:
        damaged = store.verify(progress=False if args.no_progress else None)
        images = len(store)
    if args.json:
        print(json.dumps({"images": images, "damaged": damaged}, indent=2, ensure_ascii=False))
    elif damaged:
        for entry in damaged:
            where = "" if entry["image"] is None else f" image {entry['image']} ({entry['name']!r})"
            print(f"DAMAGED{where} {entry['what']}: {entry['reason']}")
        print(f"{len({e['image'] for e in damaged} - {None})} of {images} images damaged"
              + (", and the stored statistics" if any(e["image"] is None for e in damaged) else ""))
    else:
        print(f"ok: {images} images match their build-time CRC32s")
    return 2 if damaged else 0


# -- bench and demo ----------------------------------------------------------------------
def cmd_bench(args) -> int:
    from ._bench import run

    return run(args)


def cmd_demo(args) -> int:
    from ._demo import run

    return run(args.out)
