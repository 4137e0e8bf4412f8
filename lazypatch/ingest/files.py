"""Image files as lazy array-likes, for ``lazypatch build``.

A ``FileImage`` knows its shape and dtype from the file's header; pixels are
decoded only when the writer slices it, band by band:

- PNG, JPEG, BMP and WebP (Pillow) are decoded whole, ahead of the writer in
  ``workers`` threads when ``FileImages`` is given some (Pillow and tifffile
  release the GIL while decoding: two threads decoded 240 PNGs in 0.87 s
  against 1.72 s for one, and 1.28 s for two processes, which also pickle
  every image back).
- TIFF (tifffile): the first series (the full resolution of a pyramid; other
  series are ignored), its axes read as NOTE [TIFF pages] says: pages may be
  channels, z slices or something else. Pages are decoded tile by tile or
  strip by strip for the rows a band needs (2-D), or page by page for the z
  range a band needs (3-D), so a whole-slide image never sits in RAM;
  channels-first (planar) pages come out channels-last. Other layouts
  (volumetric pages, missing pages) are decoded whole and transposed.
- ``.npy``: ``numpy.load(mmap_mode="r")``, never loaded whole.
- slides, NIfTI, DICOM, GeoTIFF and OME-TIFF pyramids: the format readers
  (:mod:`lazypatch.ingest.readers`), through :mod:`lazypatch.ingest.sources`.

NOTE [DICOM series]: a folder holding several DICOM files (``.dcm``, or no
suffix and DICOM's preamble) is listed as one image, the series, named by the
folder's path; a lone ``.dcm`` file is an image of its own (a multi-frame
file). The pydicom reader refuses a folder holding two series.

NOTE [TIFF pages]: tifffile names the axes of a series (``series.axes``):
``Y``, ``X`` and the samples ``S`` of a page, and one letter per axis the
pages run over. ``C`` (and ``S``) pages are channels, ``Z`` pages z slices (a
volume with ``spatial_ndim=3``; with 2 only the first slice is read, and the
plan says so), ``T`` and the other letters keep their first page. ``Q`` and
``I`` are tifffile's "unknown": a multi-page file without metadata. With
``spatial_ndim=3`` a lone unknown axis is z; otherwise ``pages`` must say
what they are (``"channels"``, ``"z"`` or ``"first"``), and without it the
header pass stops with an error naming ``--pages``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ImageReadError, ParameterError
from ..grid import ceil_div

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")
# files only the format readers (lazypatch.ingest.readers) take: slides, NIfTI, DICOM
READER_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".btf", ".tf8", ".qptiff", ".mrxs", ".vms", ".vmu",
                   ".svslide", ".czi", ".nii", ".nii.gz", ".dcm")
IMAGE_KINDS = "PNG, JPEG, TIFF, BMP, WebP, .npy, slide, NIfTI or DICOM"
# stems of these keep no part of the suffix: 'a.nii.gz' and 'a.ome.tif' pair with 'a.png'
_DOUBLE_SUFFIXES = (".nii.gz", ".ome.tif", ".ome.tiff", ".ome.tf8", ".ome.btf")
PAGES = ("channels", "z", "first")
# names of files that systems leave in folders (counted, never listed as skipped)
_JUNK = {"thumbs.db", "ehthumbs.db", "desktop.ini", ".ds_store", "icon\r"}
_POOL_MAX_BYTES = 256 << 20  # larger images are decoded in the writing process
_IN_FLIGHT_BYTES = 1 << 30


class Listing(tuple):
    """(paths, root) of the image files of a source, with what was left out.

    Unpacks as ``paths, root``; ``skipped`` lists the other visible files (not
    images lazypatch reads), ``hidden`` counts hidden and system files
    (``.DS_Store``, ``Thumbs.db``...).
    """

    skipped: list
    hidden: int

    def __new__(cls, paths, root, skipped=(), hidden=0):
        listing = super().__new__(cls, (paths, root))
        listing.skipped, listing.hidden = list(skipped), int(hidden)
        return listing



def _library(module: str, package: str):
    """``module``, imported now; when missing, an ImportError naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"reading these image files needs {package}: pip install \"lazypatch[images]\" "
                          f"(or pip install {package})") from exc

def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES + READER_SUFFIXES)


def _is_dicom_file(path: str) -> bool:
    """A ``.dcm`` file, or a file without a suffix that starts with DICOM's preamble."""
    name = os.path.basename(path).lower()
    if name.endswith(".dcm"):
        return True
    if os.path.splitext(name)[1] or name == "dicomdir":
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK


def list_images(source) -> Listing:
    """(image files under a folder or matching a glob, the root names are relative to).

    Sorted by relative path in code-point order, so every machine lists the
    same files in the same order. The result also says which other files
    were skipped (``.skipped``, ``.hidden``).
    """
    import glob

    source = os.fspath(source)
    skipped, hidden = [], 0
    if os.path.isdir(source):
        paths = []
        for folder, subfolders, files in os.walk(source):
            # a MIRAX slide's data folder sits beside its .mrxs file: part of the slide
            slides = {os.path.splitext(n)[0] for n in files if n.lower().endswith(".mrxs")}
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in slides)
            dicom = [n for n in files if not _is_hidden(n) and _is_dicom_file(os.path.join(folder, n))]
            if len(dicom) > 1 or (dicom and not dicom[0].lower().endswith(".dcm")):
                paths.append(folder)  # NOTE [DICOM series]: a folder of slices is one image
            for name in files:
                if _is_hidden(name):
                    hidden += 1
                elif name in dicom and len(dicom) > 1:
                    continue
                elif _is_image(name):
                    paths.append(os.path.join(folder, name))
                elif name not in dicom:
                    skipped.append(os.path.join(folder, name))
        root = source
        if paths == [source]:  # the source is one DICOM series: name it by its folder
            root = os.path.dirname(os.path.abspath(source))
    else:
        if not any(ch in source for ch in "*?["):
            if os.path.isfile(source) and _is_image(source):
                return Listing([source], os.path.dirname(source) or ".")
            if os.path.isfile(source):
                raise ParameterError(f"{source!r} is not a supported image file (suffixes: "
                                     f"{', '.join(IMAGE_SUFFIXES)})")
            raise FileNotFoundError(f"no such folder, image file or glob: {source!r}")
        paths = []
        for path in glob.glob(source, recursive=True):
            if not os.path.isfile(path):
                continue
            if _is_hidden(os.path.basename(path)):
                hidden += 1
            elif _is_image(path):
                paths.append(path)
            else:
                skipped.append(path)
        root = os.path.dirname(source.split("*")[0].split("?")[0].split("[")[0]) or "."
    paths.sort(key=lambda p: os.path.relpath(p, root))
    skipped.sort(key=lambda p: os.path.relpath(p, root))
    return Listing(paths, root, skipped, hidden)


def describe_skipped(names, hidden: int = 0, limit: int = 8) -> str:
    """The files a listing skipped, in words.

    >>> describe_skipped(["notes.txt", "scan.pdf"], 2)
    '2 file(s) that are not PNG, JPEG, TIFF, BMP, WebP, .npy, slide, NIfTI or DICOM images (.pdf, .txt): notes.txt, scan.pdf; 2 hidden or system file(s)'
    """
    parts = []
    if names:
        kinds = sorted({os.path.splitext(n)[1].lower() or "no suffix" for n in names})
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
        parts.append(f"{len(names)} file(s) that are not {IMAGE_KINDS} images ({', '.join(kinds)}): {shown}")
    if hidden:
        parts.append(f"{hidden} hidden or system file(s)")
    return "; ".join(parts)


def stem(path: str) -> str:
    """A file's name without its suffix; ``.nii.gz`` and ``.ome.tif`` count as one suffix, and a
    DICOM series folder is its own stem.

    >>> stem("a/ct_01.nii.gz"), stem("b/x.ome.tif"), stem("c/y.v2.png")
    ('ct_01', 'x', 'y.v2')
    """
    name = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        return name
    lower = name.lower()
    for suffix in (".npy",) + _DOUBLE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


# suffixes of mask file stems, looked for when a folder mixes images and their masks
MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_label", "-label", "_labels", "_seg", "-seg", "_gt")


def companion_masks(paths) -> tuple:
    """(suffix, [(image, mask)...]) when files come in pairs ``<stem>`` and ``<stem><suffix>``.

    ``suffix`` is one of ``MASK_SUFFIXES`` as the files spell it; ``("", [])``
    when no suffix pairs at least one file, or when fewer than half of the
    files named with the suffix have a partner.

    >>> companion_masks(["a/x.png", "a/x_mask.png", "a/y.png", "a/y_mask.png"])[0]
    '_mask'
    >>> companion_masks(["a/x.png", "a/y.png"])
    ('', [])
    """
    by_place = {(os.path.dirname(p), stem(p).lower()): p for p in paths}
    best = ("", [])
    for suffix in MASK_SUFFIXES:
        named = [p for p in paths if stem(p).lower().endswith(suffix) and len(stem(p)) > len(suffix)]
        pairs = [(by_place[(os.path.dirname(p), stem(p).lower()[:-len(suffix)])], p) for p in named
                 if (os.path.dirname(p), stem(p).lower()[:-len(suffix)]) in by_place]
        if pairs and 2 * len(pairs) >= len(named) and len(pairs) > len(best[1]):
            spelled = stem(pairs[0][1])[-len(suffix):]
            best = (spelled, pairs)
    return best


# -- one file ----------------------------------------------------------------------------
class FileImage:
    """One image file: ``shape`` and ``dtype`` from its header, pixels when sliced.

    ``mapping``, when set, is applied to every slice (``--mask-map``).
    """

    def __init__(self, path: str, spatial_ndim: int = 2, mask: bool = False, pages=None):
        self.path = path
        self.spatial_ndim = spatial_ndim
        self.mask = mask
        self.pages = pages
        self.mapping = None
        self._array = None
        self.ignored_pages, self.ignored_axes, self._tiff = 0, "", None
        try:
            self.shape, self.dtype, self._rows, self._tiff = _header(path, spatial_ndim, mask, pages)
        except (ImageReadError, ParameterError, ImportError):  # a missing library is no bad file
            raise
        except Exception as exc:
            raise ImageReadError(f"cannot read image {path!r}: {exc}") from exc
        if self._tiff is not None:
            self.ignored_pages, self.ignored_axes = self._tiff.ignored_pages, self._tiff.ignored_axes
        self.ndim = len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

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
        data = self._raw(key)
        return data if self.mapping is None else self.mapping(data)

    def _raw(self, key):
        """A slice of the decoded pixels, before ``mapping``."""
        if self._array is None and self._rows is not None:
            if isinstance(key, tuple) and key and isinstance(key[0], slice) and key[0].step in (None, 1):
                return self._raw(key[0])[(slice(None),) + key[1:]]  # rows, then the rest (a region)
            if isinstance(key, slice) and key.step in (None, 1):
                start, stop, _ = key.indices(self.shape[0])
                return self._checked(self._read_rows(start, max(start, stop)), (max(0, stop - start),))
            return self._checked(self._read_rows(0, self.shape[0]), ())[key]
        if self._array is None:
            try:
                array = _decode(self.path, self.mask, self._tiff)
            except ImportError:
                raise
            except Exception as exc:
                raise ImageReadError(f"cannot decode image {self.path!r}: {exc}{_codec_hint(exc)}") from exc
            self._array = self._checked(array, ())
        return self._array[key]

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        try:
            return self._rows(start, stop)
        except Exception as exc:
            raise ImageReadError(
                f"cannot decode rows {start}:{stop} of {self.path!r}: {exc}{_codec_hint(exc)}") from exc

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
    ``pages``: what the pages of TIFFs with unknown page axes are (NOTE [TIFF pages]).
    ``problems``: a list to collect ``(position, exception)`` of headers that
    cannot be read (their header is None); without it the first one raises.
    ``open_header``: a function path -> header replacing ``FileImage`` (the
    format readers' :class:`~lazypatch.ingest.sources.SourceImage`).
    """

    def __init__(self, paths, spatial_ndim: int = 2, workers: int = 0, mask: bool = False, pages=None,
                 problems=None, open_header=None):
        self.paths = list(paths)
        self.workers = workers
        self.headers = []
        if open_header is None:
            def open_header(path):
                return FileImage(path, spatial_ndim, mask, pages)
        for position, path in enumerate(self.paths):  # validates every header
            try:
                self.headers.append(open_header(path))
            except (ImageReadError, ParameterError) as exc:
                if problems is None:
                    raise
                problems.append((position, exc))
                self.headers.append(None)

    @classmethod
    def from_headers(cls, paths, headers, workers: int = 0) -> "FileImages":
        """Images whose headers were made elsewhere (masks rasterized from annotations)."""
        images = cls.__new__(cls)
        images.paths, images.headers, images.workers = list(paths), list(headers), workers
        return images

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
    return np.ascontiguousarray(image._raw(...))  # unmapped: the image maps its slices


# -- formats -------------------------------------------------------------------------------
def _header(path: str, spatial_ndim: int, mask: bool = False, pages=None):
    """(shape, dtype, rows reader or None, TIFF plan or None) without decoding pixels."""
    lower = path.lower()
    if lower.endswith(".npy"):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return tuple(array.shape), array.dtype, None, None
    if lower.endswith((".tif", ".tiff")):
        return _tiff_header(path, spatial_ndim, pages)
    if spatial_ndim == 3:
        raise ImageReadError(f"{path!r}: PNG and JPEG images are 2-D; spatial_ndim=3 takes TIFF "
                             f"stacks and .npy volumes")
    Image = _library("PIL.Image", "Pillow")

    with Image.open(path) as image:
        width, height = image.size
        mode = image.mode
        transparent = "transparency" in image.info
    channels, dtype = _PIL_MODES.get(mode, (None, None))
    if mode == "P":  # palette indices: a mask's labels, an image's colours
        channels = 0 if mask else 4 if transparent else 3
    if dtype is None:
        raise ImageReadError(f"{path!r}: unsupported image mode {mode!r}")
    shape = (height, width) if channels == 0 else (height, width, channels)
    return shape, np.dtype(dtype), None, None


def _decode(path: str, mask: bool = False, tiff=None) -> np.ndarray:
    lower = path.lower()
    if lower.endswith(".npy"):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if tiff is not None:
        return tiff.whole()
    Image = _library("PIL.Image", "Pillow")

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


def _codec_hint(exc) -> str:
    """The install line when tifffile says a codec needs imagecodecs."""
    text = str(exc)
    if "imagecodecs" in text and "pip install imagecodecs" not in text:
        return "; install the codecs with `pip install imagecodecs`"
    return ""


def _check_codec(page, path: str) -> None:
    """Fail in the header pass when tifffile cannot decode the page's compression."""
    from tifffile import TIFF

    try:
        known = page.compression in TIFF.DECOMPRESSORS
    except Exception:  # pragma: no cover - a tifffile without the codec table: decode will tell
        return
    if known:
        return
    name = getattr(page.compression, "name", page.compression)
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        raise ImageReadError(
            f"{path!r} is compressed with {name}, which tifffile decodes only with the imagecodecs "
            f"package: install it with `pip install imagecodecs`") from None
    raise ImageReadError(f"{path!r} is compressed with {name}, which tifffile and imagecodecs cannot "
                         "decode; convert the file (e.g. to zlib or uncompressed TIFF)")


class _TiffPlan:
    """How a TIFF's first series becomes one image (NOTE [TIFF pages]).

    ``roles`` gives each axis of ``series.axes`` a part: ``Y``/``X`` (spatial),
    ``channel``, ``z`` or ``first`` (index 0 only). The image is (Y, X[, C]) or
    (Z, Y, X[, C]) with the channel axes (in the series' order) merged into C.
    ``page_axes`` are the axes within one page (``YX``, ``YXS``, ``SYX``); the
    ones before them are the axes the pages run over.
    """

    def __init__(self, path, axes, shape, spatial_ndim, pages, page_axes):
        self.path, self.axes, self.series_shape = path, axes, tuple(int(n) for n in shape)
        roles = []
        for axis, size in zip(axes, self.series_shape):
            if axis in "YX":
                roles.append(axis)
            elif axis in "CS":
                roles.append("channel")
            elif axis == "Z":
                roles.append("z")
            elif axis in "QI" and size > 1:
                roles.append("?")
            else:
                roles.append("first")
        unknown = [k for k, role in enumerate(roles) if role == "?"]
        if unknown and pages is None and spatial_ndim == 3 and len(unknown) == 1 and "z" not in roles:
            roles[unknown[0]] = "z"  # a volume was asked for: the pages are its slices
        elif unknown and pages is None:
            k = unknown[0]
            raise ParameterError(
                f"{path!r} has {self.series_shape[k]} pages on TIFF axis {axes[k]!r} (axes {axes!r}, "
                f"shape {self.series_shape}), and the file does not say whether they are channels or "
                "z slices: pass --pages channels, --pages z (a volume, with --spatial-ndim 3) or "
                "--pages first (the first page only); in Python pages='channels', 'z' or 'first'")
        for k in unknown:
            if roles[k] == "?":
                roles[k] = {"channels": "channel", "z": "z", "first": "first"}[pages]
        if roles.count("z") > 1:
            raise ImageReadError(f"{path!r}: TIFF axes {axes!r} hold {roles.count('z')} axes of z slices; "
                                 "a volume has one")
        if "Y" not in roles or "X" not in roles:
            raise ImageReadError(f"{path!r}: TIFF axes {axes!r} have no Y and X axes")
        letters = list(axes)
        if spatial_ndim == 2 and pages == "z" and any(r == "z" for k, r in enumerate(roles) if k in unknown):
            raise ParameterError(
                f"{path!r}: pages='z' (--pages z) reads its {self.series_shape[unknown[0]]} pages as the z "
                "slices of a volume, which needs spatial_ndim=3 (--spatial-ndim 3); for a 2-D store pass "
                "--pages first or --pages channels")
        if spatial_ndim == 2 and "z" in roles:
            k = roles.index("z")
            roles[k], letters[k] = "first", "Z"  # the first z slice, and the plan says so
        if spatial_ndim == 3 and "z" not in roles:
            channels = "".join(a for a, r in zip(axes, roles) if r == "channel")
            raise ImageReadError(
                f"{path!r}: TIFF axes {axes!r} have no z axis for spatial_ndim=3"
                + (f" (its pages are channels: {channels!r}); build it with --spatial-ndim 2" if channels else ""))
        self.roles = roles
        sizes = self.series_shape
        self.ignored_axes = "".join(a for a, r, n in zip(letters, roles, sizes) if n > 1 and r == "first")
        self.channels = int(np.prod([n for n, r in zip(sizes, roles) if r == "channel"], dtype=np.int64))
        spatial = [sizes[roles.index(r)] for r in ("z", "Y", "X") if r in roles]
        self.shape = tuple(spatial) + ((self.channels,) if self.channels > 1 else ())
        outer = len(axes) - len(page_axes)
        self.page_count = int(np.prod(sizes[:outer], dtype=np.int64))
        read = int(np.prod([n for n, r in zip(sizes[:outer], roles[:outer]) if r != "first"], dtype=np.int64))
        self.ignored_pages = self.page_count - read
        self.outer = outer

    def select(self, data: np.ndarray) -> np.ndarray:
        """The image from the whole series array (axes as ``self.axes``)."""
        data = data.reshape(self.series_shape)
        data = data[tuple(0 if r == "first" else slice(None) for r in self.roles)]
        kept = [r for r in self.roles if r != "first"]
        order = [kept.index(r) for r in ("z", "Y", "X") if r in kept]
        order += [k for k, r in enumerate(kept) if r == "channel"]
        return np.ascontiguousarray(np.transpose(data, order).reshape(self.shape))

    def page_positions(self) -> np.ndarray:
        """Series page positions (z or 1, channel pages) of the pages the image reads.

        The channel pages of one z are in the series' order, as ``select`` merges them.
        """
        shape, roles = self.series_shape[:self.outer], self.roles[:self.outer]
        if not shape:
            return np.zeros((1, 1), np.int64)
        grids = [np.arange(n) if role in ("z", "channel") else np.zeros(1, np.int64)
                 for n, role in zip(shape, roles)]
        mesh = np.meshgrid(*grids, indexing="ij")
        flat = np.ravel_multi_index([m.ravel() for m in mesh], shape).reshape(mesh[0].shape)
        if "z" in roles:
            flat = np.moveaxis(flat, roles.index("z"), 0)
            return flat.reshape(flat.shape[0], -1)
        return flat.reshape(1, -1)

    def whole(self) -> np.ndarray:
        tifffile = _library("tifffile", "tifffile")

        with tifffile.TiffFile(self.path) as tif:
            return self.select(tif.series[0].asarray())


def _tiff_header(path: str, spatial_ndim: int, pages=None):
    tifffile = _library("tifffile", "tifffile")

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path!r}: a TIFF with no image series")
        series = tif.series[0]  # the full resolution, also of pyramids
        key = series.keyframe
        _check_codec(key, path)
        axes, shape = series.axes, tuple(series.shape)
        page_axes = key.axes if axes.endswith(key.axes) and shape[len(shape) - len(key.axes):] == tuple(
            key.shape) else ""
        plan = _TiffPlan(path, axes, shape, spatial_ndim, pages, page_axes)
        rows = None
        indices = [getattr(page, "index", None) for page in series.pages] if page_axes else []
        if (page_axes and key.imagedepth == 1 and len(indices) == plan.page_count
                and all(isinstance(i, int) for i in indices)):
            positions = plan.page_positions()
            samples, planar = key.samplesperpixel, key.planarconfig == 2 and key.samplesperpixel > 1
            if spatial_ndim == 2:
                rows = _TiffRows(path, [indices[p] for p in positions[0]], key.imagelength, key.imagewidth,
                                 samples, planar, key.dtype)
            else:
                rows = _TiffPages(path, positions, plan.shape, key.shape, key.dtype, planar)
        return plan.shape, np.dtype(series.dtype), rows, plan


class _TiffRows:
    """Rows ``[r0, r1)`` of TIFF pages side by side as channels, decoded segment by segment.

    Only the segment (tile or strip) rows a band touches are read and decoded;
    the last decoded segment row of each page is kept, as the store's bands
    are usually shorter than a TIFF tile.
    """

    def __init__(self, path, page_indices, height, width, samples, planar, dtype):
        self.path, self.page_indices = path, list(page_indices)
        self.height, self.width, self.samples, self.planar = height, width, samples, planar
        self.dtype = np.dtype(dtype)
        self._cached = {}

    def __call__(self, r0: int, r1: int) -> np.ndarray:
        tifffile = _library("tifffile", "tifffile")

        samples = self.samples
        out = np.empty((r1 - r0, self.width, len(self.page_indices) * samples), self.dtype)
        with tifffile.TiffFile(self.path) as tif:
            for k, index in enumerate(self.page_indices):
                page = tif.pages[index]
                seg_h = page.tilelength if page.is_tiled else min(page.rowsperstrip or self.height, self.height)
                seg_w = page.tilewidth if page.is_tiled else self.width
                rows, cols = ceil_div(self.height, seg_h), ceil_div(self.width, seg_w)
                for seg_row in range(r0 // seg_h, ceil_div(r1, seg_h)):
                    band = self._segment_row(k, tif, page, seg_row, seg_h, seg_w, rows, cols)
                    top = seg_row * seg_h
                    a, b = max(r0, top), min(r1, top + seg_h, self.height)
                    out[a - r0:b - r0, :, k * samples:(k + 1) * samples] = band[a - top:b - top]
        return out if out.shape[-1] > 1 else out[..., 0]

    def _segment_row(self, k, tif, page, seg_row, seg_h, seg_w, rows, cols) -> np.ndarray:
        cached = self._cached.get(k)
        if cached is not None and cached[0] == seg_row:
            return cached[1]
        band = np.zeros((seg_h, cols * seg_w, self.samples), self.dtype)
        planes = self.samples if self.planar else 1
        handle = tif.filehandle
        # NOTE: the decode function first, then the seek: for a JPEG page, reading
        # page.decode (its JPEG tables) moves the file position
        decode = page.decode
        for plane in range(planes):
            for col in range(cols):
                index = (plane * rows + seg_row) * cols + col
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if count == 0:  # a sparse TIFF: a missing segment is zeros
                    continue
                handle.seek(offset)
                data, _, _ = decode(handle.read(count), index, jpegtables=page.jpegtables)
                data = data.reshape(data.shape[-3:])  # (h, w, samples) of this segment
                h, w = min(seg_h, data.shape[0]), min(seg_w, data.shape[1])
                channels = slice(plane, plane + 1) if self.planar else slice(None)
                band[:h, col * seg_w:col * seg_w + w, channels] = data[:h, :w]
        band = band[:, :self.width]
        self._cached[k] = (seg_row, band)
        return band


class _TiffPages:
    """Z range ``[z0, z1)`` of a TIFF stack stored one page per z (and channel)."""

    def __init__(self, path, positions, shape, page_shape, dtype, planar):
        self.path, self.positions, self.shape = path, positions, tuple(shape)
        self.page_shape, self.dtype, self.planar = tuple(page_shape), np.dtype(dtype), planar

    def __call__(self, z0: int, z1: int) -> np.ndarray:
        tifffile = _library("tifffile", "tifffile")

        if z1 <= z0:
            return np.empty((0,) + self.shape[1:], self.dtype)
        keys = self.positions[z0:z1].ravel().tolist()
        with tifffile.TiffFile(self.path) as tif:
            data = tif.asarray(key=keys, series=0)
        data = data.reshape((len(keys),) + self.page_shape)
        if self.planar:  # (S, Y, X) pages
            data = np.moveaxis(data, 1, -1)
        elif data.ndim == 3:  # (Y, X) pages
            data = data[..., None]
        nz = z1 - z0
        data = data.reshape((nz, self.positions.shape[1]) + data.shape[1:])  # (z, pages, Y, X, samples)
        data = np.moveaxis(data, 1, -2)  # (z, Y, X, pages, samples)
        return np.ascontiguousarray(data.reshape((nz,) + self.shape[1:]))


# -- masks ------------------------------------------------------------------------------------
def pair_masks(image_paths, mask_folder, mask_suffix: str = "", allow_unmatched: bool = False,
               image_root=None, mask_paths=None):
    """Pair each image with its mask by stem (``<stem><mask_suffix>.<any ext>``).

    ``mask_paths``: the candidate masks when not every file of ``mask_folder``
    is one (masks beside their images).

    When several masks share the stem, the one at the same path relative to
    its folder as the image is to ``image_root`` is taken (mirrored folders).
    Returns ``(kept image paths, their mask paths, report)``; the report lists
    images without a mask, images with several, images sharing one mask, and
    masks no image claimed. Unless ``allow_unmatched``, any unpaired or
    ambiguous image is an error naming the first ten; with it, those images
    are left out.
    """
    listed, mask_root = list_images(mask_folder)
    mask_paths = listed if mask_paths is None else list(mask_paths)
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
