"""``Index``: what the dataset, the samplers and the aggregator need of an index.

:class:`~lazypatch.index.PatchIndex` and :class:`~lazypatch.index.FilteredIndex`
both implement it; a test checks that they do, member by member.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Index(Protocol):
    """Flat patch numbers over the grids of many images.

    Attributes ``patch_size``, ``stride`` (tuples, one entry per spatial axis)
    and ``edge`` describe the grid; the arrays are read-only.
    """

    patch_size: tuple
    stride: tuple
    edge: str

    @property
    def ndim(self) -> int: ...

    @property
    def num_images(self) -> int: ...

    @property
    def shapes(self) -> np.ndarray: ...

    @property
    def counts(self) -> np.ndarray: ...

    @property
    def offsets(self) -> np.ndarray: ...

    @property
    def bounds(self) -> np.ndarray: ...

    def __len__(self) -> int: ...

    def image_range(self, image_id: int) -> range: ...

    def normalize(self, flat) -> np.ndarray:
        """Flat numbers as int64 in ``[0, len)``, negatives wrapped, range checked."""

    def locate(self, flat):
        """(image_ids, origins) of flat numbers; (int, tuple) for one number."""

    def locate_scalar(self, flat: int):
        """(image_id, origin tuple) of one Python int, with only a range check."""

    def locate_normalized(self, flat: np.ndarray):
        """:meth:`locate` of int64 numbers already in ``[0, len)``."""

    def locate_grid(self, flat: np.ndarray):
        """(image_ids, grid positions, origins) of 1-D numbers in ``[0, len)``."""

    def flat_index(self, image_ids, origins):
        """Inverse of :meth:`locate`."""

    def subset(self, image_ids) -> "Index":
        """The index over these images only, renumbered from 0."""

    def check_image_ids(self, image_ids: np.ndarray) -> None:
        """Raise PatchIndexError for ids outside ``[0, num_images)``."""

    def check_image_id(self, image_id) -> int:
        """One image id as an int, type and range checked."""
