"""Oracles and hypothesis strategies for testing code built on lazypatch, and
measuring helpers for the tests and benchmarks (:mod:`lazypatch.testing.measure`).

The oracles are written as plain loops straight from the grid rules
(:mod:`lazypatch.grid`), independent of :mod:`lazypatch.index`, so that the index
can be checked against them. ``hypothesis`` is needed only for the
strategies.

>>> axis_origins(10, 4, 3, "drop"), axis_origins(10, 4, 3, "shift"), axis_origins(10, 4, 3, "pad")
([0, 3, 6], [0, 3, 6], [0, 3, 6])
>>> axis_origins(11, 4, 3, "shift"), axis_origins(11, 4, 3, "pad"), axis_origins(3, 4, 3, "shift")
([0, 3, 6, 7], [0, 3, 6, 9], [0])
"""

from __future__ import annotations

import itertools

import numpy as np

from .measure import (cached_fraction, evict, index_nbytes, proc_status, read_stages,
                      store_table_nbytes, torch_worker_batches)

__all__ = [
    "axis_origins",
    "brute_force_patches",
    "patch_oracle",
    "arange_image",
    "shapes_strategy",
    "grid_strategy",
    # measure
    "proc_status",
    "evict",
    "cached_fraction",
    "read_stages",
    "index_nbytes",
    "store_table_nbytes",
    "torch_worker_batches",
]


def axis_origins(length: int, patch: int, stride: int, edge: str) -> list:
    """Origins along one axis, by walking it."""
    origins = []
    origin = 0
    if edge == "pad":
        while True:
            origins.append(origin)
            if origin + patch >= length:
                return origins
            origin += stride
    while origin + patch <= length:
        origins.append(origin)
        origin += stride
    if edge == "shift":
        if not origins:
            origins.append(0)
        elif origins[-1] + patch < length:
            origins.append(length - patch)
    return origins


def brute_force_patches(shapes, patch_size, stride, edge) -> list:
    """Every (image_id, origin) in flat order, as nested loops over images and axes."""
    result = []
    for image_id, shape in enumerate(shapes):
        ndim = len(shape)
        patch = (patch_size,) * ndim if isinstance(patch_size, int) else tuple(patch_size)
        step = patch if stride is None else ((stride,) * ndim if isinstance(stride, int) else tuple(stride))
        per_axis = [axis_origins(int(shape[a]), patch[a], step[a], edge) for a in range(ndim)]
        for origin in itertools.product(*per_axis):
            result.append((image_id, tuple(int(v) for v in origin)))
    return result


def patch_oracle(image: np.ndarray, origin, size, pad_value=0) -> np.ndarray:
    """``image[origin:origin + size]`` with padding outside, by numpy slicing."""
    ndim = len(size)
    out = np.full(tuple(size) + image.shape[ndim:], pad_value, dtype=image.dtype)
    src, dst = [], []
    for a in range(ndim):
        lo, hi = max(origin[a], 0), min(origin[a] + size[a], image.shape[a])
        if lo >= hi:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - origin[a], hi - origin[a]))
    out[tuple(dst)] = image[tuple(src)]
    return out


def arange_image(shape, dtype=np.uint16, start: int = 0) -> np.ndarray:
    """An image whose every element differs (modulo the dtype), so a wrong offset shows."""
    count = int(np.prod(shape))
    values = np.arange(start, start + count, dtype=np.int64)
    if np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize < 8:
        values %= int(np.iinfo(dtype).max) + 1
    return values.astype(dtype).reshape(shape)


def shapes_strategy(ndim: int = 2, max_images: int = 6, max_side: int = 40):
    """Hypothesis strategy: lists of image shapes (n, ndim) with sides in [1, max_side]."""
    from hypothesis import strategies as st

    side = st.integers(1, max_side)
    return st.lists(st.tuples(*([side] * ndim)), min_size=1, max_size=max_images)


def grid_strategy(ndim: int = 2, max_patch: int = 12):
    """Hypothesis strategy: (patch_size, stride, edge) with per-axis patch and stride."""
    from hypothesis import strategies as st

    value = st.integers(1, max_patch)
    return st.tuples(
        st.tuples(*([value] * ndim)),
        st.tuples(*([value] * ndim)),
        st.sampled_from(("drop", "shift", "pad")),
    )
