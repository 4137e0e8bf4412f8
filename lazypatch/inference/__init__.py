"""Inference: predictions on patches stitched back into whole images, and written as files.

- :mod:`.aggregator`: :class:`PatchAggregator`, weighted blending (average,
  gaussian, hann, crop) into memory or an HDF5 file written atomically, each
  prediction with its image's geometry.
- :mod:`.export`: :func:`export`, predictions as NIfTI, OME-TIFF or GeoTIFF.
- :mod:`.merge`: :func:`merge_predictions`, the files of several ranks as one.
"""

from .aggregator import PatchAggregator
from .export import export, read_predictions
from .merge import merge_predictions

__all__ = ["PatchAggregator", "export", "merge_predictions", "read_predictions"]
