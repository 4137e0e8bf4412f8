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
        else:
            print(f"{key:<{width + 5}}  {value}")
    return 0
