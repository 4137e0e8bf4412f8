"""Argument helpers shared by the commands (below every command module)."""

from __future__ import annotations

import argparse

from ..grid import EDGES


def int_list(text: str):
    """``'64'`` -> 64, ``'64,32'`` or ``'64x32'`` -> (64, 32), for argparse ``type=``."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or comma-separated ints, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected an int or comma-separated ints, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def add_grid(parser, patch_help: str) -> None:
    """--patch, --stride and --edge, the grid options several commands share."""
    parser.add_argument("--patch", type=int_list, help=patch_help)
    parser.add_argument("--stride", type=int_list, help="grid stride (default: the patch size)")
    parser.add_argument("--edge", default="drop", choices=EDGES)


def store_argument(parser) -> None:
    parser.add_argument("store", nargs="+", help="a store file, or several shards of one store")


def one_store(paths: list):
    """The ``store`` argument as ``ImageStore`` takes it: one path, or a list of shards."""
    return paths if len(paths) > 1 else paths[0]
