"""Per-axis validation and arithmetic of patch grids: the one place for
``patch_size``, ``stride`` and ``edge``.

The grid rule along one spatial axis of length ``L`` for a patch ``p`` and a
stride ``s``:

``drop``
    origins ``0, s, 2s, ...`` while ``origin + p <= L``.
``shift``
    the drop origins, plus ``L - p`` when the last drop patch does not end at
    ``L``; one padded origin ``0`` when ``L < p``.
``pad``
    origins ``0, s, 2s, ...`` up to and including the first patch that reaches
    ``L``; the overhang is padding.

All arithmetic is int64.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import ParameterError, ParameterTypeError

EDGES = ("drop", "shift", "pad")


def is_int(value) -> bool:
    """True for Python and numpy integers, false for bools."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def ceil_div(numerator, denominator):
    """``ceil(numerator / denominator)`` in integers (ints or int arrays), exact for any size.

    >>> ceil_div(10, 4), ceil_div(np.array([0, 1, 64, 65]), 64).tolist()
    (3, [0, 1, 1, 2])
    """
    return -(-numerator // denominator)


def _scalar_int(value):
    """A 0-d integer array or tensor (``np.int64(3)`` is already an int) as an int, else ``value``."""
    if getattr(value, "ndim", None) == 0 and not is_int(value):
        dtype = str(getattr(value, "dtype", ""))
        if ("int" in dtype) and "bool" not in dtype:
            return int(value.item())
    return value


def axis_tuple(value, ndim: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Broadcast an int or check a sequence of ``ndim`` ints.

    >>> axis_tuple(64, 2, "patch_size")
    (64, 64)
    >>> axis_tuple((8, 16, 16), 3, "stride")
    (8, 16, 16)
    """
    value = _scalar_int(value)
    if is_int(value):
        items = (int(value),) * ndim
    else:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or getattr(value, "ndim", 1) == 0:
            raise ParameterTypeError(
                f"{name} must be an int or a sequence of {ndim} ints, got {value!r}"
            )
        raw = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
        raw = tuple(_scalar_int(item) for item in raw)
        for item in raw:
            if not is_int(item):
                raise ParameterTypeError(
                    f"{name} must be integers, got {type(item).__name__} {item!r} in {value!r}"
                )
        items = tuple(int(item) for item in raw)
        if len(items) != ndim:
            raise ParameterError(
                f"{name} must have one entry per spatial axis ({ndim}), "
                f"got {len(items)}: {items}"
            )
    if any(item < minimum for item in items):
        rule = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise ParameterError(f"{name} must be {rule}, got {items}")
    return items


def check_edge(edge) -> str:
    if not isinstance(edge, str) or edge not in EDGES:
        raise ParameterError(f"edge must be one of {EDGES}, got {edge!r}")
    return edge


def grid_counts(lengths: np.ndarray, patch, stride, edge: str) -> np.ndarray:
    """Number of grid positions per axis, for lengths of shape (..., ndim).

    >>> grid_counts(np.array([[10, 8]]), (4, 4), (3, 3), "drop").tolist()
    [[3, 2]]
    >>> grid_counts(np.array([[10, 8]]), (4, 4), (3, 3), "shift").tolist()
    [[3, 3]]
    >>> grid_counts(np.array([[10, 3]]), (4, 4), (3, 3), "pad").tolist()
    [[3, 1]]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    p = np.asarray(patch, dtype=np.int64)
    s = np.asarray(stride, dtype=np.int64)
    fits = lengths >= p
    drop = np.where(fits, (lengths - p) // s + 1, 0)
    if edge == "drop":
        return drop
    if edge == "shift":
        # one more when the last drop patch stops short of the end (or none fits)
        short = ~fits | ((drop - 1) * s + p < lengths)
        return drop + short
    # pad: ceil((L - p) / s) + 1 positions, one when the image is smaller than the patch
    return np.where(lengths > p, ceil_div(lengths - p, s), 0) + 1


def last_origin(lengths: np.ndarray, patch) -> np.ndarray:
    """Largest origin a ``shift`` grid uses: ``max(L - p, 0)`` per axis."""
    return np.maximum(np.asarray(lengths, dtype=np.int64) - np.asarray(patch, dtype=np.int64), 0)


def describe_shape(shape) -> str:
    return "x".join(str(int(v)) for v in shape)
