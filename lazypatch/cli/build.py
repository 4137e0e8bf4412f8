"""``lazypatch build SOURCE OUTPUT``: a folder of image files into one store, or into shards.

The command line of :func:`lazypatch.build`; every flag is a keyword of it.
"""

from __future__ import annotations

from ..ingest import build
from ..ingest.files import PAGES
from ..ingest.readers import READERS
from ..store import format as fmt
from ._args import int_list


def add_arguments(parser) -> None:
    parser.add_argument("source", help="folder (searched recursively), image file or glob of PNG, JPEG, "
                                       "TIFF, BMP, WebP, .npy, slide (.svs .ndpi .mrxs...), OME-TIFF, "
                                       "GeoTIFF, NIfTI or DICOM files (others are skipped and named)")
    parser.add_argument("output", help="the store file to write (.h5); with --shards, --shard-size, --scheduler "
                                       "or --append a manifest of shards written to OUT.shards/")
    parser.add_argument("--masks", metavar="DIR", help="folder (or glob) of masks, paired with images by file "
                                                       "stem; may be the image folder, with --mask-suffix")
    parser.add_argument("--mask-suffix", default="", help="suffix of mask stems, e.g. '_mask'")
    parser.add_argument("--mask-map", metavar="OLD=NEW,...",
                        help="replace mask values while writing, e.g. 255=1 for 0/255 masks")
    parser.add_argument("--allow-unmatched", action="store_true",
                        help="leave out images with no mask or several (default: an error)")
    parser.add_argument("--layout", default="tiled", choices=fmt.LAYOUTS)
    parser.add_argument("--tile", type=int_list, help="tile size, an int or per-axis 'Y,X'")
    parser.add_argument("--compression", help="gzip or lzf (needs --layout chunked); with "
                                              "hdf5plugin installed also zstd, lz4, blosc, bitshuffle")
    parser.add_argument("--compression-opts", type=int, help="gzip level 0-9, or the codec's level")
    parser.add_argument("--checksum", action="store_true", help="fletcher32 per chunk (needs --layout chunked)")
    parser.add_argument("--spatial-ndim", type=int, choices=(2, 3),
                        help="2 for images, 3 for volumes (default: 3 for NIfTI and DICOM, else 2)")
    parser.add_argument("--reader", choices=READERS,
                        help="read every image with this library (default: chosen by extension and content)")
    parser.add_argument("--level", type=int, help="store this pyramid level of every slide (0: full resolution)")
    parser.add_argument("--mpp", type=float, metavar="UM",
                        help="resample every slide to this pixel size in microns (anti-aliased; masks nearest)")
    parser.add_argument("--assume-mpp", type=float, metavar="UM",
                        help="the level-0 pixel size of files that record none")
    parser.add_argument("--spacing", metavar="Z,Y,X",
                        help="resample every volume to this voxel spacing (mm for NIfTI/DICOM; masks nearest)")
    parser.add_argument("--annotations", metavar="DIR",
                        help="QuPath/GeoJSON annotation files (.geojson) paired with slides by stem, "
                             "rasterized into masks (needs --classes)")
    parser.add_argument("--classes", metavar="NAME=VALUE,...",
                        help="label of each annotation class, e.g. tumor=1,stroma=2 (later wins on overlap)")
    parser.add_argument("--ignore-value", type=int,
                        help="label of pixels outside every annotation (default 0)")
    parser.add_argument("--pages", choices=PAGES,
                        help="what the pages of a multi-page TIFF without axis metadata are: channels, z "
                             "slices (with --spatial-ndim 3) or only the first page counts")
    parser.add_argument("--stats", action="store_true",
                        help="per-channel statistics for PatchDataset(normalize=...)")
    parser.add_argument("--label-stats", action="store_true",
                        help="per-block label counts of the masks, for ClassSampler")
    parser.add_argument("--shards", type=int, help="write this many shard files (balanced by bytes)")
    parser.add_argument("--shard-size", help="instead: shards of at most about this size, e.g. 2GB")
    parser.add_argument("--shard-index", type=int,
                        help="write only this shard (0-based): one machine per shard; then `lazypatch manifest`")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run one task per shard on Dask: tcp://host:8786, or local:N for N local worker "
                             "processes (pip install \"lazypatch[dask]\")")
    parser.add_argument("--append", action="store_true",
                        help="add the images as new shards to the manifest OUTPUT (no shard is rewritten)")
    parser.add_argument("--workers", type=int,
                        help="threads decoding PNG/JPEG ahead of the writer (default: min(4, CPUs)); 0: none")
    parser.add_argument("--dry-run", action="store_true", help="check everything, print the plan, write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    result = build(
        args.source, args.output, masks=args.masks, mask_suffix=args.mask_suffix,
        allow_unmatched=args.allow_unmatched, mask_map=args.mask_map, layout=args.layout, tile=args.tile,
        compression=args.compression, compression_opts=args.compression_opts, checksum=args.checksum,
        spatial_ndim=args.spatial_ndim, pages=args.pages, reader=args.reader, level=args.level, mpp=args.mpp,
        assume_mpp=args.assume_mpp, spacing=args.spacing, annotations=args.annotations,
        classes=args.classes, ignore_value=args.ignore_value, stats=args.stats, label_stats=args.label_stats,
        shards=args.shards, shard_size=args.shard_size, shard_index=args.shard_index, scheduler=args.scheduler,
        append=args.append,
        workers=args.workers, dry_run=args.dry_run, overwrite=args.overwrite,
        progress=not args.no_progress, verbose=True,
    )
    if not args.dry_run:
        result.close()
    return 0
