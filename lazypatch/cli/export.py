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


def run(args) -> int:
    from ..inference import export

    written = export(args.predictions, args.out_dir, format=args.format, argmax=args.argmax,
                     to_source=args.to_source, overwrite=args.overwrite)
    print(f"wrote {len(written)} file(s) to {args.out_dir}")
    return 0
