"""``lazypatch verify STORE``: re-read every image and compare with its build-time CRC32."""

from __future__ import annotations

import json

from ..store import ImageStore
from ._args import one_store, store_argument


def add_arguments(parser) -> None:
    store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the damaged images as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Exit status 0 when every image matches its checksum, 2 when any is damaged."""
    with ImageStore(one_store(args.store)) as store:
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
