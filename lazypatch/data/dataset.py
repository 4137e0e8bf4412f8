"""``PatchDataset``: a torch map-style Dataset of grid patches read lazily from a store.

Three ways to read, from most compatible to fastest:

* ``ds[i]`` / ``DataLoader(ds, batch_size=B)``: one sample dict per patch;
  torch's DataLoader calls :meth:`PatchDataset.__getitems__` with a whole
  batch of indices, which reads them with one vectorized locate and one
  gather, then hands back per-sample views of one fresh batch buffer.
* ``collate_fn=lazypatch.collate``: as above, but batching the views back is
  free (no second copy).
* ``ds.read_batch(indices)`` or ``DataLoader(ds, batch_size=None,
  sampler=BatchSampler(...))``: one dict of stacked tensors.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data import default_collate

from ..errors import IntegrityError, LazypatchWarning, ParameterError, ParameterTypeError
from ..grid import is_int
from ..index import PatchIndex, as_int_array
from ..stats.channels import ChannelStats
from ..stats.foreground import load_filter
from ..store import ImageStore, check_pad
from ..store.reading.gathers import page_aligned
from . import _shared
from .normalize import NORMALIZATIONS, Normalizer
from .samples import PatchSample, SampleList, collate, make_samples

__all__ = ["PatchDataset", "collate"]  # collate lives in .samples

_POOL_BYTES = 64 << 20


class _BufferPool:
    """Batch buffers, reused once nobody references them any more.

    NOTE [buffer reuse]: a fresh multi-megabyte allocation is mapped anew by
    the allocator and costs one page fault per 4 KiB on first write (about as
    much as the copy itself, measured). A buffer is handed out again only when
    its reference count shows that no tensor or array made from it is alive,
    so callers cannot tell it from fresh memory. Buffers start on a page
    (see NOTE [page-aligned buffers] in lazypatch.store.reading.gathers). The pool keeps 64 MiB, or
    three buffers of the size asked when that is more (the batch being
    read, the one the caller still holds, a spare): a batch of 256 patches
    of 64^3 uint16 is 128 MiB, and reading it into fresh memory took about
    twice as long (``python tests/benchmarks/reference.py --size-gb 0.5 --ndim 3
    --image-size 128 --channels 0 --dtype uint16 --only read_batch`` measures
    the pooled path). Idle buffers of other sizes are dropped when a new size
    needs the room, so one large batch is not kept for ever.
    """

    def __init__(self, limit: int = _POOL_BYTES):
        self._buffers: list[np.ndarray] = []
        self._limit = limit
        self._lock = threading.Lock()

    def take(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        with self._lock:
            for buffer in self._buffers:
                # every array made from it holds its allocation (``base``): two references
                # (``buffer``, getrefcount's argument) mean none is alive
                if buffer.nbytes == nbytes and sys.getrefcount(buffer.base) == 2:
                    return buffer.view(dtype).reshape(shape)
            buffer = page_aligned((nbytes,), np.uint8)
            budget = max(self._limit, 3 * nbytes)
            if sum(b.nbytes for b in self._buffers) + nbytes > budget:  # idle buffers of other sizes go
                self._buffers = [b for b in self._buffers
                                 if b.nbytes == nbytes or sys.getrefcount(b.base) > 2]
            if sum(b.nbytes for b in self._buffers) + nbytes <= budget:
                self._buffers.append(buffer)
            return buffer.view(dtype).reshape(shape)


class PatchDataset(Dataset):
    """Grid patches of every image of a store, as a torch map-style Dataset.

    Parameters
    ----------
    store : ImageStore or path
    patch_size, stride, edge
        The grid (see :class:`lazypatch.PatchIndex`).
    pad_value, mask_pad_value : number
        Fill for the parts of a patch outside its image (edge="pad", or an
        image smaller than the patch with edge="shift").
    transform : callable, optional
        Applied to each sample dict; returns the new sample.
    image_ids : sequence of int or str, optional
        Restrict the dataset to these images of the store (e.g. a split), given
        by number or by name (``store.names``).
    filter : path, optional
        A foreground filter (:func:`lazypatch.foreground_filter` or
        ``lazypatch index --foreground``) for this grid: only kept patches,
        through a :class:`lazypatch.FilteredIndex` whose bitmap each worker
        memory-maps (it is never pickled).
    dtype : torch.dtype, optional
        Cast images to this dtype (default: the store's dtype, e.g. uint8, which
        is the cheapest to move to a GPU; ``torch.float32`` when normalizing).
    normalize : {None, "zscore", "percentile"} or callable
        Per channel, with the store's channel statistics (written by
        ``write_store(..., channel_stats=True)``, ``lazypatch build --stats`` or
        ``lazypatch index --stats``): ``"zscore"`` is (x - mean) / std,
        ``"percentile"`` maps the 1st..99th percentiles to 0..1 and clips. A
        callable receives the cast image tensor ((B, C, *patch) for batches,
        (C, *patch) for one sample) and returns the new one. Masks are never
        touched. Applied before ``transform``.
    stats : ChannelStats, optional
        Statistics to normalize with, instead of the store's.

    Samples are dicts with exactly: ``"image"`` (C, *patch) in the store's
    dtype (or ``dtype``), ``"image_id"`` (int, the store's image number), ``"origin"`` (int64
    tensor (spatial_ndim,)), ``"index"`` (the flat index, non-negative) and
    ``"mask"`` (*patch) when the store has masks. Tensors are contiguous and
    own their memory or share one fresh batch buffer, never the file mapping
    (so ``pin_memory=True`` works).

    ``ds[i]`` takes an int, a numpy integer or a 0-d integer tensor
    (negatives wrap like a list); ``ds[list]``, ``ds[array]`` or ``ds[slice]``
    returns one batch dict like :meth:`read_batch`, so ``DataLoader(ds,
    batch_size=None, sampler=BatchSampler(...))`` works. :meth:`__getitems__`,
    which torch's DataLoader calls, reads a batch with one vectorized locate
    and one gather and returns a list whose samples are made on first access;
    collating it untouched (torch's ``default_collate`` reaches
    :func:`lazypatch.collate` through ``default_collate_fn_map``) returns the
    batch they view, without a second copy. C code reading list slots directly
    (``PySequence_Fast``) would see unmade slots as ``None``: call
    ``list(samples)`` first there.

    Raises
    ------
    ParameterError, ParameterTypeError
        A bad grid, ``transform``, ``image_ids``, ``dtype`` or ``normalize``;
        ``normalize`` without channel statistics; a patch that fits in none of
        the (selected) images.
    PatchIndexError
        Reading a patch number outside ``[-len, len)``.

    Warns
    -----
    LazypatchWarning
        When some images give no patch with this grid (they are counted).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from lazypatch import write_store
    >>> path = os.path.join(tempfile.mkdtemp(), "d.h5")
    >>> _ = write_store(path, [np.zeros((64, 96, 3), np.uint8)], progress=False)
    >>> ds = PatchDataset(path, patch_size=32)
    >>> len(ds), ds[5]["image"].shape, ds[5]["origin"].tolist()
    (6, torch.Size([3, 32, 32]), [32, 64])
    >>> batch = ds.read_batch([0, 5])
    >>> batch["image"].shape, batch["index"].tolist()
    (torch.Size([2, 3, 32, 32]), [0, 5])
    """

    def __init__(self, store, patch_size, stride=None, edge: str = "drop", pad_value=0,
                 mask_pad_value=0, transform=None, image_ids=None, filter=None, dtype=None,
                 normalize=None, stats=None):
        if isinstance(store, (str, bytes, os.PathLike, list, tuple)):
            store = ImageStore(store)
        if not isinstance(store, ImageStore):
            raise ParameterTypeError(
                f"store must be an ImageStore or a path, got {type(store).__name__}"
            )
        if transform is not None and not callable(transform):
            raise ParameterTypeError(f"transform must be callable, got {type(transform).__name__}")
        self.store = store
        self.pad_value = check_pad(pad_value, store.dtype)
        self.mask_pad_value = (check_pad(mask_pad_value, store.mask_dtype, "mask_pad_value")
                               if store.has_masks else mask_pad_value)
        self.transform = transform
        self._params = (patch_size, stride, edge)
        self.filter = os.fspath(filter) if filter is not None else None
        if image_ids is not None:
            if isinstance(image_ids, (list, tuple)) and any(isinstance(k, str) for k in image_ids):
                image_ids = store.image_ids_of(image_ids)  # names of images
            image_ids = as_int_array(image_ids, "image_ids")
            if image_ids.ndim != 1:
                raise ParameterError(f"image_ids must be one-dimensional, got shape {image_ids.shape}")
            image_ids = image_ids.copy()
            image_ids.flags.writeable = False
        self.image_ids = image_ids
        self._normalizer = _normalizer(store, dtype, normalize, stats)
        self._build()
        if self._images_without_patches:
            total = len(self.store) if self.image_ids is None else len(self.image_ids)
            warnings.warn(
                f"{self._images_without_patches} of {total} images are smaller than patch_size "
                f"{self.patch_size} and contribute no patch with edge={self.edge!r}; use edge='shift' "
                "or 'pad' to include them", LazypatchWarning, stacklevel=2)

    def _build(self) -> None:
        patch_size, stride, edge = self._params
        grid = index = PatchIndex(self.store.shapes, patch_size, stride, edge)
        if self.filter is not None:
            index = load_filter(self.store, self.filter, grid)
        if self.image_ids is not None:
            if len(grid.subset(self.image_ids)) == 0:  # (a filter that keeps nothing is no error)
                raise ParameterError(
                    f"patch_size {grid.patch_size} fits in none of the {len(self.image_ids)} "
                    f"selected images with edge={edge!r}; use edge='shift' or 'pad', or a "
                    "smaller patch"
                )
            index = index.subset(self.image_ids)
            self._ids_view = memoryview(self.image_ids)
        counts = grid.counts if self.image_ids is None else grid.counts[self.image_ids]
        self._images_without_patches = int((counts == 0).sum())
        self.index = index
        self.patch_size = index.patch_size
        self.stride = index.stride
        self.edge = index.edge
        self._pool = _BufferPool()
        self._has_masks = self.store.has_masks
        self._interior = _all_interior(index)
        self._whole_tiles = self.store.grid_is_tiles(self.patch_size, self.stride, self.image_ids)

    def __getstate__(self):
        # O(1) in the number of images: the index is rebuilt from the store's tables.
        state = self.__dict__.copy()
        for key in ("index", "_pool", "_ids_view"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build()

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        """Close the store (this process's handles); reading afterwards raises StoreClosedError."""
        self.store.close()

    def __enter__(self) -> "PatchDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_epoch(self, epoch: int) -> None:
        """Tell the transform the epoch (see ``SeededTransform``); PatchSampler calls it."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __repr__(self) -> str:
        return (
            f"PatchDataset({len(self)} patches of {self.patch_size}, stride={self.stride}, "
            f"edge={self.edge!r}, {self.index.num_images} images of {self.store.path!r})"
        )

    # -- indices ----------------------------------------------------------------------
    def _store_ids(self, local):
        if self.image_ids is None:
            return local
        if isinstance(local, int):
            return self._ids_view[local]
        return self.image_ids[local]

    def _flat(self, indices) -> np.ndarray:
        """Flat indices as a new int64 array in [0, len): ours to hand out as ``index``."""
        if torch.is_tensor(indices):
            if indices.is_floating_point() or indices.dtype == torch.bool or indices.is_complex():
                raise ParameterTypeError(f"patch indices must be integers, got a {indices.dtype} tensor")
            indices = indices.detach().cpu().numpy()
        elif isinstance(indices, range):
            indices = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
        flat = np.array(as_int_array(indices, "patch indices"), dtype=np.int64)
        if flat.ndim != 1:
            raise ParameterError(f"patch indices must be one-dimensional, got shape {flat.shape}")
        return self.index.normalize(flat)

    # -- reading ----------------------------------------------------------------------
    def __getitem__(self, key):
        if is_int(key):
            return self._sample(int(key))
        if torch.is_tensor(key) and key.dim() == 0 or isinstance(key, np.ndarray) and key.ndim == 0:
            if not (key.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
                    if torch.is_tensor(key) else key.dtype.kind in "iu"):
                raise ParameterTypeError(f"patch index must be an integer, got {key!r}")
            return self._sample(int(key))
        if isinstance(key, slice):
            return self.read_batch(range(*key.indices(len(self))))
        if isinstance(key, (list, tuple, range, np.ndarray)) or torch.is_tensor(key):
            return self.read_batch(key)
        raise ParameterTypeError(
            f"patch index must be an integer (or a sequence of them), got {type(key).__name__} {key!r}"
        )

    def _sample(self, flat: int) -> dict:
        local, origin = self.index.locate_scalar(flat)
        if flat < 0:
            flat += len(self.index)
        image_id = self._store_ids(local)
        store = self.store
        image = np.empty((store.channels,) + self.patch_size, store.dtype)
        mask = np.empty(self.patch_size, store.mask_dtype) if self._has_masks else None
        try:
            store.read_box_unchecked(image_id, origin, self.patch_size, image, mask,
                                     self.pad_value, self.mask_pad_value)
        except IntegrityError as exc:
            raise _naming_patches(exc, [flat]) from exc
        tensor = torch.from_numpy(image)
        sample = {
            "image": tensor if self._normalizer is None else self._normalizer(tensor, batched=False),
            "image_id": image_id,
            "origin": torch.from_numpy(np.array(origin, dtype=np.int64)),
            "index": flat,
        }
        if mask is not None:
            sample["mask"] = torch.from_numpy(mask)
        return self.transform(sample) if self.transform is not None else sample

    def _read(self, indices) -> dict:
        flat = self._flat(indices)
        local, positions, origins = self.index.locate_grid(flat)
        image_ids = self._store_ids(local)
        store = self.store
        count = flat.size
        image_shape, mask_shape = (count, store.channels) + self.patch_size, (count,) + self.patch_size
        arena = _shared.worker_arena()  # in a DataLoader worker: read into a slot (NOTE [worker batches])
        if arena is not None:
            nbytes = (math.prod(image_shape) * store.dtype.itemsize + count * 8 * (2 + len(self.patch_size))
                      + (math.prod(mask_shape) * store.mask_dtype.itemsize if self._has_masks else 0) + 512)
            lease = arena.lease(nbytes)
            image = lease.take(image_shape, store.dtype)
            mask = lease.take(mask_shape, store.mask_dtype) if self._has_masks else None
        else:
            image = self._pool.take(image_shape, store.dtype)
            mask = self._pool.take(mask_shape, store.mask_dtype) if self._has_masks else None
        try:
            if self._whole_tiles:
                store.read_tiles_unchecked(image_ids, positions, origins, image, mask)
            else:
                store.read_batch_unchecked(image_ids, origins, self.patch_size, image, mask,
                                           self.pad_value, self.mask_pad_value, self._interior)
        except IntegrityError as exc:
            raise _naming_patches(exc, flat.tolist()) from exc
        tensor = torch.from_numpy(image)
        batch = {
            "image": tensor if self._normalizer is None else self._normalizer(tensor, batched=True),
            "image_id": torch.from_numpy(np.ascontiguousarray(image_ids, dtype=np.int64)),
            "origin": torch.from_numpy(origins),
            "index": torch.from_numpy(flat),
        }
        if mask is not None:
            batch["mask"] = torch.from_numpy(mask)
        return batch

    def prefetch(self, indices) -> None:
        """Start reading these patches in the background (see ``ImageStore.prefetch_regions``).

        For data that is not in the page cache: call it with the next batch's
        indices before reading the current one, and the disk works meanwhile.
        """
        flat = self._flat(indices)
        local, origins = self.index.locate_normalized(flat)
        self.store.prefetch_unchecked(self._store_ids(local), origins, self.patch_size)

    def read_batch(self, indices) -> dict:
        """A batch as one dict of stacked tensors.

        Keys: ``image`` (B, C, *patch), ``image_id`` (B,), ``origin`` (B, nd),
        ``index`` (B,), and ``mask`` (B, *patch) when the store has masks. With a
        ``transform`` each sample is transformed, then the batch is re-stacked.
        """
        batch = self._read(indices)
        if self.transform is None:
            return batch
        return default_collate([self.transform(sample) for sample in make_samples(batch)])

    def __getitems__(self, indices) -> list:
        """``[self[i] for i in indices]``, read as one batch (torch's DataLoader calls this)."""
        batch = self._read(indices)
        if self.transform is not None:
            samples = [self.transform(sample) for sample in make_samples(batch)]
            # plain dicts become PatchSamples, which default_collate hands to lazypatch.collate
            return [PatchSample(s) if type(s) is dict else s for s in samples]
        return SampleList(batch)


def _normalizer(store, dtype, normalize, stats):
    """The cast-and-normalize step, or None when images keep the store's dtype."""
    if dtype is None and normalize is None:
        return None
    if normalize in NORMALIZATIONS and stats is None:
        try:
            stats = ChannelStats.open(store)
        except FileNotFoundError as exc:
            raise ParameterError(f"normalize={normalize!r} needs the store's channel statistics, or "
                                 f"stats=: {exc}") from exc
    if stats is not None and not isinstance(stats, ChannelStats):
        raise ParameterTypeError(f"stats must be a ChannelStats, got {type(stats).__name__}")
    if stats is not None and stats.channels != store.channels:
        raise ParameterError(f"stats has {stats.channels} channels, the store has {store.channels}")
    return Normalizer(dtype, normalize, stats, store.dtype)


def _naming_patches(exc: IntegrityError, flat: list) -> IntegrityError:
    """The reader's damage report, plus the dataset patch indices of the failed read."""
    shown = flat if len(flat) <= 16 else flat[:16] + ["..."]
    return IntegrityError(exc.errno, f"{exc.strerror}; reading dataset patches {shown}")


def _all_interior(index: PatchIndex) -> bool:
    """Whether every patch of the grid lies inside its image (no padding anywhere)."""
    if index.edge == "drop":
        return True
    shapes, patch = index.shapes, np.asarray(index.patch_size)
    fits = bool((shapes >= patch).all())
    if index.edge == "shift":
        return fits
    return fits and bool(((shapes - patch) % np.asarray(index.stride) == 0).all())
