"""Stitching patch predictions back into full images.

``PatchAggregator`` accumulates weighted predictions per image and divides by
the total weight when the image is complete. Weights are separable (a 1-D
window per axis), so when every patch of an image's grid has arrived the
total weight is an outer product of per-axis sums, computed once: adding a
patch then costs one in-place slice-add. Images whose patches do not all
arrive (a filtered dataset, an interrupted run) are finalized by summing the
weights of the patches that did.

Out of core: with ``out="preds.h5"`` every finished image is written to an
HDF5 file (atomically, like a store) and dropped from memory; fed in grid
order, only the images in flight are held.

NOTE [aggregator grid]: predictions can only be stitched on the grid they were
made on. ``PatchAggregator.from_dataset`` takes a dataset's whole grid (patch
size, stride, edge, images, filter) and refuses any other. Built by hand, the
aggregator's ``edge`` defaults to ``"shift"`` where ``PatchDataset``'s
defaults to ``"drop"``, on purpose: an aggregator makes whole images, and
``"shift"`` is the one edge that covers every pixel with patches inside the
image, so an aggregator fed from its own index (or from a shift dataset) has
no NaN. The two defaults cannot meet silently: a shift or pad dataset's border
patches are off a drop aggregator's grid (an error naming the origin), and a
drop dataset leaves a shift or pad aggregator's images without exactly their
border patches, never complete; such images are recognized when they are
finished and named in a LazypatchWarning that gives the fix.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref

import numpy as np

from ..errors import LazypatchWarning, ParameterError, ParameterTypeError, StoreExistsError
from ..grid import check_edge, is_int
from ..index import PatchIndex, as_int_array
from ..store import ImageStore
from ..store import format as fmt
from ..store.publish import publish_h5, temporary_path

__all__ = ["PatchAggregator"]

MODES = ("average", "gaussian", "hann", "crop")
_FLOOR = 1e-3  # per-axis weight floor: every covered pixel gets a positive total weight


def _window(mode: str, size: int, sigma_scale: float) -> np.ndarray:
    """The 1-D weight of one axis (before the crop mode's per-patch margins)."""
    x = np.arange(size, dtype=np.float64)
    if mode == "gaussian":
        sigma = max(sigma_scale * size, 1e-6)
        window = np.exp(-0.5 * ((x - (size - 1) / 2) / sigma) ** 2)
    elif mode == "hann":
        window = 0.5 - 0.5 * np.cos(2 * np.pi * (x + 1) / (size + 1))
    else:
        window = np.ones(size)
    window /= window.max()
    return np.maximum(window, _FLOOR)


def _discard(h5, path: str, pid: int) -> None:
    """Close and remove an unpublished out file (in the process that made it: a forked
    child exiting must not remove its parent's file)."""
    if os.getpid() != pid:
        return
    fmt.discard_h5(h5, path)
    if os.path.exists(path):
        os.unlink(path)


def _as_numpy(values, name: str, dtype=None) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


class PatchAggregator:
    """Blend per-patch predictions (B, C, *patch) into full-size (C, *spatial) outputs.

    Parameters
    ----------
    store_or_shapes : ImageStore, path, or array-like (n_images, ndim)
        Where the spatial shapes of the images come from.
    patch_size, stride, edge
        The grid the predictions were made on (see :class:`PatchIndex`).
        ``edge`` defaults to ``"shift"``, which covers every pixel, where
        :class:`~lazypatch.PatchDataset` defaults to ``"drop"``: for a
        dataset's predictions use :meth:`from_dataset`, which takes its grid
        (NOTE [aggregator grid] in this module says why and what guards it).
    mode : {"average", "gaussian", "hann", "crop"}
        How overlapping predictions are weighted: equally; by a Gaussian
        (``sigma = sigma_scale * patch``) or a Hann window centred on the
        patch; or only the patch's central ``stride`` part counts ("crop"),
        except at the image border where the outer margin is kept so the
        edge is covered. Weights are floored at 1e-3 per axis, so every
        covered pixel has a positive total weight.
    out : str or os.PathLike, optional
        An HDF5 file for the results: each finished image is written as the
        float32 dataset ``predictions/<image id>`` of shape (C, *spatial) and
        dropped from memory, with attributes ``image_id``, ``name`` (the
        image's name in the store; its number without a store) and
        ``geometry`` (the JSON of ``ImageStore.geometry``, its spacing, affine
        or georeferencing; ``{"spacing": null, "unit": null}`` without a
        store), which :func:`lazypatch.export` writes back into NIfTI,
        OME-TIFF or GeoTIFF files and :func:`~lazypatch.inference.read_predictions`
        reads; the file's
        attributes record ``patch_size``, ``stride``, ``edge`` and ``mode``,
        and its datasets ``image_ids`` the images aggregated and ``names`` /
        ``name_offsets`` their names (UTF-8, back to back, as in a store:
        name k is ``names[name_offsets[k]:name_offsets[k + 1]]``). It is
        published atomically by
        :meth:`close` (or leaving the ``with`` block); an exception, or an
        aggregator dropped unclosed, leaves nothing. Default: in RAM.
    overwrite : bool
        Replace an existing ``out`` file (when closed). Default: an existing
        file is an error, and the store the shapes come from never is ``out``.
    image_ids : sequence of int or str, optional
        The grid covers only these images (as with ``PatchDataset(image_ids=)``),
        by number or by name (``store.names``; names need a store);
        ``image_id`` values passed to :meth:`add` are still the store's numbers.
    filter : path, optional
        The foreground filter the predictions' dataset was built with
        (``PatchDataset(filter=)``; needs the store): an image is complete,
        finished and dropped from memory, when all its kept patches have
        arrived; a patch the filter drops is an error.

    Raises
    ------
    ParameterError, ParameterTypeError
        A bad grid, ``mode``, ``sigma_scale`` or ``overwrite``, ``out``
        naming the store itself, an unknown image name, or names or a
        ``filter`` without a store.
    StoreExistsError
        ``out`` exists and ``overwrite`` is false (checked at construction).
    FileNotFoundError, IsADirectoryError
        The folder of ``out`` is missing, or ``out`` is a directory.

    Notes
    -----
    Exact for any number of overlaps; a patch added twice counts once;
    predictions for the part of a patch outside its image are ignored.
    Pixels that no patch covers (``edge="drop"``) are NaN, and ``result``
    warns with their count (a RuntimeWarning); with ``out``, :meth:`close`
    warns when the file holds NaN pixels or lacks images that received no
    patch. Images finished missing exactly the border patches a drop grid
    lacks give a LazypatchWarning (NOTE [aggregator grid]).

    Memory: only images with some but not all of their patches added are
    held (``in_flight`` counts them), at 4 x C bytes per pixel. Fed in grid
    order (``range(len(dataset))``, or ``PatchSampler(dataset,
    shuffle=False)``) that is a few images; fed in shuffled order the
    result is the same, but almost every image is soon in flight.

    Examples
    --------
    >>> agg = PatchAggregator([(5, 7)], patch_size=4, stride=2, mode="gaussian")
    >>> image = np.arange(35, dtype=np.float32).reshape(1, 5, 7)
    >>> ids, origins = agg.index.locate(np.arange(len(agg.index)))
    >>> patches = np.stack([image[:, y:y + 4, x:x + 4] for y, x in origins])
    >>> agg.add(patches, ids, origins)
    >>> bool(np.allclose(agg.result(0).numpy(), image))
    True
    """

    def __init__(self, store_or_shapes, patch_size, *, stride=None, edge: str = "shift",
                 mode: str = "average", out=None, image_ids=None, sigma_scale: float = 0.125,
                 overwrite: bool = False, filter=None):
        shapes, names = self._shapes_of(store_or_shapes)
        if not isinstance(overwrite, bool):
            raise ParameterTypeError(f"overwrite must be True or False, got {overwrite!r}")
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
        check_edge(edge)
        if not isinstance(sigma_scale, (int, float)) or isinstance(sigma_scale, bool) or sigma_scale <= 0:
            raise ParameterError(f"sigma_scale must be a positive number, got {sigma_scale!r}")
        self.mode = mode
        self._full = full = PatchIndex(shapes, patch_size, stride, edge)
        if image_ids is not None:
            image_ids = self._image_numbers(image_ids, names)
            self.index = full.subset(image_ids)
            self._local = {int(i): k for k, i in enumerate(image_ids.tolist())}
            self.image_ids = image_ids
        else:
            self.index = full
            self._local = None
            self.image_ids = np.arange(len(shapes))
        self.patch_size, self.stride, self.edge = full.patch_size, full.stride, full.edge
        self._shapes = self.index.shapes
        self._names = names
        self.filter = None if filter is None else os.fspath(filter)
        self._kept = None  # the filter's FilteredIndex over the full grid
        self._expected = self.index.counts  # per image, the patches that make it complete
        if filter is not None:
            if names is None:
                raise ParameterError(f"filter={self.filter!r} needs the store it was computed for; "
                                     "this aggregator was given shapes: pass the store")
            from ..stats.foreground import load_filter

            self._kept = load_filter(names, self.filter, full)
            self._expected = self._kept.counts if self._local is None else self._kept.counts[self.image_ids]
        self._mismatched = []  # store ids of images finished missing exactly their border patches
        self._mismatch_warned = False
        self._windows = [_window(mode, p, sigma_scale) for p in self.patch_size]
        self.channels = None
        self._sums = {}  # image (local id) -> float32 (C, *shape) weighted sums
        self._received = {}  # image -> one byte per patch: arrived or not
        self._missing = {}  # image -> patches still to arrive
        self._done = {}  # image -> result array (in RAM) or True (in the out file)
        self._complete = set()  # images finished because all their patches arrived
        self._out_path = None
        self._h5 = None
        self._uncovered = {}  # image id -> pixels no patch covered, when written to out
        if out is not None:
            self._open_out(os.fspath(out), overwrite)

    @staticmethod
    def _image_numbers(image_ids, store) -> np.ndarray:
        """``image_ids`` as the store's numbers: names resolved through the store."""
        if isinstance(image_ids, (str, bytes)):
            raise ParameterTypeError(f"image_ids must be a sequence of image numbers or names, got {image_ids!r}")
        if isinstance(image_ids, (list, tuple)) and any(isinstance(k, str) for k in image_ids):
            if store is None:
                names = [k for k in image_ids if isinstance(k, str)]
                raise ParameterError(f"image_ids: names ({names[0]!r}, ...) need a store; this aggregator "
                                     "was given shapes: pass image numbers, or the store")
            return store.image_ids_of(image_ids)
        return as_int_array(image_ids, "image_ids").reshape(-1)

    @classmethod
    def from_dataset(cls, dataset, **options) -> "PatchAggregator":
        """An aggregator on a PatchDataset's grid: its store, ``patch_size``, ``stride``,
        ``edge``, ``image_ids`` and ``filter``, exactly.

        ``options`` are the others (``mode``, ``out``, ``sigma_scale``,
        ``overwrite``). A grid option is an error: predictions are stitched
        on the grid they were made on (NOTE [aggregator grid]).

        >>> import tempfile, os
        >>> from lazypatch import PatchDataset, write_store
        >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
        >>> _ = write_store(path, [np.zeros((40, 50), np.uint8)], progress=False)
        >>> agg = PatchAggregator.from_dataset(PatchDataset(path, 16, stride=12))
        >>> agg.patch_size, agg.stride, agg.edge
        ((16, 16), (12, 12), 'drop')
        """
        grid = [k for k in ("store_or_shapes", "patch_size", "stride", "edge", "image_ids", "filter")
                if k in options]
        if grid:
            raise ParameterError(
                "from_dataset takes the dataset's grid (patch_size, stride, edge, image_ids, filter); got "
                + ", ".join(f"{k}={options[k]!r}" for k in grid)
                + f" for a dataset with patch_size={dataset.patch_size}, stride={dataset.stride}, "
                f"edge={dataset.edge!r}: build the dataset on the grid you want")
        return cls(dataset.store, dataset.patch_size, stride=dataset.stride, edge=dataset.edge,
                   image_ids=dataset.image_ids, filter=dataset.filter, **options)

    @staticmethod
    def _shapes_of(source):
        if isinstance(source, (str, bytes, os.PathLike)):
            source = ImageStore(source)
        if isinstance(source, ImageStore):
            return source.shapes, source
        return np.asarray(source), None

    # -- the out file ----------------------------------------------------------------------
    def _open_out(self, path: str, overwrite: bool) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"the folder of out does not exist: {folder!r}")
        if os.path.isdir(path):
            raise IsADirectoryError(f"out is a directory: {path!r}")
        if self._names is not None and os.path.exists(path) and any(
                os.path.samefile(path, p) for p in self._names.paths):
            raise ParameterError(f"out is the store the predictions are made on: {path!r}")
        if os.path.exists(path) and not overwrite:
            raise StoreExistsError(f"out {path!r} exists; pass overwrite=True to replace it")
        self._out_path, self._overwrite = path, overwrite
        self._tmp_path = temporary_path(path)
        try:
            self._h5 = fmt.create_h5(self._tmp_path)
        except BaseException:  # a full disk can fail it after the file exists
            if os.path.exists(self._tmp_path):
                os.unlink(self._tmp_path)
            raise
        # an aggregator dropped without close() (or an exit) leaves no temporary file behind
        self._discard = weakref.finalize(self, _discard, self._h5, self._tmp_path, os.getpid())
        self._h5.attrs["lazypatch_predictions"] = 1
        self._h5.attrs["patch_size"] = self.patch_size
        self._h5.attrs["stride"] = self.stride
        self._h5.attrs["edge"] = self.edge
        self._h5.attrs["mode"] = self.mode
        fmt.write_dataset(self._h5, "image_ids", np.asarray(self.image_ids, np.int64))
        blob, offsets = fmt.pack_texts([self._name(k) for k in range(len(self.image_ids))])
        fmt.write_dataset(self._h5, fmt.D_NAMES, blob)
        fmt.write_dataset(self._h5, fmt.D_NAME_OFFSETS, offsets)
        self._h5.create_group("predictions")

    def _name(self, image: int) -> str:
        """The name of an image (local number): the store's, or its number without a store."""
        image_id = int(self.image_ids[image])
        return self._names.names[image_id] if self._names is not None else str(image_id)

    def close(self) -> None:
        """Finish every image still in flight and publish the out file (if any)."""
        self._close()

    def _close(self) -> None:  # close() and __exit__ both call it: warnings name their caller
        for local in list(self._sums):
            self._finish(local)
        if self._h5 is not None:
            try:
                publish_h5(self._h5, self._tmp_path, self._out_path, self._overwrite)
            except BaseException:  # a full disk: the temporary file goes, the error stays
                self._h5 = None
                self._discard()
                raise
            self._discard.detach()
            self._h5 = None
            self._warn_incomplete()
        self._warn_mismatch(stacklevel=4)  # once published: a warning turned error loses nothing

    def _warn_incomplete(self) -> None:
        """Say what the published file lacks: NaN pixels, images no patch reached."""
        missing = self.index.num_images - len(self._done)
        holes = {image: n for image, n in self._uncovered.items() if n}
        if missing or holes:
            parts = []
            if holes:
                first = next(iter(holes))
                parts.append(f"{sum(holes.values())} pixels of {len(holes)} images are covered by "
                             f"no patch and are NaN (image {first}: {holes[first]})")
            if missing:
                parts.append(f"{missing} images received no patch and are not in the file")
            warnings.warn(f"{self._out_path}: " + "; ".join(parts), RuntimeWarning, stacklevel=4)

    def _warn_mismatch(self, stacklevel: int) -> None:
        """Name the images finished without their border patches (NOTE [aggregator grid])."""
        if not self._mismatched or self._mismatch_warned:
            return
        self._mismatch_warned = True
        ids = self._mismatched
        warnings.warn(
            f"{len(ids)} images (image {ids[0]} first) received every patch of the grid with "
            f"edge='drop' and none of the border patches this aggregator's edge={self.edge!r} "
            "adds, so their borders are NaN: the predictions look made on a PatchDataset with "
            "edge='drop' (its default). Build the aggregator on the dataset's grid, "
            "PatchAggregator.from_dataset(dataset), or pass edge='drop'",
            LazypatchWarning, stacklevel=stacklevel)

    def __enter__(self) -> "PatchAggregator":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self._close()
        elif self._h5 is not None:  # an error: leave no half-written file behind
            self._h5 = None
            self._discard()

    # -- adding ------------------------------------------------------------------------------
    def _local_ids(self, image_ids: np.ndarray) -> np.ndarray:
        if self._local is None:
            return image_ids
        try:
            return np.asarray([self._local[int(i)] for i in image_ids.tolist()], dtype=np.int64)
        except KeyError as exc:
            raise ParameterError(f"image id {exc.args[0]} is not one of this aggregator's images") from None

    def add(self, predictions, image_ids, origins) -> None:
        """Accumulate a batch of predictions (B, C, *patch) made at (image_id, origin).

        ``image_ids`` and ``origins`` are the ``"image_id"`` and ``"origin"``
        the dataset yielded (tensors or arrays).
        """
        predictions = _as_numpy(predictions, "predictions")
        if predictions.dtype.kind not in "biuf":
            raise ParameterTypeError(f"predictions must be numeric, got {predictions.dtype}")
        image_ids = as_int_array(_as_numpy(image_ids, "image_ids"), "image_ids").reshape(-1)
        origins = as_int_array(_as_numpy(origins, "origins"), "origins")
        count = len(image_ids)
        nd = len(self.patch_size)
        if predictions.ndim != nd + 2 or predictions.shape[0] != count or tuple(predictions.shape[2:]) != self.patch_size:
            raise ParameterError(
                f"predictions must have shape (B, C, *{self.patch_size}) with B = {count} "
                f"image_ids, got {predictions.shape}"
            )
        if self.channels is not None and predictions.shape[1] != self.channels:
            raise ParameterError(
                f"predictions must keep {self.channels} channels, got {predictions.shape[1]}"
            )
        local = self._local_ids(image_ids)
        # origins off the grid: a ParameterError naming the store's image id
        flat = self._full.flat_index(image_ids, origins)
        if self._kept is not None:
            self._kept.flat_index(image_ids, origins)  # a patch the filter drops: a ParameterError
        self.channels = int(predictions.shape[1])
        first = flat - (self._full.offsets - self._full.counts)[image_ids]
        if self.mode == "average":  # every weight is 1: the predictions are added as they are
            weighted = predictions.astype(np.float32, copy=False)
        else:
            weighted = predictions.astype(np.float32, copy=False) * self._patch_weights(local, origins)[:, None]
        patch = self.patch_size
        finished = []
        for k, (image, position, origin) in enumerate(zip(local.tolist(), first.tolist(), origins.tolist())):
            received = self._received.get(image)
            if received is None:
                received = self._start(image)
                if received is None:
                    continue  # a repeat of a patch of a finished image
            if received[position]:
                continue  # the same patch twice (a distributed sampler's wrap): counted once
            received[position] = 1
            sums = self._sums[image]
            box = (slice(None),) + tuple(slice(o, o + p) for o, p in zip(origin, patch))
            target = sums[box]
            if target.shape[1:] == patch:
                target += weighted[k]
            else:  # the patch leaves the image: only its inside counts
                target += weighted[(k, slice(None)) + tuple(slice(0, n) for n in target.shape[1:])]
            self._missing[image] -= 1
            if not self._missing[image]:
                finished.append(image)
        for image in finished:
            self._complete.add(image)
            self._finish(image)

    def _start(self, image: int):
        """Buffers for an image's first patch (None for a repeat after it finished)."""
        if image in self._done:
            if image in self._complete:
                return None  # every patch of it arrived already: this one is a repeat
            raise ParameterError(
                f"image {int(self.image_ids[image])} was already finished (result() was called "
                "before all its patches arrived)"
            )
        count = int(self.index.counts[image])
        self._received[image] = received = bytearray(count)
        self._missing[image] = int(self._expected[image])
        shape = tuple(int(v) for v in self._shapes[image])
        self._sums[image] = np.zeros((self.channels,) + shape, np.float32)
        return received

    def _axis_weights(self, axis: int, origins: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Per-patch 1-D weights (B, patch) of one axis (crop margins depend on position)."""
        window = self._windows[axis]
        weights = np.broadcast_to(window, (len(origins), len(window))).copy()
        if self.mode == "crop":
            patch, stride = self.patch_size[axis], self.stride[axis]
            low = max(patch - stride, 0) // 2
            high = max(patch - stride, 0) - low
            x = np.arange(patch)
            keep_low = origins[:, None] == 0  # the first patch keeps its outer margin
            keep_high = origins[:, None] + patch >= lengths[:, None]  # so does the last
            inside = ((x >= low) | keep_low) & ((x < patch - high) | keep_high)
            weights = np.where(inside, 1.0, _FLOOR)
        return weights

    def _patch_weights(self, local, origins) -> np.ndarray:
        lengths = self._shapes[local]
        total = None
        for axis in range(len(self.patch_size)):
            axis_weights = self._axis_weights(axis, origins[:, axis], lengths[:, axis])
            shape = [len(local)] + [1] * len(self.patch_size)
            shape[axis + 1] = self.patch_size[axis]
            axis_weights = axis_weights.reshape(shape)
            total = axis_weights if total is None else total * axis_weights
        return total.astype(np.float32)

    # -- finishing ---------------------------------------------------------------------------
    def _weight_sum(self, image: int) -> np.ndarray:
        shape = tuple(int(v) for v in self._shapes[image])
        received = np.frombuffer(self._received[image], np.uint8).astype(bool)
        if received.all():
            # separable weights over a full Cartesian grid: an outer product of 1-D sums
            total = None
            grid = self.index.grid_shape[image]
            for axis, length in enumerate(shape):
                one = PatchIndex([(length,)], self.patch_size[axis], self.stride[axis], self.edge)
                starts = one.locate(np.arange(int(grid[axis])))[1][:, 0]
                lengths = np.full(len(starts), length)
                weights = self._axis_weights(axis, starts, lengths)
                line = np.zeros(max(length, int(starts.max())) + self.patch_size[axis])
                for start, row in zip(starts.tolist(), weights):
                    line[start:start + len(row)] += row
                line = line[:length].reshape([-1 if a == axis else 1 for a in range(len(shape))])
                total = line if total is None else total * line
            return total.astype(np.float32)
        total = np.zeros(shape, np.float32)
        start = int(self.index.offsets[image] - self.index.counts[image])
        done = np.flatnonzero(received) + start
        for chunk in range(0, len(done), 4096):
            ids, origins = self.index.locate(done[chunk:chunk + 4096])
            weights = self._patch_weights(ids, origins)
            for k, origin in enumerate(origins.tolist()):
                box = tuple(slice(o, o + p) for o, p in zip(origin, self.patch_size))
                target = total[box]
                target += weights[(k,) + tuple(slice(0, n) for n in target.shape)]
        return total

    def _border_patches_missing(self, image: int) -> bool:
        """Whether the patches missing are exactly those a drop grid lacks (NOTE [aggregator grid])."""
        if self.edge == "drop" or self._kept is not None:
            return False
        received = np.frombuffer(self._received[image], np.uint8).astype(bool)
        start = int(self.index.offsets[image] - self.index.counts[image])
        origins = self.index.locate(np.arange(start, start + len(received)))[1]
        on_drop = ((origins % np.asarray(self.stride) == 0).all(axis=1)
                   & (origins + np.asarray(self.patch_size) <= self._shapes[image]).all(axis=1))
        return bool(on_drop.any() and (~on_drop).any() and received[on_drop].all()
                    and not received[~on_drop].any())

    def _finish(self, image: int) -> None:
        if image not in self._complete and self._border_patches_missing(image):
            self._mismatched.append(int(self.image_ids[image]))
        sums = self._sums.pop(image)
        weight = self._weight_sum(image)
        self._received.pop(image)
        self._missing.pop(image)
        uncovered = weight == 0
        if uncovered.any():
            weight[uncovered] = 1
            sums[:, uncovered] = np.nan
        result = np.divide(sums, weight, out=sums)
        if self._h5 is not None:
            image_id = int(self.image_ids[image])
            dataset = fmt.write_dataset(self._h5["predictions"], str(image_id), result)
            dataset.attrs["image_id"] = image_id
            dataset.attrs["name"] = fmt.attribute(self._name(image))
            # the image's physical geometry, for lazypatch export (fixed-length UTF-8: NOTE [hardened metadata])
            geometry = {"spacing": None, "unit": None} if self._names is None else self._names.geometry(image_id)
            dataset.attrs["geometry"] = fmt.attribute(json.dumps(geometry, sort_keys=True))
            self._uncovered[image_id] = int(uncovered.sum())
            self._done[image] = True
        else:
            self._done[image] = result

    # -- results -----------------------------------------------------------------------------
    def result(self, image_id):
        """The blended (C, *spatial) float32 tensor of one image (finishing it if needed),
        by the store's number or by name."""
        import torch

        if isinstance(image_id, str):
            if self._names is None:
                raise ParameterError(f"image_id {image_id!r}: a name needs a store; this aggregator "
                                     "was given shapes: pass the image's number")
            image_id = int(self._names.image_ids_of([image_id], "image_id")[0])
        if not is_int(image_id):
            raise ParameterTypeError(f"image_id must be an integer or an image name, got {image_id!r}")
        image = int(self._local_ids(np.asarray([image_id]))[0]) if self._local else int(image_id)
        if not 0 <= image < self.index.num_images:
            raise ParameterError(f"image id {image_id} is out of range for {self.index.num_images} images")
        if image not in self._done:
            if image in self._sums:
                self._finish(image)
                self._warn_mismatch(stacklevel=3)
            else:
                shape = tuple(int(v) for v in self._shapes[image])
                self._done[image] = np.full(((self.channels or 1),) + shape, np.nan, np.float32)
        value = self._done[image]
        if value is True:
            value = self._h5["predictions"][str(int(image_id))][()] if self._h5 is not None else None
            if value is None:
                import h5py

                with h5py.File(self._out_path, "r") as f:
                    value = f["predictions"][str(int(image_id))][()]
        uncovered = int(np.isnan(value[0]).sum()) if value.size else 0
        if uncovered:
            warnings.warn(
                f"{uncovered} pixels of image {image_id} are covered by no patch (edge="
                f"{self.edge!r}, or patches never added); they are NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        return torch.from_numpy(value)  # the stored result itself (no copy of a whole image)

    @property
    def in_flight(self) -> int:
        """Images with some but not all of their patches added."""
        return len(self._sums)

    def __repr__(self) -> str:
        return (f"PatchAggregator({self.index.num_images} images, patch_size={self.patch_size}, "
                f"stride={self.stride}, edge={self.edge!r}, mode={self.mode!r}, "
                f"{len(self._done)} done, {len(self._sums)} in flight)")
