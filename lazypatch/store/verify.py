"""``verify``: every image, mask, name, meta, tissue mask and stored statistic against its
build-time CRC32.

:meth:`ImageStore.verify` and ``lazypatch verify`` call it; it reads through
the store's public reading API only (bands of bounded size), so it checks
what a user would read.
"""

from __future__ import annotations

import sys
import zlib

import numpy as np

from ..errors import LazypatchError, StoreFormatError
from . import format as fmt

_BAND_BYTES = 16 << 20


def verify(store, progress=None) -> list:
    """The damage found in ``store`` (see :meth:`ImageStore.verify`); [] when none."""
    from tqdm import tqdm

    show = progress if progress is not None else sys.stderr.isatty()
    expected = {"pixels": store.table(fmt.D_CRC)}
    if store.has_masks:
        expected["mask"] = store.table(fmt.D_MASK_CRC)
    damaged = _info_damage(store)
    with tqdm(total=len(store), unit="image", desc="lazypatch verify", disable=not show,
              file=sys.stderr, leave=False) as bar:
        for image_id in range(len(store)):
            for what, crcs in expected.items():
                try:
                    crc = image_crc(store, image_id, mask=what == "mask")
                except (OSError, LazypatchError) as exc:
                    damaged.append({"image": image_id, "what": what, "reason": str(exc)})
                    continue
                if crc != int(crcs[image_id]):
                    damaged.append({"image": image_id, "what": what,
                                    "reason": f"CRC32 {crc:08x}, stored {int(crcs[image_id]):08x}"})
            if store.has_tissue:
                try:
                    store.tissue(image_id)  # checks the mask against its CRC32
                except (OSError, LazypatchError) as exc:
                    damaged.append({"image": image_id, "what": "tissue", "reason": str(exc)})
            bar.update(1)
    try:
        names = store.names
    except StoreFormatError:
        names = [str(k) for k in range(len(store))]
    for entry in damaged:
        entry["name"] = names[entry["image"]]
    damaged.sort(key=lambda entry: entry["image"])
    return damaged + _statistics_damage(store) + _geometry_damage(store) + _tissue_damage(store)


def image_crc(store, image_id: int, mask: bool = False) -> int:
    """CRC32 of one image's (or mask's) C-order bytes as written, read band by band."""
    crc = 0
    for _, band in store.read_bands(image_id, mask=mask, max_bytes=_BAND_BYTES):
        crc = zlib.crc32(np.ascontiguousarray(band), crc)
    return crc


def _statistics_damage(store) -> list:
    """Damage to the statistics groups written into the store (CRC32 per dataset)."""
    return _crc_damage(store, "statistics", lambda shard: [
        group[name] for group_name in (fmt.G_LABEL_STATS, fmt.G_CHANNEL_STATS)
        for group in [store.group(group_name, shard)] if group is not None for name in group])


def _geometry_damage(store) -> list:
    """Damage to the geometry table (format 1.1; CRC32 per dataset)."""
    return _crc_damage(store, "geometry", lambda shard: [
        root[name] for root in [store.group("/", shard)]
        for name in (fmt.D_GEOMETRY, fmt.D_GEOMETRY_OFFSETS) if name in root])


def _tissue_damage(store) -> list:
    """Damage to the tissue group's tables (format 1.2; CRC32 per dataset). The masks
    themselves are checked image by image, with their own CRC32s, in ``verify``."""
    tables = (fmt.D_TISSUE_SHAPES, fmt.D_TISSUE_OFFSETS, fmt.D_TISSUE_CRC, fmt.D_TISSUE_FRACTION)
    return _crc_damage(store, "tissue", lambda shard: [
        root[name] for root in [store.group("/", shard)] if fmt.G_TISSUE in root for name in tables])


def _crc_damage(store, what: str, datasets_of) -> list:
    """Each shard's datasets (``datasets_of(shard)``) against their ``crc32`` attributes."""
    damaged = []
    for shard, path in enumerate(store.paths):
        try:
            for dataset in datasets_of(shard):
                reason = fmt.crc_damage(dataset.name, dataset.attrs.get("crc32"), dataset[()])
                if reason is not None:
                    damaged.append({"image": None, "name": None, "what": what, "reason": f"{path}: {reason}"})
        except fmt.H5_DAMAGE as exc:
            damaged.append({"image": None, "name": None, "what": what,
                            "reason": f"{path}: {what} unreadable ({exc})"})
    return damaged


def _info_damage(store) -> list:
    """Damage to the names and meta tables (stores written before info_crc32: none found)."""
    if not store.has_table(fmt.D_INFO_CRC):
        return []
    try:
        names, metas = store.text_table(fmt.D_NAMES), store.text_table(fmt.D_META)
    except StoreFormatError as exc:
        return [{"image": k, "what": "info", "reason": str(exc)} for k in range(len(store))]
    crcs = store.table(fmt.D_INFO_CRC)
    return [{"image": k, "what": "info", "reason": "name or meta differs from its CRC32"}
            for k in range(len(store)) if fmt.info_crc(names[k], metas[k]) != int(crcs[k])]
