"""``lazypatch export PREDS OUT_DIR --format nifti|ome-tiff|geotiff``: predictions as the field's files."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("predictions", help="a predictions file of PatchAggregator(out=...)")
    parser.add_argument("out_dir", help="the folder to write one file per image into (created if needed)")
    parser.add_argument("--format", required=True, choices=("nifti", "ome-tiff", "geotiff"))
    parser.add_argument("--argmax", action="store_true", help="labels (the largest channel), not probabilities")
    parser.add_argument("--to-source", action="store_true",
                        help="resample back to the source's full-resolution grid (nearest for labels)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Exit status 0 when every file is written; 1 on an error (printed by lazypatch.cli.main), 2 on bad usage."""
    from ..inference import export

    written = export(args.predictions, args.out_dir, format=args.format, argmax=args.argmax,
                     to_source=args.to_source, overwrite=args.overwrite,
                     progress=False if args.no_progress else None)
    kind = "labels" if args.argmax else "float32 probabilities"
    grid = "the source grid" if args.to_source else "the stored grid"
    print(f"wrote {len(written)} {args.format} file(s) of {kind} on {grid} to {args.out_dir}")
    return 0
