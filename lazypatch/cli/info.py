"""``lazypatch info STORE``: what a store holds (``--json``: :func:`lazypatch.describe`)."""

from __future__ import annotations

import json

from ..stats.summary import describe
from ..store import ImageStore
from ._args import add_grid, one_store, store_argument


def add_arguments(parser) -> None:
    store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_grid(parser, "also count patches of this size")


def run(args) -> int:
    with ImageStore(one_store(args.store)) as store:
        facts = describe(store, args.patch, args.stride, args.edge)
    if args.json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "grid":
            for sub, subvalue in value.items():
                print(f"{('grid.' + sub):<{width + 5}}  {subvalue}")
        elif key == "names" and value is not None:
            print(f"{key:<{width + 5}}  {_names(value)}")
        elif key == "tissue_fraction" and value is not None:
            print(f"{key:<{width + 5}}  {_tissue(value)}")
        else:
            print(f"{key:<{width + 5}}  {value}")
    return 0


def _names(names: dict) -> str:
    """``12: a, b, c, …, x, y, z``: the count, the first and the last names (quoted if need be)."""
    shown = [_quoted(n) for n in names["first"]]
    if names["count"] > len(names["first"]) + len(names["last"]):
        shown.append("…")
    shown += [_quoted(n) for n in names["last"]]
    return f"{names['count']}: " + ", ".join(shown)


def _tissue(fractions: list) -> str:
    """``mean 0.412, min 0.05 (a), max 0.8 (c) over 3 images; 1 without a mask``: one line
    for any number of images (``--json`` lists every image's fraction)."""
    known = [(value, k) for k, value in enumerate(fractions) if value is not None]
    missing = len(fractions) - len(known)
    without = f"; {missing} without a mask" if missing else ""
    if not known:
        return f"no image has a tissue mask{without}"
    low, high = min(known), max(known)
    mean = sum(value for value, _ in known) / len(known)
    return (f"mean {mean:.3f}, min {low[0]:g} (image {low[1]}), max {high[0]:g} (image {high[1]}) "
            f"over {len(known)} image{'s' if len(known) != 1 else ''}{without}")


def _quoted(name: str) -> str:
    return name if name and name.strip() == name and "," not in name and "…" not in name else repr(name)
