"""The manifest of a sharded store: one small HDF5 file naming its shards, opened as one store.

``lazypatch build ... --shard-size 10GB`` writes shards as ``OUT.shards/<build-id>-<k>.h5``
and ``OUT`` last as a manifest; ``ImageStore("OUT.h5")`` opens it as
``ImageStore([shards...])`` would. The file (hardened like a store, NOTE
[hardened metadata] in :mod:`lazypatch.store.format`):

==========================  ======================================================================
root attribute              value
==========================  ======================================================================
``lazypatch_format``        ``"lazypatch-manifest"``
``lazypatch_format_version``  1
``generation``              1 for the first manifest, +1 for each ``--append``
``provenance``              JSON text: the build that published it
==========================  ======================================================================

Datasets, each with a ``crc32`` attribute: ``names``/``name_offsets`` (the
shards' file names relative to the manifest's folder, a text table),
``build_ids``/``build_id_offsets`` (each shard's build id, from its provenance),
``images`` and ``bytes`` ((k,) int64: images and file size per shard),
``table_crc32`` ((k,) uint32: a CRC32 of the shard's shapes and per-image CRC32
tables) and ``sha256``/``sha256_offsets`` (the full file's digest). No
external links, no virtual datasets: plain tables.

At open each shard is checked by size, build id and table CRC (cheap); the
full-file SHA-256 only by ``verify``. A manifest is published with a
compare-and-swap on its generation (NOTE [manifest generations]).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import StoreExistsError, StoreFormatError
from . import format as fmt
from .publish import publish_h5, temporary_path

__all__ = ["Manifest", "is_manifest", "read_manifest", "write_manifest", "check_shards", "verify_shards"]

FORMAT_NAME = "lazypatch-manifest"
FORMAT_VERSION = 1
_TEXTS = {"names": "name_offsets", "build_ids": "build_id_offsets", "sha256": "sha256_offsets"}


class Manifest(NamedTuple):
    path: str
    generation: int
    shards: list  # absolute paths
    images: np.ndarray
    bytes: np.ndarray
    build_ids: list
    table_crc32: np.ndarray
    sha256: list
    provenance: str


def _shard(path: str) -> tuple:
    """(store info, build id, table CRC) of one shard: the CRC32 of its shapes and per-image
    CRC32 tables (its content, cheaply), the build id from its provenance."""
    import h5py

    info = fmt.read_store_info(path)
    crc = zlib.crc32(np.ascontiguousarray(info.shapes, dtype=np.int64).tobytes())
    with fmt.damage_is_format_error(path, "the shard's CRC tables"), h5py.File(path, "r") as f:
        for name in (fmt.D_CRC, fmt.D_MASK_CRC):
            if name in f:
                crc = zlib.crc32(np.ascontiguousarray(f[name][()]).tobytes(), crc)
        provenance = fmt.text_attribute(f.attrs.get(fmt.A_PROVENANCE)) or "{}"
    try:
        build_id = str(json.loads(provenance).get("build_id", ""))
    except (TypeError, ValueError, AttributeError):
        build_id = ""
    return info, build_id, crc & 0xFFFFFFFF


def _one_store(infos) -> None:
    """Shards of one store share their pixel format (ImageStore checks the same at open)."""
    first = infos[0]
    for info in infos[1:]:
        for key in ("layout", "spatial_ndim", "channels", "channel_axis"):
            if getattr(info, key) != getattr(first, key):
                raise StoreFormatError(f"shards must share {key}: {first.path!r} has {getattr(first, key)!r}, "
                                       f"{info.path!r} has {getattr(info, key)!r}")
        if info.pixels.dtype != first.pixels.dtype or (info.masks is None) != (first.masks is None) or (
                info.masks is not None and info.masks.dtype != first.masks.dtype):
            raise StoreFormatError(f"shards must share their pixel and mask dtypes: {first.path!r} and {info.path!r}")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def is_manifest(path) -> bool:
    """Whether ``path`` is a manifest (its root attribute says so); False for anything else."""
    try:
        import h5py

        with h5py.File(os.fspath(path), "r") as f:
            return fmt.text_attribute(f.attrs.get(fmt.A_FORMAT)) == FORMAT_NAME
    except Exception:
        return False


def write_manifest(out, shard_paths, *, provenance=None, expected_generation=None, overwrite=False) -> str:
    """Write the manifest ``out`` naming ``shard_paths`` (in that order), atomically.

    Parameters
    ----------
    out : str or os.PathLike
    shard_paths : sequence of paths
        Shards in ``out``'s folder or below it; together they must form one
        store (as ``ImageStore([...])`` checks).
    provenance : dict, optional
    expected_generation : int, optional
        Publish only if the manifest at ``out`` still has this generation
        (an append); None: ``out`` must not be a manifest unless ``overwrite``.
    overwrite : bool

    Returns
    -------
    str
        ``out``.

    Raises
    ------
    StoreExistsError
        Another build published first (NOTE [manifest generations]).
    StoreFormatError
        A shard outside ``out``'s folder, or shards that cannot form one store.
    """
    out = os.path.abspath(os.fspath(out))
    folder = os.path.dirname(out)
    paths = [os.path.abspath(os.fspath(p)) for p in shard_paths]
    if not paths:
        raise StoreFormatError(f"a manifest names at least one shard; none given for {out!r}")
    names = []
    for path in paths:
        name = os.path.relpath(path, folder)
        if name.startswith(os.pardir) or os.path.isabs(name):
            raise StoreFormatError(f"shard {path!r} is not in the folder of the manifest {out!r} or below it")
        names.append(name.replace(os.sep, "/"))
    shards = [_shard(path) for path in paths]
    _one_store([info for info, _, _ in shards])
    images = [len(info.shapes) for info, _, _ in shards]
    build_ids = [build_id for _, build_id, _ in shards]
    crcs = [crc for _, _, crc in shards]
    sizes = [os.path.getsize(p) for p in paths]
    digests = [_sha256(p) for p in paths]
    # NOTE [manifest generations]: a lock file beside the manifest serializes publishers; under
    # it the generation found is compared with the one the build started from, so of two builds
    # one publishes and the other fails naming the generation it found.
    lock_path = out + ".lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = read_manifest(out).generation if is_manifest(out) else None
        if expected_generation is None and os.path.lexists(out) and not overwrite:
            raise StoreExistsError(errno.EEXIST, "another build published the output first (or it existed); "
                                                 "pass overwrite=True (--overwrite) to replace it", out)
        if expected_generation is not None and found != expected_generation:
            raise StoreExistsError(errno.EEXIST, f"the manifest changed while this build ran (generation "
                                                 f"{found}, this build started from {expected_generation}): "
                                                 "another build appended first; run the append again", out)
        generation = 1 if found is None or expected_generation is None else found + 1
        tmp = temporary_path(out)
        f = None
        try:
            f = fmt.create_h5(tmp)
            f.attrs[fmt.A_FORMAT] = fmt.attribute(FORMAT_NAME)
            f.attrs[fmt.A_VERSION] = FORMAT_VERSION
            f.attrs["generation"] = generation
            f.attrs[fmt.A_PROVENANCE] = fmt.attribute(json.dumps(provenance or {}, sort_keys=True))
            for key, texts in (("names", names), ("build_ids", build_ids), ("sha256", digests)):
                data, offsets = fmt.pack_texts(texts)
                fmt.write_dataset(f, key, data, checksum=True)
                fmt.write_dataset(f, _TEXTS[key], offsets, checksum=True)
            fmt.write_dataset(f, "images", np.asarray(images, np.int64), checksum=True)
            fmt.write_dataset(f, "bytes", np.asarray(sizes, np.int64), checksum=True)
            fmt.write_dataset(f, "table_crc32", np.asarray(crcs, np.uint32), checksum=True)
            publish_h5(f, tmp, out, overwrite=True)
        except BaseException:
            fmt.discard_h5(f, tmp)
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        os.unlink(lock_path)
    except OSError:
        pass
    return out


def _checked(f, name: str, path: str) -> np.ndarray:
    if name not in f:
        raise StoreFormatError(f"{path!r}: the manifest has no {name!r} table")
    data = f[name][()]
    expected = f[name].attrs.get("crc32")
    if expected is None or zlib.crc32(np.ascontiguousarray(data).tobytes()) != int(expected):
        raise StoreFormatError(f"{path!r}: the manifest's {name!r} table fails its CRC32 (damaged)")
    return data


def read_manifest(path) -> Manifest:
    """The manifest at ``path``, validated (StoreFormatError naming the file on any damage)."""
    path = os.path.abspath(fmt.check_path(os.fspath(path), "manifest"))
    with fmt.damage_is_format_error(path, "the manifest"):
        f = fmt.open_h5(path)
        try:
            if fmt.text_attribute(f.attrs.get(fmt.A_FORMAT)) != FORMAT_NAME:
                raise StoreFormatError(f"{path!r} is not a lazypatch manifest")
            version = f.attrs.get(fmt.A_VERSION)
            if version is None or int(version) != FORMAT_VERSION:
                raise StoreFormatError(f"{path!r}: manifest version {version!r}; this lazypatch reads "
                                       f"{FORMAT_VERSION}")
            generation = int(f.attrs.get("generation", 0))
            texts = {}
            for key, offsets_name in _TEXTS.items():
                data, offsets = _checked(f, key, path), _checked(f, offsets_name, path)
                offsets = np.asarray(offsets, np.int64)
                if (offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(data)
                        or np.any(np.diff(offsets) < 0)):
                    raise StoreFormatError(f"{path!r}: the manifest's {key!r} offsets are inconsistent")
                raw = np.asarray(data, np.uint8).tobytes()
                texts[key] = [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
            images = np.asarray(_checked(f, "images", path), np.int64)
            sizes = np.asarray(_checked(f, "bytes", path), np.int64)
            crcs = np.asarray(_checked(f, "table_crc32", path), np.uint32)
            provenance = fmt.text_attribute(f.attrs.get(fmt.A_PROVENANCE)) or "{}"
        finally:
            f.close()
    count = len(texts["names"])
    if generation < 1 or count < 1 or any(len(v) != count for v in (texts["build_ids"], texts["sha256"],
                                                                        images, sizes, crcs)):
        raise StoreFormatError(f"{path!r}: the manifest's tables disagree in length or generation")
    folder = os.path.dirname(path)
    shards = []
    for name in texts["names"]:
        if name.startswith("/") or ".." in name.split("/"):
            raise StoreFormatError(f"{path!r}: shard name {name!r} leaves the manifest's folder")
        shards.append(os.path.join(folder, *name.split("/")))
    return Manifest(path, generation, shards, images, sizes, texts["build_ids"], crcs, texts["sha256"], provenance)


def check_shards(manifest: Manifest) -> None:
    """Each shard exists with the recorded size, build id and table CRC (cheap, at open)."""
    for k, shard in enumerate(manifest.shards):
        if not os.path.isfile(shard):
            raise StoreFormatError(f"shard {k} of {manifest.path!r} is missing: {shard!r}")
        size = os.path.getsize(shard)
        if size != int(manifest.bytes[k]):
            raise StoreFormatError(f"shard {shard!r} of {manifest.path!r} has {size} bytes, the manifest says "
                                   f"{int(manifest.bytes[k])}: replaced or damaged")
        _, build_id, crc = _shard(shard)
        if build_id != manifest.build_ids[k] or crc != int(manifest.table_crc32[k]):
            raise StoreFormatError(f"shard {shard!r} is not the one {manifest.path!r} names (its build id or "
                                   "table CRC differs): rebuild the manifest with `lazypatch manifest`")


def verify_shards(manifest: Manifest) -> list:
    """``check_shards`` and each shard's full-file SHA-256; returns the shards that differ."""
    check_shards(manifest)
    return [shard for shard, digest in zip(manifest.shards, manifest.sha256) if _sha256(shard) != digest]
