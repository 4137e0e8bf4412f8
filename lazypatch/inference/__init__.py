"""Inference: predictions on patches stitched back into whole images.

- :mod:`.aggregator`: :class:`PatchAggregator`, weighted blending (average,
  gaussian, hann, crop) into memory or an HDF5 file written atomically.
"""

from .aggregator import PatchAggregator

__all__ = ["PatchAggregator"]
