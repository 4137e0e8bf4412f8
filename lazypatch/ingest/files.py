"""Image files as lazy array-likes, for ``lazypatch build``.

A ``FileImage`` knows its shape and dtype from the file's header; pixels are
decoded only when the writer slices it, band by band:

- PNG and JPEG (Pillow) are decoded whole, ahead of the writer in ``workers``
  threads when ``FileImages`` is given some (Pillow and tifffile release the
  GIL while decoding: two threads decoded 240 PNGs in 0.87 s against 1.72 s
  for one, and 1.28 s for two processes, which also pickle every image back).
- TIFF (tifffile): with ``spatial_ndim=2`` the first page of the first series
  (the full resolution of a pyramid; other pages and series are ignored),
  decoded tile by tile or strip by strip for the rows a band needs, so a
  whole-slide image never sits in RAM; channels-first (planar) pages come out
  channels-last. With ``spatial_ndim=3`` the first series as a (Z, Y, X[, C])
  stack, one page per z read for the z range a band needs when the pages are
  the z axis (other axis orders are decoded whole and transposed).
- ``.npy``: ``numpy.load(mmap_mode="r")``, never loaded whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ImageReadError, ParameterError
from ..grid import ceil_div

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
_POOL_MAX_BYTES = 256 << 20  # larger images are decoded in the writing process
_IN_FLIGHT_BYTES = 1 << 30


def list_images(source) -> tuple:
    """(image files under a folder or matching a glob, the root names are relative to).

    Sorted by relative path in code-point order, so every machine lists the
    same files in the same order.
    """
    import glob

    source = os.fspath(source)
    if os.path.isdir(source):
        paths = []
        for folder, subfolders, files in os.walk(source):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            paths += [os.path.join(folder, name) for name in files
                      if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")]
        root = source
    else:
        if not any(ch in source for ch in "*?["):
            if os.path.isfile(source) and source.lower().endswith(IMAGE_SUFFIXES):
                return [source], os.path.dirname(source) or "."
            if os.path.isfile(source):
                raise ParameterError(f"{source!r} is not a supported image file (suffixes: "
                                     f"{', '.join(IMAGE_SUFFIXES)})")
            raise FileNotFoundError(f"no such folder, image file or glob: {source!r}")
        paths = [p for p in glob.glob(source, recursive=True)
                 if os.path.isfile(p) and p.lower().endswith(IMAGE_SUFFIXES)]
        root = os.path.dirname(source.split("*")[0].split("?")[0].split("[")[0]) or "."
    paths.sort(key=lambda p: os.path.relpath(p, root))
    return paths, root


def stem(path: str) -> str:
    name = os.path.basename(path)
    return name[: -len(".npy")] if name.lower().endswith(".npy") else os.path.splitext(name)[0]


# -- one file ----------------------------------------------------------------------------
class FileImage:
    """One image file: ``shape`` and ``dtype`` from its header, pixels when sliced."""

    def __init__(self, path: str, spatial_ndim: int = 2, mask: bool = False):
        self.path = path
        self.spatial_ndim = spatial_ndim
        self.mask = mask
        self._array = None
        try:
            self.shape, self.dtype, self._rows = _header(path, spatial_ndim, mask)
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(f"cannot read image {path!r}: {exc}") from exc
        self.ndim = len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ignored_pages(self) -> int:
        """Pages of a multi-page TIFF that a 2-D read leaves out (z > 0 of a stack)."""
        return getattr(self._rows, "ignored_pages", 0)

    @property
    def decoded_whole(self) -> bool:
        """Whether slicing decodes the whole file (PNG, JPEG, odd TIFFs)."""
        return self._rows is None and not self.path.lower().endswith(".npy")

    def _copy(self) -> "FileImage":
        image = FileImage.__new__(FileImage)
        image.__dict__.update(self.__dict__)
        image._array = None
        return image

    def __getitem__(self, key):
        if self._array is None and self._rows is not None:
            if isinstance(key, slice) and key.step in (None, 1):
                start, stop, _ = key.indices(self.shape[0])
                return self._checked(self._read_rows(start, max(start, stop)), (max(0, stop - start),))
            return self._checked(self._read_rows(0, self.shape[0]), ())[key]
        if self._array is None:
            try:
                array = _decode(self.path, self.spatial_ndim, self.mask)
            except Exception as exc:
                raise ImageReadError(f"cannot decode image {self.path!r}: {exc}") from exc
            self._array = self._checked(array, ())
        return self._array[key]

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        try:
            return self._rows(start, stop)
        except Exception as exc:
            raise ImageReadError(f"cannot decode rows {start}:{stop} of {self.path!r}: {exc}") from exc

    def _checked(self, array: np.ndarray, rows: tuple) -> np.ndarray:
        expected = (rows + tuple(self.shape[1:])) if rows else tuple(self.shape)
        if tuple(array.shape) != expected or array.dtype != self.dtype:
            raise ImageReadError(
                f"{self.path!r} decoded to {array.shape} {array.dtype}, its header said "
                f"{expected} {self.dtype}"
            )
        return array

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"FileImage({self.path!r}, shape={self.shape}, dtype={self.dtype})"


class FileImages(Sequence):
    """Image files with every header read up front; iterating decodes ahead in workers.

    ``workers`` > 0 decodes PNG, JPEG and small TIFF files in that many
    threads, a bounded number of images ahead of the writer, in order.
    ``mask``: the files are label maps (palette PNGs give their indices).
    """

    def __init__(self, paths, spatial_ndim: int = 2, workers: int = 0, mask: bool = False):
        self.paths = list(paths)
        self.workers = workers
        self.headers = [FileImage(p, spatial_ndim, mask) for p in self.paths]  # validates every header

    def __len__(self) -> int:
        return len(self.paths)

    def part(self, start: int, stop: int) -> "FileImages":
        """Images ``[start, stop)``, sharing the headers already read."""
        part = FileImages.__new__(FileImages)
        part.paths = self.paths[start:stop]
        part.workers = self.workers
        part.headers = self.headers[start:stop]
        return part

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self[k] for k in range(*position.indices(len(self)))]
        return self.headers[position]._copy()

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self.headers)

    def __iter__(self):
        pooled = [h.decoded_whole and h.nbytes <= _POOL_MAX_BYTES for h in self.headers]
        if self.workers < 1 or not any(pooled):
            yield from (self[k] for k in range(len(self)))
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="lazypatch-decode") as pool:
            pending, queued, in_flight = {}, 0, 0
            for position in range(len(self)):
                # keep up to 2 x workers images (at most ~1 GiB) decoding ahead
                while queued < len(self) and (len(pending) < 2 * self.workers) and (
                        in_flight < _IN_FLIGHT_BYTES or not pending):
                    if pooled[queued]:
                        header = self.headers[queued]
                        pending[queued] = pool.submit(_decode_checked, header)
                        in_flight += header.nbytes
                    queued += 1
                image = self[position]
                future = pending.pop(position, None)
                if future is not None:
                    image._array = future.result()
                    in_flight -= image.nbytes
                yield image


def _decode_checked(header: FileImage) -> np.ndarray:
    image = header._copy()
    return np.ascontiguousarray(image[...])


# -- formats -------------------------------------------------------------------------------
def _header(path: str, spatial_ndim: int, mask: bool = False):
    """(shape, dtype, rows reader or None) without decoding pixels."""
    lower = path.lower()
    if lower.endswith(".npy"):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return tuple(array.shape), array.dtype, None
    if lower.endswith((".tif", ".tiff")):
        return _tiff_header(path, spatial_ndim)
    if spatial_ndim == 3:
        raise ImageReadError(f"{path!r}: PNG and JPEG images are 2-D; spatial_ndim=3 takes TIFF "
                             f"stacks and .npy volumes")
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        mode = image.mode
        transparent = "transparency" in image.info
    channels, dtype = _PIL_MODES.get(mode, (None, None))
    if mode == "P":  # palette indices: a mask's labels, an image's colours
        channels = 0 if mask else 4 if transparent else 3
    if dtype is None:
        raise ImageReadError(f"{path!r}: unsupported image mode {mode!r}")
    return ((height, width) if channels == 0 else (height, width, channels)), np.dtype(dtype), None


def _decode(path: str, spatial_ndim: int, mask: bool = False) -> np.ndarray:
    lower = path.lower()
    if lower.endswith(".npy"):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if lower.endswith((".tif", ".tiff")):
        return _tiff_stack(path)
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode == "P" and not mask:  # a mask keeps its palette indices (its labels)
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


def _tiff_header(path: str, spatial_ndim: int):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if spatial_ndim == 2:
            page = tif.pages[0]  # the full resolution, also of pyramids
            planar = page.planarconfig == 2 and page.samplesperpixel > 1
            height, width = page.imagelength, page.imagewidth
            samples = page.samplesperpixel
            shape = (height, width) + ((samples,) if samples > 1 else ())
            if page.imagedepth > 1:
                raise ImageReadError(f"{path!r}: a volumetric TIFF page; use spatial_ndim=3")
            rows = _TiffRows(path, 0, height, width, samples, planar, page.dtype)
            rows.ignored_pages = len(tif.series[0].pages) - 1 if tif.series else 0  # a stack's z > 0
            return shape, np.dtype(page.dtype), rows
        series = tif.series[0]
        axes, shape = _stack_axes(series.axes, series.shape, path)
        rows = None
        if axes in ("ZYX", "ZYXS") and len(series.pages) == shape[0]:
            rows = _TiffPages(path, shape, series.dtype)
        return shape, np.dtype(series.dtype), rows


def _stack_axes(axes: str, shape: tuple, path: str):
    """(Z, Y, X[, C]) order of a TIFF series: singleton axes dropped, C last."""
    kept = [(a, n) for a, n in zip(axes, shape) if n > 1 or a in "YX"]
    axes = "".join(a for a, _ in kept).replace("I", "Z").replace("Q", "Z")
    if axes.count("Z") != 1 or not {"Y", "X"} <= set(axes) or len(axes) > 4:
        raise ImageReadError(
            f"{path!r}: TIFF axes {axes!r} are not a (Z, Y, X[, C]) stack for spatial_ndim=3"
        )
    order = [axes.index(a) for a in "ZYX"] + [k for k, a in enumerate(axes) if a in "CS"]
    return "".join(axes[k] for k in order), tuple(kept[k][1] for k in order)


def _tiff_stack(path: str) -> np.ndarray:
    """A whole TIFF: the first page (2-D) or the first series as (Z, Y, X[, C])."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        kept = [(a, n) for a, n in zip(series.axes, series.shape) if n > 1 or a in "YX"]
        data = data.reshape([n for _, n in kept])
        axes = "".join(a for a, _ in kept).replace("I", "Z").replace("Q", "Z")
        order = [axes.index(a) for a in "ZYX"] + [k for k, a in enumerate(axes) if a in "CS"]
        return np.ascontiguousarray(np.transpose(data, order))


class _TiffRows:
    """Rows ``[r0, r1)`` of one TIFF page, decoded segment by segment (tiles or strips).

    Only the segment rows a band touches are read and decoded; the last decoded
    segment row is kept, as the store's bands are usually shorter than a TIFF tile.
    """

    def __init__(self, path, page_index, height, width, samples, planar, dtype):
        self.path, self.page_index = path, page_index
        self.height, self.width, self.samples, self.planar = height, width, samples, planar
        self.dtype = np.dtype(dtype)
        self._cached = (None, None)

    def __call__(self, r0: int, r1: int) -> np.ndarray:
        import tifffile

        out = np.empty((r1 - r0, self.width, self.samples), self.dtype)
        with tifffile.TiffFile(self.path) as tif:
            page = tif.pages[self.page_index]
            seg_h = page.tilelength if page.is_tiled else min(page.rowsperstrip or self.height, self.height)
            seg_w = page.tilewidth if page.is_tiled else self.width
            rows, cols = ceil_div(self.height, seg_h), ceil_div(self.width, seg_w)
            for seg_row in range(r0 // seg_h, ceil_div(r1, seg_h)):
                band = self._segment_row(tif, page, seg_row, seg_h, seg_w, rows, cols)
                top = seg_row * seg_h
                a, b = max(r0, top), min(r1, top + seg_h, self.height)
                out[a - r0:b - r0] = band[a - top:b - top]
        return out if self.samples > 1 else out[..., 0]

    def _segment_row(self, tif, page, seg_row, seg_h, seg_w, rows, cols) -> np.ndarray:
        if self._cached[0] == seg_row:
            return self._cached[1]
        band = np.zeros((seg_h, cols * seg_w, self.samples), self.dtype)
        planes = self.samples if self.planar else 1
        handle = tif.filehandle
        for plane in range(planes):
            for col in range(cols):
                index = (plane * rows + seg_row) * cols + col
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if count == 0:  # a sparse TIFF: a missing segment is zeros
                    continue
                handle.seek(offset)
                data, _, _ = page.decode(handle.read(count), index, jpegtables=page.jpegtables)
                data = data.reshape(data.shape[-3:])  # (h, w, samples) of this segment
                h, w = min(seg_h, data.shape[0]), min(seg_w, data.shape[1])
                channels = slice(plane, plane + 1) if self.planar else slice(None)
                band[:h, col * seg_w:col * seg_w + w, channels] = data[:h, :w]
        band = band[:, :self.width]
        self._cached = (seg_row, band)
        return band


class _TiffPages:
    """Z range ``[z0, z1)`` of a TIFF stack stored one page per z."""

    def __init__(self, path, shape, dtype):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)

    def __call__(self, z0: int, z1: int) -> np.ndarray:
        import tifffile

        if z1 <= z0:
            return np.empty((0,) + tuple(self.shape[1:]), self.dtype)
        with tifffile.TiffFile(self.path) as tif:
            data = tif.asarray(key=range(z0, z1), series=0)
        return data.reshape((z1 - z0,) + tuple(self.shape[1:]))


# -- masks ------------------------------------------------------------------------------------
def pair_masks(image_paths, mask_folder, mask_suffix: str = "", allow_unmatched: bool = False,
               image_root=None):
    """Pair each image with its mask by stem (``<stem><mask_suffix>.<any ext>``).

    When several masks share the stem, the one at the same path relative to
    its folder as the image is to ``image_root`` is taken (mirrored folders).
    Returns ``(kept image paths, their mask paths, report)``; the report lists
    images without a mask, images with several, images sharing one mask, and
    masks no image claimed. Unless ``allow_unmatched``, any unpaired or
    ambiguous image is an error naming the first ten; with it, those images
    are left out.
    """
    mask_paths, mask_root = list_images(mask_folder)
    by_stem: dict[str, list[str]] = {}
    for path in mask_paths:
        by_stem.setdefault(stem(path), []).append(path)

    def place(path, root):
        return os.path.dirname(os.path.relpath(path, root))

    pairs, missing, ambiguous = [], [], []
    for path in image_paths:
        found = by_stem.get(stem(path) + mask_suffix, [])
        if len(found) > 1 and image_root is not None:
            found = [m for m in found if place(m, mask_root) == place(path, image_root)] or found
        if len(found) == 1:
            pairs.append((path, found[0]))
        elif not found:
            missing.append(path)
        else:
            ambiguous.append((path, found))
    users: dict[str, list[str]] = {}
    for path, mask in pairs:
        users.setdefault(mask, []).append(path)
    shared = [(mask, paths) for mask, paths in users.items() if len(paths) > 1]
    kept = [(path, mask) for path, mask in pairs if len(users[mask]) == 1]
    considered = {m for _, found in ambiguous for m in found} | set(users)
    report = {"missing": missing, "ambiguous": ambiguous, "shared": shared,
              "unclaimed": [p for p in mask_paths if p not in considered]}
    report["hint"] = _suffix_hint(missing, report["unclaimed"])
    if (missing or ambiguous or shared) and not allow_unmatched:
        lines = [f"no mask for {p!r}" for p in missing[:10]]
        lines += [f"several masks for {p!r}: {found}" for p, found in ambiguous[:10]]
        lines += [f"one mask {m!r} for {len(paths)} images: {paths[:3]}" for m, paths in shared[:10]]
        more = len(missing) + len(ambiguous) + len(shared) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        if report["unclaimed"]:
            lines.append(f"{len(report['unclaimed'])} mask(s) match no image, e.g. {report['unclaimed'][0]!r}")
        if report["hint"]:
            lines.append(report["hint"])
        sharing = sum(len(paths) for _, paths in shared)
        raise ParameterError(
            f"{len(missing)} image(s) without a mask, {len(ambiguous)} with several and {sharing} "
            f"sharing one in {os.fspath(mask_folder)!r} (masks are paired by file stem"
            f"{' + ' + repr(mask_suffix) if mask_suffix else ''}, and by subfolder when stems "
            "repeat; --allow-unmatched leaves them out):\n  " + "\n  ".join(lines)
        )
    return [path for path, _ in kept], [mask for _, mask in kept], report


def _suffix_hint(missing, unclaimed) -> str:
    """'did you mean --mask-suffix ...' when unclaimed masks are named <image stem><suffix>."""
    stems = {stem(p) for p in missing}
    suffixes: dict[str, int] = {}
    for path in unclaimed:
        name = stem(path)
        for cut in range(1, len(name)):
            if name[:cut] in stems:
                suffixes[name[cut:]] = suffixes.get(name[cut:], 0) + 1
    if not suffixes:
        return ""
    best = max(sorted(suffixes), key=suffixes.get)
    return (f"{suffixes[best]} mask(s) are named <image stem>{best}: did you mean "
            f"--mask-suffix {best!r}?")
