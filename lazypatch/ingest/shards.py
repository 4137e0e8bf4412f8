"""Shards: a collection cut into contiguous runs of images, balanced by stored bytes.

Each shard is an independent store file; ``ImageStore([paths])`` opens them
as one. Sizes parse as the CLI writes them (``500MB``, ``2GiB``) or as ints
(bytes).
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import ParameterError, ParameterTypeError
from ..grid import is_int
from ..store import format as fmt

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12,
          "tb": 1e12, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_size(text, name: str = "--shard-size") -> int:
    """Bytes of ``text`` (``"500MB"``, ``"2GiB"``, ``"1e9"`` is not accepted) or of an int.

    >>> parse_size("2GB"), parse_size("1.5 KiB"), parse_size(4096)
    (2000000000, 1536, 4096)
    """
    if is_int(text):
        size = int(text)
    elif isinstance(text, str):
        match = _SIZE.match(text)
        unit = (match.group(2) or "").lower() if match else None
        if not match or unit not in _UNITS:
            raise ParameterError(f"{name} must be a size such as 500MB or 2GB, got {text!r}")
        size = int(float(match.group(1)) * _UNITS[unit])
    else:
        raise ParameterTypeError(f"{name} must be a size such as '2GB' or an int of bytes, got {text!r}")
    if size < 1:
        raise ParameterError(f"{name} must be positive, got {text!r}")
    return size


def stored_bytes(shapes, channels: int, itemsize: int, layout: str, tile) -> np.ndarray:
    """Bytes each image takes in the store (tiles padded at the border)."""
    shapes = np.asarray(shapes, np.int64)
    if layout != "contiguous":
        shapes = fmt.tile_grid(shapes, tile) * np.asarray(tile, np.int64)
    return shapes.prod(axis=1) * channels * itemsize


def split_shards(nbytes: np.ndarray, count=None, size=None) -> list:
    """(start, stop) image ranges of contiguous shards, balanced by bytes."""
    total = len(nbytes)
    if count is not None:
        if count < 1 or count > total:
            raise ParameterError(f"--shards must be between 1 and the {total} images, got {count}")
        cumulative = np.cumsum(nbytes)
        bounds = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, count) / count, side="left") + 1
        bounds = np.clip(bounds, np.arange(1, count), total - count + np.arange(1, count))
        for k in range(1, len(bounds)):  # strictly increasing: no empty shard
            bounds[k] = max(bounds[k], bounds[k - 1] + 1)
        edges = [0] + bounds.tolist() + [total]
        return list(zip(edges[:-1], edges[1:]))
    ranges, start, used = [], 0, 0
    for k, n in enumerate(nbytes.tolist()):
        if k > start and used + n > size:
            ranges.append((start, k))
            start, used = k, 0
        used += n
    ranges.append((start, total))
    return ranges


def shard_path(output: str, number: int, count: int) -> str:
    base, ext = os.path.splitext(output)
    return f"{base}-{number:05d}-of-{count:05d}{ext or '.h5'}"


def shard_glob(output: str, count: int) -> str:
    base, ext = os.path.splitext(output)
    return f"{base}-*-of-{count:05d}{ext or '.h5'}"
