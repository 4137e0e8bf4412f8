"""``lazypatch manifest OUT SHARD...``: one name for shards built separately (``build --shard-index``)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("output", help="the manifest to write (.h5), in the shards' folder or above it")
    parser.add_argument("shards", nargs="+", help="the shard files (put in the order their build recorded "
                                                  "with --shard-index, else as given)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing manifest")


def run(args) -> int:
    from ..store import ImageStore
    from ..store.manifest import write_manifest

    path = write_manifest(args.output, _in_shard_order(args.shards), provenance={"command": "lazypatch manifest"},
                          overwrite=args.overwrite)
    with ImageStore(path) as store:
        print(f"{path}: a manifest of {len(store.paths)} shard(s), {len(store)} images; open it as one store: "
              f"ImageStore({path!r})")
    return 0


def _in_shard_order(paths) -> list:
    """The shards by the index their build recorded (``"shard": [k, n]`` in the provenance), when
    every one has it; else as given."""
    import json

    from ..store import ImageStore

    keys = []
    for path in paths:
        with ImageStore(path) as store:
            try:
                keys.append(tuple(json.loads(store.attrs.get("provenance") or "{}")["shard"]))
            except (KeyError, TypeError, ValueError):
                return list(paths)
    return [path for _, path in sorted(zip(keys, paths))]
