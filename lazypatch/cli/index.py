"""``lazypatch index STORE``: label statistics, channel statistics or a foreground
filter, computed from a finished store into a sidecar file."""

from __future__ import annotations

import h5py

from ..stats.channels import ChannelStats
from ..stats.foreground import SOURCES, foreground_filter
from ..stats.labels import LabelStats
from ..store import ImageStore
from ._args import add_grid, int_list


def add_arguments(parser) -> None:
    parser.add_argument("store")
    parser.add_argument("--labels", action="store_true", help="per-block label counts (for ClassSampler)")
    parser.add_argument("--block", type=int_list, default=64, help="block of --labels (default 64)")
    parser.add_argument("--stats", action="store_true",
                        help="per-channel statistics (for PatchDataset(normalize=...))")
    parser.add_argument("--foreground", action="store_true",
                        help="a filter keeping grid patches with enough foreground")
    add_grid(parser, "grid of --foreground")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum foreground fraction")
    parser.add_argument("--from", "--source", dest="source", default="mask", choices=SOURCES,
                        help="foreground from the masks, the pixels' intensity, or the tissue masks "
                             "stored by `lazypatch build --tissue otsu` (default: mask)")
    parser.add_argument("--intensity", default="otsu", help="'otsu' or a number (with --from intensity)")
    parser.add_argument("--brighter", action="store_true", help="foreground is brighter than the threshold")
    parser.add_argument("--out", help="sidecar path (default: next to the store)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (--foreground)")


def run(args) -> int:
    if args.labels + args.foreground + args.stats != 1:
        raise ValueError("choose one of --labels, --stats or --foreground")
    store = ImageStore(args.store)
    if args.stats:
        stats = ChannelStats.compute(store)
        path = stats.write_sidecar(store, args.out)
        print(f"wrote {path}: {stats!r}")
        return 0
    if args.labels:
        stats = LabelStats.compute(store, args.block)
        path = stats.write_sidecar(store, args.out)
        print(f"wrote {path}: {len(stats.blocks)} (block, label, count) rows, labels "
              f"{sorted(stats.totals())[:20]}")
        return 0
    if args.patch is None:
        raise ValueError("--foreground needs --patch (the grid the filter is for)")
    intensity = args.intensity if args.intensity == "otsu" else float(args.intensity)
    path = foreground_filter(store, args.patch, args.stride, args.edge, threshold=args.threshold,
                             source=args.source, intensity=intensity, darker=not args.brighter,
                             path=args.out, progress=False if args.no_progress else None)
    with h5py.File(path, "r") as f:
        kept, total = int(f.attrs["kept"]), int(f.attrs["patches"])
    print(f"wrote {path}: keeps {kept} of {total} patches ({kept / max(total, 1):.1%}); use "
          f"PatchDataset(store, ..., filter={path!r})")
    return 0
