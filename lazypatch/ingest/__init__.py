"""Ingest: images from arrays or files into a store. Never imports torch.

Who uses it: users (:func:`write_store` for arrays, :func:`build` for folders
of files) and the ``lazypatch build`` command.

- :mod:`.validate`: every check on options, images, masks, names and metadata.
- :mod:`.builder`: :func:`write_store` and the ``Builder`` that tiles, checksums
  and writes (statistics from ``lazypatch.stats`` accumulated on the way).
- :mod:`.files`: image files (PNG, JPEG, TIFF, BMP, WebP, .npy) read header
  first, decoded ahead in threads; TIFF pages as channels or z slices; masks
  paired by file stem, also beside their images.
- :mod:`._signals`: SIGTERM and SIGHUP as an exception while writing, so the
  temporary files are removed (NOTE [termination]).
- :mod:`.shards`: a collection cut into byte-balanced shard files.
- :mod:`.folder`: :func:`build`, the two-pass build from files.
- :mod:`.readers`: the field's formats as array-likes with their physical
  geometry (OpenSlide, tifffile, nibabel, pydicom, rasterio, Pillow, numpy),
  each library imported when used; ``write_store`` stores a reader's geometry.
"""

from .builder import write_store
from .folder import DEFAULT_WORKERS, build

__all__ = ["build", "write_store"]
