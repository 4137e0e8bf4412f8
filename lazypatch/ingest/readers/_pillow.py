"""PNG, JPEG, BMP, WebP, GIF through Pillow: no physical geometry.

These formats cannot be decoded by region, so the first read decodes the
whole image and keeps it until ``close()``; the header alone gives shape and
dtype. Palette images are read as RGB (RGBA with a transparent colour), as a
person sees them.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ImageReadError
from ._base import ImageReader, make_geometry, no_level, require

# mode -> (channels, 0 for none; dtype)
MODES = {
    "1": (0, np.bool_), "L": (0, np.uint8), "LA": (2, np.uint8), "P": (3, np.uint8),
    "RGB": (3, np.uint8), "RGBA": (4, np.uint8), "CMYK": (4, np.uint8),
    "I;16": (0, np.uint16), "I;16B": (0, np.uint16), "I;16L": (0, np.uint16),
    "I": (0, np.int32), "F": (0, np.float32),
}


class PillowReader(ImageReader):
    """An image file Pillow opens, as an (H, W) or (H, W, C) array-like (first frame).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(path)
    >>> reader = PillowReader(path)
    >>> reader.shape, reader[1:].tolist(), reader.geometry["spacing"]
    ((3, 4), [[4, 5, 6, 7], [8, 9, 10, 11]], None)
    """

    name = "pillow"

    def __init__(self, path, level=None):
        pil = require("PIL.Image", self.name)
        self.path = os.fspath(path)
        no_level(level, self.path, self.name)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such image file: {self.path!r}")
        try:
            with pil.open(self.path) as image:
                width, height = image.size
                self._mode = image.mode
                self._transparent = "transparency" in image.info
        except Exception as exc:
            raise ImageReadError(f"Pillow cannot read {self.path!r} (not an image, or damaged): {exc}") from exc
        if self._mode not in MODES:
            raise ImageReadError(
                f"{self.path!r}: Pillow image mode {self._mode!r} is not supported "
                f"(supported: {', '.join(MODES)})"
            )
        channels, dtype = MODES[self._mode]
        if self._mode == "P" and self._transparent:
            channels = 4
        self.shape = (height, width) + ((channels,) if channels else ())
        self.dtype = np.dtype(dtype)
        self.spatial_ndim = 2
        self._array = None
        import PIL

        self.geometry = make_geometry(self.path, self.name, PIL.__version__)

    def _decoded(self) -> np.ndarray:
        if self._array is None:
            from PIL import Image

            with Image.open(self.path) as image:
                image.load()
                if image.mode == "P":
                    image = image.convert("RGBA" if self._transparent else "RGB")
                self._array = np.asarray(image)
        return self._array

    def _read(self, origin, size) -> np.ndarray:
        (y0, x0), (height, width) = origin, size
        return self._decoded()[y0:y0 + height, x0:x0 + width].copy()

    def _close(self) -> None:
        self._array = None
