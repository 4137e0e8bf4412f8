"""Sidecar files: what ``lazypatch index`` computes from a store without writing to it.

A sidecar is a small HDF5 file next to the store (``STORE.h5.filter-<name>.h5``,
``STORE.h5.labels.h5``), written atomically like a store and bound to the
store's content: it records the store's fingerprint (a SHA-256 over its
shapes and per-image CRC32s) and is refused for any other content. Arrays a
worker needs at run time are contiguous datasets, memory-mapped at their
file offsets.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..errors import StoreFormatError
from . import format as fmt
from .publish import publish_h5, temporary_path


def fingerprint(store) -> str:
    """SHA-256 over the store's shapes, CRC32 tables (every shard's) and pixel format."""
    digest = hashlib.sha256()
    digest.update(json.dumps([store.layout, store.dtype.str, store.channels,
                              store.mask_dtype.str if store.has_masks else ""]).encode())
    digest.update(np.ascontiguousarray(store.shapes).tobytes())
    digest.update(np.ascontiguousarray(store.table(fmt.D_CRC)).tobytes())
    if store.has_masks:
        digest.update(np.ascontiguousarray(store.table(fmt.D_MASK_CRC)).tobytes())
    return digest.hexdigest()


def write(path: str, kind: str, store, arrays: dict, attrs: dict) -> str:
    """Write a sidecar atomically (temporary file, fsync, rename)."""
    tmp = temporary_path(path)
    f = None
    try:
        f = fmt.create_h5(tmp)
        f.attrs["lazypatch_sidecar"] = fmt.attribute(kind)
        f.attrs["store_fingerprint"] = fmt.attribute(fingerprint(store))
        f.attrs["store_name"] = fmt.attribute(os.path.basename(store.path))
        for key, value in attrs.items():
            f.attrs[key] = fmt.attribute(value)
        for name, array in arrays.items():
            fmt.write_dataset(f, name, array, checksum=True)
        publish_h5(f, tmp, path, overwrite=True)
    except BaseException:
        fmt.discard_h5(f, tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def open_checked(path: str, kind: str, store):
    """The open h5py sidecar, after checking it belongs to this store's content."""
    fmt.check_path(path, f"{kind.replace('_', ' ')} sidecar")
    f = fmt.open_h5(path)
    with fmt.damage_is_format_error(path, f"the {kind.replace('_', ' ')} sidecar"):
        try:
            found = fmt.text_attribute(f.attrs.get("lazypatch_sidecar"))
            if found != kind:
                raise StoreFormatError(f"{path!r} is not a lazypatch {kind} sidecar (it says {found!r})")
            if fmt.text_attribute(f.attrs.get("store_fingerprint")) != fingerprint(store):
                raise StoreFormatError(
                    f"{path!r} was computed for other content than {store.path!r} (fingerprints "
                    f"differ); run `lazypatch index` again"
                )
        except BaseException:
            f.close()
            raise
    return f


def mapped(path: str, name: str, dtype, count: int) -> np.ndarray:
    """A contiguous sidecar dataset as a read-only memory map."""
    import h5py

    with h5py.File(path, "r") as f:
        dataset = f[name]
        offset = dataset.id.get_offset()
        if offset is None or dataset.dtype != dtype or dataset.size != count:
            raise StoreFormatError(f"{path!r}: dataset {name!r} is not a contiguous {dtype} array of {count}")
    if offset + count * np.dtype(dtype).itemsize > os.path.getsize(path):
        raise StoreFormatError(f"{path!r} is truncated")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
