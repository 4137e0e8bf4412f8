"""Image files as lazy array-likes, for ``lazypatch build``.

The first pass reads headers only (shape, dtype); pixels are decoded when the
writer slices an image, once, and released with the image. PNG and JPEG go
through Pillow, TIFF through tifffile (first page: multi-page TIFFs are read
as their first image, which is what a whole-slide TIFF's full resolution is),
``.npy`` through ``numpy.load(mmap_mode="r")`` (never loaded whole).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .errors import ImageReadError, ParameterError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")


def list_images(source) -> list:
    """Image files under a folder (recursively) or matching a glob, sorted by relative path."""
    import glob

    source = os.fspath(source)
    if os.path.isdir(source):
        paths = []
        for folder, subfolders, files in os.walk(source):
            subfolders.sort()
            for name in files:
                if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                    paths.append(os.path.join(folder, name))
        root = source
    else:
        paths = [p for p in glob.glob(source, recursive=True)
                 if os.path.isfile(p) and p.lower().endswith(IMAGE_SUFFIXES)]
        root = os.path.dirname(source.split("*")[0]) or "."
        if not paths and not any(ch in source for ch in "*?["):
            raise FileNotFoundError(f"no such folder or image glob: {source!r}")
    # code-point order of the relative path: identical on every machine
    paths.sort(key=lambda p: os.path.relpath(p, root))
    return paths


def stem(path: str) -> str:
    name = os.path.basename(path)
    return name[: -len(".npy")] if name.lower().endswith(".npy") else os.path.splitext(name)[0]


class FileImage:
    """One image file: ``shape`` and ``dtype`` from its header, pixels on first slice."""

    def __init__(self, path: str):
        self.path = path
        self._array = None
        try:
            self.shape, self.dtype = _header(path)
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(f"cannot read image {path!r}: {exc}") from exc
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        if self._array is None:
            try:
                array = _decode(self.path)
            except Exception as exc:
                raise ImageReadError(f"cannot decode image {self.path!r}: {exc}") from exc
            if tuple(array.shape) != tuple(self.shape) or array.dtype != self.dtype:
                raise ImageReadError(
                    f"{self.path!r} decoded to {array.shape} {array.dtype}, its header said "
                    f"{self.shape} {self.dtype}"
                )
            self._array = array
        return self._array[key]

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"FileImage({self.path!r}, shape={self.shape}, dtype={self.dtype})"


class FileImages(Sequence):
    """A sequence of FileImage, made anew on each access (so decoded pixels are freed)."""

    def __init__(self, paths):
        self.paths = list(paths)
        self._headers = [FileImage(p) for p in self.paths]  # validates every header now
        for image in self._headers:
            image._array = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self[k] for k in range(*position.indices(len(self)))]
        header = self._headers[position]
        image = FileImage.__new__(FileImage)
        image.path, image.shape, image.dtype, image.ndim = header.path, header.shape, header.dtype, header.ndim
        image._array = None
        return image


def _header(path: str):
    lower = path.lower()
    if lower.endswith(".npy"):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return tuple(array.shape), array.dtype
    if lower.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = tuple(series.shape)
            if tif.is_ome or len(tif.pages) > 1 and len(shape) > 3:
                shape = tuple(tif.pages[0].shape)
            return shape, np.dtype(series.dtype if len(shape) == len(series.shape) else tif.pages[0].dtype)
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        mode = image.mode
    channels, dtype = _PIL_MODES.get(mode, (None, None))
    if dtype is None:
        raise ImageReadError(f"{path!r}: unsupported image mode {mode!r}")
    return ((height, width) if channels == 0 else (height, width, channels)), np.dtype(dtype)


def _decode(path: str) -> np.ndarray:
    lower = path.lower()
    if lower.endswith(".npy"):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if lower.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if tif.is_ome or len(tif.pages) > 1 and len(series.shape) > 3:
                return tif.pages[0].asarray()
            return series.asarray()
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return np.asarray(image)


_PIL_MODES = {
    "1": (0, np.bool_),
    "L": (0, np.uint8),
    "LA": (2, np.uint8),
    "P": (3, np.uint8),
    "RGB": (3, np.uint8),
    "RGBA": (4, np.uint8),
    "CMYK": (4, np.uint8),
    "I;16": (0, np.uint16),
    "I;16B": (0, np.uint16),
    "I;16L": (0, np.uint16),
    "I": (0, np.int32),
    "F": (0, np.float32),
}


def pair_masks(image_paths, mask_folder, mask_suffix: str = "") -> list:
    """The mask file of each image, matched by stem (``<stem><mask_suffix>.<any ext>``)."""
    by_stem: dict[str, list[str]] = {}
    for path in list_images(mask_folder):
        by_stem.setdefault(stem(path), []).append(path)
    masks, missing, ambiguous = [], [], []
    for path in image_paths:
        found = by_stem.get(stem(path) + mask_suffix, [])
        if len(found) == 1:
            masks.append(found[0])
        elif not found:
            missing.append(path)
        else:
            ambiguous.append((path, found))
    if missing or ambiguous:
        lines = [f"no mask for {p!r}" for p in missing[:10]]
        lines += [f"several masks for {p!r}: {found}" for p, found in ambiguous[:10]]
        more = len(missing) + len(ambiguous) - len(lines)
        raise ParameterError(
            f"{len(missing)} image(s) without a mask and {len(ambiguous)} with several in "
            f"{os.fspath(mask_folder)!r} (masks are paired by file stem"
            f"{' + ' + repr(mask_suffix) if mask_suffix else ''}):\n  " + "\n  ".join(lines)
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return masks
